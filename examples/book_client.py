"""Rebuild and verify a tickwire order book from /v1/sse (stdlib only).

usage: python3 book_client.py http://127.0.0.1:8080 SYMBOL [DEPTH] [UNTIL_SEQ]
Prints one line per message: seq, best bid, best ask, checksum ok.
"""
import json, sys, urllib.request, zlib
from decimal import Decimal

base, sym = sys.argv[1], sys.argv[2]
depth = sys.argv[3] if len(sys.argv) > 3 else "10"
until = int(sys.argv[4]) if len(sys.argv) > 4 else 0
bids, asks, seq = {}, {}, 0

def text(d):  # the protocol's decimal text, '.' and leading zeros removed
    return format(d.normalize(), "f").replace(".", "").lstrip("0")

def checksum():  # docs/PROTOCOL.md "Book checksum"
    top = sorted(asks.items())[:10] + sorted(bids.items(), reverse=True)[:10]
    return zlib.crc32("".join(text(p) + text(s) for p, s in top).encode())

url = f"{base}/v1/sse?symbols={sym}&channels=book&depth={depth}"
for line in urllib.request.urlopen(url):
    if not line.startswith(b"data: "):
        continue
    m = json.loads(line[6:], parse_float=Decimal, parse_int=Decimal)
    if m.get("type") != "book":
        continue
    if m.get("snap"):
        bids, asks = {}, {}
    elif not (m["from"] <= seq + 1 and m["seq"] > seq):
        sys.exit(f"gap: have {seq}, got {m['from']}..{m['seq']}: resubscribe")
    for side, book in (("bids", bids), ("asks", asks)):
        for px, sz in m[side]:
            if sz == 0:
                book.pop(px, None)
            else:
                book[px] = sz
    seq = int(m["seq"])
    ok = checksum() == m["cs"]
    print(seq, max(bids, default=None), min(asks, default=None), "ok" if ok else "MISMATCH", flush=True)
    if not ok:
        sys.exit(1)
    if until and seq >= until:
        break

#!/usr/bin/env python3
"""A tickwire client that reconnects and resumes, losing nothing.

The README's reconnecting client as a runnable script (pip install
websockets). It keeps the feed's epoch, the connection's offset and each
key's last seq across reconnects, and asks the server to resume from them.

    python3 resume_client.py ws://127.0.0.1:8080/v1/stream AAPL MSFT
    python3 resume_client.py URL SYM... --until 400 --drop-every 50

With --until N it stops after N ticks and prints, as JSON, the epoch and the
seqs it received per key (tests/python_client.rs checks they are contiguous
and never repeated); --drop-every K closes the connection after every K
ticks, to exercise the resume.
"""
import argparse
import asyncio
import json

import websockets


async def follow(url, symbols, until=None, drop_every=None):
    epoch, offset, seqs = None, 0, {}  # position: kept across reconnects
    received = {}  # every seq per key, for --until's report
    total = 0
    while True:
        try:
            async with websockets.connect(url) as ws:
                json.loads(await ws.recv())  # hello
                sub = {"op": "subscribe", "id": 1, "symbols": list(symbols),
                       "policy": {"trade": "catchup", "quote": "catchup"}}
                if epoch:
                    per_channel = {}
                    for (sym, ch), seq in seqs.items():
                        per_channel.setdefault(ch, {})[sym] = seq
                    sub["resume"] = {"epoch": epoch, "seq": per_channel, "offset": offset}
                    sub["snapshot"] = False
                await ws.send(json.dumps(sub))
                since_connect = 0
                async for raw in ws:
                    m = json.loads(raw)
                    if m["type"] == "subscribed":
                        if epoch and m["epoch"] != epoch:
                            seqs.clear()  # server restarted: a new numbering
                        for k in m.get("resumed", {}).get("keys", []):
                            if not k["recovered"]:
                                print("not recovered:", k, flush=True)
                        epoch, offset = m["epoch"], m["offset"]
                    elif m["type"] in ("trade", "quote"):
                        key = (m["sym"], m["type"])
                        last = seqs.get(key, 0)
                        if not m.get("snap") and last and m["seq"] != last + 1:
                            print("gap", key, last, m["seq"], flush=True)
                        seqs[key] = m["seq"]
                        # ... use the tick ...
                        received.setdefault(f"{key[0]}:{key[1]}", []).append(m["seq"])
                        total += 1
                        since_connect += 1
                        if until and total >= until:
                            return {"epoch": epoch, "seqs": received}
                        if drop_every and since_connect >= drop_every:
                            break  # leave; the next connection resumes
        except (OSError, websockets.ConnectionClosed):
            await asyncio.sleep(0.5)  # then resume where we were


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("symbols", nargs="+")
    p.add_argument("--until", type=int, help="stop after this many ticks and print them")
    p.add_argument("--drop-every", type=int, help="reconnect after every this many ticks")
    a = p.parse_args()
    result = asyncio.run(follow(a.url, a.symbols, a.until, a.drop_every))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

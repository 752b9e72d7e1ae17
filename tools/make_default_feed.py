#!/usr/bin/env python3
"""Build tickwire's bundled default recorded feed, replay-data/default.jsonl.

Source: QuantConnect/Lean sample data (Apache-2.0), originally from AlgoSeek,
US equities on 2013-10-07 (kept under <data>/lean_equity_tick_20131007/):

  <sym>_20131007_trade.zip  (sym = aig, bac, ibm, spy), one header-less CSV:
      ms_since_midnight_NY, price*10000, size, exchange, sale_condition, suspicious
  ibm_20131007_quote.zip, one header-less CSV:
      ms_since_midnight_NY, bid*10000, bid_size, ask*10000, ask_size,
      exchange, condition, suspicious

The window [start, start + minutes) New York time (default 09:30:00.000 up to,
but not including, 09:40:00.000) is converted to one JSON object per line:

  {"type":"trade","sym":"IBM","ts":1381152600123000000,"px":183.5,"qty":100,"side":"N"}
  {"type":"quote","sym":"IBM","ts":...,"bid":183.49,"bsz":300,"ask":183.51,"asz":200}

* ts is UTC nanoseconds since the epoch. 2013-10-07 is EDT (UTC-4), so
  ts = 1381118400 s (2013-10-07T04:00:00Z, NY midnight) * 1e9 + ms * 1e6.
* Prices are converted from the price*10000 integers with integer arithmetic
  only (never float) and written as plain decimals without exponent and
  without trailing zeros (183.5, 100). Sizes are integers.
* Trades carry no aggressor side in Lean data, so side is "N". All sale
  conditions and venues (including the FINRA TRF, "D") are kept. Rows with
  suspicious=1 are skipped and counted.
* Output is merged across symbols in ts order; ties keep a fixed stream
  order (AIG, BAC, IBM trades, IBM quotes, SPY) and file order within a
  stream. Written via a temp file + rename.

Quotes (IBM) -- how the NBBO is derived and how withdrawal is handled
----------------------------------------------------------------------
Every quote row is one-sided: a bid row has ask 0,0 and an ask row has bid
0,0. There is NO row with both sides 0/0 and no row with a zero price and a
non-zero size (or vice versa), so a venue withdrawing a side is never
represented explicitly.

Inspecting the file shows why: apart from the very first row (a lone ask at
04:00:00.054) the rows come in strict pairs, a bid row immediately followed
by an ask row with the same millisecond timestamp (54,533 pairs). Each pair
is a snapshot of the national best bid and offer, and the exchange code on
each row is the venue at the best on that side -- not an independent
per-venue quote update. Venues appear only while they are at the best, so
"a venue withdrew / was bettered" is represented implicitly by the next row
on that side naming a different venue (or price).

Chosen handling (default, --quote-model nbbo): we still keep a per-venue
book per side, but a new row on a side replaces that whole side, i.e. it
implicitly withdraws every other venue's quote on that side (their last
quote is no longer at the national best, so it cannot be assumed to stand).
The best bid is then the highest venue bid with the sizes of venues at that
price summed, the best ask likewise -- which, with one venue per side, is
simply the latest row's price and size.

The literal alternative, --quote-model venue, keeps each venue's last bid
and ask forever (a venue's side changes only when it sends a new row).
With this data that leaves stale levels of venues that have long left the
best in the book: 290 of the 323 quote lines it writes for 09:30-09:40 are
crossed. It is kept only for comparison.

Rows sharing one millisecond timestamp (a bid row and its ask row, or
several snapshots in the same ms) are applied together and the NBBO is
evaluated once per timestamp, so no half-updated bid-of-one-snapshot /
ask-of-the-previous state is ever emitted. Quote rows are processed from the
start of the file (04:00) so the book is warm at the window start, but only
quotes with ts inside the window are written. A quote line is written when
any of bid, bsz, ask, asz differs from the last NBBO state (including one
computed before the window) and both sides exist, so the first quote line
is the first NBBO change at or after the window start. Crossed or locked
states are written as they are in the source and counted on stdout (with the
default model, 09:30-09:40: 3 crossed, 1 locked, all by one cent and lasting
milliseconds).

Usage: python3 tools/make_default_feed.py [--data DIR] [--out FILE]
                                          [--start HH:MM] [--minutes N]
"""

import argparse
import csv
import heapq
import io
import os
import sys
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATE = "20131007"
SUBDIR = "lean_equity_tick_20131007"
NY_MIDNIGHT_UTC_S = 1381118400  # 2013-10-07T04:00:00Z (EDT, UTC-4)
TRADE_SYMS = ["AIG", "BAC", "IBM", "SPY"]
QUOTE_SYM = "IBM"
MAX_BYTES = 3 * 1024 * 1024


def fmt_px(p10k: int) -> str:
    """price*10000 integer -> exact plain decimal string, no trailing zeros."""
    if p10k < 0:
        return "-" + fmt_px(-p10k)
    whole, frac = divmod(p10k, 10000)
    if frac == 0:
        return str(whole)
    return f"{whole}.{frac:04d}".rstrip("0")


def ts_ns(ms: int) -> int:
    return NY_MIDNIGHT_UTC_S * 1_000_000_000 + ms * 1_000_000


def read_zip_csv(path: Path):
    with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if not n.endswith("/")]
        if len(names) != 1:
            sys.exit(f"{path}: expected exactly one file, found {names}")
        with z.open(names[0]) as f:
            yield from csv.reader(io.TextIOWrapper(f, encoding="ascii", newline=""))


def trade_lines(path: Path, sym: str, lo_ms: int, hi_ms: int, stats: Counter):
    for row in read_zip_csv(path):
        if not row:
            continue
        ms, px, size, _ex, _cond, susp = row
        ms = int(ms)
        if not lo_ms <= ms < hi_ms:
            continue
        if susp.strip() == "1":
            stats[("suspicious", sym, "trade")] += 1
            continue
        line = (
            f'{{"type":"trade","sym":"{sym}","ts":{ts_ns(ms)},'
            f'"px":{fmt_px(int(px))},"qty":{int(size)},"side":"N"}}'
        )
        yield ts_ns(ms), line


def best(side: dict, higher: bool):
    """side: venue -> (px, size). Returns (best px, summed size) or None."""
    if not side:
        return None
    px = max(p for p, _ in side.values()) if higher else min(p for p, _ in side.values())
    return px, sum(s for p, s in side.values() if p == px)


def quote_lines(path: Path, sym: str, lo_ms: int, hi_ms: int, model: str, stats: Counter):
    bids: dict = {}
    asks: dict = {}
    last = None  # last NBBO state (bid, bsz, ask, asz)

    def flush(ms):
        nonlocal last
        bb, ba = best(bids, True), best(asks, False)
        if bb is None or ba is None:
            return None
        state = (bb[0], bb[1], ba[0], ba[1])
        if state == last:
            return None
        last = state
        if not lo_ms <= ms < hi_ms:
            return None
        if state[0] > state[2]:
            stats[("crossed", sym, "quote")] += 1
        elif state[0] == state[2]:
            stats[("locked", sym, "quote")] += 1
        return ts_ns(ms), (
            f'{{"type":"quote","sym":"{sym}","ts":{ts_ns(ms)},'
            f'"bid":{fmt_px(state[0])},"bsz":{state[1]},'
            f'"ask":{fmt_px(state[2])},"asz":{state[3]}}}'
        )

    cur_ms = None
    for row in read_zip_csv(path):
        if not row:
            continue
        ms, bpx, bsz, apx, asz, venue, _cond, susp = row
        ms, bpx, bsz, apx, asz = int(ms), int(bpx), int(bsz), int(apx), int(asz)
        if ms >= hi_ms:
            break
        if cur_ms is not None and ms != cur_ms:
            out = flush(cur_ms)
            if out:
                yield out
        cur_ms = ms
        if susp.strip() == "1":
            if lo_ms <= ms < hi_ms:
                stats[("suspicious", sym, "quote")] += 1
            continue
        if bpx > 0 and bsz > 0 and apx == 0 and asz == 0:
            side, px, size = bids, bpx, bsz
        elif apx > 0 and asz > 0 and bpx == 0 and bsz == 0:
            side, px, size = asks, apx, asz
        else:
            # never happens in the 2013-10-07 file; refuse to guess
            stats[("unexpected_row", sym, "quote")] += 1
            continue
        if model == "nbbo":
            side.clear()  # new snapshot of this side: other venues are no longer at the best
        side[venue] = (px, size)
    if cur_ms is not None and cur_ms < hi_ms:
        out = flush(cur_ms)
        if out:
            yield out


def parse_hhmm(s: str) -> int:
    h, m = s.split(":")
    h, m = int(h), int(m)
    if not (0 <= h < 24 and 0 <= m < 60):
        raise argparse.ArgumentTypeError(f"bad time {s!r}")
    return (h * 60 + m) * 60_000


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data",
                    help="data directory (containing lean_equity_tick_20131007/)")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "replay-data" / "default.jsonl")
    ap.add_argument("--start", type=parse_hhmm, default=parse_hhmm("09:30"),
                    help="window start, New York time HH:MM (default 09:30)")
    ap.add_argument("--minutes", type=int, default=10, help="window length (default 10)")
    ap.add_argument("--quote-model", choices=["nbbo", "venue"], default="nbbo",
                    help="how quote rows update the book (see docstring; default nbbo)")
    a = ap.parse_args(argv)
    if a.minutes <= 0:
        ap.error("--minutes must be positive")

    src = a.data / SUBDIR if (a.data / SUBDIR).is_dir() else a.data
    lo_ms, hi_ms = a.start, a.start + a.minutes * 60_000
    stats: Counter = Counter()

    streams = []
    for sym in TRADE_SYMS:
        streams.append(trade_lines(src / f"{sym.lower()}_{DATE}_trade.zip", sym, lo_ms, hi_ms, stats))
        if sym == QUOTE_SYM:
            streams.append(quote_lines(src / f"{sym.lower()}_{DATE}_quote.zip", sym,
                                       lo_ms, hi_ms, a.quote_model, stats))

    a.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=a.out.name + ".", suffix=".tmp", dir=a.out.parent)
    counts: Counter = Counter()
    total = nbytes = 0
    last_ts = None
    try:
        with os.fdopen(fd, "w", encoding="ascii", newline="\n") as f:
            for ts, line in heapq.merge(*streams, key=lambda x: x[0]):
                assert last_ts is None or ts >= last_ts
                last_ts = ts
                kind = "trade" if line.startswith('{"type":"trade"') else "quote"
                sym = line.split('"sym":"', 1)[1].split('"', 1)[0]
                counts[(sym, kind)] += 1
                total += 1
                f.write(line + "\n")
                nbytes += len(line) + 1
        os.chmod(tmp, 0o644)
        os.replace(tmp, a.out)
    except BaseException:
        os.unlink(tmp)
        raise

    fmt = lambda ms: f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"
    print(f"window {fmt(lo_ms)} <= t < {fmt(hi_ms)} New York, 2013-10-07 (quote model: {a.quote_model})")
    for (sym, kind), n in sorted(counts.items()):
        print(f"  {sym:4} {kind:5} {n:7d}")
    susp = sum(n for (k, _, _), n in stats.items() if k == "suspicious")
    print(f"  suspicious rows skipped in window: {susp}"
          + "".join(f" ({s} {t}: {n})" for (k, s, t), n in sorted(stats.items()) if k == "suspicious"))
    for k in ("crossed", "locked", "unexpected_row"):
        n = sum(v for (kk, _, _), v in stats.items() if kk == k)
        if n:
            print(f"  {k} quote states/rows: {n}")
    print(f"  total {total} lines, {nbytes} bytes -> {a.out}")
    if nbytes > MAX_BYTES:
        print(f"WARNING: output exceeds {MAX_BYTES} bytes; use a shorter --minutes", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

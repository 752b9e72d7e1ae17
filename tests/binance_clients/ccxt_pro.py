"""ccxt pro's binance, unmodified, pointed at tickwire's Binance endpoint by
configuration only (`urls` overridden, `options`).

Usage: ccxt_pro.py HTTP_BASE WS_BASE
Prints "ready" once its markets are loaded and its watches started, reads
"done TRADES BOOK_SEQ" on stdin when the replay is over, and prints one JSON
line: every trade watch_trades gave (BTC/USDT) and watch_order_book's book
(ESM4/USD, built by ccxt from the REST snapshot and depth diffs)."""
import asyncio
import json
import sys

import ccxt.pro


async def main():
    http_base, ws_base = sys.argv[1:3]
    ws = ws_base + "/ws"
    exchange = ccxt.pro.binance({
        "urls": {"api": {"public": http_base + "/api/v3", "ws": {"spot": ws, "margin": ws}}},
        "options": {
            "fetchMarkets": ["spot"],
            # Keep every trade of the replay, not only the newest 1,000.
            "tradesLimit": 100_000,
            "watchOrderBookLimit": 5000,
        },
    })
    await exchange.load_markets()
    trades = {}
    latest = {}

    async def watch_trades():
        while True:
            for t in await exchange.watch_trades("BTC/USDT"):
                trades[int(t["id"])] = [repr(t["price"]), repr(t["amount"]), t["timestamp"], t["side"]]

    async def watch_book():
        while True:
            latest["ob"] = await exchange.watch_order_book("ESM4/USD")

    tasks = [asyncio.ensure_future(c) for c in (watch_trades(), watch_book())]
    print("ready", flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    _, n_trades, seq = line.split()
    n_trades, seq = int(n_trades), int(seq)

    def complete():
        ob = latest.get("ob")
        return len(trades) >= n_trades and ob is not None and (ob["nonce"] or 0) >= seq

    for _ in range(1200):
        if complete() or any(t.done() for t in tasks):
            break
        await asyncio.sleep(0.05)
    for t in tasks:
        if t.done() and t.exception():
            raise t.exception()
    if not complete():
        ob = latest.get("ob")
        print(f"incomplete: {len(trades)} trades, book at {ob and ob['nonce']}, waiting for {n_trades} {seq}", file=sys.stderr)
    ob = latest["ob"]
    book = {
        "bids": [[repr(p), repr(q)] for p, q in ob["bids"]],
        "asks": [[repr(p), repr(q)] for p, q in ob["asks"]],
        "nonce": ob["nonce"],
    }
    for t in tasks:
        t.cancel()
    await exchange.close()
    ordered = [trades[k] for k in sorted(trades)]
    print(json.dumps({"trades": ordered, "book": book}), flush=True)


asyncio.run(main())

"""ccxt pro's binance, unmodified, pointed at tickwire's Binance endpoint by
configuration only (`urls` overridden, `options`): watch_ohlcv (1m).

Usage: ccxt_ohlcv.py HTTP_BASE WS_BASE
Prints "ready" once its markets are loaded and its watch started, reads
"done LAST_OPEN_MS" on stdin when the replay is over, watches until a
candle opening at LAST_OPEN_MS came, and prints one JSON line: the latest
state ccxt gave of every candle ([t, o, h, l, c, v], numbers as repr)."""
import asyncio
import json
import sys

import ccxt.pro


async def main():
    http_base, ws_base = sys.argv[1:3]
    ws = ws_base + "/ws"
    exchange = ccxt.pro.binance({
        "urls": {"api": {"public": http_base + "/api/v3", "ws": {"spot": ws, "margin": ws}}},
        "options": {"fetchMarkets": ["spot"]},
    })
    await exchange.load_markets()
    candles = {}
    target = {}

    async def watch():
        while "last" not in target or target["last"] not in candles:
            for c in await exchange.watch_ohlcv("BTC/USDT", "1m"):
                candles[c[0]] = [c[0]] + [repr(x) for x in c[1:6]]

    task = asyncio.ensure_future(watch())
    print("ready", flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    target["last"] = int(line.split()[1])
    for _ in range(1200):
        if task.done() or target["last"] in candles:
            break
        await asyncio.sleep(0.05)
    if task.done() and task.exception():
        raise task.exception()
    task.cancel()
    await exchange.close()
    print(json.dumps({"candles": [candles[t] for t in sorted(candles)]}), flush=True)


asyncio.run(main())

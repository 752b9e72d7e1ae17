"""python-binance, unmodified, pointed at tickwire's Binance endpoint by its
base URL attributes only: BinanceSocketManager.kline_socket (1m).

Usage: python_binance_klines.py HTTP_BASE WS_BASE SYMBOL
Prints "ready" once its socket is open, reads "done LAST_OPEN_MS" on stdin
when the replay is over, receives until a kline opening at LAST_OPEN_MS
came (every earlier bar's close came before it), and prints one JSON line:
every closed kline (`"x": true`) as Binance's fields, as received."""
import asyncio
import json
import sys

from binance import AsyncClient, BinanceSocketManager


async def main():
    http_base, ws_base, symbol = sys.argv[1:4]
    client = AsyncClient()
    client.API_URL = http_base + "/api"
    bm = BinanceSocketManager(client, max_queue_size=100_000)
    bm.STREAM_URL = ws_base + "/"
    closed = []
    async with bm.kline_socket(symbol, interval=AsyncClient.KLINE_INTERVAL_1MINUTE) as sock:
        print("ready", flush=True)
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        last_open = int(line.split()[1])
        while True:
            m = await asyncio.wait_for(sock.recv(), 60)
            if m.get("e") == "error":
                raise RuntimeError(m)
            k = m["k"]
            if k["x"]:
                closed.append([k[f] for f in ("t", "T", "s", "i", "f", "L", "o", "h", "l", "c", "v", "n", "q", "V", "Q")])
            if k["t"] >= last_open:
                break
    await client.close_connection()
    print(json.dumps({"closed": closed}), flush=True)


asyncio.run(main())

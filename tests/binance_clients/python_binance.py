"""python-binance, unmodified, pointed at tickwire's Binance endpoint by its
base URL attributes only (AsyncClient.API_URL, BinanceSocketManager.STREAM_URL).

Usage: python_binance.py HTTP_BASE WS_BASE TRADE_SYMBOL BOOK_SYMBOL
Prints "ready" once its sockets are open, reads "done TRADES QUOTES BOOK_SEQ"
on stdin when the replay is over, and prints one JSON line with what it got:
every trade (trade socket), every bookTicker (multiplex socket), and its
DepthCacheManager's book (REST snapshot + depth socket diffs)."""
import asyncio
import json
import sys
from decimal import Decimal

from binance import AsyncClient, BinanceSocketManager, DepthCacheManager


async def main():
    http_base, ws_base, trade_symbol, book_symbol = sys.argv[1:5]
    client = AsyncClient()
    client.API_URL = http_base + "/api"
    # A replay bursts faster than the default 100-message queue drains.
    bm = BinanceSocketManager(client, max_queue_size=100_000)
    bm.STREAM_URL = ws_base + "/"
    trades, tickers = [], []
    target = {}
    done = asyncio.Event()
    dcm = DepthCacheManager(client, book_symbol, bm=bm, limit=5000, conv_type=Decimal)

    async def drain(sock, satisfied, keep):
        """Receives until `done` and `satisfied()`; a pending recv is never
        cancelled mid-message (the depth cache applies as it receives)."""
        pending = None
        while not (done.is_set() and satisfied()):
            pending = pending or asyncio.ensure_future(sock.recv())
            waiter = asyncio.ensure_future(done.wait())
            finished, _ = await asyncio.wait({pending, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if pending in finished:
                keep(pending.result())
                pending = None
        if pending:
            pending.cancel()

    def keep_trade(m):
        trades.append([m["p"], m["q"], m["T"], m["m"], m["s"], m["e"]])

    def keep_ticker(m):
        d = m["data"]
        tickers.append([m["stream"], d["u"], d["s"], d["b"], d["B"], d["a"], d["A"]])

    def read_trades(sock):
        return drain(sock, lambda: len(trades) >= target["trades"], keep_trade)

    def read_tickers(sock):
        return drain(sock, lambda: len(tickers) >= target["quotes"], keep_ticker)

    def read_book(sock):
        return drain(sock, lambda: (dcm._last_update_id or 0) >= target["seq"], lambda _: None)

    async def wait_done():
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        _, n_trades, n_quotes, seq = line.split()
        target.update(trades=int(n_trades), quotes=int(n_quotes), seq=int(seq))
        done.set()

    ts = bm.trade_socket(trade_symbol)
    ms = bm.multiplex_socket([trade_symbol.lower() + "@bookTicker"])
    async with ts as t, ms as m, dcm as d:
        print("ready", flush=True)
        try:
            await asyncio.wait_for(
                asyncio.gather(read_trades(t), read_tickers(m), read_book(d), wait_done()), 60
            )
        except TimeoutError:
            print(
                f"timed out: {len(trades)} trades, {len(tickers)} tickers, "
                f"book at {dcm._last_update_id}, waiting for {target}",
                file=sys.stderr,
            )
            raise
        cache = dcm.get_depth_cache()
    book = {
        "bids": [[str(p), str(q)] for p, q in cache.get_bids()],
        "asks": [[str(p), str(q)] for p, q in cache.get_asks()],
        "last_update_id": dcm._last_update_id,
    }
    print(json.dumps({"trades": trades, "tickers": tickers, "book": book}), flush=True)
    await client.close_connection()


asyncio.run(main())

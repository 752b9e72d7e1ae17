"""cryptofeed, unmodified: a `Binance` feed subclass whose only change is its
endpoints (class attributes), with TRADES (aggTrade), TICKER (bookTicker)
and L2_BOOK (REST snapshot + depth@100ms diffs).

Usage: cryptofeed_feed.py HTTP_BASE WS_BASE
Prints "ready" once the feed runs, reads "done TRADES QUOTES BOOK_SEQ" on
stdin when the replay is over, and prints one JSON line: every trade and
ticker, and cryptofeed's own book of ESM4."""
import asyncio
import json
import os
import sys

from cryptofeed import FeedHandler
from cryptofeed.connection import RestEndpoint, Routes, WebsocketEndpoint
from cryptofeed.defines import L2_BOOK, TICKER, TRADES
from cryptofeed.exchanges import Binance

HTTP_BASE, WS_BASE = sys.argv[1:3]


class TickwireBinance(Binance):
    websocket_endpoints = [WebsocketEndpoint(WS_BASE)]
    rest_endpoints = [
        RestEndpoint(
            HTTP_BASE,
            routes=Routes(
                "/api/v3/exchangeInfo",
                l2book="/api/v3/depth?symbol={}&limit={}",
                authentication="/api/v3/userDataStream",
            ),
        )
    ]


trades, tickers, book = [], [], {}


async def on_trade(t, _receipt):
    trades.append([str(t.price), str(t.amount), t.side, t.symbol])


async def on_ticker(t, _receipt):
    tickers.append([str(t.bid), str(t.ask), t.symbol])


async def on_book(b, _receipt):
    book["seq"] = b.sequence_number
    book["book"] = b.book


async def finish():
    print("ready", flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    _, n_trades, n_quotes, seq = line.split()
    for _ in range(1200):
        if len(trades) >= int(n_trades) and len(tickers) >= int(n_quotes) and (book.get("seq") or 0) >= int(seq):
            break
        await asyncio.sleep(0.05)
    b = book["book"]
    out = {
        "trades": trades,
        "tickers": tickers,
        "book": {
            "seq": book.get("seq"),
            "bids": [[str(p), str(q)] for p, q in b.bids.to_dict().items()],
            "asks": [[str(p), str(q)] for p, q in b.asks.to_dict().items()],
        },
    }
    print(json.dumps(out), flush=True)
    # cryptofeed has no "stop after this" call; the test is over.
    os._exit(0)


def main():
    fh = FeedHandler()
    fh.add_feed(TickwireBinance(symbols=["BTC-USDT"], channels=[TRADES, TICKER], callbacks={TRADES: on_trade, TICKER: on_ticker}))
    fh.add_feed(TickwireBinance(symbols=["ESM4-USD"], channels=[L2_BOOK], callbacks={L2_BOOK: on_book}))
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    fh.run(start_loop=False, install_signal_handlers=False)
    loop.create_task(finish())
    loop.run_forever()


main()

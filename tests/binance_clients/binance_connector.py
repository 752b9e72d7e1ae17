"""Binance's official connector (binance-connector), unmodified: its
WebSocket stream client with a custom stream_url (combined, microseconds)
and its REST client with a custom base_url.

Usage: binance_connector.py HTTP_BASE WS_BASE
Prints "ready" once subscribed, reads "done TRADES QUOTES BOOK_SEQ" on stdin when
the replay is over, and prints one JSON line: every trade and bookTicker
event it got, and the REST depth snapshot of ESM4 (once it is at BOOK_SEQ)."""
import json
import sys
import threading
import time

from binance.spot import Spot
from binance.websocket.spot.websocket_stream import SpotWebsocketStreamClient


def main():
    http_base, ws_base = sys.argv[1:3]
    trades, tickers, replies = [], [], []
    lock = threading.Lock()

    def on_message(_, text):
        m = json.loads(text)
        with lock:
            if "stream" not in m:
                replies.append(m)
            elif m["stream"].endswith("@trade"):
                d = m["data"]
                trades.append([d["p"], d["q"], d["T"], d["m"]])
            elif m["stream"].endswith("@bookTicker"):
                d = m["data"]
                tickers.append([d["u"], d["b"], d["B"], d["a"], d["A"]])

    ws = SpotWebsocketStreamClient(
        stream_url=ws_base, on_message=on_message, is_combined=True, time_unit="MICROSECOND"
    )
    ws.trade(symbol="btcusdt", id=1)
    ws.book_ticker(symbol="btcusdt", id="bt-2")
    print("ready", flush=True)
    _, n_trades, n_quotes, book_seq = sys.stdin.readline().split()
    for _ in range(1200):
        with lock:
            if len(trades) >= int(n_trades) and len(tickers) >= int(n_quotes):
                break
        time.sleep(0.05)
    # /api/v3/depth is the book as of the last 100 ms depth flush: ask until
    # it has caught up with the book's last update.
    for _ in range(100):
        depth = Spot(base_url=http_base).depth("ESM4", limit=5000)
        if depth["lastUpdateId"] >= int(book_seq):
            break
        time.sleep(0.05)
    ws.stop()
    with lock:
        print(json.dumps({"trades": trades, "tickers": tickers, "replies": replies, "depth": depth}), flush=True)


main()

#!/bin/bash
# User-space instructions per delivery of a tickwire server, counted by
# callgrind over a fixed light load (load-independent, unlike CPU time).
#
#   tools/callgrind-per-delivery.sh BINARY PORT OUT [RATE] [PROTOCOL]
#
# Starts BINARY `serve --no-feed --workers 1` under callgrind on PORT, runs
# `tickwire bench` (100 clients × 10 of 100 symbols, RATE ticks/s, default
# 200 so that the slowed-down server keeps up at ~1 delivery per write),
# zeroes the counters 7 s in, dumps them 6 s later, and prints the
# instructions per delivery between the two (deliveries from /metrics).
# PROTOCOL `binance` (default `tickwire`) puts the subscribers on the
# server's Binance endpoint (`--binance-listen` on PORT+1, docs/BINANCE.md),
# which /metrics does not count: its deliveries are the load's, RATE × 10
# subscribers per tick × 6 s, which the bench's own report confirms (no
# tick missing). The main endpoint's are printed both ways.
# Needs valgrind, curl, and target/release/tickwire built (for the runner).
set -euo pipefail
BIN=$1; PORT=$2; OUT=$3; RATE=${4:-200}; PROTOCOL=${5:-tickwire}
RUNNER=$(dirname "$0")/../target/release/tickwire
SERVE_EXTRA=(); BENCH_EXTRA=()
if [ "$PROTOCOL" = binance ]; then
    SERVE_EXTRA=(--binance-listen 127.0.0.1:$((PORT + 1)))
    BENCH_EXTRA=(--protocol binance --binance-url ws://127.0.0.1:$((PORT + 1)))
fi
rm -f "$OUT".cg.*
valgrind --tool=callgrind --compress-strings=no --compress-pos=no \
    --callgrind-out-file="$OUT".cg.%p "$BIN" serve --no-feed --workers 1 \
    --listen 127.0.0.1:"$PORT" --max-connections 100000 --max-connections-per-ip 100000 \
    "${SERVE_EXTRA[@]}" > "$OUT".server.log 2>&1 &
VP=$!
sleep 8
deliveries() {
    curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^tickwire_tick_deliveries_total/ {print $2}'
}
"$RUNNER" bench --url ws://127.0.0.1:"$PORT" --per-client 10 --symbols 100 --clients 100 \
    --rate "$RATE" --seconds 14 --drain 2 "${BENCH_EXTRA[@]}" > "$OUT".bench.txt 2>&1 &
BP=$!
sleep 7
callgrind_control -z $VP > /dev/null
D1=$(deliveries)
sleep 6
D2=$(deliveries)
callgrind_control -d $VP > /dev/null
wait $BP || true
kill -INT $VP
wait $VP || true
IR=$(grep -h '^summary:' "$OUT".cg.$VP.1 | awk '{print $2}')
LOAD=$((RATE * 10 * 6))
grep -h 'delivered' "$OUT".bench.txt | head -1
if [ "$PROTOCOL" = binance ]; then
    echo "instructions $IR over $LOAD deliveries (the load's): $((IR / LOAD)) per delivery"
else
    echo "instructions $IR over $((D2 - D1)) deliveries (/metrics): $((IR / (D2 - D1))) per delivery; over the load's $LOAD: $((IR / LOAD))"
fi

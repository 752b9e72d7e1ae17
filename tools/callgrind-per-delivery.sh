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
# CLIENTS (environment, default 100) changes the subscriber count: with
# 1000 and RATE 20 the working set is S1's (each tick reaches ~100
# clients) at the same deliveries/s. CACHE_SIM=1 adds callgrind's cache
# simulation, its last level sized as one core's 1 MiB L2 here, and prints
# data-cache misses per delivery at both levels (D1: lines touched; LL:
# lines that would come from L3 or memory): what instruction counts do
# not show, and what dominates the fan-out's cost at S1.
# Needs valgrind, curl, and target/release/tickwire built (for the runner).
set -euo pipefail
BIN=$1; PORT=$2; OUT=$3; RATE=${4:-200}; PROTOCOL=${5:-tickwire}
CLIENTS=${CLIENTS:-100}
CACHE=(); [ "${CACHE_SIM:-0}" = 1 ] && CACHE=(--cache-sim=yes --LL=1048576,16,64)
RUNNER=$(dirname "$0")/../target/release/tickwire
SERVE_EXTRA=(); BENCH_EXTRA=()
if [ "$PROTOCOL" = binance ]; then
    SERVE_EXTRA=(--binance-listen 127.0.0.1:$((PORT + 1)))
    BENCH_EXTRA=(--protocol binance --binance-url ws://127.0.0.1:$((PORT + 1)))
fi
rm -f "$OUT".cg.*
valgrind --tool=callgrind "${CACHE[@]}" --compress-strings=no --compress-pos=no \
    --callgrind-out-file="$OUT".cg.%p "$BIN" serve --no-feed --workers 1 \
    --listen 127.0.0.1:"$PORT" --max-connections 100000 --max-connections-per-ip 100000 \
    "${SERVE_EXTRA[@]}" > "$OUT".server.log 2>&1 &
VP=$!
sleep 8
deliveries() {
    curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^tickwire_tick_deliveries_total/ {print $2}'
}
"$RUNNER" bench --url ws://127.0.0.1:"$PORT" --per-client 10 --symbols 100 --clients "$CLIENTS" \
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
# Each tick reaches CLIENTS × 10 / 100 subscribers (10 of 100 symbols each).
LOAD=$((RATE * CLIENTS / 10 * 6))
grep -h 'delivered' "$OUT".bench.txt | head -1
if [ "$PROTOCOL" = binance ]; then
    echo "instructions $IR over $LOAD deliveries (the load's): $((IR / LOAD)) per delivery"
else
    echo "instructions $IR over $((D2 - D1)) deliveries (/metrics): $((IR / (D2 - D1))) per delivery; over the load's $LOAD: $((IR / LOAD))"
fi
if [ "${CACHE_SIM:-0}" = 1 ]; then
    # events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
    MISSES=$(grep -h '^summary:' "$OUT".cg.$VP.1 | awk '{print $6 + $7}')
    LLMISSES=$(grep -h '^summary:' "$OUT".cg.$VP.1 | awk '{print $9 + $10}')
    DEL=$((D2 - D1)); [ "$PROTOCOL" = binance ] && DEL=$LOAD
    echo "data-cache misses over $DEL deliveries: D1 $MISSES ($(awk "BEGIN {printf \"%.1f\", $MISSES / $DEL}") per delivery), LL $LLMISSES ($(awk "BEGIN {printf \"%.2f\", $LLMISSES / $DEL}") per delivery)"
fi

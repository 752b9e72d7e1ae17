#!/bin/bash
# Instruction counts of the book and trades phases of `tickwire bench --book`
# (benches/README.md, "Where a book update cost more than a trade"): the
# server runs under callgrind and is dumped every 0.5 s; after each dump the
# runner scrapes /metrics, so each dump's instructions line up with the
# ticks it sequenced and delivered. Load independent (unlike CPU seconds):
# run it for two builds and compare with summarize.py.
#
#   benches/book_callgrind/run.sh BINARY OUT_DIR [BENCH FLAGS...]
#   python3 benches/book_callgrind/summarize.py OUT_DIR
#
# BINARY is a tickwire built with `cargo build --release`. The load comes
# from the tickwire-bench beside it, or from $RUNNER (to drive two builds'
# servers with one runner). BENCH FLAGS are added to the runner's (e.g.
# `--book-levels 10`, `--book-depth full`). Needs valgrind
# (callgrind_control) and curl.
set -euo pipefail
BIN=$1
D=$2
shift 2
RUNNER=${RUNNER:-$(dirname "$BIN")/tickwire-bench}
rm -rf "$D"
mkdir -p "$D"
RUST_LOG=warn valgrind --tool=callgrind --dump-instr=no --callgrind-out-file="$D/cg.out.%p" \
  "$BIN" serve --listen 127.0.0.1:0 --no-feed --addr-file "$D/addr" --evict-after 1h \
  --workers 2 --max-connections-per-ip 1000 >"$D/server.log" 2>&1 &
VP=$!
while [ ! -s "$D/addr" ]; do sleep 0.5; done
ADDR=$(cat "$D/addr")
# A small fixed load: 5 book subscribers per symbol as in the README's run.
"$RUNNER" --book --url "ws://$ADDR" --server-pid $VP --clients 100 --symbols 20 \
  --rate 300 --slow 0 --per-client 1 --seconds 6 --warmup 0.5 --out "$D/res" --quiet "$@" \
  >"$D/bench.txt" 2>&1 &
BP=$!
i=0
while kill -0 $BP 2>/dev/null; do
  sleep 0.5
  callgrind_control -d $VP >/dev/null 2>&1 || true
  curl -s "http://$ADDR/metrics" |
    grep -E "^tickwire_(ticks_out_total|bytes_out_total|ticks_in_total|connections_opened_total|tick_writes_total|tick_deliveries_total|book_unchanged_total)" |
    awk -v t=$i '{split($1,a,"{"); s[a[1]]+=$NF} END{printf "%d", t; for(k in s) printf " %s=%d", k, s[k]; print ""}' \
    >>"$D/metrics.txt"
  i=$((i+1))
done
kill -INT $VP
wait $VP || true
cat "$D/bench.txt"

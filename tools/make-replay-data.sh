#!/usr/bin/env bash
# Regenerates the bundled recordings in replay-data/ from the real vendor
# files bundled in tests/data, with tickwire's own importer. Deterministic.
# Usage: tools/make-replay-data.sh [DATA_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-tests/data}"
lean="$data/lean_equity_tick_20131007"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"
cargo build --release --quiet
tw=target/release/tickwire

# The first 30 minutes of the regular session (09:30-10:00 New York, EDT).
# Input order fixes the order of ticks with equal timestamps.
"$tw" import --from lean \
  "$lean/aig_20131007_trade.zip" "$lean/bac_20131007_trade.zip" \
  "$lean/ibm_20131007_trade.zip" "$lean/ibm_20131007_quote.zip" \
  "$lean/spy_20131007_trade.zip" \
  --start '2013-10-07T09:30[America/New_York]' \
  --end '2013-10-07T10:00[America/New_York]' \
  --out replay-data/us-equities-20131007-open30.twr.zst

"$tw" import --from tardis \
  "$data/tardis_binance-futures_BTCUSDT_20200222_trades.csv" \
  "$data/tardis_binance-futures_BTCUSDT_20200222_quotes.csv" \
  --out replay-data/btcusdt-20200222.twr.zst

# An order book: CME ESM4 market-by-order, rebuilt per Databento's semantics
# and written as book records (format version 2) and trades.
"$tw" import --from dbn \
  "$data/glbx-mdp3_orderbooks_mbo_20240508T000000-000002.dbn.zst" \
  --out replay-data/esm4-mbo-20240508.twr.zst

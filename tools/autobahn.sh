#!/usr/bin/env bash
# Autobahn WebSocket fuzzing cases 1-10 (kosoku's fuzzingclient) against
# tickwire's own framing stack, through `serve --echo-listen`.
# Cases 12-13 (permessage-deflate) are excluded: tickwire does not offer it.
#
# Prints counts by status and every failing case id; exits non-zero if any
# case is not OK, NON-STRICT or INFORMATIONAL (or UNIMPLEMENTED, which only
# compression cases report), or if a case is missing from the report.
#
# Environment: TICKWIRE_BIN (default target/debug/tickwire, built if absent),
# AUTOBAHN_OUT (report directory, default target/autobahn),
# AUTOBAHN_PARALLELISM (default 2), AUTOBAHN_CASES (space-separated include
# globs, default "*").
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${TICKWIRE_BIN:-target/debug/tickwire}
out=${AUTOBAHN_OUT:-target/autobahn}
par=${AUTOBAHN_PARALLELISM:-2}
cases=${AUTOBAHN_CASES:-*}

if ! command -v kosoku >/dev/null; then
    python3 -m pip install --quiet kosoku==0.1.0
fi
[[ -x $bin ]] || cargo build --quiet

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
"$bin" serve --listen 127.0.0.1:0 --no-feed --workers 2 \
    --echo-listen "127.0.0.1:$port" 2>"$log" &
server=$!
cleanup() {
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    rm -f "$log"
}
trap cleanup EXIT

for _ in $(seq 100); do
    if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
        break
    fi
    if ! kill -0 "$server" 2>/dev/null; then
        echo "autobahn: tickwire exited early:" >&2
        cat "$log" >&2
        exit 1
    fi
    sleep 0.1
done

includes=()
set -f # the case globs are kosoku's, not the shell's
for c in $cases; do includes+=(-i "$c"); done
set +f
rm -rf "$out"
start=$(date +%s)
# kosoku exits 1 when a case fails; the report below says which and why.
kosoku -m fuzzingclient -p "$par" "${includes[@]}" -x '12.*' -x '13.*' \
    -o "$out" "127.0.0.1:$port" >"$out.log" 2>&1 || true
echo "autobahn: kosoku ran in $(($(date +%s) - start)) s (log: $out.log)"

if ! kill -0 "$server" 2>/dev/null; then
    echo "autobahn: tickwire died during the run:" >&2
    tail -50 "$log" >&2
    exit 1
fi

python3 - "$out/index.json" <<'PY'
import collections, json, sys

path = sys.argv[1]
try:
    with open(path) as f:
        index = json.load(f)
except (OSError, ValueError) as e:
    sys.exit(f"autobahn: no usable report at {path}: {e}")

passing = {"OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"}
counts = collections.Counter()
failed = []
total = 0
for agent, results in index.items():
    for case, r in results.items():
        total += 1
        status = r.get("behavior", "MISSING")
        close = r.get("behaviorClose", "MISSING")
        counts[status] += 1
        if status not in passing or close not in passing:
            failed.append((case, status, close, r.get("remoteCloseCode")))

def key(case):
    return [int(p) if p.isdigit() else p for p in case[0].split(".")]

print("autobahn: %d cases: %s" % (total, ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))))
if total == 0:
    sys.exit("autobahn: the report holds no case")
for case, status, close, code in sorted(failed, key=key):
    print(f"autobahn: FAILED {case}: behavior {status}, close {close}, remote close code {code}")
if failed:
    sys.exit(f"autobahn: {len(failed)} failing case(s)")
print("autobahn: all passing")
PY

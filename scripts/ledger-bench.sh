#!/usr/bin/env bash
# Ledger throughput on three validators over loopback, as recorded in BENCHMARKS.md.
#
#   scripts/ledger-bench.sh [clients] [seconds] [max_payload_entries] [entries per request]
#
# Builds the release binary, creates three node identities in a temporary directory,
# starts three validators on 127.0.0.1, waits for a leader, runs
# `x0tta6bl4 ledger bench` through all three APIs, and stops the nodes.
# max_payload_entries = 1 turns off batching in replication.
set -euo pipefail

clients=${1:-32}
seconds=${2:-10}
batch=${3:-64}
per_request=${4:-1}

cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=$PWD/target/release/x0tta6bl4
dir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

ids=()
for n in 1 2 3; do
    ids+=("$("$bin" keygen --out "$dir/v$n" | sed -n 's/^node id: //p')")
done
validators=$(printf '"%s", ' "${ids[@]}")
validators="[${validators%, }]"

for n in 1 2 3; do
    p2p=$((47100 + n))
    api=$((47200 + n))
    bootstrap='[]'
    if [ "$n" != 1 ]; then bootstrap='["/ip4/127.0.0.1/tcp/47101"]'; fi
    cat > "$dir/v$n.toml" <<TOML
[node]
name = "v$n"
data_dir = "v$n"

[network]
listen = ["/ip4/127.0.0.1/tcp/$p2p"]
bootstrap = $bootstrap

[api]
listen = "127.0.0.1:$api"

[ledger]
validators = $validators
max_payload_entries = $batch
TOML
    RUST_LOG=warn,openraft=error "$bin" node --config "$dir/v$n.toml" > "$dir/v$n.log" 2>&1 &
    pids+=($!)
done

for _ in $(seq 1 120); do
    if "$bin" ledger status --api 127.0.0.1:47201 --json 2>/dev/null | grep -q '"leader":"'; then
        break
    fi
    sleep 0.5
done

[ -n "${PROFILE:-}" ] && (sleep 3; perf record -F 499 -g -p "${pids[0]}" -o "$PROFILE" -- sleep 5 >/dev/null 2>&1) &
"$bin" ledger bench --api 127.0.0.1:47201,127.0.0.1:47202,127.0.0.1:47203 \
    --clients "$clients" --seconds "$seconds" --batch "$per_request"

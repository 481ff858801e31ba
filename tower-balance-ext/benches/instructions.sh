#!/usr/bin/env bash
# Instructions per operation under callgrind (exact and repeatable, unlike timings on
# a shared machine): each case at 20,000 and 40,000 operations, the difference / 20,000.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
cargo build -q --release -p tower-balance-ext --example pick_instructions
bin=target/release/examples/pick_instructions
out=$(mktemp -d)
ir() {
    valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$bin" "$1" "$2" >/dev/null 2>"$out/log"
    grep -m1 -oE 'Collected : [0-9]+' "$out/log" | grep -oE '[0-9]+'
}
declare -A per
for c in pick:round_robin pick:least_connections pick:weighted_round_robin pick:consistent_hash pick:latency_aware \
         call:round_robin call:least_connections call:weighted_round_robin call:consistent_hash call:latency_aware \
         call:tower_p2c_pending_requests call:tower_p2c_peak_ewma; do
    a=$(ir "$c" 20000); b=$(ir "$c" 40000)
    per[$c]=$(( (b - a) / 20000 ))
    printf '%-34s %6d instructions per operation\n' "$c" "${per[$c]}"
done
for c in round_robin least_connections weighted_round_robin consistent_hash latency_aware; do
    awk -v o="${per[call:$c]}" -v p="${per[call:tower_p2c_pending_requests]}" -v e="${per[call:tower_p2c_peak_ewma]}" -v n="$c" \
        'BEGIN { printf "%-22s whole request: %.2fx tower PendingRequests, %.2fx tower PeakEwma\n", n, o / p, o / e }'
done
rm -rf "$out"

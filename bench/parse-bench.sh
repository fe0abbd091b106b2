#!/usr/bin/env bash
# Parser comparison: holdfast-sip against rsipstack and sipx-sip on a softphone INVITE
# (with SDP) and a REGISTER (with digest credentials). Runs the criterion bench
# crates/holdfast-sip/benches/parse.rs (about a minute of measuring after the build),
# then prints ns/iter per parser and the ratios rsipstack/holdfast and sipx/holdfast.
#
# Usage: bench/parse-bench.sh [criterion args...]
#   bench/parse-bench.sh                    # all 12 benchmarks
#   bench/parse-bench.sh INVITE             # only the INVITE groups (criterion filter)
#   bench/parse-bench.sh --measurement-time 1 --warm-up-time 0.5   # quicker, noisier
#
# The full criterion output is kept in target/parse-bench.log; criterion's own reports
# are under target/criterion/.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

target_dir="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p "$target_dir"
log="$target_dir/parse-bench.log"

status=0
cargo bench -p holdfast-sip --bench parse -- "$@" 2>&1 | tee "$log" || status=$?
if [ "$status" -ne 0 ]; then
    echo "parse-bench: cargo bench failed (exit $status); log in $log" >&2
    exit "$status"
fi

echo
sed -n '/^=== parse ratio table ===$/,/^=== end ratio table ===$/p' "$log"

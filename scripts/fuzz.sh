#!/usr/bin/env bash
# Fuzz every target (or the ones named) for SECONDS each with cargo-fuzz
# (libFuzzer + AddressSanitizer), one after another, with the worker's default
# limits and inputs up to 8 MiB, and print how long each ran and whether it
# crashed. Needs a nightly toolchain (or RUSTC_BOOTSTRAP=1)
# and `cargo install cargo-fuzz`.
#
#   ./scripts/fuzz.sh                 # every target, 60 s each
#   SECONDS_EACH=600 ./scripts/fuzz.sh zip pdf
#
# New inputs go to a working corpus outside the clone ($QALA_FUZZ_WORK);
# the committed seeds in fuzz/corpus/<target> are read, never written.
# A crash leaves its input in fuzz/artifacts/<target>/: fix the bug, then
# copy the input into fuzz/corpus/<target>/ so the replay test keeps it fixed.
set -uo pipefail
cd "$(dirname "$0")/.."
each="${SECONDS_EACH:-60}"
work="${QALA_FUZZ_WORK:-/var/tmp/qala-fuzz-work}"
target_dir="${QALA_FUZZ_TARGET:-/var/tmp/qala-fuzz-target}"
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then toolchain=(+nightly); else export RUSTC_BOOTSTRAP=1; fi

if [ "$#" -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo "${toolchain[@]}" fuzz list); fi
cargo "${toolchain[@]}" fuzz build --target-dir "$target_dir" || exit 1
status=0
printf '%-10s %8s %12s %s\n' target seconds executions result
for t in "${targets[@]}"; do
    mkdir -p "$work/$t"
    log="$work/$t.log"
    start=$(date +%s)
    cargo "${toolchain[@]}" fuzz run --target-dir "$target_dir" "$t" "$work/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$each" -timeout=20 -rss_limit_mb=2048 -max_len=8388608 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    took=$(( $(date +%s) - start ))
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    if [ "$rc" -eq 0 ]; then result=ok; else result="CRASH (see $log)"; status=1; fi
    printf '%-10s %8s %12s %s\n' "$t" "$took" "${runs:-?}" "$result"
done
exit $status

#!/usr/bin/env bash
# Runs every fuzz target for a bounded time on the stable toolchain.
#
#   fuzz/run-all.sh [SECONDS] [TARGET...]
#
# SECONDS (default 60) is the per-target budget; image_decode gets twice that. Targets default
# to all of them (`cargo fuzz list`). Extra libFuzzer flags can be passed in FUZZ_ARGS, cargo-fuzz
# flags (e.g. `--sanitizer none`) in CARGO_FUZZ_ARGS. Each target's working corpus is
# fuzz/corpus/<target> (git-ignored), seeded from fuzz/seeds/<target>; crashes land in
# fuzz/artifacts/<target>/. A summary line per target is printed at the end and written to
# fuzz/artifacts/summary.tsv. The exit status is non-zero when any target failed.
set -uo pipefail

secs="${1:-60}"
shift || true
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

# cargo-fuzz passes -Z flags (-Zsanitizer=...) to rustc; RUSTC_BOOTSTRAP=1 lets the stable
# toolchain accept them.
export RUSTC_BOOTSTRAP=1
# shellcheck disable=SC2206
cargo_args=(${CARGO_FUZZ_ARGS:-})
# shellcheck disable=SC2206
fuzz_args=(${FUZZ_ARGS:-})

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

nice -n 10 cargo fuzz build "${cargo_args[@]}" || exit 1

mkdir -p artifacts
summary="artifacts/summary.tsv"
printf 'target\tseconds\texecs\tstatus\n' >"$summary"
failed=0
for t in "${targets[@]}"; do
    s="$secs"
    [ "$t" = image_decode ] && s=$((secs * 2))
    mkdir -p "corpus/$t" "artifacts/$t"
    log="artifacts/$t.log"
    echo "=== $t: ${s}s ==="
    nice -n 10 cargo fuzz run "${cargo_args[@]}" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$s" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        "${fuzz_args[@]}" >"$log" 2>&1
    rc=$?
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    if [ "$rc" -eq 0 ]; then status=ok; else status="FAILED(rc=$rc)"; failed=1; fi
    printf '%s\t%s\t%s\t%s\n' "$t" "$s" "${execs:-?}" "$status" | tee -a "$summary"
    [ "$rc" -eq 0 ] || tail -n 40 "$log"
done
echo
column -t -s $'\t' "$summary" 2>/dev/null || cat "$summary"
exit "$failed"

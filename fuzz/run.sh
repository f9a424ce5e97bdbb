#!/usr/bin/env bash
# Fuzz every target of fuzz/ for a total of SECONDS (SECONDS/4 each), on a scratch copy of
# the committed seeds (fuzz/scratch/<target>, git-ignored; it persists between local runs
# and is merged with the seeds each time).
#
# CI:   bash fuzz/run.sh 60        (from the repository root or anywhere; exits non-zero
#                                    and prints the reproducer path if a target crashes)
#
# Toolchain: the machine's default (stable) one with RUSTC_BOOTSTRAP=1, which lets it accept
# the -Z flags cargo-fuzz passes (AddressSanitizer, sancov): a CI machine is only sure to
# have one toolchain. FUZZ_TOOLCHAIN=nightly uses a nightly toolchain instead.
# cargo-fuzz is installed if missing (`cargo install --locked cargo-fuzz`, about 2 min).
# Cold build of the four targets (ASan, release, debug-assertions): about 7 min on 2
# shared cores; warm: seconds. On top of SECONDS, each target first replays its corpus
# (a few seconds from the seeds; up to ~20 s once a local scratch corpus has grown).
#
# Environment: NICE=0 to run at normal priority (default: nice -n 19);
#              FUZZ_TARGETS="framer element" to run a subset.
set -euo pipefail

if [[ $# -ne 1 || ! $1 =~ ^[0-9]+$ || $1 -lt 4 ]]; then
    echo "usage: $0 SECONDS   (total time, at least 4; each target gets SECONDS/4)" >&2
    exit 2
fi
total=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"

nice_cmd=(nice -n "${NICE:-19}")
read -r -a targets <<< "${FUZZ_TARGETS:-framer element session pubsub}"
per=$((total / ${#targets[@]}))

toolchain=${FUZZ_TOOLCHAIN:-stable}
if ! cargo "+$toolchain" --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: the $toolchain toolchain is missing (rustup toolchain install $toolchain, or set FUZZ_TOOLCHAIN)" >&2
    exit 1
fi
if [[ $toolchain != nightly* ]]; then
    export RUSTC_BOOTSTRAP=1
fi
fuzz=(cargo "+$toolchain" fuzz)
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: installing cargo-fuzz" >&2
    if ! "${nice_cmd[@]}" cargo install --locked cargo-fuzz; then
        echo "fuzz/run.sh: FAILED to install cargo-fuzz" >&2
        exit 1
    fi
fi

start=$(date +%s)
"${nice_cmd[@]}" "${fuzz[@]}" build
echo "fuzz/run.sh: built all targets in $(($(date +%s) - start)) s"

failed=()
for t in "${targets[@]}"; do
    scratch="$here/scratch/$t"
    mkdir -p "$scratch" "$here/artifacts/$t"
    cp -n "$here/corpus/$t/"* "$scratch/" 2>/dev/null || true
    log="$here/artifacts/$t/last-run.log"
    echo "fuzz/run.sh: $t for ${per} s (log: $log)"
    set +e
    "${nice_cmd[@]}" "${fuzz[@]}" run "$t" "$scratch" "$here/corpus/$t" -- \
        -max_total_time="$per" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|#[0-9]+ +DONE)' "$log" || true
    if [[ $rc -ne 0 ]]; then
        tail -n 60 "$log" >&2
        reproducer=$(grep -oE 'Test unit written to [^ ]+' "$log" | tail -n 1 | sed 's/^Test unit written to //')
        echo "fuzz/run.sh: target $t FAILED (exit $rc); reproducer: ${reproducer:-see $log}" >&2
        if [[ -n $reproducer ]]; then
            echo "fuzz/run.sh: reproduce with: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $t ${reproducer#"$here"/}" >&2
        fi
        failed+=("$t")
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz/run.sh: crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz/run.sh: no crashes in ${targets[*]} (${per} s each)"

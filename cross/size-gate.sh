#!/usr/bin/env bash
# The binary-size gate for the router targets.
#
#   cross/size-gate.sh [SIZES_FILE]     (default: $CARGO_TARGET_DIR/sizes.txt from cross/build.sh)
#
# Budgets, stripped file bytes, each build with TLS and the command-line client:
#   mipsel-unknown-linux-musl, mips-unknown-linux-musl        2 621 440 (2.5 MiB)
#   aarch64-unknown-linux-musl, armv7-unknown-linux-musleabihf 2 097 152 (2.0 MiB)
# (x86_64 has none: it is not a router target.) docs/size.md has the figures and why.
#
# Prints every row of the table with its budget and headroom. If any target is over, it says
# so, prints what takes the space (cross/bloat.sh TARGET 15 for each target over budget; set
# KINGLET_GATE_BLOAT=0 to leave that out) and exits 1. cross/build.sh runs it after every
# build (KINGLET_SIZE_GATE=0 skips it there); .ci/run builds all four router targets.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
sizes="${1:-${CARGO_TARGET_DIR:-$here/../target/cross}/sizes.txt}"
[ -f "$sizes" ] || { echo "size gate: no size table at $sizes (run cross/build.sh first)" >&2; exit 2; }

# Budget in bytes of a target triple; empty for targets without one.
size_budget() {
    case "$1" in
        mipsel-unknown-linux-musl | mips-unknown-linux-musl) echo 2621440 ;;
        aarch64-unknown-linux-musl | armv7-unknown-linux-musleabihf) echo 2097152 ;;
        *) echo "" ;;
    esac
}

over=()
rows=()
while read -r t bytes _; do
    [ "$t" = target ] && continue
    [ -n "$t" ] || continue
    case "$bytes" in '' | *[!0-9]*) echo "size gate: bad size '$bytes' for $t in $sizes" >&2; exit 2 ;; esac
    b="$(size_budget "$t")"
    if [ -z "$b" ]; then
        rows+=("$(printf '%-34s %10s %10s %10s  %s' "$t" "$bytes" - - "no budget")")
    elif [ "$bytes" -gt "$b" ]; then
        rows+=("$(printf '%-34s %10s %10s %10s  %s' "$t" "$bytes" "$b" "-$((bytes - b))" "OVER BUDGET")")
        over+=("$t")
    else
        rows+=("$(printf '%-34s %10s %10s %10s  %s' "$t" "$bytes" "$b" "$((b - bytes))" ok)")
    fi
done <"$sizes"
[ "${#rows[@]}" -gt 0 ] || { echo "size gate: $sizes lists no targets" >&2; exit 2; }

printf '%-34s %10s %10s %10s\n' target bytes budget headroom
printf '%s\n' "${rows[@]}"
if [ "${#over[@]}" -eq 0 ]; then
    echo "size gate: every router target is within its budget"
    exit 0
fi
echo
echo "size gate: FAILED: ${over[*]} over budget (stripped bytes; budgets in cross/size-gate.sh, docs/size.md)."
echo "Find what grew with cross/bloat.sh TARGET, and trim it or argue a new budget in docs/size.md."
if [ "${KINGLET_GATE_BLOAT:-1}" != 0 ]; then
    for t in "${over[@]}"; do
        echo
        echo "---- what takes the space in $t (cross/bloat.sh $t 15) ----"
        bash "$here/bloat.sh" "$t" 15 || echo "(cross/bloat.sh $t failed)"
    done
fi
exit 1

#!/usr/bin/env bash
# Build static release binaries of kinglet for routers and Raspberry Pis.
#
#   cross/build.sh [--no-setup] [TARGET...]
#
# TARGET is a Rust triple or a short name; default: all of
#   aarch64  aarch64-unknown-linux-musl      Pi 3/4/5 64-bit, arm64 routers   (build-std)
#   armv7    armv7-unknown-linux-musleabihf  Pi 2/3 32-bit, cortex-a7/a9      (build-std)
#   mipsel   mipsel-unknown-linux-musl       OpenWrt ramips (MT7621 ...)      (build-std)
#   mips     mips-unknown-linux-musl         OpenWrt ath79, big-endian        (build-std)
#   x86_64   x86_64-unknown-linux-musl       PCs, VMs, x86 routers            (rustup std)
#
# Everything is static musl. The setup step (skipped with --no-setup) installs what is
# missing: Debian cross gcc, qemu-user-static and musl-tools (apt-get, as root), the rustup
# targets (one per command: one 404 would roll back a whole command) and rust-src, and builds
# musl 1.2.3 sysroots plus a libunwind for the build-std targets, cached under
# ${XDG_CACHE_HOME:-~/.cache}/kinglet-cross. The recipe is /work/shared/cross/README-recipe.md.
#
# Binaries land in $CARGO_TARGET_DIR/<triple>/release/kinglet (default target dir:
# <repo>/target/cross, so host builds are not invalidated). Builds run under `nice -n 19`,
# one target at a time. The MIPS targets are built with `--no-default-features --features
# client` (OpenWrt has no journald); set KINGLET_FEATURES to override the cargo feature flags for all targets.
# A table of stripped sizes (file bytes, MB = 2^20 bytes, and text+data as loaded) and build
# times is printed at the end and written to $CARGO_TARGET_DIR/sizes.txt; docs/size.md has
# the figures and what takes the space (cross/bloat.sh). Then cross/size-gate.sh checks the
# router targets against their budgets and fails the run (exit 1, with cross/bloat.sh's
# breakdown) if one is over; KINGLET_SIZE_GATE=0 skips the gate.
# Every setup failure (apt, rustup, musl sysroot, unwind stub) stops the script and says what
# failed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/kinglet-cross"
xs="$cache/sysroot"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target/cross}"
musl_version=1.2.3

all_targets=(aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf
    mipsel-unknown-linux-musl mips-unknown-linux-musl x86_64-unknown-linux-musl)

log() { printf 'cross: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
    else die "need root for: $*"; fi
}

# Full triple for a short name.
triple() {
    case "$1" in
        aarch64 | arm64) echo aarch64-unknown-linux-musl ;;
        armv7 | armhf) echo armv7-unknown-linux-musleabihf ;;
        mipsel) echo mipsel-unknown-linux-musl ;;
        mips) echo mips-unknown-linux-musl ;;
        x86_64 | amd64) echo x86_64-unknown-linux-musl ;;
        *-*) echo "$1" ;;
        *) die "unknown target $1" ;;
    esac
}

# Per-target facts: gnu toolchain prefix, musl sysroot name (its musl-gcc compiles ring's C
# code, since the Debian cross gcc has no libc headers of its own), build-std or not, qemu.
gnu_prefix() {
    case "$1" in
        aarch64-*) echo aarch64-linux-gnu ;;
        armv7-*) echo arm-linux-gnueabihf ;;
        mipsel-*) echo mipsel-linux-gnu ;;
        mips-*) echo mips-linux-gnu ;;
        x86_64-*) echo x86_64-linux-gnu ;;
    esac
}
sysroot_name() {
    case "$1" in
        aarch64-*) echo aarch64 ;;
        armv7-*) echo armv7hf ;;
        mipsel-*) echo mipsel-sf ;;
        mips-*) echo mips-sf ;;
        *) echo "" ;;
    esac
}
build_std() { case "$1" in aarch64-* | armv7-* | mips*) return 0 ;; *) return 1 ;; esac; }

# qemu command line (as words) that runs a binary of target $1; used by smoke.sh too.
qemu_cmd() {
    case "$1" in
        aarch64-*) echo "qemu-aarch64-static" ;;
        armv7-*) echo "qemu-arm-static -cpu cortex-a7" ;;
        mipsel-*) echo "qemu-mipsel-static -cpu 24Kc" ;;
        mips-*) echo "qemu-mips-static -cpu 24Kc" ;;
        x86_64-*) echo "" ;;
    esac
}

setup_apt() {
    local need=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
    done
    [ "${#need[@]}" -eq 0 ] && return 0
    log "apt-get install ${need[*]}"
    as_root apt-get update -qq </dev/null ||
        die "setup: 'apt-get update' failed (needed to install ${need[*]}); fix the apt sources or install those packages by hand"
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
        "${need[@]}" </dev/null || die "setup: 'apt-get install ${need[*]}' failed"
    for p in "${need[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
            die "setup: package $p is still not installed after apt-get install"
    done
}

# musl source tarball, fetched once with apt-get source (Debian's copy: no extra registry).
musl_source() {
    local src="$cache/musl-$musl_version"
    [ -f "$src/configure" ] && { echo "$src"; return; }
    mkdir -p "$cache/apt/lists/partial" "$cache/dl"
    local list="$cache/apt/sources.list"
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main" >"$list"
    local opts=(-o "Dir::Etc::SourceList=$list" -o Dir::Etc::SourceParts=/nonexistent
        -o "Dir::State::Lists=$cache/apt/lists" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=)
    log "fetching musl $musl_version source (apt-get source)"
    apt-get "${opts[@]}" -qq update >&2 ||
        die "setup: 'apt-get update' of the deb-src list $list failed (musl source)"
    (cd "$cache/dl" && apt-get "${opts[@]}" -qq source --download-only "musl=$musl_version-1" >&2) ||
        die "setup: 'apt-get source --download-only musl=$musl_version-1' failed in $cache/dl"
    tar -C "$cache" -xzf "$cache/dl/musl_$musl_version.orig.tar.gz" ||
        die "setup: unpacking $cache/dl/musl_$musl_version.orig.tar.gz failed"
    [ -f "$src/configure" ] || die "musl source not unpacked in $src"
    echo "$src"
}

# Build the musl sysroot and libunwind.a for build-std target $1 (once; cached).
setup_sysroot() {
    local t="$1" name
    name="$(sysroot_name "$t")"
    [ -x "$xs/$name/bin/musl-gcc" ] && [ -f "$xs/$name/unwind/libunwind.a" ] && return 0
    if [ ! -x "$xs/$name/bin/musl-gcc" ]; then
        build_musl "$t" || die "setup: building the musl sysroot $xs/$name failed (see above)"
    fi
    [ -x "$xs/$name/bin/musl-gcc" ] || die "setup: no $xs/$name/bin/musl-gcc after building musl"
    setup_unwind "$t" || die "setup: building $xs/$name/unwind/libunwind.a failed (see above)"
    [ -f "$xs/$name/unwind/libunwind.a" ] || die "setup: no $xs/$name/unwind/libunwind.a"
}

# The musl 1.2.3 sysroot of target $1.
build_musl() {
    local t="$1" name prefix mtriple cflags
    name="$(sysroot_name "$t")"
    prefix="$(gnu_prefix "$t")"
    case "$name" in
        aarch64) mtriple=aarch64-linux-musl; cflags="-O2" ;;
        armv7hf) mtriple=arm-linux-musleabihf; cflags="-O2" ;;
        mipsel-sf) mtriple=mipsel-linux-musl; cflags="-msoft-float -O2" ;;
        mips-sf) mtriple=mips-linux-musl; cflags="-msoft-float -O2" ;;
    esac
    local src b
    src="$(musl_source)" || die "setup: no musl source"
    b="$cache/build-$name"
    rm -rf "$b" && mkdir -p "$b"
    log "building musl sysroot $name"
    command -v "$prefix-gcc" >/dev/null 2>&1 || die "setup: $prefix-gcc not found (package gcc-$prefix)"
    (
        cd "$b" || exit 1
        CC="$prefix-gcc" AR="$prefix-ar" RANLIB="$prefix-ranlib" CFLAGS="$cflags" \
            "$src/configure" --prefix="$xs/$name" --target="$mtriple" \
            --disable-shared --enable-wrapper=gcc >/dev/null || die "setup: musl configure for $name failed"
        nice -n 19 make -j2 AR="$prefix-ar" RANLIB="$prefix-ranlib" >/dev/null ||
            die "setup: musl make for $name failed"
        make install AR="$prefix-ar" RANLIB="$prefix-ranlib" >/dev/null ||
            die "setup: musl make install into $xs/$name failed"
    ) || exit 1
    rm -rf "$b"
}

# libunwind.a for build-std target $1 (std's unwind crate links -lunwind even with
# panic=abort).
setup_unwind() {
    local t="$1" name prefix
    name="$(sysroot_name "$t")"
    prefix="$(gnu_prefix "$t")"
    mkdir -p "$xs/$name/unwind"
    if [ "$name" = armv7hf ]; then
        # ARM needs the real EHABI personality routines (__aeabi_unwind_cpp_pr0/1).
        cp "$("$prefix-gcc" -print-file-name=libgcc_eh.a)" "$xs/$name/unwind/libunwind.a"
    else
        # With panic=abort std needs only these two symbols; backtraces are empty.
        cat >"$xs/$name/unwind/stub.c" <<'EOF'
#include <stdint.h>
int _Unwind_Backtrace(void *f, void *a) { (void)f; (void)a; return 5; }
uintptr_t _Unwind_GetIP(void *c) { (void)c; return 0; }
EOF
        # (aarch64: Debian's libgcc_eh.a needs glibc's _dl_find_object, so the stub too.)
        local fl=-O2
        case "$name" in mips*) fl="-msoft-float -O2" ;; esac
        # shellcheck disable=SC2086 # $fl is one or two flags
        "$xs/$name/bin/musl-gcc" $fl -c "$xs/$name/unwind/stub.c" \
            -o "$xs/$name/unwind/stub.o"
        "$prefix-ar" rcs "$xs/$name/unwind/libunwind.a" "$xs/$name/unwind/stub.o"
    fi
}

setup() {
    local pkgs=(qemu-user-static musl-tools) t
    for t in "$@"; do
        case "$t" in x86_64-*) ;; *) pkgs+=("gcc-$(gnu_prefix "$t")") ;; esac
    done
    setup_apt "${pkgs[@]}"
    local installed
    installed="$(rustup target list --installed)"
    for t in "$@"; do
        if ! build_std "$t" && ! grep -qx "$t" <<<"$installed"; then
            log "rustup target add $t"
            rustup target add "$t" >&2 || die "setup: 'rustup target add $t' failed"
        fi
    done
    for t in "$@"; do
        if build_std "$t" && ! rustup component list --installed | grep -q '^rust-src'; then
            log "rustup component add rust-src"
            rustup component add rust-src >&2 || die "setup: 'rustup component add rust-src' failed (build-std needs it)"
        fi
        if [ -n "$(sysroot_name "$t")" ]; then
            setup_sysroot "$t"
        fi
    done
    # What the builds and smoke tests will call, checked once so that a gap fails here and
    # not as a confusing cc-rs error inside a cargo build.
    for t in "$@"; do
        local q
        q="$(qemu_cmd "$t")"
        if [ -n "$q" ]; then
            command -v "${q%% *}" >/dev/null 2>&1 || die "setup: ${q%% *} not found (package qemu-user-static)"
        fi
        case "$t" in x86_64-*) command -v musl-gcc >/dev/null 2>&1 || die "setup: musl-gcc not found (package musl-tools)" ;; esac
        command -v "$(gnu_prefix "$t")-ar" >/dev/null 2>&1 || die "setup: $(gnu_prefix "$t")-ar not found (package binutils-$(gnu_prefix "$t"))"
    done
    log "setup ok: ${*}"
    return 0
}

# Export the cargo/cc environment for target $1.
target_env() {
    local t="$1" up name prefix
    up="$(tr 'a-z-' 'A-Z_' <<<"$t")"
    # Router builds abort on panic (no unwind tables or unwinder: smaller). The host release
    # profile unwinds only so that `cargo test --release` shares its dependencies.
    export CARGO_PROFILE_RELEASE_PANIC=abort
    name="$(sysroot_name "$t")"
    prefix="$(gnu_prefix "$t")"
    if build_std "$t"; then
        export "CARGO_TARGET_${up}_LINKER=$xs/$name/bin/musl-gcc"
        # location-detail=none drops file/line strings of panics (panic=abort: nobody reads them).
        export "CARGO_TARGET_${up}_RUSTFLAGS=-C target-feature=+crt-static -C link-self-contained=no -L $xs/$name/unwind -Z location-detail=none -C force-unwind-tables=no -C relocation-model=static"
        export "CC_${t//-/_}=$xs/$name/bin/musl-gcc"
        export "AR_${t//-/_}=$prefix-ar"
        case "$t" in mips*) export "CFLAGS_${t//-/_}=-msoft-float" ;; esac
    elif [ "$t" = x86_64-unknown-linux-musl ]; then
        export "CARGO_TARGET_${up}_LINKER=gcc"
        export "CC_${t//-/_}=musl-gcc"
    else
        # rustup's musl std links with its self-contained crt objects.
        export "CARGO_TARGET_${up}_LINKER=$prefix-gcc"
        export "CC_${t//-/_}=$xs/$name/bin/musl-gcc"
        export "AR_${t//-/_}=$prefix-ar"
    fi
    local q
    q="$(qemu_cmd "$t")"
    [ -n "$q" ] && export "CARGO_TARGET_${up}_RUNNER=$q"
    return 0
}

# Cargo arguments (after `cargo build`/`test`) for target $1.
cargo_args() {
    local t="$1"
    local a=(--release --locked --target "$t")
    if [ -n "${KINGLET_FEATURES+x}" ]; then
        # shellcheck disable=SC2206 # word splitting of the flags is intended
        a+=($KINGLET_FEATURES)
    else
        case "$t" in mips*) a+=(--no-default-features --features client) ;; esac
    fi
    build_std "$t" && a+=("-Zbuild-std=std,panic_abort" "-Zbuild-std-features=optimize_for_size")
    printf '%s\n' "${a[@]}"
}

build_one() {
    local t="$1" args
    mapfile -t args < <(cargo_args "$t")
    log "building $t: cargo build ${args[*]}"
    (
        target_env "$t"
        if build_std "$t"; then
            export RUSTC_BOOTSTRAP=1
            # Routers: size over speed (OpenWrt's own rust-values.mk uses opt-level z too).
            export CARGO_PROFILE_RELEASE_OPT_LEVEL="${CARGO_PROFILE_RELEASE_OPT_LEVEL:-z}"
        fi
        cd "$repo"
        nice -n 19 cargo build "${args[@]}"
    )
}

main() {
    local do_setup=1 targets=() t
    while [ $# -gt 0 ]; do
        case "$1" in
            --no-setup) do_setup=0 ;;
            -h | --help) sed -n '2,25p' "${BASH_SOURCE[0]}"; exit 0 ;;
            *) targets+=("$(triple "$1")") ;;
        esac
        shift
    done
    [ "${#targets[@]}" -eq 0 ] && targets=("${all_targets[@]}")
    [ "$do_setup" = 1 ] && setup "${targets[@]}"
    local rows=() start secs bin size
    for t in "${targets[@]}"; do
        start=$(date +%s)
        build_one "$t"
        secs=$(($(date +%s) - start))
        bin="$CARGO_TARGET_DIR/$t/release/kinglet"
        [ -f "$bin" ] || die "no binary at $bin"
        size=$(stat -c %s "$bin")
        # Code and data as loaded (size(1): text + data). The file size moves in steps on
        # some targets: aarch64's linker pads the RELRO segment to a 64 KiB page.
        loaded=$("$(gnu_prefix "$t")-size" "$bin" 2>/dev/null | awk 'NR == 2 { print $1 + $2 }')
        rows+=("$(printf '%-34s %10s %8s %10s %7ss' "$t" "$size" "$(awk -v s="$size" 'BEGIN{printf "%.2f MB", s/1048576}')" "${loaded:-?}" "$secs")")
    done
    {
        printf '%-34s %10s %8s %10s %8s\n' target bytes size text+data build
        printf '%s\n' "${rows[@]}"
    } | tee "$CARGO_TARGET_DIR/sizes.txt"
    # The router targets' size budgets (cross/size-gate.sh): over budget fails the build.
    if [ "${KINGLET_SIZE_GATE:-1}" != 0 ]; then
        bash "$repo/cross/size-gate.sh" "$CARGO_TARGET_DIR/sizes.txt"
    fi
}

# Sourced by smoke.sh for the helpers; run main only when executed.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi

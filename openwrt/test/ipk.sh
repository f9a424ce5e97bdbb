#!/bin/sh
# Structure test of openwrt/mkipk.sh: builds an .ipk (from BINARY, default a dummy file) and
# checks what opkg relies on: outer member order, control fields, conffiles, scripts, modes,
# Installed-Size, and that a second build is byte-identical (reproducible).
#
#   openwrt/test/ipk.sh [BINARY [ARCH]]
set -eu

here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
bin="${1:-}"
arch="${2:-mipsel_24kc}"
if [ -z "$bin" ]; then
	bin="$work/kinglet"
	printf '\177ELF dummy kinglet binary\n' >"$bin"
fi
fail=0
check() { # DESCRIPTION COMMAND...
	d="$1"
	shift
	if "$@" >/dev/null 2>&1; then echo "ok   $d"; else echo "FAIL $d"; fail=1; fi
}

export SOURCE_DATE_EPOCH=1700000000
ipk="$("$here/../mkipk.sh" "$bin" "$arch" "$work/out")"
cp "$ipk" "$work/first.ipk"
"$here/../mkipk.sh" "$bin" "$arch" "$work/out" >/dev/null

check "file name" test "$(basename "$ipk")" = "kinglet_$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$here/../../Cargo.toml" | head -n 1)-1_$arch.ipk"
check "outer archive is gzip'd tar (opkg rejects ar)" sh -c "gzip -t '$ipk' && tar -tzf '$ipk'"
check "outer members in ipkg-build order" test "$(tar -tzf "$ipk" | tr '\n' ' ')" = "./debian-binary ./data.tar.gz ./control.tar.gz "
mkdir "$work/x"
tar -xzf "$ipk" -C "$work/x"
check "debian-binary is 2.0" test "$(cat "$work/x/debian-binary")" = "2.0"
tar -tvzf "$work/x/data.tar.gz" >"$work/data.list"
tar -tvzf "$work/x/control.tar.gz" >"$work/control.list"
# shellcheck disable=SC2317 # called through check
has() { grep -q -- "$1 .* $2\$" "$3"; } # MODE PATH LISTING
check "binary 0755" has "-rwxr-xr-x 0/0" ./usr/sbin/kinglet "$work/data.list"
check "init script 0755" has "-rwxr-xr-x 0/0" ./etc/init.d/kinglet "$work/data.list"
check "UCI config 0600" has "-rw------- 0/0" ./etc/config/kinglet "$work/data.list"
check "keep.d entry" has "-rw-r--r-- 0/0" ./lib/upgrade/keep.d/kinglet "$work/data.list"
check "data has exactly the package files" test "$(grep -c -- '^-' "$work/data.list")" = 4
check "postinst executable" has "-rwxr-xr-x 0/0" ./postinst "$work/control.list"
check "prerm executable" has "-rwxr-xr-x 0/0" ./prerm "$work/control.list"
mkdir "$work/c"
tar -xzf "$work/x/control.tar.gz" -C "$work/c"
ctl="$work/c/control"
for field in Package Version Depends Section Architecture Installed-Size Maintainer License Description Require-User; do
	check "control has $field" grep -q "^$field: ." "$ctl"
done
check "Architecture is $arch" grep -qx "Architecture: $arch" "$ctl"
size="$(tar -xzOf "$work/x/data.tar.gz" | wc -c | tr -d ' ')"
check "Installed-Size matches data" grep -qx "Installed-Size: $size" "$ctl"
check "Require-User creates kinglet" grep -q "^Require-User: kinglet=" "$ctl"
check "conffiles lists the UCI file" test "$(cat "$work/c/conffiles")" = /etc/config/kinglet
check "postinst runs default_postinst" grep -q default_postinst "$work/c/postinst"
check "prerm runs default_prerm" grep -q default_prerm "$work/c/prerm"
check "reproducible" cmp "$work/first.ipk" "$ipk"
check "bad arch refused" sh -c "! '$here/../mkipk.sh' '$bin' 'mips el' '$work/out'"
exit "$fail"

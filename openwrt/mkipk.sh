#!/bin/sh
# Assemble an OpenWrt .ipk (opkg, OpenWrt 24.10 and older) from a cross-built binary.
#
#   openwrt/mkipk.sh BINARY OPENWRT_ARCH [OUT_DIR]
#
# BINARY is a static kinglet from cross/build.sh, OPENWRT_ARCH the device's opkg architecture
# (`opkg print-architecture`), e.g. aarch64_cortex-a53, aarch64_generic, mipsel_24kc,
# mips_24kc, arm_cortex-a7_neon-vfpv4, x86_64. opkg refuses other architecture strings, so
# build one .ipk per string; the same static binary serves every string of its ISA.
#
# The layout is what OpenWrt's ipkg-build writes: a gzip'd GNU tar (not an ar archive)
# holding ./debian-binary, ./data.tar.gz and ./control.tar.gz, in that order, all owned by
# 0:0, sorted, with mtimes from SOURCE_DATE_EPOCH (default: the last commit, else 0), so the
# output is reproducible. Prints the path of the .ipk.
set -eu

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
[ $# -ge 2 ] || { sed -n '2,14p' "$0" >&2; exit 2; }
bin="$1" arch="$2" out="${3:-$repo/target/ipk}"
[ -f "$bin" ] || { echo "mkipk: no binary at $bin" >&2; exit 1; }
case "$arch" in *[!A-Za-z0-9_-]* | '') echo "mkipk: bad architecture $arch" >&2; exit 1 ;; esac

version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n 1)"
release=1
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH="$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)"
fi
pkg="kinglet_${version}-${release}_${arch}.ipk"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
d="$work/data" c="$work/control"
mkdir -p "$d/usr/sbin" "$d/etc/init.d" "$d/etc/config" "$d/lib/upgrade/keep.d" "$c"
install -m 0755 "$bin" "$d/usr/sbin/kinglet"
install -m 0755 "$here/files/kinglet.init" "$d/etc/init.d/kinglet"
install -m 0600 "$here/files/kinglet.config" "$d/etc/config/kinglet"
install -m 0644 "$here/files/kinglet.keep" "$d/lib/upgrade/keep.d/kinglet"

mktar() { # DIR OUTPUT: reproducible tar.gz of DIR's contents
	tar --format=gnu --numeric-owner --owner=0 --group=0 --sort=name \
		--mtime="@$SOURCE_DATE_EPOCH" -C "$1" -cf - . | gzip -n -9 >"$2"
}
mktar "$d" "$work/data.tar.gz"
size="$(tar -xzOf "$work/data.tar.gz" | wc -c | tr -d ' ')"

cat >"$c/control" <<EOT
Package: kinglet
Version: ${version}-${release}
Depends: libc
Source: feeds/packages/net/kinglet
SourceName: kinglet
License: Apache-2.0
LicenseFiles: LICENSE
Section: net
Require-User: kinglet=522:kinglet=522
URL: https://github.com/kinglet/kinglet
Maintainer: Kinglet maintainers <kinglet@localhost>
Architecture: ${arch}
Installed-Size: ${size}
Description: Tiny XMPP publish-subscribe broker for routers
 Kinglet is a small, single-threaded XMPP publish-subscribe broker. It runs as a procd
 service configured through UCI (/etc/config/kinglet).
EOT
echo /etc/config/kinglet >"$c/conffiles"
# The standard OpenWrt package scripts: default_postinst creates the Require-User user,
# enables and starts the service; default_prerm stops and disables it.
cat >"$c/postinst" <<'EOT'
#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
. "${IPKG_INSTROOT}/lib/functions.sh"
default_postinst "$0" "$@"
EOT
cat >"$c/prerm" <<'EOT'
#!/bin/sh
[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
. "${IPKG_INSTROOT}/lib/functions.sh"
default_prerm "$0" "$@"
EOT
chmod 0755 "$c/postinst" "$c/prerm"
chmod 0644 "$c/control" "$c/conffiles"
mktar "$c" "$work/control.tar.gz"
echo "2.0" >"$work/debian-binary"

mkdir -p "$out"
# Member order matters to opkg: debian-binary, data, control (as ipkg-build writes them).
tar --format=gnu --numeric-owner --owner=0 --group=0 --mtime="@$SOURCE_DATE_EPOCH" \
	-C "$work" -cf - ./debian-binary ./data.tar.gz ./control.tar.gz | gzip -n -9 >"$out/$pkg"
echo "$out/$pkg"

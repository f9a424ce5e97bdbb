#!/bin/sh
# Feed CI hook (openwrt/actions-shared-workflows): run after installing the package in an
# OpenWrt rootfs, as `sh test.sh <package> <version>`; procd is not running there.
case "$1" in
kinglet)
	# The version given includes the package release (0.1.0-r1 / 0.1.0-1); --version does not.
	kinglet --version | grep -F "kinglet ${2%-*}" || exit 1
	kinglet check-config --config /dev/null >/dev/null
	;;
esac

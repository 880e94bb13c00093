#!/usr/bin/env bash
# qemu/kernels.sh - the guest kernels the project supports, and where each
# one's files live in the cache. Sourced by qemu/setup.sh,
# qemu/build-initramfs.sh and qemu/run-guest.sh; not run.
#
# A kernel is chosen by name (setup.sh and run-guest.sh --kernel NAME, or
# the environment variable VNIC_KERNEL):
#
#   6.1     Debian 12 (bookworm): linux-image-amd64, built with the host's
#           gcc-12 against linux-headers-<abi> installed on the host
#   6.12    Debian 13 (trixie), the default: linux-image-amd64 of trixie,
#           built with gcc-14 in a trixie tree (qemu/.cache/kbuild)
#   latest  the newest trixie-backports kernel (7.x): linux-image-amd64 of
#           trixie-backports (split into linux-binary-, linux-modules- and
#           linux-base-<abi>), built with gcc-14 in the same tree
#
# Each name's exact ABI version (e.g. 6.12.117+deb13-amd64) is resolved once
# from the archive and pinned in qemu/.cache/kernels/<name>/kernel-version.
# docs/guest-environment.md says why 6.12 is the default.

# shellcheck disable=SC2034 # used by the scripts that source this file
VNIC_KERNELS=(6.1 6.12 latest)
VNIC_DEFAULT_KERNEL=6.12

# kernel_name NAME: prints the supported name NAME stands for ("default"
# and "" are the default kernel); status 1 for an unknown name.
kernel_name() {
	local k
	case ${1:-default} in
	default) echo "$VNIC_DEFAULT_KERNEL" ;;
	*)
		for k in "${VNIC_KERNELS[@]}"; do
			[[ $k == "$1" ]] && { echo "$k"; return 0; }
		done
		return 1
		;;
	esac
}

# kernel_suite NAME: the Debian suite whose linux-image-amd64 NAME is.
kernel_suite() {
	case $1 in
	6.1) echo bookworm ;;
	6.12) echo trixie ;;
	latest) echo trixie-backports ;;
	esac
}

# kernel_on_host NAME: true if NAME's packages, headers and compiler come
# from the host's own apt (Debian 12), false if from the trixie tree.
kernel_on_host() { [[ $(kernel_suite "$1") == bookworm ]]; }

# kernel_dir CACHE NAME: where NAME's files live: kernel-version, root/ (the
# extracted packages: vmlinuz, modules), vmlinuz, build/ (the driver's
# kbuild), vnic.ko and initramfs.cpio.gz.
kernel_dir() { echo "$1/kernels/$2"; }

#!/usr/bin/env bash
# qemu/setup.sh - install everything the end-to-end tests need.
#
# Usage: qemu/setup.sh [--no-checkpatch] [--force STEP]...
#
# Idempotent: every step leaves a stamp in qemu/.cache/stamps/ and is skipped
# on the next run, so a warm re-run takes seconds. Delete qemu/.cache/ (or a
# single stamp) to redo a step. Works unattended (CI=true, no stdin).
#
# Steps:
#   host-packages  apt: debootstrap, cpio, kmod, gcc/make, the guest kernel's
#                  headers (linux-headers-<ver>) to build guest-driver/,
#                  tcpdump, with which tests read the card's pcap captures,
#                  iputils-ping (the host pings a guest from a network
#                  namespace: host netns-ping, docs/vxlan.md),
#                  and for migration (run-guest.sh --migrate, migrate.sh)
#                  socat (QEMU's monitor socket), qemu-utils (qemu-img for
#                  the savevm image), jq (configuration edits), and the
#                  linter shellcheck (tests/run.sh checks the scripts)
#   qemu           debootstrap a minimal Debian trixie tree into
#                  qemu/.cache/trixie and install qemu-system-x86 (>= 10.1,
#                  with vfio-user-pci) from trixie-backports into it; write
#                  the host wrapper qemu/.cache/bin/qemu-system-x86_64
#   kernel         Debian bookworm guest kernel (linux-image-<ver>) extracted
#                  into qemu/.cache/kernel/ (vmlinuz + modules, depmod'ed)
#   userland       busybox-static, bash, pciutils, iproute2, ethtool, iperf3,
#                  tcpdump and their libraries, extracted into
#                  qemu/.cache/userland/ (bookworm packages)
#   checkpatch     checkpatch.pl (+ spelling.txt, const_structs.checkpatch)
#                  from linux-source-6.1 into qemu/.cache/checkpatch/, for
#                  make -C guest-driver checkpatch (skip: --no-checkpatch)
#   driver         make -C guest-driver (always run; make is incremental)
#   initramfs      qemu/build-initramfs.sh (rebuilt when an input changed)
#
# Files written for other scripts:
#   qemu/.cache/kernel-version   e.g. 6.1.0-56-amd64
#   qemu/.cache/bin/qemu-system-x86_64
#   qemu/.cache/vmlinuz          symlink to the guest kernel
#   qemu/.cache/initramfs.cpio.gz
#
# Environment: VNIC_DEBIAN_MIRROR overrides the Debian mirror (default: the
# one the host's apt sources use).

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CACHE=$HERE/.cache
STAMPS=$CACHE/stamps

export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C

WITH_CHECKPATCH=1
FORCE=()
while (($#)); do
	case $1 in
	--checkpatch) WITH_CHECKPATCH=1 ;;
	--no-checkpatch) WITH_CHECKPATCH=0 ;;
	--force) FORCE+=("$2"); shift ;;
	-h | --help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "setup.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done

if [[ $(id -u) -ne 0 ]]; then
	echo "setup.sh: must run as root (apt-get, debootstrap, chroot)" >&2
	exit 1
fi

mkdir -p "$CACHE" "$STAMPS" "$CACHE/bin" "$CACHE/debs"

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

SETUP_T0=$(now)
TIMINGS=()

# run_step NAME FUNC [KEY]: run FUNC unless its stamp exists and holds KEY
# (what the step was done for, e.g. a package list), and time it.
run_step() {
	local name=$1 fn=$2 key=${3:-done} t0 f
	t0=$(now)
	for f in "${FORCE[@]+"${FORCE[@]}"}"; do
		[[ $f == "$name" ]] && rm -f "$STAMPS/$name"
	done
	if [[ -e $STAMPS/$name && $(cat "$STAMPS/$name") == "$key" ]]; then
		TIMINGS+=("$(printf '%-14s %6.1f s  (cached)' "$name" "$(elapsed "$t0")")")
		return 0
	fi
	log "step $name ..."
	rm -f "$STAMPS/$name"
	"$fn"
	echo "$key" >"$STAMPS/$name"
	TIMINGS+=("$(printf '%-14s %6.1f s' "$name" "$(elapsed "$t0")")")
	log "step $name done in $(elapsed "$t0") s"
}

# run_always NAME FUNC: run FUNC every time (it must be cheap when up to date).
run_always() {
	local name=$1 fn=$2 t0
	t0=$(now)
	"$fn"
	TIMINGS+=("$(printf '%-14s %6.1f s' "$name" "$(elapsed "$t0")")")
}

APT_UPDATED=0
apt_update_once() {
	if ((APT_UPDATED == 0)); then
		log "apt-get update"
		# An unreachable third-party source must not stop us; a missing
		# Debian package fails loudly later anyway.
		apt-get update -q >"$CACHE/apt-update.log" 2>&1 ||
			log "warning: apt-get update had errors (see $CACHE/apt-update.log)"
		APT_UPDATED=1
	fi
}

# The Debian mirror the host already uses (first non-security source).
detect_mirror() {
	local m=""
	if [[ -n ${VNIC_DEBIAN_MIRROR:-} ]]; then
		echo "$VNIC_DEBIAN_MIRROR"
		return
	fi
	m=$(grep -hsE '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources |
		awk '{ for (i = 2; i <= NF; i++) print $i }' |
		grep -E '/debian/?$' | head -n1) || true
	if [[ -z $m ]]; then
		m=$(grep -hsE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list \
			/etc/apt/sources.list.d/*.list |
			sed -E 's/\[[^]]*\]//' | awk '{ print $2 }' |
			grep -E '/debian/?$' | head -n1) || true
	fi
	echo "${m:-http://deb.debian.org/debian}"
}

# The guest kernel ABI version, e.g. 6.1.0-56-amd64. Resolved once, then
# pinned in $CACHE/kernel-version so kernel, headers and driver agree.
resolve_kver() {
	local dep
	if [[ -s $CACHE/kernel-version ]]; then
		KVER=$(cat "$CACHE/kernel-version")
		return
	fi
	# Fresh package lists: an old ABI's packages leave the archive.
	apt_update_once
	dep=$(apt-cache depends linux-image-amd64 |
		sed -n 's/^ *Depends: linux-image-\(.*\)$/\1/p' | head -n1) || true
	[[ $dep =~ ^[0-9]+\.[0-9]+\.[0-9]+-[0-9]+-amd64$ ]] ||
		die "cannot resolve the kernel ABI from linux-image-amd64 (got '$dep')"
	KVER=$dep
	echo "$KVER" >"$CACHE/kernel-version"
}

# safe_rm_tree DIR: remove DIR without following mounts left inside it by
# an interrupted debootstrap (proc, sys, ...): unmount those first.
safe_rm_tree() {
	local dir=$1 m
	[[ -e $dir ]] || return 0
	dir=$(cd "$dir" && pwd -P)
	while read -r m; do
		umount -l "$m" || die "cannot unmount $m"
	done < <(awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r)
	rm -rf --one-file-system "$dir"
}

# apt_download DIR PKG...: download .debs of the host's release into DIR.
apt_download() {
	local dir=$1
	shift
	mkdir -p "$dir"
	(cd "$dir" && apt-get download -q -o APT::Sandbox::User=root "$@" >/dev/null) || {
		apt_update_once
		(cd "$dir" && apt-get download -q -o APT::Sandbox::User=root "$@" >/dev/null)
	}
}

# ---------------------------------------------------------------- steps

step_host_packages() {
	local want=(debootstrap cpio kmod gzip make gcc libc6-dev libelf-dev
		binutils tcpdump iputils-ping socat qemu-utils jq shellcheck "linux-headers-$KVER")
	local missing=() p
	for p in "${want[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
			grep -q 'install ok installed' || missing+=("$p")
	done
	if ((${#missing[@]})); then
		apt_update_once
		log "apt-get install ${missing[*]}"
		apt-get install -y -q --no-install-recommends "${missing[@]}" \
			>"$CACHE/apt-host.log" 2>&1 ||
			{ tail -n 30 "$CACHE/apt-host.log"; die "apt-get install failed"; }
	fi
	[[ -d /usr/src/linux-headers-$KVER ]] ||
		die "/usr/src/linux-headers-$KVER missing after install"
}

step_qemu() {
	local tree=$CACHE/trixie mirror
	mirror=$(detect_mirror)
	# A tree without the stamp is a leftover of an interrupted run.
	safe_rm_tree "$tree"
	log "debootstrap --variant=minbase trixie from $mirror"
	debootstrap --variant=minbase trixie "$tree" "$mirror" \
		>"$CACHE/debootstrap.log" 2>&1 ||
		{ tail -n 30 "$CACHE/debootstrap.log"; die "debootstrap failed"; }
	cat >"$tree/etc/apt/sources.list.d/backports.sources" <<EOF
Types: deb
URIs: $mirror
Suites: trixie-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
	log "installing qemu-system-x86 from trixie-backports (in the tree)"
	{
		chroot "$tree" apt-get update -q &&
			chroot "$tree" apt-get install -y -q --no-install-recommends \
				-t trixie-backports qemu-system-x86 &&
			chroot "$tree" apt-get clean
	} >"$CACHE/apt-trixie.log" 2>&1 ||
		{ tail -n 30 "$CACHE/apt-trixie.log"; die "qemu install failed"; }
	write_qemu_wrapper
	check_qemu
}

write_qemu_wrapper() {
	cat >"$CACHE/bin/qemu-system-x86_64" <<'EOF'
#!/bin/sh
# Generated by qemu/setup.sh: run the trixie-backports QEMU from the host
# through the trixie tree's own dynamic loader and libraries.
T=$(cd "$(dirname "$0")/../trixie" && pwd) || exit 1
L=$T/usr/lib/x86_64-linux-gnu
export QEMU_MODULE_DIR="${QEMU_MODULE_DIR:-$L/qemu}"
exec "$L/ld-linux-x86-64.so.2" --library-path "$L:$T/lib/x86_64-linux-gnu" \
	"$T/usr/bin/qemu-system-x86_64" \
	-L "$T/usr/share/qemu" -L "$T/usr/share/seabios" "$@"
EOF
	chmod 755 "$CACHE/bin/qemu-system-x86_64"
}

check_qemu() {
	local q=$CACHE/bin/qemu-system-x86_64 ver
	ver=$("$q" --version | head -n1)
	[[ $ver =~ version\ ([0-9]+)\.([0-9]+) ]] || die "cannot parse QEMU version"
	if ((BASH_REMATCH[1] < 10 || (BASH_REMATCH[1] == 10 && BASH_REMATCH[2] < 1))); then
		die "QEMU >= 10.1 needed for vfio-user-pci, got $ver"
	fi
	"$q" -device vfio-user-pci,help >"$CACHE/vfio-user-pci.help" 2>&1 ||
		{ cat "$CACHE/vfio-user-pci.help"; die "QEMU has no vfio-user-pci"; }
	grep -q 'socket=' "$CACHE/vfio-user-pci.help" ||
		die "vfio-user-pci has no socket property"
	echo "$ver" >"$CACHE/qemu-version"
}

step_qemu_check() {
	write_qemu_wrapper
	check_qemu
}

step_kernel() {
	local dir=$CACHE/kernel debs=$CACHE/debs/kernel
	rm -rf "$dir" "$debs"
	apt_download "$debs" "linux-image-$KVER"
	mkdir -p "$dir/root"
	dpkg -x "$debs"/linux-image-"$KVER"_*.deb "$dir/root"
	[[ -f $dir/root/boot/vmlinuz-$KVER ]] || die "no vmlinuz in linux-image-$KVER"
	depmod -b "$dir/root" "$KVER"
	# The .deb is not needed once extracted.
	rm -rf "$debs"
	ln -sfn "kernel/root/boot/vmlinuz-$KVER" "$CACHE/vmlinuz"
}

USERLAND_TOOLS=(busybox-static bash pciutils iproute2 ethtool iperf3 tcpdump)

step_userland() {
	local dir=$CACHE/userland debs=$CACHE/debs/userland pkgs deb
	rm -rf "$dir" "$debs"
	# The tools plus the library packages they depend on (recursively).
	# Non-library dependencies (perl, debconf, ...) are not needed to run
	# the binaries; libelogind0 is an alternative of libsystemd0.
	pkgs=$(apt-cache depends --recurse --no-recommends --no-suggests \
		--no-conflicts --no-breaks --no-replaces --no-enhances \
		"${USERLAND_TOOLS[@]}" | grep -v '^[ <]' | sort -u |
		grep -E '^(lib|zlib|pci\.ids$)' |
		grep -vE -- '-perl$|^libperl|^libelogind') || true
	[[ -n $pkgs ]] || { apt_update_once; die "apt-cache depends found nothing"; }
	# shellcheck disable=SC2086
	apt_download "$debs" "${USERLAND_TOOLS[@]}" $pkgs
	mkdir -p "$dir"
	for deb in "$debs"/*.deb; do
		dpkg -x "$deb" "$dir"
	done
	ls "$debs" >"$CACHE/userland.packages"
	rm -rf "$debs"
	[[ -x $dir/bin/busybox && -x $dir/bin/bash ]] ||
		die "busybox-static or bash did not extract"
}

step_checkpatch() {
	local dir=$CACHE/checkpatch debs=$CACHE/debs/source
	rm -rf "$dir" "$debs"
	apt_download "$debs" linux-source-6.1
	mkdir -p "$dir/x"
	dpkg -x "$debs"/linux-source-6.1_*.deb "$dir/x"
	# checkpatch.pl finds its data files next to itself.
	tar -C "$dir" --strip-components=2 \
		-xf "$dir"/x/usr/src/linux-source-6.1.tar.xz \
		'linux-source-6.1/scripts/checkpatch.pl' \
		'linux-source-6.1/scripts/spelling.txt' \
		'linux-source-6.1/scripts/const_structs.checkpatch'
	rm -rf "$dir/x" "$debs"
	[[ -x $dir/checkpatch.pl ]] || die "checkpatch.pl not found"
}

step_driver() {
	make -s -C "$ROOT/guest-driver" KDIR="/usr/src/linux-headers-$KVER"
	[[ -f $ROOT/guest-driver/vnic.ko ]] || die "guest-driver/vnic.ko not built"
}

step_initramfs() {
	"$HERE/build-initramfs.sh"
}

# ---------------------------------------------------------------- main

resolve_kver
log "guest kernel $KVER, cache $CACHE"
# Host packages are checked every run (dpkg-query, fast): the cache may
# outlive them.
run_always host-packages step_host_packages
run_step qemu step_qemu "trixie-backports qemu-system-x86"
# Rewrite and check the wrapper every time (cheap; keeps it in step with this
# script and proves the QEMU tree still works).
run_always qemu-check step_qemu_check
run_step kernel step_kernel "$KVER"
run_step userland step_userland "${USERLAND_TOOLS[*]}"
if ((WITH_CHECKPATCH)); then
	run_step checkpatch step_checkpatch "linux-source-6.1 flat"
fi
run_always driver step_driver
run_always initramfs step_initramfs

log "timings:"
for t in "${TIMINGS[@]}"; do
	log "  $t"
done
log "  total          $(elapsed "$SETUP_T0") s"
log "QEMU:      $(cat "$CACHE/qemu-version")"
log "kernel:    $KVER"
log "initramfs: $CACHE/initramfs.cpio.gz ($(du -h "$CACHE/initramfs.cpio.gz" | cut -f1))"

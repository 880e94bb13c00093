#!/usr/bin/env bash
# qemu/setup.sh - install everything the end-to-end tests need.
#
# Usage: qemu/setup.sh [--kernel NAME[,NAME...]|all]... [--no-checkpatch]
#                      [--force STEP]...
#
#   --kernel NAME   the guest kernel(s) to set up: 6.1 (Debian 12), 6.12
#                   (Debian 13, the default) or latest (the newest
#                   trixie-backports kernel, 7.x); "all" for every one.
#                   Default: $VNIC_KERNEL, else 6.12 (qemu/kernels.sh).
#
# Idempotent: every step leaves a stamp in qemu/.cache/stamps/ and is skipped
# on the next run, so a warm re-run takes seconds. Delete qemu/.cache/ (or a
# single stamp) to redo a step. Works unattended (CI=true, no stdin).
#
# Steps (those ending in -NAME are per guest kernel, cached apart):
#   host-packages  apt: debootstrap, cpio, kmod, xz-utils, gcc/make,
#                  tcpdump, with which tests read the card's pcap captures,
#                  iputils-ping (the host pings a guest from a network
#                  namespace: host netns-ping, docs/vxlan.md),
#                  and for migration (run-guest.sh --migrate, migrate.sh)
#                  socat (QEMU's monitor socket), qemu-utils (qemu-img for
#                  the savevm image), jq (configuration edits), the
#                  linter shellcheck (tests/run.sh checks the scripts), and
#                  python3 (the keeper test's fake card worker,
#                  tests/control/keeper_worker.py)
#   qemu           debootstrap a minimal Debian trixie tree into
#                  qemu/.cache/trixie and install qemu-system-x86 (>= 10.1,
#                  with vfio-user-pci) from trixie-backports into it; write
#                  the host wrapper qemu/.cache/bin/qemu-system-x86_64
#   userland       busybox-static, bash, pciutils, iproute2, ethtool, iperf3,
#                  tcpdump and their libraries, extracted into
#                  qemu/.cache/userland/ (bookworm packages, for every kernel)
#   checkpatch     checkpatch.pl (+ spelling.txt, const_structs.checkpatch)
#                  from linux-source-6.1 into qemu/.cache/checkpatch/, for
#                  make -C guest-driver checkpatch (skip: --no-checkpatch)
#   kbuild         (only for kernels other than 6.1) a minimal trixie tree,
#                  qemu/.cache/kbuild, with trixie-backports in its sources
#                  and make, pahole and the libraries kbuild's tools need:
#                  where the trixie kernels' packages are fetched and their
#                  headers expect to be built (gcc-14, newer than the host's)
#   kernel-NAME    the kernel's packages (linux-image-<abi>, and the
#                  linux-binary-, linux-modules- and linux-base-<abi> that
#                  newer kernels are split into) extracted into
#                  qemu/.cache/kernels/NAME/root (vmlinuz + modules,
#                  depmod'ed)
#   headers-NAME   the kernel's headers (linux-headers-<abi>) and the compiler
#                  they were made with (CONFIG_CC_VERSION_TEXT: gcc-12 for
#                  6.1, gcc-14 for the trixie kernels): on the host for 6.1
#                  (apt), in the kbuild tree for the others (the headers'
#                  packages unpacked, the compiler installed by apt)
#   driver-NAME    vnic.ko built by kbuild against those headers, in
#                  qemu/.cache/kernels/NAME/build (a copy of guest-driver/;
#                  always run, make is incremental); any compiler or
#                  modpost warning fails the step
#   initramfs-NAME qemu/build-initramfs.sh --kernel NAME (rebuilt when an
#                  input changed)
#
# Files written for other scripts (qemu/kernels.sh names them):
#   qemu/.cache/bin/qemu-system-x86_64
#   qemu/.cache/kernels/NAME/kernel-version     e.g. 6.12.117+deb13-amd64
#   qemu/.cache/kernels/NAME/vmlinuz            symlink to the guest kernel
#   qemu/.cache/kernels/NAME/vnic.ko
#   qemu/.cache/kernels/NAME/initramfs.cpio.gz
#
# Environment: VNIC_DEBIAN_MIRROR overrides the Debian mirror (default: the
# one the host's apt sources use); VNIC_KERNEL the default --kernel.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CACHE=$HERE/.cache
STAMPS=$CACHE/stamps
KBUILD_TREE=$CACHE/kbuild

# shellcheck source=qemu/kernels.sh
. "$HERE/kernels.sh"

export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C

WITH_CHECKPATCH=1
FORCE=()
ASKED=()
while (($#)); do
	case $1 in
	--checkpatch) WITH_CHECKPATCH=1 ;;
	--no-checkpatch) WITH_CHECKPATCH=0 ;;
	--force) FORCE+=("$2"); shift ;;
	--kernel)
		(($# >= 2)) || { echo "setup.sh: --kernel needs a name" >&2; exit 2; }
		IFS=, read -r -a names <<<"$2"
		ASKED+=("${names[@]}")
		shift
		;;
	-h | --help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "setup.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
((${#ASKED[@]})) || ASKED=("${VNIC_KERNEL:-default}")
WANTED=" "
for k in "${ASKED[@]}"; do
	if [[ $k == all ]]; then
		WANTED+="${VNIC_KERNELS[*]} "
	elif name=$(kernel_name "$k"); then
		WANTED+="$name "
	else
		echo "setup.sh: unknown kernel '$k' (${VNIC_KERNELS[*]}, default or all)" >&2
		exit 2
	fi
done
# Each once, in the order of VNIC_KERNELS.
KERNELS=()
for k in "${VNIC_KERNELS[@]}"; do
	[[ $WANTED == *" $k "* ]] && KERNELS+=("$k")
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
		TIMINGS+=("$(printf '%-17s %6.1f s  (cached)' "$name" "$(elapsed "$t0")")")
		return 0
	fi
	log "step $name ..."
	rm -f "$STAMPS/$name"
	"$fn"
	echo "$key" >"$STAMPS/$name"
	TIMINGS+=("$(printf '%-17s %6.1f s' "$name" "$(elapsed "$t0")")")
	log "step $name done in $(elapsed "$t0") s"
}

# run_always NAME FUNC: run FUNC every time (it must be cheap when up to date).
run_always() {
	local name=$1 fn=$2 t0
	t0=$(now)
	"$fn"
	TIMINGS+=("$(printf '%-17s %6.1f s' "$name" "$(elapsed "$t0")")")
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

# apt_install_host PKG...: installs those of PKG... the host lacks.
apt_install_host() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
			grep -q 'install ok installed' || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	apt_update_once
	log "apt-get install ${missing[*]}"
	apt-get install -y -q --no-install-recommends "${missing[@]}" \
		>"$CACHE/apt-host.log" 2>&1 ||
		{ tail -n 30 "$CACHE/apt-host.log"; die "apt-get install failed"; }
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

# debootstrap_trixie DIR LOG: a minimal Debian trixie tree in DIR (made
# anew: a tree without its stamp is a leftover of an interrupted run), with
# trixie-backports in its apt sources and fresh package lists.
debootstrap_trixie() {
	local tree=$1 logf=$2 mirror
	mirror=$(detect_mirror)
	safe_rm_tree "$tree"
	log "debootstrap --variant=minbase trixie into $tree from $mirror"
	debootstrap --variant=minbase trixie "$tree" "$mirror" >"$logf" 2>&1 ||
		{ tail -n 30 "$logf"; die "debootstrap failed"; }
	cat >"$tree/etc/apt/sources.list.d/backports.sources" <<EOF
Types: deb
URIs: $mirror
Suites: trixie-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
	chroot "$tree" apt-get update -q >>"$logf" 2>&1 ||
		{ tail -n 30 "$logf"; die "apt-get update in $tree failed"; }
}

# in_root NAME CMD...: runs CMD where kernel NAME's packages come from: on
# the host (6.1), or chrooted into the kbuild tree (the trixie kernels).
in_root() {
	local name=$1
	shift
	if kernel_on_host "$name"; then
		"$@"
	else
		chroot "$KBUILD_TREE" "$@"
	fi
}

# download NAME DIR PKG...: downloads the .debs PKG... into DIR (made anew)
# with the apt of kernel NAME's root.
download() {
	local name=$1 dir=$2 inner=/var/tmp/vnic-debs
	shift 2
	rm -rf "$dir"
	if kernel_on_host "$name"; then
		mkdir -p "$dir"
		(cd "$dir" && apt-get download -q -o APT::Sandbox::User=root "$@" >/dev/null) || {
			apt_update_once
			(cd "$dir" && apt-get download -q -o APT::Sandbox::User=root "$@" >/dev/null)
		} || die "apt-get download $* failed"
		return
	fi
	rm -rf "${KBUILD_TREE:?}$inner"
	mkdir -p "$KBUILD_TREE$inner"
	# shellcheck disable=SC2016 # expanded by the inner shell
	chroot "$KBUILD_TREE" sh -c 'cd "$1" && shift &&
		apt-get download -q -o APT::Sandbox::User=root "$@" >/dev/null' \
		sh "$inner" "$@" || die "apt-get download $* (in the kbuild tree) failed"
	mv "$KBUILD_TREE$inner" "$dir"
}

# apt_download DIR PKG...: download .debs of the host's release into DIR.
apt_download() { download 6.1 "$@"; }

# ---------------------------------------------------------------- kernels

# resolve_kver NAME: sets KVER to kernel NAME's ABI version (e.g.
# 6.12.117+deb13-amd64), resolved once from its suite's linux-image-amd64
# and then pinned in its kernel-version file, so that kernel, headers and
# driver agree.
resolve_kver() {
	local name=$1 dir dep suite
	dir=$(kernel_dir "$CACHE" "$name")
	if [[ -s $dir/kernel-version ]]; then
		KVER=$(cat "$dir/kernel-version")
		return
	fi
	suite=$(kernel_suite "$name")
	if kernel_on_host "$name"; then
		# Fresh package lists: an old ABI's packages leave the archive.
		apt_update_once
		dep=$(apt-cache depends linux-image-amd64)
	else
		dep=$(chroot "$KBUILD_TREE" apt-cache depends "linux-image-amd64/$suite")
	fi
	dep=$(sed -n 's/^ *Depends: linux-image-\(.*-amd64\)$/\1/p' <<<"$dep" | head -n1)
	[[ $dep =~ ^[0-9]+\.[0-9]+[.0-9]*[-+][0-9a-z.+-]*amd64$ ]] ||
		die "cannot resolve the $name kernel's ABI from $suite's linux-image-amd64 (got '$dep')"
	KVER=$dep
	mkdir -p "$dir"
	echo "$KVER" >"$dir/kernel-version"
}

step_kernel() {
	local dir debs=$CACHE/debs/kernel-$KNAME pkgs deb mods f
	dir=$(kernel_dir "$CACHE" "$KNAME")
	rm -rf "$dir/root" "$dir/vmlinuz"
	# linux-image-<abi>, and the packages newer kernels split it into
	# (linux-binary-: vmlinuz; linux-modules-; linux-base-: modules.builtin
	# and modules.order).
	pkgs=("linux-image-$KVER")
	while read -r deb; do
		pkgs+=("$deb")
	done < <(in_root "$KNAME" apt-cache depends "linux-image-$KVER" |
		sed -n "s/^ *Depends: \(linux-\(binary\|modules\|base\)-$KVER\)$/\1/p")
	download "$KNAME" "$debs" "${pkgs[@]}"
	mkdir -p "$dir/root"
	for deb in "$debs"/*.deb; do
		dpkg -x "$deb" "$dir/root"
	done
	rm -rf "$debs"
	# Newer kernels keep their modules (and vmlinuz) under usr/lib/modules:
	# a merged-/usr link lets depmod -b and the initramfs find every
	# kernel's modules in one place.
	[[ -e $dir/root/lib ]] || ln -s usr/lib "$dir/root/lib"
	mods=$dir/root/lib/modules/$KVER
	[[ -d $mods/kernel ]] || die "no modules for $KVER in ${pkgs[*]}"
	for f in "boot/vmlinuz-$KVER" "lib/modules/$KVER/vmlinuz"; do
		if [[ -f $dir/root/$f ]]; then
			ln -sfn "root/$f" "$dir/vmlinuz"
			break
		fi
	done
	[[ -e $dir/vmlinuz ]] || die "no vmlinuz in ${pkgs[*]}"
	# The host's depmod reads .ko.xz and .ko.zst too.
	depmod -b "$dir/root" "$KVER"
	[[ -s $mods/modules.dep ]] || die "depmod wrote no modules.dep for $KVER"
}

# headers_dir NAME: kernel NAME's headers, as a path on the host.
headers_dir() {
	if kernel_on_host "$1"; then
		echo "/usr/src/linux-headers-$KVER"
	else
		echo "$KBUILD_TREE/usr/src/linux-headers-$KVER"
	fi
}

# headers_compiler NAME: the compiler kernel NAME's headers were made with,
# from their CONFIG_CC_VERSION_TEXT (e.g. "x86_64-linux-gnu-gcc-14 (Debian
# 14.2.0-19) 14.2.0"): sets CC_TEXT, and CC_PACKAGE (gcc-14).
headers_compiler() {
	local conf
	conf=$(headers_dir "$1")/.config
	[[ -f $conf ]] || die "no .config in $(headers_dir "$1")"
	CC_TEXT=$(sed -n 's/^CONFIG_CC_VERSION_TEXT="\(.*\)"$/\1/p' "$conf")
	[[ $CC_TEXT =~ gcc-([0-9]+)[[:space:]] ]] ||
		die "the $1 headers were not made with a versioned gcc: '$CC_TEXT'"
	CC_PACKAGE=gcc-${BASH_REMATCH[1]}
}

# The trixie kernels' headers are unpacked into the kbuild tree, not
# installed: installing linux-headers-<abi> would pull in the kernel image
# and initramfs-tools for nothing. What kbuild's tools need is in the tree
# already (KBUILD_PACKAGES); the compiler the headers name is installed.
step_headers_kbuild() {
	local debs=$CACHE/debs/headers-$KNAME pkgs deb
	pkgs=("linux-headers-$KVER")
	while read -r deb; do
		pkgs+=("$deb")
	done < <(chroot "$KBUILD_TREE" apt-cache depends "linux-headers-$KVER" |
		sed -n 's/^ *Depends: \(linux-\(headers-.*-common\|kbuild-.*\)\)$/\1/p')
	((${#pkgs[@]} == 3)) ||
		die "linux-headers-$KVER: expected it, its -common and linux-kbuild, got ${pkgs[*]}"
	download "$KNAME" "$debs" "${pkgs[@]}"
	for deb in "$debs"/*.deb; do
		dpkg -x "$deb" "$KBUILD_TREE"
	done
	rm -rf "$debs"
	[[ -f $KBUILD_TREE/usr/src/linux-headers-$KVER/Makefile ]] ||
		die "linux-headers-$KVER did not unpack"
	headers_compiler "$KNAME"
	log "the $KNAME headers were made with $CC_TEXT: $CC_PACKAGE into the kbuild tree"
	{
		chroot "$KBUILD_TREE" apt-get install -y -q --no-install-recommends \
			"$CC_PACKAGE" && chroot "$KBUILD_TREE" apt-get clean
	} >"$CACHE/apt-kbuild-$KNAME.log" 2>&1 ||
		{ tail -n 30 "$CACHE/apt-kbuild-$KNAME.log"; die "installing $CC_PACKAGE failed"; }
}

# On the host the headers are a package like any other, which depends on
# the compiler they were made with; checked every run, as the host
# packages are.
step_headers_host() {
	apt_install_host "linux-headers-$KVER"
	[[ -d /usr/src/linux-headers-$KVER ]] ||
		die "/usr/src/linux-headers-$KVER missing after install"
	headers_compiler "$KNAME"
	apt_install_host "$CC_PACKAGE"
}

# What kbuild's tools need in the kbuild tree (linux-kbuild-<abi>'s
# Depends), and make.
KBUILD_PACKAGES=(make pahole libelf1t64 libssl3t64 zlib1g)

step_kbuild() {
	debootstrap_trixie "$KBUILD_TREE" "$CACHE/debootstrap-kbuild.log"
	log "installing ${KBUILD_PACKAGES[*]} into the kbuild tree"
	{
		chroot "$KBUILD_TREE" apt-get install -y -q --no-install-recommends \
			"${KBUILD_PACKAGES[@]}" &&
			chroot "$KBUILD_TREE" apt-get clean
	} >"$CACHE/apt-kbuild.log" 2>&1 ||
		{ tail -n 30 "$CACHE/apt-kbuild.log"; die "kbuild tree install failed"; }
	# Headers unpacked into the old tree are gone with it.
	rm -f "$STAMPS"/headers-*
}

# vnic.ko is built in a copy of guest-driver/ per kernel (kbuild puts its
# products next to the sources). Files are copied only when they changed,
# with their times, so make stays incremental. Any warning fails the step.
step_driver() {
	local dir build f status=0
	dir=$(kernel_dir "$CACHE" "$KNAME")
	build=$dir/build
	mkdir -p "$build"
	for f in "$ROOT"/guest-driver/{*.c,*.h,Kbuild,Makefile}; do
		[[ $f == */vnic.mod.c ]] && continue
		cmp -s "$f" "$build/${f##*/}" || cp -p "$f" "$build/"
	done
	# Sources removed from guest-driver/ (not kbuild's own vnic.mod.c).
	for f in "$build"/*.[ch]; do
		[[ $f == */vnic.mod.c || -e $ROOT/guest-driver/${f##*/} ]] || rm -f "$f"
	done
	if kernel_on_host "$KNAME"; then
		make -C "$build" KDIR="/usr/src/linux-headers-$KVER" >"$dir/build.log" 2>&1 ||
			status=$?
	else
		# In the kbuild tree, with the build directory bound into it and
		# /proc mounted (objtool reads it), in a mount namespace of its
		# own: both mounts end with the build.
		# shellcheck disable=SC2016 # expanded by the inner shell
		unshare --mount --propagation private sh -c '
			mkdir -p "$1/mnt/vnic-build" &&
			mount --bind "$2" "$1/mnt/vnic-build" &&
			mount -t proc proc "$1/proc" &&
			chroot "$1" make -C /mnt/vnic-build KDIR="$3"' \
			sh "$KBUILD_TREE" "$build" "/usr/src/linux-headers-$KVER" \
			>"$dir/build.log" 2>&1 || status=$?
	fi
	if ((status != 0)); then
		tail -n 40 "$dir/build.log" >&2
		die "vnic.ko did not build for $KNAME ($KVER); log: $dir/build.log"
	fi
	if grep -iwE 'warning|error' "$dir/build.log" >&2; then
		die "building vnic.ko for $KNAME ($KVER) warned (above); log: $dir/build.log"
	fi
	[[ -f $build/vnic.ko ]] || die "vnic.ko not built for $KNAME"
	cmp -s "$build/vnic.ko" "$dir/vnic.ko" || cp "$build/vnic.ko" "$dir/vnic.ko"
	# Current with guest-driver/ as of now (the launcher compares times).
	touch "$dir/vnic.ko"
}

step_initramfs() {
	"$HERE/build-initramfs.sh" --kernel "$KNAME"
}

# ---------------------------------------------------------------- steps

step_host_packages() {
	apt_install_host debootstrap cpio kmod xz-utils zstd gzip make gcc libc6-dev \
		libelf-dev binutils tcpdump iputils-ping socat qemu-utils jq shellcheck \
		python3
}

step_qemu() {
	local tree=$CACHE/trixie
	debootstrap_trixie "$tree" "$CACHE/debootstrap.log"
	log "installing qemu-system-x86 from trixie-backports (in the tree)"
	{
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

# ---------------------------------------------------------------- main

log "guest kernels: ${KERNELS[*]}; cache $CACHE"
# Host packages are checked every run (dpkg-query, fast): the cache may
# outlive them.
run_always host-packages step_host_packages
run_step qemu step_qemu "trixie-backports qemu-system-x86"
# Rewrite and check the wrapper every time (cheap; keeps it in step with this
# script and proves the QEMU tree still works).
run_always qemu-check step_qemu_check
run_step userland step_userland "${USERLAND_TOOLS[*]}"
if ((WITH_CHECKPATCH)); then
	run_step checkpatch step_checkpatch "linux-source-6.1 flat"
fi
for KNAME in "${KERNELS[@]}"; do
	if ! kernel_on_host "$KNAME"; then
		run_step kbuild step_kbuild "trixie + backports: ${KBUILD_PACKAGES[*]}"
		break
	fi
done
SUMMARY=()
for KNAME in "${KERNELS[@]}"; do
	resolve_kver "$KNAME"
	log "guest kernel $KNAME: $KVER"
	run_step "kernel-$KNAME" step_kernel "$KVER"
	if kernel_on_host "$KNAME"; then
		run_always "headers-$KNAME" step_headers_host
	else
		run_step "headers-$KNAME" step_headers_kbuild "$KVER"
	fi
	run_always "driver-$KNAME" step_driver
	run_always "initramfs-$KNAME" step_initramfs
	headers_compiler "$KNAME"
	SUMMARY+=("$(printf '%-6s %-22s built with %s; initramfs %s' "$KNAME" "$KVER" \
		"$CC_PACKAGE ${CC_TEXT#* }" "$(du -h "$(kernel_dir "$CACHE" "$KNAME")/initramfs.cpio.gz" | cut -f1)")")
done

log "timings:"
for t in "${TIMINGS[@]}"; do
	log "  $t"
done
log "  total             $(elapsed "$SETUP_T0") s"
log "QEMU:    $(cat "$CACHE/qemu-version")"
for t in "${SUMMARY[@]}"; do
	log "kernel  $t"
done

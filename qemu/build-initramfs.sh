#!/usr/bin/env bash
# qemu/build-initramfs.sh - build a guest kernel's initramfs.
#
# Usage: qemu/build-initramfs.sh [--kernel NAME] [--force]
#
# Output: qemu/.cache/kernels/NAME/initramfs.cpio.gz (NAME: 6.1, 6.12 or
# latest, qemu/kernels.sh; default $VNIC_KERNEL, else the default kernel),
# from what qemu/setup.sh put into qemu/.cache/ (run setup.sh first; it
# calls this script itself). Skipped when the output is newer than every
# input; --force rebuilds anyway.
#
# Contents (merged /usr layout):
#   /init                 mounts proc, sys, devtmpfs, ...; brings up lo; runs
#                         /scenario.sh if present (console: ttyS0), prints
#                         "VNIC-SCENARIO-EXIT <rc>" and powers off; without a
#                         scenario, starts an interactive shell
#   busybox + applets     busybox-static (applets that do not shadow a tool)
#   /bin/sh               bash (busybox sh would run its own applets, e.g.
#                         its "ip", instead of the real tools)
#   tools                 lspci/setpci (+ pci.ids), ip/tc/bridge/ss, ethtool,
#                         iperf3, tcpdump, with their shared libraries
#   /lib/modules/<ver>/   the guest kernel's networking modules (kernel/net
#                         and kernel/drivers/net minus wireless and other
#                         hardware families; plus intel's and virtio-pci,
#                         for the peers of tests/bench/guest.sh), their
#                         dependencies, uncompressed (newer kernels ship
#                         .ko.xz: busybox's insmod loads one only after the
#                         kernel refused it, which logs "Invalid ELF header
#                         magic"), depmod'ed
#
# vnic.ko is not part of this image: qemu/run-guest.sh adds the one built for
# the kernel (qemu/.cache/kernels/NAME/vnic.ko) as /lib/modules/vnic.ko,
# with the scenario script as /scenario.sh, in a second cpio per run.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=$HERE/.cache
# shellcheck source=qemu/kernels.sh
. "$HERE/kernels.sh"

die() { printf '[initramfs] ERROR: %s\n' "$*" >&2; exit 1; }
log() { printf '[initramfs] %s\n' "$*"; }

FORCE=0
NAME=${VNIC_KERNEL:-default}
while (($#)); do
	case $1 in
	--force) FORCE=1 ;;
	--kernel) (($# >= 2)) || die "--kernel needs a name"; NAME=$2; shift ;;
	*) die "unknown option $1" ;;
	esac
	shift
done
KNAME=$(kernel_name "$NAME") || die "unknown kernel '$NAME' (${VNIC_KERNELS[*]})"
KDIR=$(kernel_dir "$CACHE" "$KNAME")
OUT=$KDIR/initramfs.cpio.gz

[[ -s $KDIR/kernel-version ]] || die "no $KNAME kernel: run qemu/setup.sh --kernel $KNAME"
KVER=$(cat "$KDIR/kernel-version")
KROOT=$KDIR/root
UL=$CACHE/userland
[[ -d $KROOT/lib/modules/$KVER && -x $UL/bin/busybox ]] ||
	die "kernel or userland missing in $CACHE; run qemu/setup.sh --kernel $KNAME"

INPUTS=("$0" "$HERE/kernels.sh" "$CACHE/stamps/kernel-$KNAME" "$CACHE/stamps/userland")
if ((!FORCE)) && [[ -f $OUT ]]; then
	stale=0
	for f in "${INPUTS[@]}"; do
		[[ $f -nt $OUT ]] && stale=1
	done
	if ((!stale)); then
		log "up to date: $OUT"
		exit 0
	fi
fi

STAGE=$(mktemp -d "$CACHE/initramfs.XXXXXX")
trap 'rm -rf --one-file-system "$STAGE"' EXIT

# ---------------------------------------------------------------- layout

mkdir -p "$STAGE"/{usr/bin,usr/sbin,usr/lib/x86_64-linux-gnu,usr/lib64} \
	"$STAGE"/{dev,proc,sys,run,tmp,root,etc,var,mnt,usr/share/misc}
ln -s usr/bin "$STAGE/bin"
ln -s usr/sbin "$STAGE/sbin"
ln -s usr/lib "$STAGE/lib"
ln -s usr/lib64 "$STAGE/lib64"
ln -s ../run "$STAGE/var/run"
chmod 1777 "$STAGE/tmp"

# ---------------------------------------------------------------- tools

LIBDIRS=$UL/lib/x86_64-linux-gnu:$UL/usr/lib/x86_64-linux-gnu
LOADER=$UL/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
TOOLS=(bin/bash usr/bin/lspci usr/bin/setpci bin/ip sbin/tc sbin/bridge bin/ss
	sbin/ethtool usr/bin/iperf3 usr/bin/tcpdump)

declare -A LIBS=()
for t in "${TOOLS[@]}"; do
	[[ -x $UL/$t ]] || die "$t missing in $UL"
	cp "$UL/$t" "$STAGE/usr/${t#usr/}"
	# Resolve libraries with the extracted tree's own loader.
	while read -r lib; do
		LIBS[$lib]=1
	done < <("$LOADER" --library-path "$LIBDIRS" --list "$UL/$t" |
		awk -v t="$t" '
			/not found/ { print "MISSING " $1 " for " t; next }
			$2 == "=>" && $3 ~ /^\// { print $3 }')
done
for lib in "${!LIBS[@]}"; do
	[[ $lib == MISSING* ]] && die "library ${lib#MISSING }"
	[[ $lib == "$UL"/* ]] || die "library $lib resolved outside $UL"
	cp -L "$lib" "$STAGE/usr/lib/x86_64-linux-gnu/"
done
cp -L "$LOADER" "$STAGE/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
ln -s ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 \
	"$STAGE/usr/lib64/ld-linux-x86-64.so.2"

cp "$UL/usr/share/misc/pci.ids" "$STAGE/usr/share/misc/"
cp -r "$UL/etc/iproute2" "$STAGE/etc/"

# /bin/sh is bash: Debian's busybox-static prefers its own applets over
# PATH (FEATURE_SH_STANDALONE), so in busybox sh "ip" would not be iproute2.
ln -s bash "$STAGE/usr/bin/sh"

# busybox and its applets, except those a real tool provides
cp "$UL/bin/busybox" "$STAGE/usr/bin/busybox"
for applet in $("$UL/bin/busybox" --list); do
	[[ $applet == busybox ]] && continue
	[[ -e $STAGE/usr/bin/$applet || -e $STAGE/usr/sbin/$applet ]] && continue
	ln -s busybox "$STAGE/usr/bin/$applet"
done

cat >"$STAGE/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
tcpdump:x:104:108::/nonexistent:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat >"$STAGE/etc/group" <<'EOF'
root:x:0:
tcpdump:x:108:
nogroup:x:65534:
EOF
cat >"$STAGE/etc/profile" <<'EOF'
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
PS1='vnic-guest:\w# '
EOF
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost\n' >"$STAGE/etc/hosts"
echo vnic-guest >"$STAGE/etc/hostname"
printf 'ip 0 IP\nicmp 1 ICMP\ntcp 6 TCP\nudp 17 UDP\nipv6-icmp 58 IPv6-ICMP\n' \
	>"$STAGE/etc/protocols"
printf 'iperf3\t\t5201/tcp\nvxlan\t\t4789/udp\n' >"$STAGE/etc/services"

# ---------------------------------------------------------------- modules

MSRC=$KROOT/lib/modules/$KVER
MDST=$STAGE/usr/lib/modules/$KVER
mkdir -p "$MDST"

# Networking modules, minus hardware families no test will ever load.
WANT=$(cd "$MSRC" || exit 1; find kernel/net kernel/drivers/net -name '*.ko*' |
	grep -vE '^kernel/net/(wireless|mac80211|bluetooth|sunrpc|ceph|nfc|atm|rxrpc|batman-adv|9p|rds|smc|ieee802154|mac802154|can|appletalk|x25|lapb|phonet|ax25|netrom|rose|nfs|qrtr|dsa)/' |
	grep -vE '^kernel/drivers/net/(wireless|usb|can|ieee802154|wan|hamradio|arcnet|fddi|plip|appletalk|wwan|dsa|ipa|fjes|thunderbolt)/' |
	grep -vE '^kernel/drivers/net/ethernet/' || true)
WANT+=$'\n'$(cd "$MSRC" && find kernel/drivers/net/ethernet/intel -name '*.ko*')
# virtio-pci, for virtio-net: one of the peers of the guest-level benchmark
# (tests/bench/guest.sh).
WANT+=$'\n'$(cd "$MSRC" && find kernel/drivers/virtio -name 'virtio_pci*.ko*')
# Plus everything they depend on (modules.dep: "mod: dep dep ...").
printf '%s\n' "$WANT" | sort -u >"$STAGE/want"
awk -F': *' 'NR == FNR { want[$1] = 1; next }
	($1 in want) { print $1; n = split($2, d, " ");
		for (i = 1; i <= n; i++) print d[i] }' \
	"$STAGE/want" "$MSRC/modules.dep" | sort -u >"$STAGE/closure"
while read -r m; do
	mkdir -p "$MDST/$(dirname "$m")"
	case $m in
	*.ko.xz) xz -dc "$MSRC/$m" >"$MDST/${m%.xz}" ;;
	*.ko.zst) zstd -q -dc "$MSRC/$m" >"$MDST/${m%.zst}" ;;
	*.ko.gz) gzip -dc "$MSRC/$m" >"$MDST/${m%.gz}" ;;
	*) cp "$MSRC/$m" "$MDST/$m" ;;
	esac
done <"$STAGE/closure"
for f in modules.order modules.builtin modules.builtin.modinfo; do
	[[ -f $MSRC/$f ]] || die "$f missing in $MSRC"
	# modules.order names the modules as they are here: uncompressed.
	sed -E 's/\.ko\.(xz|zst|gz)$/.ko/' "$MSRC/$f" >"$MDST/$f"
done
depmod -b "$STAGE/usr" "$KVER"
rm -f "$STAGE/want" "$STAGE/closure"

# ---------------------------------------------------------------- /init

cat >"$STAGE/init" <<'EOF'
#!/bin/sh
# /init of the vnic test guest (generated by qemu/build-initramfs.sh).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=${TERM:-linux}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
# ip netns needs a shared /run/netns; keep the rootfs mounts shared too.
mount --make-rshared / 2>/dev/null
hostname -F /etc/hostname
ip link set lo up

echo "VNIC-INIT: /init reached at $(cut -d' ' -f1 /proc/uptime) s," \
	"kernel $(uname -r)"

if [ -f /scenario.sh ]; then
	# Run the scenario with the console as its terminal.
	cd /root
	sh /scenario.sh </dev/console >/dev/console 2>&1
	rc=$?
	echo "VNIC-SCENARIO-EXIT $rc"
	sync
	poweroff -f
fi

echo "No /scenario.sh: interactive shell on the console; exit to power off."
setsid cttyhack bash -l
poweroff -f
EOF
chmod 755 "$STAGE/init"

# ---------------------------------------------------------------- archive

(cd "$STAGE" && find . -mindepth 1 | LC_ALL=C sort |
	cpio -o -H newc -R 0:0 --quiet) | gzip -6 >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
log "built $OUT ($(du -h "$OUT" | cut -f1), kernel $KVER, $(find "$MDST" -name '*.ko' | wc -l) modules)"

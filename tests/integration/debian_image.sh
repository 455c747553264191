# shellcheck shell=bash
# A real Debian 12 system in a raw disk image, set up as it would be on a
# physical server: it names its disks by an HP Smart Array path
# (/dev/cciss/c0d0p1), so as it is it does not boot on virtual hardware —
# the initramfs waits for a root device that never appears ("ALERT!
# /dev/cciss/c0d0p1 does not exist"). It is the guest that the fixups must
# make bootable.
#
#   source tests/integration/debian_image.sh
#   debian_image PATH        # PATH: a sparse copy of the image; sets DEBIAN12_*
#
# or from a shell, to build or refresh the cache and get a copy:
#
#   bash tests/integration/debian_image.sh PATH
#
# The image (2 GiB, MBR, sparse; ~650 MiB allocated):
#   partition 1  1 MiB .. 1600 MiB, bootable, ext4 (fixed UUID and label):
#                debootstrap --variant=minbase of bookworm with linux-image-amd64,
#                systemd-sysv, udev, initramfs-tools (MODULES=most), kmod,
#                grub-pc, e2fsprogs
#   partition 2  1600 MiB .. 2 GiB, Linux swap (fixed UUID)
#   MBR + sectors 1..: GRUB (boot.img and a core.img made with grub-mkimage
#                from the guest's own grub-pc modules, prefix (hd0,msdos1)/boot/grub)
# What a physical box with that controller carries, each for a fixup to find:
#   /boot/grub/grub.cfg      linux ... root=/dev/cciss/c0d0p1 ro
#                            console=ttyS0,115200 resume=/dev/cciss/c0d0p2
#   /etc/fstab               /dev/cciss/c0d0p1 (/) and /dev/cciss/c0d0p2 (swap)
#   /etc/default/grub        GRUB_DEVICE=/dev/cciss/c0d0p1, GRUB_DISABLE_LINUX_UUID,
#                            resume= in GRUB_CMDLINE_LINUX_DEFAULT (so that
#                            grub-mkconfig gives the linux line above)
#   /etc/initramfs-tools/conf.d/resume   RESUME=/dev/cciss/c0d0p2 (also inside
#                            the initramfs, which is rebuilt after writing it)
#   /etc/udev/rules.d/70-persistent-net.rules   eth0 pinned to a MAC address
#   hp-health.service        a vendor agent (ExecStart=/bin/true), enabled
# and the test's probe:
#   p2vfs-marker.service     after local-fs.target, prints one line
#                            "P2VFS-BOOT-MARKER root=<source of /> ..." to
#                            /dev/ttyS0, then powers off (qemu_boot.sh waits
#                            for it).
#
# debian_image PATH copies the cached image with cp --sparse=always and sets
# the variables of the facts file (DEBIAN12_KERNEL, DEBIAN12_ROOT_UUID, ...;
# see _debian12_write_facts) in the calling shell; DEBIAN12_FACTS names the
# file. It returns non-zero, with the reason on stderr, when the image cannot
# be made.
#
# Cache: ${P2VFS_FIXTURES:-/var/tmp/p2vfs-fixtures}/debian12/ holds
# debian12.img, debian12.env (the facts), stamp (the recipe version; a cache
# with another version is rebuilt) and build.log (the last build's output).
# A flock on its lock file makes concurrent callers wait for one build;
# copies take the lock shared. A build goes to a temporary directory there
# and is renamed into place, the stamp last, so a killed build leaves no
# half-made image behind.
#
# Building needs root, debootstrap, sfdisk (fdisk), mkfs.ext4/mkswap,
# losetup (util-linux), grub-mkimage (grub-common; the modules come from
# the guest), and the Debian mirror (P2VFS_DEBIAN_MIRROR, else the first
# URIs of /etc/apt/sources.list.d/debian.sources, else deb.debian.org). It
# takes 2-4 minutes; a cached copy a few seconds.

# Bump when anything below changes what the image holds.
DEBIAN12_RECIPE=1

_DEBIAN12_LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")

# The fixed identities of the image (the facts file repeats them).
_D12_SIZE=$((2 << 30))
_D12_P1_START=$((1 << 20))
_D12_P1_SIZE=$((1599 << 20))
_D12_P2_START=$((1600 << 20))
_D12_P2_SIZE=$((_D12_SIZE - _D12_P2_START))
_D12_DISK_ID=0x7032f5e1
_D12_ROOT_UUID=5a1d0c3e-8b7f-4e2a-9c61-3d2e7f0b9a41
_D12_ROOT_LABEL=p2vfs-root
_D12_SWAP_UUID=0e4b7c2a-6f1d-4a39-8e57-b1c9d2f3a6e8
_D12_SWAP_LABEL=p2vfs-swap
_D12_HOSTNAME=p2vfs-dl380
_D12_MAC=00:1b:78:5a:3c:2e
_D12_PHYS_ROOT=/dev/cciss/c0d0p1
_D12_PHYS_SWAP=/dev/cciss/c0d0p2
_D12_PACKAGES=linux-image-amd64,systemd-sysv,udev,initramfs-tools,kmod,grub-pc,e2fsprogs
# Modules built into core.img: enough to read grub.cfg and boot Linux
# without loading anything else from /boot/grub/i386-pc.
_D12_GRUB_MODULES="biosdisk part_msdos ext2 normal linux search search_fs_uuid configfile echo test serial terminal gzio boot"

_debian12_cache_dir() {
    echo "${P2VFS_FIXTURES:-/var/tmp/p2vfs-fixtures}/debian12"
}

# True when the cache holds a complete image of this recipe.
_debian12_cached() {
    local dir=$1
    [[ -f $dir/stamp && $(<"$dir/stamp") == "recipe $DEBIAN12_RECIPE" &&
        -f $dir/debian12.img && -f $dir/debian12.env ]]
}

debian_image() {
    local dest=${1:?usage: debian_image PATH}
    local dir lock fd rc=0
    dir=$(_debian12_cache_dir)
    mkdir -p "$dir" || { echo "debian_image: cannot create $dir" >&2; return 1; }
    lock=$dir/lock
    exec {fd}>>"$lock" || { echo "debian_image: cannot open $lock" >&2; return 1; }

    # Fast path: a shared lock, so that no build replaces the files mid-copy.
    if ! flock -s -w 3600 "$fd"; then
        exec {fd}>&-
        echo "debian_image: waited an hour for the lock on $lock" >&2
        return 1
    fi
    if ! _debian12_cached "$dir"; then
        flock -u "$fd"
        if ! flock -x -w 3600 "$fd"; then
            exec {fd}>&-
            echo "debian_image: waited an hour for the lock on $lock" >&2
            return 1
        fi
        # Someone else may have built it while this one waited.
        if ! _debian12_cached "$dir"; then
            # The builder runs as its own bash, without this shell's options
            # and traps, and without the lock descriptor (nothing it leaves
            # running can hold the lock).
            bash "$_DEBIAN12_LIB" --build-cache "$dir" {fd}>&- || rc=$?
            if ((rc)); then
                exec {fd}>&-
                tail -n 20 "$dir/build.log" >&2
                echo "debian_image: building the Debian 12 image failed (status $rc); see $dir/build.log" >&2
                return 1
            fi
        fi
    fi
    rm -f "$dest"
    cp --sparse=always "$dir/debian12.img" "$dest" || rc=$?
    if ((rc == 0)); then
        # shellcheck source=/dev/null
        source "$dir/debian12.env" || rc=$?
        DEBIAN12_FACTS=$dir/debian12.env
    fi
    exec {fd}>&-
    ((rc == 0)) || { echo "debian_image: cannot copy $dir/debian12.img to $dest" >&2; return 1; }
    return 0
}

# ---------------------------------------------------------------- the build
# Everything below runs in the builder process (bash debian_image.sh
# --build-cache DIR), with the exclusive lock held by the caller.

_d12_die() {
    echo "debian_image: $*" >&2
    exit 1
}

_d12_log() {
    printf '[%4ds] %s\n' "$SECONDS" "$*" >&2
}

_D12_LOOPS=()
_D12_MOUNT=
_D12_CHILD=

# _d12_run CMD...: runs CMD in a process group of its own and waits for it,
# so that a signal to the builder ends it at once (bash runs a trap only once
# the foreground command is done) and the cleanup can stop all of it
# (debootstrap's dpkg, a chroot's mkinitramfs).
_d12_run() {
    local rc=0
    setsid "$@" &
    _D12_CHILD=$!
    wait "$_D12_CHILD" || rc=$?
    _D12_CHILD=
    return "$rc"
}

# Runs at every exit of the builder: the chroot's mounts, the root mount,
# the loop devices, the temporary directory.
_d12_cleanup() {
    local rc=$? l
    set +e
    trap - EXIT
    if [[ -n $_D12_CHILD ]] && kill -0 "$_D12_CHILD" 2>/dev/null; then
        kill -TERM -- "-$_D12_CHILD" 2>/dev/null
        for _ in $(seq 50); do kill -0 -- "-$_D12_CHILD" 2>/dev/null || break; sleep 0.2; done
        kill -KILL -- "-$_D12_CHILD" 2>/dev/null
        wait "$_D12_CHILD" 2>/dev/null
        sleep 0.5 # the group's last processes let go of the mount
    fi
    if [[ -n $_D12_MOUNT ]]; then
        for _ in 1 2 3; do
            mountpoint -q "$_D12_MOUNT" || break
            umount -R "$_D12_MOUNT" 2>/dev/null || { sleep 1; umount -R -l "$_D12_MOUNT" 2>/dev/null; }
        done
    fi
    for l in "${_D12_LOOPS[@]}"; do
        losetup "$l" >/dev/null 2>&1 && losetup -d "$l"
    done
    if [[ -n ${_D12_TMP:-} && -d $_D12_TMP ]]; then
        if [[ -n $_D12_MOUNT ]] && mountpoint -q "$_D12_MOUNT"; then
            echo "debian_image: $_D12_MOUNT is still mounted; not removing $_D12_TMP" >&2
        else
            rm -rf --one-file-system "$_D12_TMP"
        fi
    fi
    exit "$rc"
}

_d12_attach() { # OFFSET SIZE FILE: a loop device over that slice, in LOOP
    LOOP=$(losetup -f --show -o "$1" --sizelimit "$2" "$3") || _d12_die "losetup -o $1 --sizelimit $2 $3 failed"
    _D12_LOOPS+=("$LOOP")
}

_d12_detach() {
    local keep=() l
    losetup -d "$1" || _d12_die "cannot detach $1"
    for l in "${_D12_LOOPS[@]}"; do [[ $l == "$1" ]] || keep+=("$l"); done
    _D12_LOOPS=("${keep[@]}")
}

_d12_mirror() {
    if [[ -n ${P2VFS_DEBIAN_MIRROR:-} ]]; then
        echo "$P2VFS_DEBIAN_MIRROR"
        return
    fi
    local m=
    if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
        m=$(awk '/^URIs:/ && $2 !~ /security/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
    fi
    echo "${m:-http://deb.debian.org/debian}"
}

_d12_need() {
    local missing=() c
    for c in debootstrap sfdisk mkfs.ext4 mkswap losetup fstrim grub-mkimage chroot flock; do
        command -v "$c" >/dev/null 2>&1 || missing+=("$c")
    done
    ((${#missing[@]} == 0)) || _d12_die "missing tools: ${missing[*]} (packages: debootstrap fdisk e2fsprogs util-linux grub-common)"
    [[ $(id -u) -eq 0 ]] || _d12_die "building the image needs root (loop devices, mount, chroot)"
}

# Files a physical HP ProLiant with a Smart Array controller would carry.
_d12_configure() {
    local r=$1 kver=$2
    echo "$_D12_HOSTNAME" >"$r/etc/hostname"
    cat >"$r/etc/hosts" <<EOF
127.0.0.1	localhost
127.0.1.1	$_D12_HOSTNAME

::1	localhost ip6-localhost ip6-loopback
ff02::1	ip6-allnodes
ff02::2	ip6-allrouters
EOF
    cat >"$r/etc/fstab" <<EOF
# /etc/fstab: static file system information.
#
# <file system>	<mount point>	<type>	<options>	<dump>	<pass>
$_D12_PHYS_ROOT / ext4 errors=remount-ro 0 1
$_D12_PHYS_SWAP none swap sw 0 0
EOF
    cat >"$r/etc/default/grub" <<EOF
# If you change this file, run 'update-grub' afterwards to update
# /boot/grub/grub.cfg.
# For full documentation of the options in this file, see:
#   info -f grub -n 'Simple configuration'

GRUB_DEFAULT=0
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=\`lsb_release -i -s 2> /dev/null || echo Debian\`
GRUB_CMDLINE_LINUX_DEFAULT="resume=$_D12_PHYS_SWAP"
GRUB_CMDLINE_LINUX="console=ttyS0,115200"
GRUB_DISABLE_LINUX_UUID=true
GRUB_DEVICE=$_D12_PHYS_ROOT
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
EOF
    mkdir -p "$r/etc/initramfs-tools/conf.d"
    echo "RESUME=$_D12_PHYS_SWAP" >"$r/etc/initramfs-tools/conf.d/resume"
    mkdir -p "$r/etc/udev/rules.d"
    cat >"$r/etc/udev/rules.d/70-persistent-net.rules" <<EOF
# This file was automatically generated by the /lib/udev/write_net_rules
# program, run by the persistent-net-generator.rules rules file.
#
# You can modify it, as long as you keep each rule on a single line.

# PCI device 0x14e4:0x1639 (bnx2)
SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{address}=="$_D12_MAC", ATTR{dev_id}=="0x0", ATTR{type}=="1", KERNEL=="eth*", NAME="eth0"
EOF
    # The vendor's health agent, which has nothing to talk to in a VM.
    cat >"$r/etc/systemd/system/hp-health.service" <<EOF
[Unit]
Description=HP ProLiant System Health Monitor
After=local-fs.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true

[Install]
WantedBy=multi-user.target
EOF
    # The probe of the tests. Its description must not contain the marker:
    # systemd prints descriptions on the console.
    cat >"$r/usr/local/sbin/p2vfs-marker" <<'EOF'
#!/bin/sh
# Prints the p2vfs boot marker (qemu_boot.sh waits for it), then powers off.
root=$(findmnt -no SOURCE /)
swap=$(awk 'NR > 1 { printf "%s%s", sep, $1; sep = "," }' /proc/swaps)
echo "P2VFS-BOOT-MARKER root=$root swap=${swap:-none} kernel=$(uname -r)"
EOF
    chmod 755 "$r/usr/local/sbin/p2vfs-marker"
    cat >"$r/etc/systemd/system/p2vfs-marker.service" <<EOF
[Unit]
Description=p2vfs test probe: report the root device and power off
After=local-fs.target

[Service]
Type=oneshot
StandardOutput=tty
TTYPath=/dev/ttyS0
ExecStart=/usr/local/sbin/p2vfs-marker
ExecStartPost=/bin/systemctl --no-block poweroff

[Install]
WantedBy=multi-user.target
EOF
    mkdir -p "$r/etc/systemd/system/multi-user.target.wants"
    ln -sf /etc/systemd/system/hp-health.service "$r/etc/systemd/system/multi-user.target.wants/hp-health.service"
    ln -sf /etc/systemd/system/p2vfs-marker.service "$r/etc/systemd/system/multi-user.target.wants/p2vfs-marker.service"
    # Written by hand in the form grub-mkconfig gives it with the
    # /etc/default/grub above (grub-mkconfig cannot run here: it would probe
    # the build host's devices).
    cat >"$r/boot/grub/grub.cfg" <<EOF
#
# DO NOT EDIT THIS FILE
#
# It is automatically generated by grub-mkconfig using templates
# from /etc/grub.d and settings from /etc/default/grub
#

### BEGIN /etc/grub.d/00_header ###
set default="0"
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
set timeout=0
### END /etc/grub.d/00_header ###

### BEGIN /etc/grub.d/10_linux ###
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux --class gnu --class os \$menuentry_id_option 'gnulinux-simple-$_D12_ROOT_UUID' {
	insmod gzio
	insmod part_msdos
	insmod ext2
	set root='hd0,msdos1'
	search --no-floppy --fs-uuid --set=root $_D12_ROOT_UUID
	echo	'Loading Linux $kver ...'
	linux	/boot/vmlinuz-$kver root=$_D12_PHYS_ROOT ro console=ttyS0,115200 resume=$_D12_PHYS_SWAP
	echo	'Loading initial ramdisk ...'
	initrd	/boot/initrd.img-$kver
}
### END /etc/grub.d/10_linux ###
EOF
}

# Runs CMD in the chroot with /dev, /proc and /sys of the host (unmounted by
# _d12_chroot_done, or by the cleanup's umount -R).
_d12_chroot_ready() {
    local r=$1
    mount --bind /dev "$r/dev" || _d12_die "cannot bind /dev into $r"
    mount -t proc proc "$r/proc" || _d12_die "cannot mount proc in $r"
    mount -t sysfs sysfs "$r/sys" || _d12_die "cannot mount sysfs in $r"
}

_d12_chroot_done() {
    local r=$1 m
    for m in sys proc dev; do umount "$r/$m" || _d12_die "cannot unmount $r/$m"; done
}

_d12_write_facts() {
    local f=$1 kver=$2 debver=$3 grubver=$4 initrd_size=$5
    cat >"$f" <<EOF
# Facts of the p2vfs Debian 12 fixture (tests/integration/debian_image.sh),
# recipe $DEBIAN12_RECIPE. Sourced by debian_image; sizes and offsets in bytes.
DEBIAN12_RECIPE=$DEBIAN12_RECIPE
DEBIAN12_IMAGE_SIZE=$_D12_SIZE
DEBIAN12_DISK_ID=$_D12_DISK_ID
DEBIAN12_P1_OFFSET=$_D12_P1_START
DEBIAN12_P1_SIZE=$_D12_P1_SIZE
DEBIAN12_P2_OFFSET=$_D12_P2_START
DEBIAN12_P2_SIZE=$_D12_P2_SIZE
DEBIAN12_ROOT_UUID=$_D12_ROOT_UUID
DEBIAN12_ROOT_LABEL=$_D12_ROOT_LABEL
DEBIAN12_SWAP_UUID=$_D12_SWAP_UUID
DEBIAN12_SWAP_LABEL=$_D12_SWAP_LABEL
DEBIAN12_PHYS_ROOT=$_D12_PHYS_ROOT
DEBIAN12_PHYS_SWAP=$_D12_PHYS_SWAP
DEBIAN12_HOSTNAME=$_D12_HOSTNAME
DEBIAN12_MAC=$_D12_MAC
DEBIAN12_KERNEL=$kver
DEBIAN12_INITRD_SIZE=$initrd_size
DEBIAN12_DEBIAN_VERSION=$debver
DEBIAN12_GRUB_VERSION=$grubver
EOF
}

# Builds the image into OUTDIR/debian12.img and its facts into
# OUTDIR/debian12.env.
_d12_build() {
    local out=$1 img=$1/debian12.img r=$1/root mirror p1 p2 kver kernels debver grubver grubdir initrd_size
    mirror=$(_d12_mirror)
    _d12_log "building the Debian 12 image in $out (mirror $mirror)"

    truncate -s "$_D12_SIZE" "$img" || _d12_die "cannot create $img"
    sfdisk --quiet --no-reread --no-tell-kernel "$img" <<EOF || _d12_die "sfdisk failed on $img"
label: dos
label-id: $_D12_DISK_ID
unit: sectors

start=$((_D12_P1_START / 512)), size=$((_D12_P1_SIZE / 512)), type=83, bootable
start=$((_D12_P2_START / 512)), size=$((_D12_P2_SIZE / 512)), type=82
EOF
    [[ $(stat -c %s "$img") == "$_D12_SIZE" ]] || _d12_die "sfdisk changed the size of $img"

    _d12_attach "$_D12_P2_START" "$_D12_P2_SIZE" "$img"
    p2=$LOOP
    mkswap -U "$_D12_SWAP_UUID" -L "$_D12_SWAP_LABEL" "$p2" >/dev/null || _d12_die "mkswap failed"
    _d12_detach "$p2"

    _d12_attach "$_D12_P1_START" "$_D12_P1_SIZE" "$img"
    p1=$LOOP
    # GRUB 2.06 reads ext4 with the features bookworm's mke2fs enables.
    mkfs.ext4 -q -U "$_D12_ROOT_UUID" -L "$_D12_ROOT_LABEL" \
        -E hash_seed=1f0b5e2c-3d4a-4b6e-8f70-9a1b2c3d4e5f "$p1" || _d12_die "mkfs.ext4 failed"
    mkdir -p "$r"
    mount "$p1" "$r" || _d12_die "cannot mount $p1 on $r"
    _D12_MOUNT=$r

    _d12_log "debootstrap --variant=minbase --include=$_D12_PACKAGES bookworm"
    # grub-pc's postinst installs to a disk (and asks which) only when
    # /boot/grub/core.img exists, and runs update-grub only when grub.cfg
    # does: on a fresh install neither does, so it touches no disk here.
    # Both are written after debootstrap.
    export DEBIAN_FRONTEND=noninteractive
    if ! _d12_run debootstrap --variant=minbase --include="$_D12_PACKAGES" bookworm "$r" "$mirror" >&2; then
        [[ -f $r/debootstrap/debootstrap.log ]] && tail -n 40 "$r/debootstrap/debootstrap.log" >&2
        _d12_die "debootstrap failed"
    fi

    kernels=("$r"/boot/vmlinuz-*)
    if ((${#kernels[@]} != 1)) || [[ ! -f ${kernels[0]} ]]; then
        _d12_die "expected one kernel in $r/boot, found: ${kernels[*]}"
    fi
    kver=${kernels[0]##*/vmlinuz-}
    debver=$(<"$r/etc/debian_version")
    # shellcheck disable=SC2016 # dpkg-query's format
    grubver=$(chroot "$r" dpkg-query -W -f='${Version}' grub-pc) || _d12_die "grub-pc is not installed in the image"
    _d12_log "kernel $kver, Debian $debver, grub-pc $grubver"

    mkdir -p "$r/boot/grub"
    _d12_configure "$r" "$kver"

    # The initramfs again, now with RESUME= of conf.d/resume in it, as the
    # physical box would have it. Its fsck hook finds the root file system's
    # type through the device fstab names for /, which on the box existed:
    # here fstab names the loop device meanwhile, so that e2fsck goes in.
    _d12_log "update-initramfs -u -k $kver (with RESUME=$_D12_PHYS_SWAP)"
    mv "$r/etc/fstab" "$r/etc/fstab.p2vfs" || _d12_die "cannot move $r/etc/fstab aside"
    echo "$p1 / ext4 errors=remount-ro 0 1" >"$r/etc/fstab"
    _d12_chroot_ready "$r"
    _d12_run chroot "$r" update-initramfs -u -k "$kver" >&2 || _d12_die "update-initramfs failed in the chroot"
    mv -f "$r/etc/fstab.p2vfs" "$r/etc/fstab" || _d12_die "cannot put $r/etc/fstab back"
    chroot "$r" sh -c "lsinitramfs /boot/initrd.img-$kver | grep -q 'sbin/e2fsck\$'" ||
        _d12_die "the initramfs has no e2fsck"
    chroot "$r" apt-get clean || _d12_die "apt-get clean failed in the chroot"
    _d12_chroot_done "$r"
    [[ -s $r/boot/initrd.img-$kver ]] || _d12_die "no initramfs $r/boot/initrd.img-$kver"
    initrd_size=$(stat -c %s "$r/boot/initrd.img-$kver")
    rm -rf "$r"/var/lib/apt/lists/*
    mkdir -p "$r/var/lib/apt/lists/partial"
    rm -f "$r"/var/cache/apt/*.bin "$r"/var/log/*.log.old

    # GRUB from the guest's own modules, laid out as grub-install in the
    # guest would: /boot/grub/i386-pc holds the modules (for any insmod
    # beyond what core.img holds), boot.img and core.img, whose prefix is
    # partition 1.
    grubdir=$r/usr/lib/grub/i386-pc
    [[ -f $grubdir/boot.img && -f $grubdir/kernel.img ]] || _d12_die "the guest has no GRUB i386-pc modules in $grubdir"
    mkdir -p "$r/boot/grub/i386-pc" "$out/grub"
    cp "$grubdir"/*.mod "$grubdir"/*.lst "$grubdir/boot.img" "$r/boot/grub/i386-pc/" || _d12_die "cannot copy the GRUB modules"
    # shellcheck disable=SC2086 # a list of module names
    grub-mkimage -d "$grubdir" -O i386-pc -o "$r/boot/grub/i386-pc/core.img" -p '(hd0,msdos1)/boot/grub' \
        $_D12_GRUB_MODULES || _d12_die "grub-mkimage failed"
    cp "$r/boot/grub/i386-pc/core.img" "$r/boot/grub/i386-pc/boot.img" "$out/grub/" || _d12_die "cannot copy core.img and boot.img"

    _d12_log "fstrim, unmount"
    fstrim "$r" || _d12_die "fstrim failed on $r"
    umount "$r" || _d12_die "cannot unmount $r"
    _D12_MOUNT=
    _d12_detach "$p1"

    ((($(stat -c %s "$out/grub/core.img") + 511) / 512 < _D12_P1_START / 512)) ||
        _d12_die "core.img does not fit before partition 1"
    # What grub-bios-setup would write (it cannot here: it insists on
    # finding the OS device of the directory holding core.img in its device
    # map): boot.img's code in the MBR, keeping the disk signature and the
    # partition table (bytes 440..511); its boot drive check turned into
    # NOPs, as for any hard disk; core.img from sector 1. The block lists
    # that join them are the ones both images come with: boot.img loads
    # sector 1 (kernel_sector), whose diskboot.img loads the rest from
    # sector 2 on (grub-mkimage sets the count).
    local table_before
    table_before=$(sfdisk -d "$img") || _d12_die "cannot read the partition table of $img"
    dd if="$out/grub/boot.img" of="$img" bs=440 count=1 conv=notrunc status=none || _d12_die "cannot write boot.img"
    printf '\x90\x90' | dd of="$img" bs=1 seek=$((0x66)) conv=notrunc status=none || _d12_die "cannot patch the drive check"
    dd if="$out/grub/core.img" of="$img" bs=512 seek=1 conv=notrunc status=none || _d12_die "cannot write core.img"
    [[ $(stat -c %s "$img") == "$_D12_SIZE" ]] || _d12_die "$img changed size"
    [[ $(sfdisk -d "$img") == "$table_before" ]] || _d12_die "writing GRUB changed the partition table of $img"
    [[ $(od -An -tx1 -j510 -N2 "$img" | tr -d ' ') == 55aa ]] || _d12_die "no boot signature in the MBR of $img"

    _d12_write_facts "$out/debian12.env" "$kver" "$debver" "$grubver" "$initrd_size"
    rm -rf "$out/grub" "$r"
    _d12_log "done: $(du -B1M "$img" | cut -f1) MiB allocated of $((_D12_SIZE >> 20)) MiB"
}

# Builds into a temporary directory of the cache and renames the results into
# place, the stamp last.
_d12_build_cache() {
    local dir=$1 start
    set -uo pipefail
    _d12_need
    trap _d12_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    start=$(date +%s)
    _D12_TMP=$(mktemp -d "$dir/build.XXXXXX") || _d12_die "cannot create a build directory in $dir"
    rm -f "$dir/stamp"
    # Everything to build.log; to the caller only the progress lines and
    # the errors (debootstrap's output is thousands of lines).
    {
        _d12_build "$_D12_TMP"
    } 2> >(tee "$dir/build.log" | grep --line-buffered -E '^\[ *[0-9]+s\]|^debian_image:|^E:' >&2)
    mv -f "$_D12_TMP/debian12.img" "$dir/debian12.img" || _d12_die "cannot move the image into $dir"
    mv -f "$_D12_TMP/debian12.env" "$dir/debian12.env" || _d12_die "cannot move the facts into $dir"
    { echo "recipe $DEBIAN12_RECIPE" >"$dir/stamp.tmp" && mv -f "$dir/stamp.tmp" "$dir/stamp"; } ||
        _d12_die "cannot write $dir/stamp"
    echo "debian_image: built $dir/debian12.img in $(($(date +%s) - start)) s" >&2
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    case ${1:-} in
    --build-cache)
        _d12_build_cache "${2:?}"
        ;;
    "" | -h | --help)
        echo "usage: bash $0 PATH   (builds or reuses the cached Debian 12 image, copies it to PATH)" >&2
        exit 2
        ;;
    *)
        debian_image "$1" || exit 1
        echo "$1: Debian 12 image, kernel $DEBIAN12_KERNEL; facts in $DEBIAN12_FACTS"
        ;;
    esac
fi

#!/bin/bash
# Snapshot sources: --source NAME=snapshot:PATH shows a reflink copy of an
# image file taken at start-up, kept in --snapshot-dir, on xfs (mkfs.xfs -m
# reflink=1) and on btrfs (when mkfs.btrfs is installed), each a loop-mounted
# file system in the scratch directory.
#
#  - After the origin is overwritten (inside its data, inside a hole, and past
#    its end), every view of the snapshot still compares identical with a
#    copy of the old content; a qcow2 origin (snapshot:PATH over an image
#    format) likewise. The origin holds exactly what the test wrote to it.
#  - The snapshot's views carry identifiers of their own: disk.raw of the
#    snapshot and of the live origin are equal, their disk.vhd files differ.
#  - A restart keeps the snapshot (the log says "kept from" the time it was
#    taken; same content, same view bytes); a leftover temporary is removed;
#    deleting the snapshot file takes a new one.
#  - Errors, exit status 3, one line naming the reason: an origin on ext4
#    ("does not support reflinks"), a snapshot directory on another file
#    system ("cannot cross file systems"), a block device, a missing origin,
#    a qcow2 whose backing file is named relatively.
source "$(dirname "$0")/lib.sh"
need_root
need_cmd qemu-img qemu-io losetup mkfs.xfs mkfs.ext4 sha256sum
grep -qw xfs /proc/filesystems || modprobe xfs 2>/dev/null || true
grep -qw xfs /proc/filesystems || skip "the kernel has no xfs"

MiB=$((1 << 20))
size=$((64 * MiB))

# make_fs TYPE DIR: a 512 MiB file system of TYPE on a loop device over a
# sparse file, mounted at DIR; unmounted and detached at exit.
make_fs() {
    local type=$1 dir=$2
    truncate -s 512M "$T/$type.fs"
    attach_loop "$T/$type.fs"
    case $type in
    xfs) mkfs.xfs -q -m reflink=1 "$LOOP_DEV" ;;
    btrfs) mkfs.btrfs -q "$LOOP_DEV" >/dev/null ;;
    ext4) mkfs.ext4 -q "$LOOP_DEV" ;;
    esac
    mkdir -p "$dir"
    mount_tracked "$LOOP_DEV" "$dir"
}

sha() { sha256sum <"$1" | cut -d' ' -f1; }

# The raw origin: random data at 0-16 MiB and 40-48 MiB, holes elsewhere.
truncate -s "$size" "$T/pc.orig"
head -c $((16 * MiB)) /dev/urandom | dd of="$T/pc.orig" conv=notrunc status=none
head -c $((8 * MiB)) /dev/urandom | dd of="$T/pc.orig" bs=1M seek=40 conv=notrunc status=none
# What the test writes over it while the daemon runs.
head -c $((4 * MiB)) /dev/urandom >"$T/patch.data"
head -c $((2 * MiB)) /dev/urandom >"$T/patch.hole"
head -c $((1 * MiB)) /dev/urandom >"$T/patch.end"
overwrite() { # FILE: the same three writes, at 2 MiB, 20 MiB (a hole) and 64 MiB (past the end)
    dd if="$T/patch.data" of="$1" bs=1M seek=2 conv=notrunc status=none
    dd if="$T/patch.hole" of="$1" bs=1M seek=20 conv=notrunc status=none
    dd if="$T/patch.end" of="$1" bs=1M seek=64 conv=notrunc status=none
}
cp --sparse=always "$T/pc.orig" "$T/pc.expected"
overwrite "$T/pc.expected"

# assert_disk_identical REF DIR: disk.raw and disk.qcow2 of DIR hold REF.
assert_disk_identical() {
    local view
    for view in disk.raw disk.qcow2; do
        run_rc qemu-img compare -f raw -F "$(qemu_format "$view")" "$1" "$2/$view"
        [[ $RC -eq 0 ]] || fail "$2/$view: qemu-img compare with $1 exited $RC: $(cat "$T/run.out" "$T/run.err")"
    done
}

check_fs() {
    local type=$1 fs=$T/$1 snaps taken vm_taken vhd_id
    make_fs "$type" "$fs"
    snaps=$fs/snaps
    log "$type: origin and snapshots on $fs"

    cp --sparse=always "$T/pc.orig" "$fs/pc.img"
    qemu-img create -q -f qcow2 "$fs/vm.qcow2" 32M
    qemu-io -f qcow2 -c "write -P 0x11 0 8M" -c "write -P 0x22 16M 4M" "$fs/vm.qcow2" >/dev/null
    qemu-img convert -f qcow2 -O raw "$fs/vm.qcow2" "$T/vm.old.raw"

    start_daemon "$T/mnt" --source pc="snapshot:$fs/pc.img" --source vm="snapshot:$fs/vm.qcow2" \
        --source live="$fs/pc.img" --snapshot-dir "$snaps" --state-dir "$T/state"
    assert_file_contains "$DAEMON_LOG" "info: snapshot of $fs/pc.img taken at [0-9T:-]+Z \(reflink, 64 MiB\): $snaps/pc\.img-[0-9a-f]{16}\.snap$" \
        "$type: the log says the snapshot was taken"
    taken=$(sed -n "s|.*snapshot of $fs/pc.img taken at \([^ ]*\) .*|\1|p" "$DAEMON_LOG")
    vm_taken=$(sed -n "s|.*snapshot of $fs/vm.qcow2 taken at \([^ ]*\) .*|\1|p" "$DAEMON_LOG")
    assert_file_has_text "$DAEMON_LOG" "source 'pc': snapshot of $fs/pc.img taken $taken (64 MiB)" "$type: the source's name"
    assert_file_has_text "$DAEMON_LOG" "source 'vm': snapshot of $fs/vm.qcow2 (qcow2 image) taken $vm_taken (32 MiB)" \
        "$type: the qcow2 snapshot's name"

    # Same bytes as the live origin, identifiers of its own.
    cmp "$T/mnt/pc/disk.raw" "$T/mnt/live/disk.raw" || fail "$type: snapshot and origin differ before any write"
    if cmp -s "$T/mnt/pc/disk.vhd" "$T/mnt/live/disk.vhd"; then
        fail "$type: the snapshot's disk.vhd has the origin's identifiers"
    fi
    vhd_id=$(head -c $MiB "$T/mnt/pc/disk.vhd" | sha256sum)

    overwrite "$fs/pc.img"
    qemu-io -f qcow2 -c "write -P 0x5a 1M 4M" -c "write -P 0x33 24M 1M" "$fs/vm.qcow2" >/dev/null
    sync
    echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true

    assert_eq "$(sha "$T/pc.expected")" "$(sha "$fs/pc.img")" "$type: sha256 of the origin (only the test's writes)"
    assert_eq "$size" "$(stat -c %s "$T/mnt/pc/disk.raw")" "$type: size of the snapshot's disk.raw"
    if cmp -s "$T/mnt/pc/disk.raw" "$T/pc.expected"; then
        fail "$type: the snapshot shows the overwritten origin"
    fi
    log "$type: comparing every view with the old content"
    assert_views_identical "$T/pc.orig" "$T/mnt/pc"
    assert_views_identical "$T/vm.old.raw" "$T/mnt/vm"
    stop_daemon

    # The directory: 0700; per origin a 0400 snapshot and its record.
    assert_eq 700 "$(stat -c %a "$snaps")" "$type: mode of the snapshot directory"
    assert_eq "pc.img-X.meta pc.img-X.snap vm.qcow2-X.meta vm.qcow2-X.snap " \
        "$(list_dir "$snaps" | sed 's/-[0-9a-f]\{16\}\./-X./g')" "$type: files in the snapshot directory"
    assert_eq 400 "$(stat -c %a "$snaps"/pc.img-*.snap)" "$type: mode of the snapshot"
    assert_file_contains "$snaps"/pc.img-*.meta "^origin=$fs/pc.img$" "$type: the record names the origin"

    # A restart keeps both snapshots; a leftover temporary goes.
    : >"$snaps/pc.img-0123456789abcdef.snap.tmp"
    start_daemon "$T/mnt" --source pc="snapshot:$fs/pc.img" --source vm="snapshot:$fs/vm.qcow2" \
        --snapshot-dir "$snaps" --state-dir "$T/state"
    assert_file_has_text "$DAEMON_LOG" "info: snapshot of $fs/pc.img kept from $taken: $snaps/pc.img-" "$type: pc kept"
    assert_file_has_text "$DAEMON_LOG" "info: snapshot of $fs/vm.qcow2 kept from $vm_taken: " "$type: vm kept"
    assert_file_lacks "$DAEMON_LOG" "taken at" "$type: no new snapshot after a restart"
    assert_file_has_text "$DAEMON_LOG" "removed $snaps/pc.img-0123456789abcdef.snap.tmp" "$type: leftover reported"
    [[ ! -e $snaps/pc.img-0123456789abcdef.snap.tmp ]] || fail "$type: the leftover temporary is still there"
    assert_disk_identical "$T/pc.orig" "$T/mnt/pc"
    assert_disk_identical "$T/vm.old.raw" "$T/mnt/vm"
    assert_eq "$vhd_id" "$(head -c $MiB "$T/mnt/pc/disk.vhd" | sha256sum)" "$type: disk.vhd after a restart"
    stop_daemon

    # Deleting the snapshot takes a new one, of the origin as it is now.
    rm -f "$snaps"/pc.img-*.snap
    start_daemon "$T/mnt" --views raw,qcow2 --source pc="snapshot:$fs/pc.img" --snapshot-dir "$snaps"
    assert_file_has_text "$DAEMON_LOG" "info: snapshot of $fs/pc.img taken $taken is gone" "$type: the deleted snapshot noticed"
    assert_file_contains "$DAEMON_LOG" "info: snapshot of $fs/pc.img taken at .* \(reflink, 65 MiB\)" "$type: a new snapshot"
    assert_disk_identical "$T/pc.expected" "$T/mnt/pc"
    stop_daemon
    assert_eq "$(sha "$T/pc.expected")" "$(sha "$fs/pc.img")" "$type: sha256 of the origin at the end"
}

check_fs xfs
if command -v mkfs.btrfs >/dev/null 2>&1 && { grep -qw btrfs /proc/filesystems || modprobe btrfs 2>/dev/null; }; then
    check_fs btrfs
else
    log "btrfs: not tested (no mkfs.btrfs or no btrfs in the kernel)"
fi

# ---------------------------------------------------------------- errors

make_fs ext4 "$T/ext4"
cp --sparse=always "$T/pc.orig" "$T/ext4/pc.img"
run_daemon_fg --mount "$T/mnt" --source pc="snapshot:$T/ext4/pc.img" --snapshot-dir "$T/ext4/snaps"
expect_startup_error 3 "source 'pc': $T/ext4/pc.img: cannot take a snapshot in $T/ext4/snaps: ext4 at $T/ext4 does not support reflinks (FICLONE); btrfs or xfs with reflink=1 do" \
    "an origin on ext4"
assert_eq "" "$(list_dir "$T/ext4/snaps")" "files left in the snapshot directory on ext4"

run_daemon_fg --mount "$T/mnt" --source pc="snapshot:$T/xfs/pc.img" --snapshot-dir "$T/ext4/snaps"
expect_startup_error 3 "reflinks cannot cross file systems: origin on $T/xfs (xfs), snapshot directory on $T/ext4 (ext4); give --snapshot-dir on the origin's file system" \
    "a snapshot directory on another file system"

attach_loop -r "$T/pc.orig"
run_daemon_fg --mount "$T/mnt" --source pc="snapshot:$LOOP_DEV" --snapshot-dir "$T/xfs/snaps"
expect_startup_error 3 "$LOOP_DEV: is a block device; snapshots of block devices need an LVM or file-system snapshot kind, not available" \
    "a block device"

run_daemon_fg --mount "$T/mnt" --source pc="snapshot:$T/xfs/gone.img" --snapshot-dir "$T/xfs/snaps"
expect_startup_error 3 "$T/xfs/gone.img: cannot take a snapshot: No such file or directory" "a missing origin"

qemu-img create -q -f qcow2 "$T/xfs/base.qcow2" 32M
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$T/xfs/top.qcow2"
run_daemon_fg --mount "$T/mnt" --source top="snapshot:$T/xfs/top.qcow2" --snapshot-dir "$T/xfs/snaps"
expect_startup_error 3 "$T/xfs/top.qcow2: its backing file 'base.qcow2' is named relative to the image's directory" \
    "a qcow2 with a relative backing file"
if ls "$T/xfs/snaps"/top.qcow2-* >/dev/null 2>&1; then
    fail "a snapshot was taken of a qcow2 that cannot be served from it"
fi
is_mounted "$T/mnt" && fail "a mount was left at $T/mnt"
exit 0

#!/usr/bin/env bash
# Each format's size limit, through the daemon: a disk over a format's
# limit gets no file of that format, and the log says which limit, while
# the formats that hold it are there. The disks are too large for a file on
# ext4 (16 TiB at most), so they are nbdkit null disks shown as files by
# nbdfuse.
source "$(dirname "$0")/lib.sh"
need_root
need_cmd nbdkit nbdfuse qemu-img

TiB=$((1 << 40))
serve() { # NAME SIZE: an nbdkit null disk of SIZE bytes at $T/nbd-NAME/disk.img
    bg_tracked nbdkit -f -r -U "$T/$1.sock" null size="$2"
    wait_for 10 test -S "$T/$1.sock" || fail "nbdkit did not create $T/$1.sock"
    mkdir "$T/nbd-$1"
    bg_tracked nbdfuse -r "$T/nbd-$1/disk.img" --unix "$T/$1.sock"
    push_cleanup force_unmount "$T/nbd-$1"
    wait_for 10 test -f "$T/nbd-$1/disk.img" || fail "nbdfuse did not show $T/nbd-$1/disk.img"
    assert_eq "$2" "$(stat -c %s "$T/nbd-$1/disk.img")" "size of the $1 disk"
}
serve t70 $((70 * TiB))
serve t600 $((600 * TiB))

start_daemon "$T/mnt" --source t70="$T/nbd-t70/disk.img" --source t600="$T/nbd-t600/disk.img"

# expect_refused SOURCE FILE LIMIT-TEXT: FILE is absent and one warning says why.
expect_refused() {
    [[ ! -e $T/mnt/$1/$2 ]] || fail "$1/$2 exists although the disk is over its limit"
    grep -F "source '$1': no $2:" "$DAEMON_LOG" >"$T/why" || true
    assert_lines 1 "$T/why" "warnings about $1/$2"
    assert_file_has_text "$T/why" "$3" "warning about $1/$2"
}
for src in t70 t600; do
    expect_refused $src disk.vhd "exceeds the format's 2040 GiB limit"
    expect_refused $src disk-fixed.vhd "exceeds the format's 2040 GiB limit"
    expect_refused $src disk.vmdk "exceeds the format's 2047 GiB limit"
    expect_refused $src disk.vhdx "exceeds the format's 64 TiB limit"
    expect_refused $src disk-fixed.vhdx "exceeds the format's 64 TiB limit"
    expect_refused $src disk.qcow2 "exceeds the format's 64 TiB limit"
done
expect_refused t600 disk.vdi "exceeds the format's 511 TiB limit"

# What holds the disk is there, at its full size.
assert_eq "disk-esx-flat.vmdk disk-esx.vmdk disk-stream.vmdk disk.raw disk.vdi " \
    "$(list_views "$T/mnt/t70")" "files of the 70 TiB disk"
assert_eq "disk-esx-flat.vmdk disk-esx.vmdk disk-stream.vmdk disk.raw " \
    "$(list_views "$T/mnt/t600")" "files of the 600 TiB disk"
assert_eq $((70 * TiB)) "$(qemu_virtual_size vdi "$T/mnt/t70/disk.vdi")" "t70/disk.vdi virtual size"
assert_eq $((600 * TiB)) "$(qemu_virtual_size vmdk "$T/mnt/t600/disk-esx.vmdk")" \
    "t600/disk-esx.vmdk virtual size"
stop_daemon

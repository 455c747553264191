#!/bin/bash
# The kernel reads the file system inside disk.raw: a read-only loop device
# on the partition (1 MiB into the view), e2fsck -n finds it clean, and the
# mounted ext4 holds exactly the tree the fixture was populated from.
source "$(dirname "$0")/lib.sh"
need_root
need_cmd losetup e2fsck diff

dir=$(fixture_dir sparse-ext4)
src=$dir/disk.img
start_daemon "$T/mnt" --source s="$src"

part_offset=$((1 << 20))
part_size=$(($(stat -c %s "$src") - part_offset))
attach_loop -r -o "$part_offset" --sizelimit "$part_size" "$T/mnt/s/disk.raw"
loop=$LOOP_DEV
log "partition of disk.raw on $loop"
assert_eq "$part_size" "$(blockdev --getsize64 "$loop")" "size of $loop"

run_rc e2fsck -fn "$loop"
[[ $RC -eq 0 ]] || fail "e2fsck -fn $loop exited $RC: $(cat "$T/run.out" "$T/run.err")"

mkdir "$T/fs"
mount_tracked -t ext4 -o ro,noload "$loop" "$T/fs"
if ! diff -r --no-dereference --exclude=lost+found "$dir/tree" "$T/fs" >"$T/diff.txt" 2>&1; then
    head -n 20 "$T/diff.txt" >&2
    fail "the mounted file system differs from the fixture's tree"
fi
# ext4 adds lost+found; everything else must be the tree.
assert_eq "$(cd "$dir/tree" && find . | sort | sha256sum)" \
    "$(cd "$T/fs" && find . -path ./lost+found -prune -o -print | sort | sha256sum)" \
    "list of files in the file system"

umount "$T/fs"
losetup -d "$loop"
stop_daemon

#!/bin/bash
# The mount is read-only: writing into a view, truncating it, creating,
# removing or renaming files all fail with EROFS ("Read-only file system"),
# and the source is not changed.
source "$(dirname "$0")/lib.sh"
need_root

src=$(fixture tiny)
before=$(sha256sum <"$src")
start_daemon "$T/mnt" --source t="$src"
d=$T/mnt/t

expect_erofs() { # WHAT CMD...
    local what=$1
    shift
    run_rc "$@"
    assert_ne 0 "$RC" "$what: exit status"
    assert_file_contains "$T/run.err" "Read-only file system" "$what: error"
}

expect_erofs "dd into disk.raw" \
    dd if=/dev/zero of="$d/disk.raw" bs=512 count=1 conv=notrunc status=none
expect_erofs "dd into disk.vmdk" \
    dd if=/dev/zero of="$d/disk.vmdk" bs=512 count=1 seek=1 conv=notrunc status=none
expect_erofs "truncate disk.vhd" truncate -s 0 "$d/disk.vhd"
expect_erofs "touch a new file" touch "$d/new-file"
expect_erofs "mkdir" mkdir "$d/new-dir"
expect_erofs "rm disk.raw" rm -f "$d/disk.raw"
expect_erofs "mv disk.raw" mv "$d/disk.raw" "$d/moved.raw"
expect_erofs "chmod disk.raw" chmod 666 "$d/disk.raw"

[[ ! -e $d/new-file && ! -e $d/new-dir && ! -e $d/moved.raw ]] || fail "a file was created in the mount"
cmp "$src" "$d/disk.raw" || fail "disk.raw changed"
assert_eq "$before" "$(sha256sum <"$src")" "sha256 of the source"
stop_daemon

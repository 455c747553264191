#!/bin/bash
# An I/O error in the source reaches the reader as EIO, is logged with the
# offset in hex, and the daemon keeps serving: once the source heals, the
# same and other regions read correctly.
#
# The failing source: nbdkit's file plugin over the "random" fixture behind
# the error filter (every read fails while the trigger file exists), made a
# local file by nbdfuse. Page caches (nbdfuse's file, our views) would hide
# errors, so each read goes to a region that no one has read before.
source "$(dirname "$0")/lib.sh"
need_root
need_cmd nbdkit nbdfuse fusermount3 cmp

src=$(fixture random)
SOCK=$T/nbd.sock
TRIGGER=$T/trigger
if ! nbdkit -U - --filter=error null error-pread-rate=100% --run true >/dev/null 2>&1; then
    skip "nbdkit's error filter is not available"
fi

bg_tracked nbdkit -f -r -U "$SOCK" --filter=error file "$src" \
    error-pread=EIO error-pread-rate=100% error-pread-file="$TRIGGER"
wait_for 10 test -S "$SOCK" || fail "nbdkit did not create $SOCK"

mkdir "$T/nbd"
bg_tracked nbdfuse -r "$T/nbd/disk.img" --unix "$SOCK"
push_cleanup force_unmount "$T/nbd"
wait_for 10 is_fuse_mount "$T/nbd" || fail "nbdfuse did not mount $T/nbd"
wait_for 10 test -f "$T/nbd/disk.img" || fail "$T/nbd/disk.img did not appear"
assert_eq "$(stat -c %s "$src")" "$(stat -c %s "$T/nbd/disk.img")" "size of the nbdfuse file"

MiB=$((1 << 20))

# read_at FILE MIB: the 64 KiB at MIB MiB into FILE, on stdout.
read_at() {
    dd if="$1" bs=64K count=1 skip=$(($2 * 16)) status=none
}

# check_mode MODE BASE: the whole story on one read path (copies by default,
# or --splice), at offsets BASE MiB apart from the other mode's, so that no
# page cache (nbdfuse's, the view's) holds what is read.
check_mode() {
    local mode=$1 base=$2
    start_daemon "$T/mnt$mode" "$mode" --source e="$T/nbd/disk.img"
    raw=$T/mnt$mode/e/disk.raw
    log "read path: $mode"

    # Healthy: the first MiB reads and matches.
    cmp <(read_at "$raw" $((base + 1))) <(read_at "$src" $((base + 1))) ||
        fail "disk.raw at $((base + 1)) MiB differs from the source"

    # Broken: a read at 32 MiB fails with EIO.
    touch "$TRIGGER"
    bad_mib=$((base + 32))
    run_rc dd if="$raw" of=/dev/null bs=64K count=1 skip=$((bad_mib * 16))
    assert_ne 0 "$RC" "dd at $bad_mib MiB with the source failing: exit status"
    assert_file_contains "$T/run.err" "Input/output error" "dd at $bad_mib MiB with the source failing"

    # The log names the failing offset in hex (leading zeros allowed).
    hex=$(printf '%x' $((bad_mib * MiB)))
    wait_for 5 grep -Eqi "0x0*${hex}([^0-9a-f]|\$)" "$DAEMON_LOG" ||
        fail "the daemon log has no line with offset 0x$hex"
    assert_file_contains "$DAEMON_LOG" "error.*0x0*${hex}([^0-9a-fA-F]|\$)" "error line in the daemon log"
    daemon_alive || fail "the daemon died after an I/O error"

    # Healed: a fresh region and the one that failed both read correctly.
    rm "$TRIGGER"
    for mib in $((base + 48)) $bad_mib; do
        cmp <(read_at "$raw" "$mib") <(read_at "$src" "$mib") ||
            fail "disk.raw at $mib MiB differs from the source after the error"
    done
    # Formats with metadata over the same source keep working too.
    cmp <(read_at "$T/mnt$mode/e/disk-fixed.vhd" $((base + 40))) <(read_at "$src" $((base + 40))) ||
        fail "disk-fixed.vhd at $((base + 40)) MiB differs from the source"
    daemon_alive || fail "the daemon is not serving after the source healed"
    stop_daemon
}

check_mode --no-splice 0
check_mode --splice 8

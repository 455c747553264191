#!/usr/bin/env bash
# SIGTERM while a stream-optimized VMDK is being compressed (its first open):
# the pass is cancelled, the reader gets "Operation canceled", and the
# daemon unmounts and exits 0 at once instead of finishing the pass. The
# source is slowed down (nbdkit's delay filter, shown as a file by nbdfuse)
# so the pass is still running when the signal comes.
source "$(dirname "$0")/lib.sh"
need_root
need_cmd nbdkit nbdfuse

src=$(fixture random) # 64 MiB of random data: 1024 grains to compress
bg_tracked nbdkit -f -r -U "$T/nbd.sock" --filter=delay file "$src" rdelay=100ms
wait_for 10 test -S "$T/nbd.sock" || fail "nbdkit did not create $T/nbd.sock"
mkdir "$T/nbd"
bg_tracked nbdfuse -r "$T/nbd/disk.img" --unix "$T/nbd.sock"
push_cleanup force_unmount "$T/nbd"
wait_for 10 test -f "$T/nbd/disk.img" || fail "nbdfuse did not show $T/nbd/disk.img"

start_daemon "$T/mnt" --source slow="$T/nbd/disk.img" --views vmdk-stream
cat "$T/mnt/slow/disk-stream.vmdk" >/dev/null 2>"$T/cat.err" &
reader=$!
wait_for 10 grep -q "disk-stream.vmdk of 'slow': preparing" "$DAEMON_LOG" ||
    fail "the compression did not start"
sleep 1
grep -q "disk-stream.vmdk of 'slow': ready" "$DAEMON_LOG" &&
    skip "the source was not slow enough: the pass ended before the signal"

start=$(date +%s%N)
stop_daemon # asserts exit status 0 within 20 s and the mount gone
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
log "stopped ${elapsed_ms} ms after SIGTERM"
assert_lt "$elapsed_ms" 5000 "milliseconds from SIGTERM to exit"
rc=0
wait "$reader" || rc=$?
assert_ne 0 "$rc" "exit status of the reader"
assert_file_has_text "$T/cat.err" "Operation canceled" "the reader's error"
assert_file_has_text "$DAEMON_LOG" "preparation cancelled: the daemon is stopping"

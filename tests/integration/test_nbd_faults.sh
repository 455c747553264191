#!/bin/bash
# Faults of a remote source, injected with nbdkit's own filters and by
# killing the server:
#  - read errors (the error filter, while a trigger file exists) reach the
#    reader as EIO, the daemon logs the NBD request's offset in hex, nothing
#    failed is cached: once the fault clears the same range reads correctly;
#  - the server killed (SIGKILL) in the middle of a long sequential read and
#    started again a few seconds later: the read completes with the right
#    bytes, and the log tells of the loss and the reconnection;
#  - a server that stays away past --retry-timeout: the read fails with
#    ETIMEDOUT ("Connection timed out") and the log says how long it waited;
#    when the server returns, reads work again;
#  - a server that accepts requests and never answers them (the delay
#    filter at 60 s a read): the connection is dropped as stalled and
#    remade, and the read fails with ETIMEDOUT after about two timeouts
#    rather than hanging.
source "$(dirname "$0")/lib.sh"
need_root
need_cmd nbdkit cmp
if ! nbdkit -U - --filter=error null error-pread-rate=100% --run true >/dev/null 2>&1; then
    skip "nbdkit's error filter is not available"
fi

src=$(fixture random)
MiB=$((1 << 20))
read_at() { # FILE MIB: the 64 KiB at MIB MiB
    dd if="$1" bs=64K count=1 skip=$(($2 * 16)) status=none
}

# --- injected read errors
TRIGGER=$T/trigger
start_nbdkit "$T/err.sock" -r --filter=error file "$src" \
    error-pread=EIO error-pread-rate=100% error-pread-file="$TRIGGER"
start_daemon "$T/mnt" --source e="$(nbd_unix_uri "$T/err.sock")"
raw=$T/mnt/e/disk.raw
cmp <(read_at "$raw" 1) <(read_at "$src" 1) || fail "disk.raw at 1 MiB differs from the source"
touch "$TRIGGER"
run_rc dd if="$raw" of=/dev/null bs=64K count=1 skip=$((32 * 16))
assert_ne 0 "$RC" "dd at 32 MiB with the server failing reads: exit status"
assert_file_has_text "$T/run.err" "Input/output error" "dd at 32 MiB with the server failing reads"
wait_for 5 grep -q "NBD server .*: read of [0-9]* bytes at offset 0x2000000 failed: Input/output error" "$DAEMON_LOG" ||
    fail "the daemon log has no line naming the failed NBD read at 0x2000000"
assert_file_contains "$DAEMON_LOG" "error: .*0x2000000" "error line with the offset"
rm "$TRIGGER"
cmp <(read_at "$raw" 32) <(read_at "$src" 32) || fail "disk.raw at 32 MiB differs after the fault cleared"
daemon_alive || fail "the daemon died after read errors"
stop_daemon

# --- the server killed during a long read, and back 3 s later
# One connection, one nbdkit thread and 100 ms per request (of 1 MiB): 64 MiB
# take over 6 s.
start_nbdkit "$T/slow.sock" -r -t 1 --filter=delay file "$src" delay-read=100ms
start_daemon "$T/mnt" --nbd-connections 1 --source s="$(nbd_unix_uri "$T/slow.sock")"
cat "$T/mnt/s/disk.raw" >"$T/copy" &
cat_pid=$!
sleep 1
kill -0 "$cat_pid" 2>/dev/null || fail "the read finished before the server was killed; slow it down"
stop_pid "$NBDKIT_PID"
sleep 3
kill -0 "$cat_pid" 2>/dev/null || fail "the read ended while the server was down"
start_nbdkit "$T/slow.sock" -r -t 1 --filter=delay file "$src" delay-read=100ms
wait "$cat_pid" || fail "cat of disk.raw failed across the server's restart"
cmp "$src" "$T/copy" || fail "the bytes read across the server's restart differ from the source"
assert_file_contains "$DAEMON_LOG" "warning: NBD server .*slow.sock: connection [0-9]+: lost" "loss in the log"
assert_file_contains "$DAEMON_LOG" "info: NBD server .*slow.sock: connection [0-9]+: reconnected after [0-9.]+ s" \
    "reconnection in the log"
assert_file_lacks "$DAEMON_LOG" "error" "the daemon log across a restart"
stop_daemon

# --- the server away for longer than --retry-timeout
start_nbdkit "$T/gone.sock" -r file "$src"
start_daemon "$T/mnt" --retry-timeout 2 --source g="$(nbd_unix_uri "$T/gone.sock")"
cmp <(read_at "$T/mnt/g/disk.raw" 1) <(read_at "$src" 1) || fail "g/disk.raw at 1 MiB differs"
stop_pid "$NBDKIT_PID"
start=$SECONDS
run_rc dd if="$T/mnt/g/disk.raw" of=/dev/null bs=64K count=1 skip=$((20 * 16))
assert_ne 0 "$RC" "dd with the server gone: exit status"
assert_file_has_text "$T/run.err" "Connection timed out" "dd with the server gone"
assert_le 2 $((SECONDS - start + 1)) "seconds before the read failed"
assert_le $((SECONDS - start)) 10 "seconds before the read failed"
assert_file_contains "$DAEMON_LOG" "NBD server .*gone.sock: read of [0-9]+ bytes at offset 0x[0-9a-f]+: no answer for 2 s" \
    "timeout in the log"
start_nbdkit "$T/gone.sock" -r file "$src"
wait_for 15 cmp -s <(read_at "$T/mnt/g/disk.raw" 24) <(read_at "$src" 24) ||
    fail "g/disk.raw does not read again after the server came back"
stop_daemon

# --- a server that stops answering
start_nbdkit "$T/hung.sock" -r --filter=delay file "$src" delay-read=60
start_daemon "$T/mnt" --retry-timeout 2 --cache-size 0 --source h="$(nbd_unix_uri "$T/hung.sock")"
start=$SECONDS
run_rc dd if="$T/mnt/h/disk.raw" of=/dev/null bs=64K count=1 skip=$((8 * 16))
assert_ne 0 "$RC" "dd from a server that does not answer: exit status"
assert_file_has_text "$T/run.err" "Connection timed out" "dd from a server that does not answer"
assert_le $((SECONDS - start)) 15 "seconds before the read from a hung server failed"
assert_file_contains "$DAEMON_LOG" "warning: NBD server .*hung.sock: connection [0-9]+: lost: no reply to [0-9]+ request\(s\) for [0-9.]+ s" \
    "the stalled connection in the log"
daemon_alive || fail "the daemon died with a hung server"
stop_daemon

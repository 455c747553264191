#!/bin/bash
# A daemon killed with SIGKILL leaves a dead FUSE mount ("Transport endpoint
# is not connected"). The next daemon on that mount point notices it, logs a
# line saying "stale", removes it, and mounts normally: one mount, views
# readable, clean exit.
source "$(dirname "$0")/lib.sh"
need_root
need_cmd qemu-img

src=$(fixture odd)
MNT=$T/mnt

start_daemon "$MNT" --source o="$src"
kill_daemon_hard

is_mounted "$MNT" || fail "no mount left at $MNT after kill -9 (cannot test recovery)"
run_rc stat "$MNT"
assert_ne 0 "$RC" "stat of the dead mount's exit status"
assert_file_contains "$T/run.err" "Transport endpoint is not connected" "stat of the dead mount"

start_daemon "$MNT" --source o="$src"
assert_file_contains "$DAEMON_LOG" "stale" "log of the second daemon"
assert_eq 1 "$(_mountinfo_of "$MNT" | wc -l)" "number of mounts at $MNT"
cmp "$src" "$MNT/o/disk.raw" || fail "disk.raw differs from the source after recovery"
run_rc qemu-img compare -f raw -F vmdk "$src" "$MNT/o/disk.vmdk"
assert_eq 0 "$RC" "qemu-img compare of disk.vmdk after recovery"
stop_daemon

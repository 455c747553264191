#!/bin/bash
# A mount point that already has something mounted on it is refused: exit
# status 4, one line on stderr naming the mount point, and the existing mount
# is left exactly as it was — whether it is a tmpfs or another p2vfsd.
source "$(dirname "$0")/lib.sh"
need_root

src=$(fixture tiny)

# A tmpfs on the mount point.
mkdir "$T/busy"
mount_tracked -t tmpfs -o size=1m p2vfs-test "$T/busy"
echo marker >"$T/busy/marker"
run_daemon_fg --mount "$T/busy" --source t="$src"
expect_error_line 4 "$T/busy" "mount point with a tmpfs on it"
assert_eq tmpfs "$(mount_type "$T/busy")" "file system at $T/busy"
assert_eq 1 "$(_mountinfo_of "$T/busy" | wc -l)" "number of mounts at $T/busy"
assert_eq marker "$(cat "$T/busy/marker")" "marker file in the tmpfs"

# A first p2vfsd on the mount point.
start_daemon "$T/mnt" --source t="$src"
first_pid=$DAEMON_PID
run_daemon_fg --mount "$T/mnt" --source other="$src"
expect_error_line 4 "$T/mnt" "mount point with p2vfsd on it"
assert_eq 1 "$(_mountinfo_of "$T/mnt" | wc -l)" "number of mounts at $T/mnt"
daemon_alive "$T/mnt" || fail "the first p2vfsd is gone"
assert_eq "$first_pid" "$DAEMON_PID" "daemon pid"
[[ ! -e $T/mnt/other ]] || fail "the second daemon's folder appeared in the first mount"
cmp "$src" "$T/mnt/t/disk.raw" || fail "the first mount no longer serves the source"
stop_daemon "$T/mnt"

#!/bin/bash
# A mount point that does not exist, or is not a directory, is refused with
# exit status 4 and one line naming it; the daemon creates nothing.
source "$(dirname "$0")/lib.sh"
need_root

src=$(fixture tiny)

run_daemon_fg --mount "$T/no-such-dir" --source t="$src"
expect_error_line 4 "$T/no-such-dir" "missing mount point"
[[ ! -e $T/no-such-dir ]] || fail "the daemon created $T/no-such-dir"

run_daemon_fg --mount "$T/no-such-parent/mnt" --source t="$src"
expect_error_line 4 "$T/no-such-parent/mnt" "mount point under a missing directory"

echo data >"$T/a-file"
run_daemon_fg --mount "$T/a-file" --source t="$src"
expect_error_line 4 "$T/a-file" "mount point that is a file"
assert_eq data "$(cat "$T/a-file")" "the file at the mount point"

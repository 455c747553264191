#!/bin/bash
# A source that cannot be used stops the daemon before it mounts anything:
# exit status 3 and exactly one line on stderr naming the path, for a missing
# path, a directory, an empty file, an unreadable file, a FIFO and a character
# device — also when the bad source comes after a good one. A malformed
# command line is a usage error: exit status 2.
source "$(dirname "$0")/lib.sh"
need_root
need_cmd setpriv mkfifo timeout

good=$(fixture tiny)
MNT=$T/mnt
mkdir -p "$MNT"

expect_bad_source() { # WHAT PATH
    local what=$1 path=$2
    run_daemon_fg --mount "$MNT" --source "bad=$path"
    expect_startup_error 3 "$path" "$what"
    is_mounted "$MNT" && fail "$what: a mount was left at $MNT"

    # The same after a usable source: nothing is mounted either. Info lines
    # about the good source may come first; one error line names the path.
    run_daemon_fg --mount "$MNT" --source "good=$good" --source "bad=$path"
    expect_error_line 3 "$path" "$what (after a good source)"
    is_mounted "$MNT" && fail "$what (after a good source): a mount was left at $MNT"
    return 0
}

expect_bad_source "missing path" "$T/no-such-disk.img"

mkdir "$T/a-directory"
expect_bad_source "directory" "$T/a-directory"

: >"$T/empty.img"
expect_bad_source "empty file" "$T/empty.img"

mkfifo "$T/a-fifo"
expect_bad_source "FIFO" "$T/a-fifo"

expect_bad_source "character device" /dev/null

# Root reads any file; without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH it
# obeys the permission bits like anyone else (the daemon keeps
# CAP_SYS_ADMIN, so it could still mount).
head -c 1M /dev/urandom >"$T/unreadable.img"
chmod 000 "$T/unreadable.img"
# shellcheck disable=SC2054 # one argument with commas
DAEMON_WRAPPER=(setpriv --bounding-set=-dac_override,-dac_read_search --)
if "${DAEMON_WRAPPER[@]}" head -c 1 "$T/unreadable.img" >/dev/null 2>&1; then
    skip "cannot make a file unreadable for root (setpriv did not drop CAP_DAC_OVERRIDE)"
fi
expect_bad_source "unreadable file" "$T/unreadable.img"
assert_file_contains "$T/run.err" "[Pp]ermission denied" "unreadable file: stderr"
DAEMON_WRAPPER=()

# Usage errors.
run_daemon_fg --source "good=$good"
expect_startup_error 2 "--mount" "missing --mount"
run_daemon_fg --mount "$MNT" --source "$good"
expect_startup_error 2 "$good" "--source without NAME="
run_daemon_fg --mount "$MNT" --source "good=$good" --no-such-flag
expect_startup_error 2 "--no-such-flag" "unknown flag"
is_mounted "$MNT" && fail "a mount was left at $MNT"
exit 0

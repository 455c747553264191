# shellcheck shell=bash
# Shared helpers for the integration tests. Every test sources this first:
#
#   source "$(dirname "$0")/lib.sh"
#
# A test runs as root (ctest, cwd = a scratch directory) and exits 0 (pass),
# 77 (skip, reason printed first) or anything else (fail).
#
# Environment:
#   P2VFSD           the daemon under test (required)
#   P2VFS_FIXTURES   cache of slow fixtures (default /var/tmp/p2vfs-fixtures)
#   P2VFS_KEEP       1: keep the scratch directory of a failed test
#
# Cleanup: everything a test sets up through these helpers (daemons, mounts,
# loop devices, helper processes) is registered on a stack, and the EXIT trap
# undoes it last-in first-out. The order matters: a loop device over a file in
# a FUSE mount is detached before the FUSE daemon is stopped, a file system on
# that loop device is unmounted before the loop device is detached.
set -Eeuo pipefail

TEST_NAME=$(basename "$0" .sh)
LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# ---------------------------------------------------------------- reporting

log() { printf '%s: %s\n' "$TEST_NAME" "$*" >&2; }

skip() {
    printf 'SKIP: %s\n' "$*"
    exit 77
}

fail() {
    printf 'FAIL: %s: %s\n' "$TEST_NAME" "$*" >&2
    exit 1
}

need_cmd() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || skip "'$c' is not installed"
    done
}

need_root() {
    [[ $(id -u) -eq 0 ]] || skip "needs root (FUSE mounts, loop devices)"
}

_on_err() {
    local rc=$? line=$1 cmd=$2
    printf 'FAIL: %s: line %s: command failed (exit %s): %s\n' \
        "$TEST_NAME" "$line" "$rc" "$cmd" >&2
}
trap '_on_err "$LINENO" "$BASH_COMMAND"' ERR

# ---------------------------------------------------------------- assertions

assert_eq() { # EXPECTED ACTUAL [WHAT]
    [[ "$1" == "$2" ]] || fail "${3:-value}: expected '$1', got '$2'"
}

assert_ne() { # UNEXPECTED ACTUAL [WHAT]
    [[ "$1" != "$2" ]] || fail "${3:-value}: must not be '$1'"
}

assert_le() { # A B [WHAT]: A <= B, integers
    (($1 <= $2)) || fail "${3:-value}: expected $1 <= $2"
}

assert_lt() { # A B [WHAT]: A < B, integers
    (($1 < $2)) || fail "${3:-value}: expected $1 < $2"
}

assert_file_contains() { # FILE REGEX [WHAT]: grep -E
    grep -Eq -- "$2" "$1" || {
        printf -- '--- %s\n' "$1" >&2
        cat "$1" >&2 || true
        printf -- '---\n' >&2
        fail "${3:-$1}: no line matches /$2/"
    }
}

assert_file_has_text() { # FILE TEXT [WHAT]: grep -F
    grep -Fq -- "$2" "$1" || {
        printf -- '--- %s\n' "$1" >&2
        cat "$1" >&2 || true
        printf -- '---\n' >&2
        fail "${3:-$1}: no line contains '$2'"
    }
}

assert_file_lacks() { # FILE REGEX [WHAT]
    if grep -Eq -- "$2" "$1"; then
        printf -- '--- %s\n' "$1" >&2
        cat "$1" >&2 || true
        printf -- '---\n' >&2
        fail "${3:-$1}: unexpected line matching /$2/"
    fi
}

assert_lines() { # N FILE [WHAT]: FILE has exactly N lines
    local n
    n=$(wc -l <"$2")
    if [[ $n -ne $1 ]]; then
        printf -- '--- %s\n' "$2" >&2
        cat "$2" >&2 || true
        printf -- '---\n' >&2
        fail "${3:-$2}: expected $1 line(s), got $n"
    fi
}

# run_rc CMD...: runs CMD, never aborts; its exit status in RC, stdout in
# $T/run.out, stderr in $T/run.err.
run_rc() {
    RC=0
    "$@" >"$T/run.out" 2>"$T/run.err" || RC=$?
}

round_up() { # VALUE ALIGN
    echo $((($1 + $2 - 1) / $2 * $2))
}

# list_dir DIR: the names in DIR, sorted, on one line, each followed by a space.
list_dir() {
    find "$1" -mindepth 1 -maxdepth 1 -printf '%f\n' | LC_ALL=C sort | tr '\n' ' '
}

# list_views DIR: list_dir of a source's folder without the files the
# daemon writes beside the views (info.json, report.txt of inspection).
list_views() {
    find "$1" -mindepth 1 -maxdepth 1 ! -name info.json ! -name report.txt -printf '%f\n' |
        LC_ALL=C sort | tr '\n' ' '
}

# ---------------------------------------------------------------- scratch dir

T=$(mktemp -d "${TMPDIR:-/tmp}/p2vfs-$TEST_NAME.XXXXXX")
_CLEANUP=()
_LOGS=()

# push_cleanup CMD...: run CMD (a single shell word list) at exit, LIFO.
push_cleanup() {
    local q
    printf -v q '%q ' "$@"
    _CLEANUP+=("$q")
}

_on_exit() {
    local rc=$?
    set +eE
    trap - ERR
    if [[ $rc -ne 0 && $rc -ne 77 ]]; then
        local l
        for l in "${_LOGS[@]}"; do
            [[ -s $l ]] || continue
            printf -- '--- last lines of %s\n' "$l" >&2
            tail -n 40 "$l" >&2
        done
    fi
    local i
    for ((i = ${#_CLEANUP[@]} - 1; i >= 0; i--)); do
        eval "${_CLEANUP[i]}"
    done
    if [[ $rc -ne 0 && $rc -ne 77 && ${P2VFS_KEEP:-0} == 1 ]]; then
        printf '%s: scratch directory kept: %s\n' "$TEST_NAME" "$T" >&2
    elif _mounts_under "$T" | grep -q .; then
        printf '%s: not removing %s, still mounted:\n' "$TEST_NAME" "$T" >&2
        _mounts_under "$T" >&2
    else
        rm -rf --one-file-system "$T"
    fi
    exit "$rc"
}
trap _on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- mounts

# The mountinfo lines for mount point DIR (mount points are octal-escaped in
# mountinfo; test paths contain no spaces). Works on a stale FUSE mount, where
# stat(2) fails with ENOTCONN.
_mountinfo_of() {
    awk -v p="$1" '$5 == p' /proc/self/mountinfo
}

_mounts_under() {
    awk -v p="$1/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo
}

is_mounted() { # DIR
    [[ -n $(_mountinfo_of "$1") ]]
}

# The type of the topmost file system mounted at DIR ("fuse.p2vfsd", "tmpfs").
mount_type() { # DIR
    _mountinfo_of "$1" | tail -n 1 | sed 's/.* - \([^ ]*\) .*/\1/'
}

is_fuse_mount() { # DIR
    [[ $(mount_type "$1") == fuse* ]]
}

# Removes every mount at DIR, stale ones included.
force_unmount() { # DIR
    local n=0
    while is_mounted "$1" && ((n++ < 10)); do
        umount "$1" 2>/dev/null || fusermount3 -u "$1" 2>/dev/null || umount -l "$1" 2>/dev/null || true
    done
}

# mount_tracked MOUNT-ARGS... DIR: mount(8), unmounted at exit.
mount_tracked() {
    local dir=${!#}
    mount "$@"
    push_cleanup force_unmount "$dir"
}

# ---------------------------------------------------------------- loop devices

# attach_loop LOSETUP-ARGS... FILE: sets LOOP_DEV; detached at exit.
attach_loop() {
    LOOP_DEV=$(losetup -f --show "$@")
    push_cleanup _detach_loop "$LOOP_DEV"
}

_detach_loop() {
    losetup "$1" >/dev/null 2>&1 || return 0
    losetup -d "$1" 2>/dev/null || true
}

# ---------------------------------------------------------------- processes

# bg_tracked CMD...: starts CMD in the background, stderr to a log file shown
# when the test fails; sets BG_PID; killed at exit.
bg_tracked() {
    local log="$T/bg.${#_LOGS[@]}.log"
    _LOGS+=("$log")
    "$@" 2>"$log" &
    BG_PID=$!
    push_cleanup _kill_pid "$BG_PID"
}

# PIDs already reaped with wait: never signalled again (they may be reused).
declare -A _REAPED=()

_kill_pid() {
    [[ -z ${_REAPED[$1]:-} ]] || return 0
    kill -0 "$1" 2>/dev/null || return 0
    kill -TERM "$1" 2>/dev/null
    local n
    for ((n = 0; n < 50; n++)); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null
    wait "$1" 2>/dev/null
    return 0
}

# wait_for SECONDS CMD...: polls CMD every 0.1 s until it succeeds.
wait_for() {
    local secs=$1 n
    shift
    for ((n = 0; n < secs * 10; n++)); do
        "$@" && return 0
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------- the daemon

if [[ -z ${P2VFSD:-} ]]; then
    fail "P2VFSD is not set (the path of the p2vfsd binary)"
fi
[[ -x $P2VFSD ]] || fail "P2VFSD=$P2VFSD is not an executable file"

declare -A DAEMON_PID_OF=() DAEMON_LOG_OF=()
DAEMON_PID=
# shellcheck disable=SC2034 # used by the tests
DAEMON_LOG=
DAEMON_MNT=

_daemon_ready() { # PID MNT LOG
    grep -qs ready "$3" && is_fuse_mount "$2"
}

# start_daemon MNT ARGS...: runs "$P2VFSD --mount MNT ARGS..." in the
# background, stderr to a log file, and waits up to 20 s for the "ready" line
# and a FUSE mount at MNT. Sets DAEMON_PID, DAEMON_LOG, DAEMON_MNT.
# A daemon that exits early fails the test with its log.
start_daemon() {
    local mnt=$1 n log
    shift
    # (A dead FUSE mount fails stat with ENOTCONN: leave it to the daemon.)
    is_mounted "$mnt" || mkdir -p "$mnt"
    n=${#_LOGS[@]}
    log="$T/daemon.$n.log"
    _LOGS+=("$log")
    "$P2VFSD" --mount "$mnt" "$@" 2>"$log" &
    DAEMON_PID=$!
    # shellcheck disable=SC2034 # used by the tests
    DAEMON_LOG=$log
    DAEMON_MNT=$mnt
    DAEMON_PID_OF[$mnt]=$DAEMON_PID
    DAEMON_LOG_OF[$mnt]=$log
    push_cleanup _cleanup_daemon "$DAEMON_PID" "$mnt"
    local i
    for ((i = 0; i < 200; i++)); do
        if _daemon_ready "$DAEMON_PID" "$mnt" "$log"; then
            return 0
        fi
        if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
            local rc=0
            wait "$DAEMON_PID" || rc=$?
            _REAPED[$DAEMON_PID]=1
            printf -- '--- %s\n' "$log" >&2
            cat "$log" >&2
            printf -- '---\n' >&2
            fail "p2vfsd exited early with status $rc: $P2VFSD --mount $mnt $*"
        fi
        sleep 0.1
    done
    printf -- '--- %s\n' "$log" >&2
    cat "$log" >&2
    printf -- '---\n' >&2
    fail "p2vfsd not ready after 20 s (ready line: $(grep -c ready "$log" || true), mount type at $mnt: '$(mount_type "$mnt")')"
}

_cleanup_daemon() { # PID MNT
    _kill_pid "$1"
    force_unmount "$2"
}

# stop_daemon [MNT]: SIGTERM, then asserts exit status 0 within 20 s and the
# mount gone. Defaults to the last daemon started.
stop_daemon() {
    local mnt=${1:-$DAEMON_MNT}
    local pid=${DAEMON_PID_OF[$mnt]} log=${DAEMON_LOG_OF[$mnt]} i rc=0
    kill -TERM "$pid" || fail "daemon $pid (mount $mnt) is not running"
    for ((i = 0; i < 200; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        fail "p2vfsd $pid did not exit within 20 s of SIGTERM"
    fi
    wait "$pid" || rc=$?
    _REAPED[$pid]=1
    [[ $rc -eq 0 ]] || {
        cat "$log" >&2
        fail "p2vfsd exited with status $rc after SIGTERM (expected 0)"
    }
    if is_mounted "$mnt"; then
        fail "$mnt is still mounted after p2vfsd exited"
    fi
}

daemon_alive() { # [MNT]
    local mnt=${1:-$DAEMON_MNT}
    kill -0 "${DAEMON_PID_OF[$mnt]}" 2>/dev/null && is_fuse_mount "$mnt"
}

# run_daemon_fg ARGS...: runs p2vfsd in the foreground (for start-up
# failures) with a 15 s limit; status in RC (124: it did not exit), stderr in
# $T/run.err. Any mount it left is removed at exit. A command in the array
# DAEMON_WRAPPER (e.g. setpriv ...) runs the daemon when set.
DAEMON_WRAPPER=()
run_daemon_fg() {
    local a prev=
    for a in "$@"; do
        if [[ $prev == --mount || $prev == -m ]]; then
            push_cleanup force_unmount "$a"
        fi
        prev=$a
    done
    RC=0
    timeout -k 5 15 "${DAEMON_WRAPPER[@]}" "$P2VFSD" "$@" >"$T/run.out" 2>"$T/run.err" </dev/null || RC=$?
}

# expect_startup_error STATUS TEXT [WHAT]: after run_daemon_fg, asserts the
# exit status and exactly one line on stderr, containing TEXT; nothing on
# stdout.
expect_startup_error() {
    local want=$1 text=$2 what=${3:-p2vfsd}
    if [[ $RC -ne $want ]]; then
        printf -- '--- stderr\n' >&2
        cat "$T/run.err" >&2
        printf -- '---\n' >&2
        fail "$what: expected exit status $want, got $RC"
    fi
    assert_lines 1 "$T/run.err" "$what: stderr"
    assert_file_has_text "$T/run.err" "$text" "$what: stderr"
    assert_lines 0 "$T/run.out" "$what: stdout"
}

# expect_error_line STATUS TEXT [WHAT]: after run_daemon_fg, asserts the exit
# status and exactly one error line on stderr, containing TEXT (info lines
# logged before the failure are allowed).
expect_error_line() {
    local want=$1 text=$2 what=${3:-p2vfsd}
    if [[ $RC -ne $want ]]; then
        printf -- '--- stderr\n' >&2
        cat "$T/run.err" >&2
        printf -- '---\n' >&2
        fail "$what: expected exit status $want, got $RC"
    fi
    grep -i error "$T/run.err" >"$T/run.errlines" || true
    assert_lines 1 "$T/run.errlines" "$what: error lines on stderr"
    assert_file_has_text "$T/run.errlines" "$text" "$what: error line"
}

# ---------------------------------------------------------------- fixtures

P2VFS_FIXTURES=${P2VFS_FIXTURES:-/var/tmp/p2vfs-fixtures}
# The recipe version: a hash of fixtures.sh, so a changed recipe rebuilds.
FIXTURES_VERSION=v1-$(sha256sum "$LIB_DIR/fixtures.sh" | cut -c1-12)

# fixture_dir NAME: the cache directory of fixture NAME (built if missing);
# holds disk.img and, for file-system fixtures, tree/.
fixture_dir() {
    local name=$1 base="$P2VFS_FIXTURES/$FIXTURES_VERSION"
    local dir="$base/$name"
    if [[ ! -d $dir ]]; then
        mkdir -p "$base"
        (
            # Parallel tests wait for one build instead of racing.
            flock 9
            if [[ ! -d $dir ]]; then
                rm -rf "$base/.tmp-$name".*
                local tmp="$base/.tmp-$name.$$"
                log "building fixture $name in $dir"
                bash "$LIB_DIR/fixtures.sh" "$name" "$tmp" >&2
                mv -T "$tmp" "$dir"
            fi
        ) 9>"$base/.lock-$name"
    fi
    [[ -f $dir/disk.img ]] || fail "fixture $name: $dir/disk.img missing"
    echo "$dir"
}

# fixture NAME: the path of fixture NAME's image.
fixture() {
    local dir
    dir=$(fixture_dir "$1")
    echo "$dir/disk.img"
}

# ---------------------------------------------------------------- views

# The files of a source's folder with the default views, one per line of the
# format table (the monolithicFlat pair is two files).
# shellcheck disable=SC2034 # used by the tests
VIEWS=(disk.raw disk.vhd disk-fixed.vhd disk.vhdx disk-fixed.vhdx disk.vmdk disk-esx.vmdk
    disk-esx-flat.vmdk disk-stream.vmdk disk.qcow2 disk.vdi)

# sorted_listing FILE...: the names as list_dir prints a folder holding them.
sorted_listing() {
    printf '%s\n' "$@" | LC_ALL=C sort | tr '\n' ' '
}

# libyal_reader FILE: the libyal info tool that reads a view file, if any.
libyal_reader() {
    case $1 in
    *-flat.vmdk) ;;
    *.vhd | *.vhdx) echo vhdiinfo ;;
    *.vmdk) echo vmdkinfo ;;
    *.qcow2) echo qcowinfo ;;
    esac
}

# qemu_checkable FORMAT: whether `qemu-img check` supports the format
# (raw and vpc answer "not supported", exit 63).
qemu_checkable() {
    case $1 in
    vmdk | qcow2 | vdi | vhdx) return 0 ;;
    *) return 1 ;;
    esac
}

# qemu's name for the format of a view file.
qemu_format() {
    case $1 in
    *.raw) echo raw ;;
    *.vhd) echo vpc ;;
    *-flat.vmdk) echo raw ;; # the extent of a monolithicFlat pair
    *.vmdk) echo vmdk ;;
    *.vhdx) echo vhdx ;;
    *.qcow2) echo qcow2 ;;
    *.vdi) echo vdi ;;
    *) fail "qemu_format: unknown view $1" ;;
    esac
}

# The virtual size qemu must report for a view of a source of SIZE bytes:
# SIZE rounded up to 512 bytes, for every format. (VHD and VMDK count whole
# sectors; qemu 7.2 reports a raw file rounded up to 512 bytes as well.)
expected_virtual_size() { # VIEW SIZE
    round_up "$2" 512
}

# qemu_info FORMAT FILE KEY: a top-level field of `qemu-img info --output=json`
# ("virtual-size", "format"). Fails if qemu-img cannot open FILE.
qemu_info() {
    local json
    json=$(qemu-img info --output=json -f "$1" "$2") ||
        fail "qemu-img info -f $1 $2 failed"
    printf '%s' "$json" | perl -MJSON::PP -e '
        local $/; my $v = decode_json(<STDIN>)->{$ARGV[0]};
        defined $v or die "no field $ARGV[0]\n"; print "$v\n";' "$3"
}

qemu_virtual_size() { qemu_info "$1" "$2" virtual-size; }
qemu_format_name() { qemu_info "$1" "$2" format; }

# qemu_extract FORMAT FILE OFFSET LENGTH OUT: LENGTH bytes of FILE's virtual
# disk at OFFSET, as qemu reads them, into the raw file OUT. (qemu-img dd
# cannot skip this far into a 1 TiB disk; a raw node with offset and size
# over the format node can.) FILE must not contain commas.
qemu_extract() {
    rm -f "$5"
    qemu-img convert -O raw --image-opts \
        "driver=raw,offset=$3,size=$4,file.driver=$1,file.file.driver=file,file.file.filename=$2" \
        "$5"
}

# extent_blocks_bytes FILE BLOCK: the bytes of FILE's BLOCK-sized blocks that
# hold any extent (a block touched by an extent counts fully). Extents come
# from FIEMAP (filefrag -v): written, unwritten and delayed ones alike, so
# this bounds from above what SEEK_DATA can report whatever the page cache
# holds. Without FIEMAP (tmpfs), from SEEK_DATA/SEEK_HOLE.
extent_blocks_bytes() {
    local ranges
    if ranges=$(filefrag -sv "$1" 2>/dev/null | perl -ne '
            $bs = $1 if /blocks? of (\d+) bytes/;
            printf "%d %d\n", $1 * $bs, ($2 + 1) * $bs
                if /^\s*\d+:\s*(\d+)\.\.\s*(\d+):/;') && [[ -n $ranges ]]; then
        :
    else
        ranges=$(perl -e '
            my ($file) = @ARGV;
            open(my $fh, "<", $file) or die "$file: $!";
            my ($off, $size) = (0, -s $fh);
            while ($off < $size) {
                my $d = sysseek($fh, $off, 3);   # SEEK_DATA
                last unless defined $d;
                my $h = sysseek($fh, $d, 4);     # SEEK_HOLE
                $h = $size unless defined $h;
                print "$d $h\n";
                $off = $h;
            }' "$1")
    fi
    perl -e '
        my $block = $ARGV[0];
        my ($last, $total) = (-1, 0);
        for (sort { $a->[0] <=> $b->[0] } map { [split] } <STDIN>) {
            my ($start, $end) = @$_;
            next if $end <= $start;
            my $first = int($start / $block);
            my $lastb = int(($end - 1) / $block);
            $first = $last + 1 if $first <= $last;
            $total += $lastb - $first + 1 if $lastb >= $first;
            $last = $lastb if $lastb > $last;
        }
        print $total * $block, "\n";' "$2" <<<"$ranges"
}

# kill_daemon_hard [MNT]: SIGKILL, as a crash would; the mount stays behind.
kill_daemon_hard() {
    local mnt=${1:-$DAEMON_MNT}
    local pid=${DAEMON_PID_OF[$mnt]}
    { kill -KILL "$pid" && wait "$pid"; } 2>/dev/null || true
    _REAPED[$pid]=1
}

# ---------------------------------------------------------------- NBD servers

# start_nbdkit SOCK NBDKIT-ARGS...: nbdkit in the foreground of a tracked
# background job, serving on unix socket SOCK; waits for the socket. Sets
# NBDKIT_PID. Killed at exit.
start_nbdkit() {
    local sock=$1
    shift
    rm -f "$sock"
    bg_tracked nbdkit -f -U "$sock" "$@"
    NBDKIT_PID=$BG_PID
    wait_for 10 test -S "$sock" || fail "nbdkit did not create $sock: nbdkit $*"
}

# stop_pid PID [SIGNAL]: sends SIGNAL (default KILL: nbdkit waits for its
# clients on SIGTERM), waits until PID is gone (a server to restart).
stop_pid() {
    kill -"${2:-KILL}" "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    _REAPED[$1]=1
}

# nbd_unix_uri SOCK [EXPORT]: the NBD URI of a unix socket.
nbd_unix_uri() {
    echo "nbd+unix:///${2:-}?socket=$1"
}

# assert_views_identical REF DIR: every default view in DIR holds the bytes
# of the raw file REF, as `qemu-img compare` reads the view's format.
assert_views_identical() {
    local ref=$1 dir=$2 view fmt
    for view in "${VIEWS[@]}"; do
        fmt=$(qemu_format "$view")
        run_rc qemu-img compare -f raw -F "$fmt" "$ref" "$dir/$view"
        [[ $RC -eq 0 ]] ||
            fail "$dir/$view: qemu-img compare with $ref exited $RC: $(cat "$T/run.out" "$T/run.err")"
        assert_eq "Images are identical." "$(cat "$T/run.out")" "$dir/$view: qemu-img compare"
    done
}

#!/usr/bin/env bash
# Benchmark of synchronized cutover's syncs: keeping a qcow2 target in step
# with a live source by `p2vctl sync`, against making the target afresh with
# `qemu-img convert -O qcow2` each time. In one run on one machine:
#   1. the initial sync (generation 1) of a multi-GiB source, mostly random
#      data, to qcow2, against qemu-img convert of the same source;
#   2. rounds of: --change percent of the source rewritten by scattered
#      writes of 4 KiB to 64 KiB, then an incremental sync with hash change
#      detection (the whole source read, only changed 1 MiB blocks written),
#      against a full qemu-img convert of the changed source;
#   3. with --bitmap (default on when qemu-nbd is there): the same with the
#      source as a qcow2 with a persistent dirty bitmap served writable by
#      qemu-nbd -B, the changes written through NBD, and dirty-bitmap change
#      detection (only the blocks the bitmap marks are read).
# Every target is checked against the source with qemu-img compare after each
# sync, so a fast wrong sync cannot win. Not part of the test suite.
# Run as root:  bash tools/bench/sync-bench.sh [--size GiB] [--change PERCENT] [--rounds N]
# See tools/bench/README.md ("Synchronized cutover") for what each figure means.
set -uo pipefail
export LC_ALL=C

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tools/bench/options.sh
source "$SCRIPT_DIR/options.sh" # bench_option: --daemon, --ctl, --out, --cache-dir, --label
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)

SIZE_GIB=4
CHANGE=1
ROUNDS=3
BITMAP=auto
DROP=yes
OUT=""
CACHE=/var/tmp/p2vfs-bench
DAEMON="${P2VFSD:-$REPO/build/fsd/p2vfsd}"
CTL_BIN=""
LABEL=""
SEED=1
BLOCK=1M

usage() {
    cat <<EOF
Usage: bash tools/bench/sync-bench.sh [OPTIONS]   (as root)

  --size GiB        virtual size of the source (default $SIZE_GIB); 7/8 of it random data,
                    the last 1/8 a hole
  --change PERCENT  how much of the source each round rewrites (default $CHANGE), in
                    scattered writes of 4 KiB to 64 KiB at 4 KiB-aligned offsets
  --rounds N        rounds of change + sync (default $ROUNDS); figures are medians
  --block-size SIZE the jobs' block size, the unit of change detection (default $BLOCK;
                    64K to 64M)
  --no-bitmap       leave out the dirty-bitmap variant
  --warm            do not drop the page cache before each timed step
  --seed N          the seed of the writes' offsets and sizes (default $SEED)
  --daemon PATH     the p2vfsd binary (default: \$P2VFSD, else build/fsd/p2vfsd)
  --ctl PATH        the p2vctl binary (default: tools/p2vctl of the daemon's build)
  --out FILE        also write the report to FILE (default: $CACHE/sync-results-DATE.txt)
  --cache-dir DIR   where the source is kept and the targets are written (default $CACHE)
  --label TEXT      a note on the daemon build, printed in the report
  -h, --help        this text

Needs qemu-img, qemu-io and qemu-nbd (qemu-utils; qemu-io and qemu-nbd only
for the dirty-bitmap variant), dbus-daemon, fusermount3 and python3; uses
openssl, if present, to generate random data quickly. Installs nothing. A
run at the default size takes 3-5 minutes on 2 cores and needs about
4 x --size GiB of free space in --cache-dir.
EOF
}

while (($#)); do
    case $1 in
        --size) SIZE_GIB=${2:-}; shift 2 ;;
        --size=*) SIZE_GIB=${1#*=}; shift ;;
        --change) CHANGE=${2:-}; shift 2 ;;
        --change=*) CHANGE=${1#*=}; shift ;;
        --rounds) ROUNDS=${2:-}; shift 2 ;;
        --rounds=*) ROUNDS=${1#*=}; shift ;;
        --block-size) BLOCK=${2:-}; shift 2 ;;
        --block-size=*) BLOCK=${1#*=}; shift ;;
        --no-bitmap) BITMAP=no; shift ;;
        --warm) DROP=no; shift ;;
        --seed) SEED=${2:-}; shift 2 ;;
        --seed=*) SEED=${1#*=}; shift ;;
        -h | --help) usage; exit 0 ;;
        *)
            bench_option "$@" || { echo "sync-bench.sh: unknown argument: $1 (see --help)" >&2; exit 2; }
            shift "$BENCH_SHIFT"
            ;;
    esac
done

die() { echo "sync-bench.sh: $*" >&2; exit 1; }
[[ $SIZE_GIB =~ ^[1-9][0-9]*$ ]] || die "--size wants a whole number of GiB"
if ! [[ $CHANGE =~ ^[0-9]+([.][0-9]+)?$ ]] || ! awk -v c="$CHANGE" 'BEGIN { exit !(c > 0 && c <= 50) }'; then
    die "--change wants a percentage above 0, at most 50"
fi
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "--rounds wants a positive number"
[[ $SEED =~ ^[0-9]+$ ]] || die "--seed wants a number"
case $BLOCK in
    64K) BLOCK_BYTES=65536 ;; 128K) BLOCK_BYTES=131072 ;; 256K) BLOCK_BYTES=262144 ;;
    512K) BLOCK_BYTES=524288 ;; 1M) BLOCK_BYTES=1048576 ;; 2M) BLOCK_BYTES=2097152 ;;
    4M) BLOCK_BYTES=4194304 ;; 8M) BLOCK_BYTES=8388608 ;; 16M) BLOCK_BYTES=16777216 ;;
    32M) BLOCK_BYTES=33554432 ;; 64M) BLOCK_BYTES=67108864 ;;
    *) die "--block-size wants a power of two from 64K to 64M (64K, 128K, ... 1M, ... 64M)" ;;
esac
[[ $EUID -eq 0 ]] || die "run as root (FUSE mount, drop_caches)"
[[ -c /dev/fuse ]] || die "/dev/fuse is missing"
[[ $CACHE != *[[:space:]]* ]] || die "--cache-dir must not contain spaces"
[[ -n $CTL_BIN ]] || CTL_BIN="$(dirname "$DAEMON")/../tools/p2vctl"

missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$1 (package $2)"); }
need qemu-img qemu-utils
need dbus-daemon dbus-daemon
need fusermount3 fuse3
need python3 python3
if ((${#missing[@]})); then
    echo "sync-bench.sh: missing tools:" >&2
    printf '  %s\n' "${missing[@]}" >&2
    exit 2
fi
if [[ $BITMAP == auto ]]; then
    BITMAP=yes
    command -v qemu-nbd >/dev/null 2>&1 && command -v qemu-io >/dev/null 2>&1 || BITMAP="no (no qemu-nbd or qemu-io)"
fi
HAVE_OPENSSL=no
command -v openssl >/dev/null 2>&1 && HAVE_OPENSSL=yes
[[ -x $DAEMON ]] || die "no p2vfsd at $DAEMON; build it with:
  cmake -S $REPO -B $REPO/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DP2VFS_TESTS=OFF && ninja -C $REPO/build"
[[ -x $CTL_BIN ]] || die "no p2vctl at $CTL_BIN (--ctl names it)"

# shellcheck disable=SC2034 # lib.sh's messages
ME=sync-bench.sh
# shellcheck source=tools/bench/lib.sh
source "$SCRIPT_DIR/lib.sh" # cleanup at exit: PIDS killed, MOUNTS unmounted, WORK removed
bench_workspace sync srun

gib_h() { isnum "${1:-}" && awk -v b="$1" 'BEGIN { if (b >= 1073741824) printf "%.2f GiB", b / 1073741824; else printf "%.1f MiB", b / 1048576 }' || echo "-"; }
ratio() { isnum "${1:-}" && isnum "${2:-}" && awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "-" }' || echo "-"; }
drop_caches() { [[ $DROP == yes ]] || return 0; sync; echo 3 >/proc/sys/vm/drop_caches; }
file_size() { stat -c %s "$1"; }
allocated() { du -B1 "$1" | awk '{ print $1 }'; }

# ---------------------------------------------------------------- the source
rand_stream() {
    if [[ $HAVE_OPENSSL == yes ]]; then
        openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass "pass:p2vfs-sync-bench-$1" -in /dev/zero 2>/dev/null
    else
        cat /dev/urandom
    fi
}
VSIZE=$((SIZE_GIB << 30))
DATA_MIB=$((SIZE_GIB * 1024 * 7 / 8))
PRISTINE="$CACHE/sync-src-${SIZE_GIB}G.img"
make_source() {
    [[ -f $PRISTINE.ok && $(stat -c %s "$PRISTINE" 2>/dev/null) == "$VSIZE" ]] && return
    progress "generating $PRISTINE ($SIZE_GIB GiB, $DATA_MIB MiB of random data, then a hole)"
    rm -f "$PRISTINE" "$PRISTINE.ok"
    truncate -s "$VSIZE" "$PRISTINE.tmp" || die "cannot create $PRISTINE"
    rand_stream src | dd of="$PRISTINE.tmp" bs=1M count="$DATA_MIB" iflag=fullblock conv=notrunc status=none
    mv "$PRISTINE.tmp" "$PRISTINE" && touch "$PRISTINE.ok"
}

# The writes of round R: "OFFSET LENGTH" lines, --change percent of the disk
# in 4-64 KiB pieces at 4 KiB-aligned offsets anywhere in it.
plan_writes() { # R
    python3 - "$VSIZE" "$CHANGE" "$((SEED * 1000 + $1))" <<'PY'
import random, sys
size, pct, seed = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(seed)
left = int(size * pct / 100)
while left > 0:
    n = min(rnd.randrange(1, 17) * 4096, (left + 4095) // 4096 * 4096)
    off = rnd.randrange(0, (size - n) // 4096 + 1) * 4096
    print(off, n)
    left -= n
PY
}

# Applies the writes of FILE (plan_writes) to a raw file, random bytes.
apply_to_file() { # PLAN RAW
    python3 - "$1" "$2" <<'PY'
import os, sys
fd = os.open(sys.argv[2], os.O_WRONLY)
for line in open(sys.argv[1]):
    off, n = map(int, line.split())
    os.pwrite(fd, os.urandom(n), off)
os.fsync(fd)
os.close(fd)
PY
}

# Through NBD with qemu-io (a pattern byte per write, which differs from the
# random data there), in batches.
apply_to_nbd() { # PLAN URI
    local -a cmds=()
    local off n p=0
    while read -r off n; do
        p=$((p % 250 + 1))
        cmds+=(-c "write -P $p $off $n")
        if ((${#cmds[@]} >= 400)); then
            qemu-io -f raw "$2" "${cmds[@]}" >>"$LOG" 2>&1 || die "qemu-io through $2 failed; see $LOG"
            cmds=()
        fi
    done <"$1"
    ((${#cmds[@]})) && { qemu-io -f raw "$2" "${cmds[@]}" >>"$LOG" 2>&1 || die "qemu-io through $2 failed; see $LOG"; }
    return 0
}

changed_blocks_of() { # PLAN: the distinct blocks the writes touch
    awk -v bs="$BLOCK_BYTES" '{ for (b = int($1 / bs); b <= int(($1 + $2 - 1) / bs); b++) s[b] = 1 } END { print length(s) }' "$1"
}

# ---------------------------------------------------------------- bus and daemon
MNT="$WORK/mnt"
start_daemon() { start_p2vfsd "$MNT" "$WORK/state" "$LOGDIR/p2vfsd.log"; }
# The daemon first, while its bus is there (lib.sh).
stop_daemon_first() {
    local rc=$?
    stop_p2vfsd "$MNT"
    (exit "$rc")
    cleanup
}
trap stop_daemon_first EXIT

job_json_field() { # ID FIELD
    ctl --json job "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"
}

# ---------------------------------------------------------------- measurements
# Rows: KEY -> "seconds read written growth" per run (one line per run).
declare -A RUNS_OF
ORDER=()
record_row() { # KEY SECONDS READ WRITTEN GROWTH
    [[ -n ${RUNS_OF[$1]+x} ]] || ORDER+=("$1")
    RUNS_OF[$1]+="$2 $3 $4 $5"$'\n'
}

# timed_sync KEY CMD...: runs a p2vctl sync command with --wait, timed; the
# job's read_bytes and written_bytes and the target file's growth recorded.
timed_sync() {
    local key=$1 id=$2 target=$3
    shift 3
    local size0 t0 t1 rc
    size0=$(file_size "$target" 2>/dev/null || echo 0)
    drop_caches
    t0=$EPOCHREALTIME
    "$@" >>"$LOG" 2>&1
    rc=$?
    t1=$EPOCHREALTIME
    ((rc == 0)) || die "$key: $* failed (status $rc); see $LOG and $LOGDIR/p2vfsd.log"
    local t read written changed growth
    t=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    read=$(job_json_field "$id" read_bytes)
    written=$(job_json_field "$id" written_bytes)
    changed=$(job_json_field "$id" changed_bytes)
    growth=$(($(file_size "$target") - size0))
    record_row "$key" "$t" "$read" "$written" "$growth"
    logonly "$key: $t s, read $read, written $written, changed $changed, file $size0 -> $(file_size "$target") bytes ($(allocated "$target") allocated)"
    progress "  $key: $(secs "$t"), read $(gib_h "$read"), written $(gib_h "$written"), changed $(gib_h "$changed")"
}

# timed_convert KEY SRC-ARGS...: a fresh qemu-img convert -O qcow2, with the
# fsync of its result (a sync job returns only once its target is synced).
timed_convert() {
    local key=$1 out="$WORK/out/convert.qcow2" t0 t1
    shift
    rm -f "$out"
    drop_caches
    t0=$EPOCHREALTIME
    qemu-img convert "$@" -O qcow2 "$out" >>"$LOG" 2>&1 || die "$key: qemu-img convert $* failed; see $LOG"
    sync "$out"
    t1=$EPOCHREALTIME
    local t
    t=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    # It reads the source's data (holes it skips) and writes all of it anew.
    record_row "$key" "$t" "-" "$(file_size "$out")" "$(file_size "$out")"
    logonly "$key: $t s, output $(file_size "$out") bytes ($(allocated "$out") allocated)"
    progress "  $key: $(secs "$t"), output $(gib_h "$(file_size "$out")")"
    rm -f "$out"
}

check_target() { # FORMAT-OF-SOURCE SOURCE TARGET
    if qemu-img compare -q -f "$1" -F qcow2 "$2" "$3" >>"$LOG" 2>&1; then
        logonly "  compare $3 with $2: identical"
    else
        die "the target $3 DIFFERS from the source $2 after a sync; logs in $LOGDIR"
    fi
}

# ---------------------------------------------------------------- run
make_source
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
T_RUN=$(now)
SRC="$WORK/src.img"
progress "copying the source to $SRC"
cp --sparse=always "$PRISTINE" "$SRC" || die "cannot copy $PRISTINE"
start_bus
start_daemon
ctl add s "$SRC" >>"$LOG" 2>&1 || die "p2vctl add failed; see $LOG"

progress "hash: initial sync and qemu-img convert"
TARGET="$WORK/out/hash.qcow2"
drop_caches
t0=$EPOCHREALTIME
HID=$(ctl sync start s "$TARGET" --format qcow2 --block-size "$BLOCK" --detection hash --wait 2>>"$LOG") ||
    die "sync start failed; see $LOG and $LOGDIR/p2vfsd.log"
t1=$EPOCHREALTIME
record_row "hash.initial" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')" \
    "$(job_json_field "$HID" read_bytes)" "$(job_json_field "$HID" written_bytes)" "$(file_size "$TARGET.part")"
progress "  hash.initial: $(secs "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")"
check_target raw "$SRC" "$TARGET.part"
timed_convert convert.initial -f raw "$SRC"

CHANGED_BLOCKS=()
for ((r = 1; r <= ROUNDS; r++)); do
    progress "hash: round $r of $ROUNDS: $CHANGE% rewritten, incremental sync, qemu-img convert"
    plan_writes "$r" >"$WORK/plan.$r"
    CHANGED_BLOCKS+=("$(changed_blocks_of "$WORK/plan.$r")")
    logonly "round $r: $(wc -l <"$WORK/plan.$r") writes, $(awk '{ s += $2 } END { print s }' "$WORK/plan.$r") bytes, ${CHANGED_BLOCKS[-1]} blocks of $BLOCK"
    apply_to_file "$WORK/plan.$r" "$SRC"
    timed_sync hash.incremental "$HID" "$TARGET.part" ctl sync now "$HID" --wait
    check_target raw "$SRC" "$TARGET.part"
    timed_convert convert.changed -f raw "$SRC"
done
ctl cancel "$HID" >>"$LOG" 2>&1 # removes its DEST.part
ctl remove s >>"$LOG" 2>&1

if [[ $BITMAP == yes ]]; then
    progress "dirty-bitmap: the source as a qcow2 with a bitmap, served by qemu-nbd -B"
    QSRC="$WORK/src.qcow2"
    rm -f "$SRC"
    qemu-img convert -f raw -O qcow2 "$PRISTINE" "$QSRC" >>"$LOG" 2>&1 || die "cannot make $QSRC"
    qemu-img bitmap --add "$QSRC" b0 >>"$LOG" 2>&1 || die "qemu-img bitmap --add failed"
    SOCK="$WORK/src.sock"
    qemu-nbd -f qcow2 -B b0 --shared=16 --persistent -k "$SOCK" "$QSRC" 2>>"$LOG" &
    PIDS+=("$!")
    for ((i = 0; i < 100; i++)); do [[ -S $SOCK ]] && break; sleep 0.1; done
    [[ -S $SOCK ]] || die "qemu-nbd did not start; see $LOG"
    URI="nbd+unix:///?socket=$SOCK"
    ctl add b "$URI" >>"$LOG" 2>&1 || die "p2vctl add $URI failed; see $LOG"
    TARGET="$WORK/out/bitmap.qcow2"
    drop_caches
    t0=$EPOCHREALTIME
    BID=$(ctl sync start b "$TARGET" --format qcow2 --block-size "$BLOCK" --detection dirty-bitmap --bitmap b0 --wait 2>>"$LOG") ||
        die "sync start --detection dirty-bitmap failed; see $LOG and $LOGDIR/p2vfsd.log"
    t1=$EPOCHREALTIME
    record_row "bitmap.initial" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')" \
        "$(job_json_field "$BID" read_bytes)" "$(job_json_field "$BID" written_bytes)" "$(file_size "$TARGET.part")"
    check_target raw "$URI" "$TARGET.part"
    for ((r = 1; r <= ROUNDS; r++)); do
        progress "dirty-bitmap: round $r of $ROUNDS"
        apply_to_nbd "$WORK/plan.$r" "$URI"
        timed_sync bitmap.incremental "$BID" "$TARGET.part" ctl sync now "$BID" --wait
        check_target raw "$URI" "$TARGET.part"
    done
    ctl cancel "$BID" >>"$LOG" 2>&1
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
T_TOTAL=$(elapsed "$T_RUN")

# ---------------------------------------------------------------- report
# median of column C (1 seconds, 2 read, 3 written, 4 growth) of KEY's runs
col_med() {
    local vals=()
    mapfile -t vals < <(awk -v c="$2" 'NF { print $c }' <<<"${RUNS_OF[$1]:-}" | grep -E '^[0-9.]+$')
    ((${#vals[@]})) && med_of "${vals[@]}" || echo "-"
}
runs_count() { awk 'NF' <<<"${RUNS_OF[$1]:-}" | wc -l; }

CPUS=$(nproc)
MEMG=$(awk '/MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)
OS=$(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")
DAEMON_INFO="$DAEMON, built $(date -r "$DAEMON" '+%Y-%m-%d %H:%M' 2>/dev/null)"
if git -C "$REPO" rev-parse --short HEAD >/dev/null 2>&1; then
    DAEMON_INFO+=", tree at $(git -C "$REPO" rev-parse --short HEAD)"
    git -C "$REPO" diff --quiet HEAD -- fsd 2>/dev/null || DAEMON_INFO+=" with local changes in fsd/"
fi
[[ -n $LABEL ]] && DAEMON_INFO+=", $LABEL"
FS=$(df -PT "$CACHE" | awk 'NR == 2 { print $2 " on " $1 }')
blocks_med=$(med_of "${CHANGED_BLOCKS[@]}")

rep "p2vfs sync benchmark, $(date '+%Y-%m-%d %H:%M %Z')"
rep "machine: $CPUS cores, $MEMG GiB RAM, $OS, kernel $(uname -r)"
rep "p2vfsd: $("$BIN" --version 2>/dev/null | head -n 1); $DAEMON_INFO"
rep "peer: $(qemu-img --version | head -n 1)"
rep "source: $(gib_h "$VSIZE"), $(gib_h $((DATA_MIB << 20))) of random data then a hole; $FS"
rep "changes: $ROUNDS round(s), each $CHANGE% of the disk in writes of 4-64 KiB (seed $SEED), touching a median of $blocks_med blocks of $BLOCK (the jobs' block size)"
rep "page cache: $([[ $DROP == yes ]] && echo "dropped before every timed step" || echo "warm (--warm)"); load average before: $LOAD_BEFORE, after: $LOAD_AFTER; whole run ${T_TOTAL%.*} s"
rep ""
rep "seconds: until p2vctl --wait returns (the target synced) / until qemu-img convert's output is fsynced; medians"
rep "read: the job's read_bytes (source bytes read). written: the job's written_bytes / qemu-img's output size."
rep "growth: how much the target file grew (a sync writes changed blocks in place or in new clusters at its end)."
rep "x convert: the row's figure over a fresh qemu-img convert -O qcow2 of the same source (below 1 favours the sync)."
rep ""
COLS='  %-44s %4s %9s %11s %11s %11s %10s %10s'
# shellcheck disable=SC2059
rep "$(printf "$COLS" step runs seconds read written growth "x conv t" "x conv w")"
label_of() {
    case $1 in
        hash.initial) echo "p2vctl sync start (hash), generation 1" ;;
        convert.initial) echo "qemu-img convert -O qcow2 (full)" ;;
        hash.incremental) echo "p2vctl sync now, hash detection" ;;
        convert.changed) echo "qemu-img convert -O qcow2 after the changes" ;;
        bitmap.initial) echo "p2vctl sync start (dirty-bitmap)" ;;
        bitmap.incremental) echo "p2vctl sync now, dirty-bitmap detection" ;;
    esac
}
base_of() { case $1 in *initial) echo convert.initial ;; *) echo convert.changed ;; esac; }
for key in "${ORDER[@]}"; do
    t=$(col_med "$key" 1)
    rd=$(col_med "$key" 2)
    wr=$(col_med "$key" 3)
    gr=$(col_med "$key" 4)
    base=$(base_of "$key")
    xt="-" xw="-"
    if [[ $key != convert.* ]]; then
        xt=$(ratio "$t" "$(col_med "$base" 1)")
        xw=$(ratio "$wr" "$(col_med "$base" 3)")
    fi
    # shellcheck disable=SC2059
    rep "$(printf "$COLS" "$(label_of "$key")" "$(runs_count "$key")" "$(secs "$t")" "$(gib_h "$rd")" "$(gib_h "$wr")" "$(gib_h "$gr")" "$xt" "$xw")"
done
rep ""
rep "every run: $(for key in "${ORDER[@]}"; do printf '%s: %s; ' "$key" "$(awk 'NF { printf "%s ", $1 }' <<<"${RUNS_OF[$key]}")"; done)"

cat "$REPORT"
cp "$REPORT" "$OUT"
cp "$REPORT" "$LOGDIR/report.txt"
echo "report: $OUT; details: $LOGDIR" >&2

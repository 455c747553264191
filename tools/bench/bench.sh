#!/usr/bin/env bash
# Benchmark of p2vfsd against its peers, side by side in one run on one machine:
#   1. sequential read throughput of every view (page cache warm) against dd of
#      the source, nbdfuse over nbdkit-file (a raw FUSE view) and xmount (VHD/VMDK
#      views of a raw image), for a fully allocated and for a sparse source;
#   2. time until a view is usable against up-front conversion with qemu-img,
#      and copying a view out ("materialize") against qemu-img convert;
#   3. the daemon's memory (RSS after start, VmHWM after all reads);
#   4. opening 1 TiB and 2040 GiB sparse sources.
# Run as root:  bash tools/bench/bench.sh [--size GiB] [--out FILE]
# See tools/bench/README.md for what each figure means.
set -uo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)

SIZE_GIB=4
RUNS=3
OUT=""
CACHE=/var/tmp/p2vfs-bench
DAEMON="$REPO/build/fsd/p2vfsd"
STALL=20
LABEL=""

usage() {
    cat <<EOF
Usage: bash tools/bench/bench.sh [OPTIONS]   (as root)

  --size GiB        size of the fully allocated source (default $SIZE_GIB); the sparse
                    source is twice that, virtual, with --size/4 GiB of data
  --out FILE        also write the report to FILE
                    (default: $CACHE/results-DATE.txt)
  --runs N          rounds of reads, starts and conversions; every figure is the
                    median of N (default $RUNS)
  --daemon PATH     the p2vfsd binary (default: build/fsd/p2vfsd of this tree)
  --cache-dir DIR   where sources are generated and kept between runs (default $CACHE)
  --stall SECONDS   a reader that makes no progress for this long counts as hung:
                    its FUSE server is killed and the figure reads HANG (default $STALL)
  --label TEXT      a note on the daemon build, printed in the report (e.g. its commit)
  -h, --help        this text

Needs qemu-img (qemu-utils), nbdkit, nbdfuse, xmount, /usr/bin/time (time) and
fusermount3 (fuse3); uses openssl, if present, to generate random data quickly.
Installs nothing. A run at the default size takes 8-12 minutes on 2 cores.
EOF
}

while (($#)); do
    case $1 in
        --size) SIZE_GIB=${2:-}; shift 2 ;;
        --size=*) SIZE_GIB=${1#*=}; shift ;;
        --out) OUT=${2:-}; shift 2 ;;
        --out=*) OUT=${1#*=}; shift ;;
        --runs) RUNS=${2:-}; shift 2 ;;
        --runs=*) RUNS=${1#*=}; shift ;;
        --daemon) DAEMON=${2:-}; shift 2 ;;
        --daemon=*) DAEMON=${1#*=}; shift ;;
        --cache-dir) CACHE=${2:-}; shift 2 ;;
        --cache-dir=*) CACHE=${1#*=}; shift ;;
        --stall) STALL=${2:-}; shift 2 ;;
        --stall=*) STALL=${1#*=}; shift ;;
        --label) LABEL=${2:-}; shift 2 ;;
        --label=*) LABEL=${1#*=}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "bench.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

die() { echo "bench.sh: $*" >&2; exit 1; }
[[ $SIZE_GIB =~ ^[1-9][0-9]*$ ]] || die "--size wants a whole number of GiB"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs wants a positive number"
[[ $STALL =~ ^[1-9][0-9]*$ ]] || die "--stall wants a number of seconds"
[[ $EUID -eq 0 ]] || die "run as root (FUSE mounts with allow_other, bdi read_ahead_kb, xmount)"
[[ -c /dev/fuse ]] || die "/dev/fuse is missing"
[[ $CACHE != *[[:space:]]* ]] || die "--cache-dir must not contain spaces"

# ---------------------------------------------------------------- tools
missing=()
need() { # need COMMAND PACKAGE
    if [[ $1 == /* ]]; then [[ -x $1 ]] || missing+=("$1 (package $2)")
    else command -v "$1" >/dev/null 2>&1 || missing+=("$1 (package $2)"); fi
}
need qemu-img qemu-utils
need nbdkit nbdkit
need nbdfuse nbdfuse
need xmount xmount
need /usr/bin/time time
need fusermount3 fuse3
need mountpoint util-linux
need truncate coreutils
need pgrep procps
need awk mawk
if ((${#missing[@]})); then
    echo "bench.sh: missing tools:" >&2
    printf '  %s\n' "${missing[@]}" >&2
    pkgs=$(printf '%s\n' "${missing[@]}" | sed -n 's/.*(package \(.*\))/\1/p' | sort -u | tr '\n' ' ')
    echo "install them with: apt-get install $pkgs" >&2
    exit 2
fi
HAVE_OPENSSL=no
command -v openssl >/dev/null 2>&1 && HAVE_OPENSSL=yes
[[ -x $DAEMON ]] || die "no p2vfsd at $DAEMON; build it with:
  cmake -S $REPO -B $REPO/build -G Ninja -DP2VFS_TESTS=OFF && ninja -C $REPO/build"

# ---------------------------------------------------------------- state, cleanup
mkdir -p "$CACHE" || die "cannot create $CACHE"
STAMP=$(date +%Y%m%d-%H%M%S)
[[ -n $OUT ]] || OUT="$CACHE/results-$STAMP.txt"
WORK=$(mktemp -d "$CACHE/run.XXXXXX") || die "cannot create a work directory in $CACHE"
LOGDIR="$CACHE/logs-$STAMP"
mkdir -p "$LOGDIR" "$WORK/mnt" "$WORK/out"
LOG="$LOGDIR/bench.log"
REPORT="$WORK/report.txt"
: >"$REPORT"
# A private copy, so a rebuild of the tree during the run cannot mix binaries.
BIN="$WORK/p2vfsd"
cp "$DAEMON" "$BIN" || die "cannot copy $DAEMON"
# Read paths: builds up to 7f75f69 splice by default and take --no-splice;
# later ones copy by default and take --splice (and still accept --no-splice).
# Both paths are measured; M is the default one, the figure "as shipped".
if "$BIN" --help 2>&1 | grep -q -- '^ *--splice'; then
    SPLICE_ARGS=(--splice) M=nosplice
else
    SPLICE_ARGS=() M=splice
fi
declare -A MODE_NAME=([splice]=splice [nosplice]=copy)

ME=bench.sh
# shellcheck source=tools/bench/lib.sh
source "$SCRIPT_DIR/lib.sh"
med_of() { if (($#)); then printf '%s\n' "$@" | median; else echo FAIL; fi; } # median of the arguments
new_mount() { # new_mount NAME -> sets MNT
    MNT="$WORK/mnt/$1"
    unmount_dir "$MNT"
    mkdir -p "$MNT"
    MOUNTS+=("$MNT")
}
data_bytes() { du -B1 "$1" 2>/dev/null | awk '{ print $1 }'; }

# ---------------------------------------------------------------- watchdog
descendants() { local k; echo "$1"; for k in $(pgrep -P "$1" 2>/dev/null); do descendants "$k"; done; }
io_sum() { # bytes read and written so far by a process tree
    local p k v total=0
    for p in $(descendants "$1"); do
        while read -r k v; do
            [[ $k == rchar: || $k == wchar: ]] && total=$((total + v))
        done 2>/dev/null <"/proc/$p/io"
    done
    echo "$total"
}
HUNG=0
SERVER_HWM_CB=""
# watch PID SERVER_PID: wait for PID; if its process tree makes no I/O progress
# for $STALL seconds, kill SERVER_PID (aborting its FUSE connection, which fails
# the reader) and then the tree. Sets HUNG=1 in that case. Returns PID's status.
watch() {
    local rp=$1 server=${2:-} last=-1 still=0 cur p n=0
    HUNG=0
    while kill -0 "$rp" 2>/dev/null; do
        sleep 0.1
        n=$((n + 1))
        ((n % 5)) && continue
        cur=$(io_sum "$rp")
        if [[ $cur == "$last" ]]; then still=$((still + 1)); else still=0; last=$cur; fi
        if ((still >= STALL * 2)); then
            HUNG=1
            progress "  no progress for ${STALL}s: treating it as a hang"
            logonly "  kernel stacks of the reader:"
            for p in $(descendants "$rp"); do
                logonly "    $p $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null): $(tr '\n' ' ' <"/proc/$p/stack" 2>/dev/null)"
            done
            if [[ -n $server ]] && kill -0 "$server" 2>/dev/null; then
                local h t
                h=$(vm "$server" VmHWM)
                [[ -n $SERVER_HWM_CB ]] && "$SERVER_HWM_CB" "$server" "$h"
                logonly "  server $server (VmHWM ${h:-?} KiB), threads blocked in the kernel:"
                for t in /proc/"$server"/task/*; do
                    logonly "    ${t##*/} $(cat "$t/wchan" 2>/dev/null): $(head -n 4 "$t/stack" 2>/dev/null | tr '\n' ' ')"
                done
                logonly "  killing server $server"
                kill -9 "$server" 2>/dev/null
                { wait "$server"; } 2>/dev/null # reaped here, so bash does not report "Killed"
            fi
            sleep 2
            for p in $(descendants "$rp"); do kill -9 "$p" 2>/dev/null; done
            break
        fi
    done
    wait "$rp" 2>/dev/null
}

# ---------------------------------------------------------------- results
declare -A R SZ MEM TIMES HUNGKEY

# read_once KEY FILE SERVER_PID [dd arguments]: one sequential read of FILE with
# dd bs=1M, timed inside the reader; the time is appended to TIMES[KEY].
read_once() {
    local key=$1 file=$2 server=$3
    shift 3
    local tf="$WORK/t.$key" rp rc bytes
    if ! bytes=$(stat -c %s "$file" 2>/dev/null); then
        TIMES[$key]+="FAIL "
        progress "  $key: cannot stat $file"
        return 1
    fi
    SZ[$key]=$bytes
    rm -f "$tf"
    (
        t0=$(now)
        dd if="$file" of=/dev/null bs=1M status=none "$@" 2>>"$LOG" || exit 1
        elapsed "$t0" >"$tf"
    ) &
    rp=$!
    BG+=("$rp")
    watch "$rp" "$server"
    rc=$?
    if ((HUNG)); then
        TIMES[$key]+="HANG "
        HUNGKEY[$key]=1
    elif ((rc != 0)) || [[ ! -s $tf ]]; then
        TIMES[$key]+="FAIL "
    else
        TIMES[$key]+="$(<"$tf") "
    fi
}

# Readers of a round: key, kind (src, p2v, nbd, xm), instance, file, dd arguments
RK=() RKIND=() RINST=() RFILE=() RARGS=()
add_reader() { RK+=("$1"); RKIND+=("$2"); RINST+=("$3"); RFILE+=("$4"); RARGS+=("${5:-}"); }
clear_readers() { RK=() RKIND=() RINST=() RFILE=() RARGS=(); }

# rounds: RUNS rounds; each round reads every reader once, in turn, so that the
# noise of a shared machine falls on all of them alike. Fills R[KEY] with the
# median seconds, or HANG / FAIL.
rounds() {
    local r i key server file t
    for ((r = 1; r <= RUNS; r++)); do
        progress " round $r of $RUNS"
        for i in "${!RK[@]}"; do
            key=${RK[i]}
            [[ -n ${HUNGKEY[$key]:-} ]] && continue # a hang is not retried
            server="" file=""
            case ${RKIND[i]} in
                src) file=${RFILE[i]} ;;
                p2v)
                    p2v_alive "${RINST[i]}" || { TIMES[$key]+="FAIL "; continue; }
                    server=${I_PID[${RINST[i]}]}
                    file="${I_MNT[${RINST[i]}]}/s/${RFILE[i]}"
                    CUR_INST=${RINST[i]}
                    ;;
                nbd) server=${N_FUSE[${RINST[i]}]}; file="${N_MNT[${RINST[i]}]}/f" ;;
                xm) server=${X_PID[${RINST[i]}]:-}; file=${X_FILE[${RINST[i]}]} ;;
            esac
            # shellcheck disable=SC2086
            read_once "$key" "$file" "$server" ${RARGS[i]}
            t=${TIMES[$key]% }
            t=${t##* }
            logonly "  $key: $t ($file ${RARGS[i]})"
            if isnum "$t"; then
                progress "  $key: $t s ($(awk -v b="${SZ[$key]}" -v s="$t" 'BEGIN { printf "%.0f", b / 1048576 / s }') MiB/s)"
            else
                progress "  $key: $t"
            fi
        done
        command -v fincore >/dev/null && logonly "  page cache after round $r: $(fincore -n -o RES,FILE "${RFILE[0]}" 2>/dev/null)"
    done
    finalize "${RK[@]}"
}
# finalize KEY...: R[KEY] = the median of the times in TIMES[KEY], or HANG / FAIL
finalize() {
    local key t
    for key; do
        local nums=() bad=""
        for t in ${TIMES[$key]:-}; do if isnum "$t"; then nums+=("$t"); else bad=$t; fi; done
        if [[ -n ${HUNGKEY[$key]:-} ]]; then R[$key]=HANG
        elif ((${#nums[@]} == 0)); then R[$key]=${bad:-FAIL}
        else R[$key]=$(med_of "${nums[@]}"); fi
        logonly "  $key: all ${TIMES[$key]:-}-> median ${R[$key]}"
    done
}

# timed KEY SERVER_PID COMMAND...: one run; its wall clock is appended to
# TIMES[KEY] (finalize makes R[KEY]), the command's peak RSS goes to MEM[KEY]
# (KiB, the largest of the runs); writes are flushed (sync) outside the timing.
timed() {
    local key=$1 server=$2
    shift 2
    local tf="$WORK/time.$key" rp rc
    rm -f "$tf" "$tf.el"
    logonly "  $key: $*"
    (
        t0=$(now)
        /usr/bin/time -f '%e %M' -o "$tf" "$@" >>"$LOG" 2>&1 || exit 1
        elapsed "$t0" >"$tf.el"
    ) &
    rp=$!
    BG+=("$rp")
    watch "$rp" "$server"
    rc=$?
    local t=FAIL kib
    if ((HUNG)); then t=HANG; HUNGKEY[$key]=1
    elif ((rc != 0)) || [[ ! -s $tf.el ]]; then logonly "  $key failed (status $rc)"
    else
        t=$(<"$tf.el")
        kib=$(awk 'END { print $2 }' "$tf" 2>/dev/null)
        isnum "$kib" && ((kib > ${MEM[$key]:-0})) && MEM[$key]=$kib
    fi
    TIMES[$key]+="$t "
    sync
    progress "  $key: $t$(isnum "$t" && echo " s")"
}

# ---------------------------------------------------------------- sources
rand_stream() {
    if [[ $HAVE_OPENSSL == yes ]]; then
        openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass "pass:p2vfs-bench-$1" -in /dev/zero 2>/dev/null
    else
        cat /dev/urandom
    fi
}
FULL="$CACHE/full-${SIZE_GIB}G.img"
SPARSE_GIB=$((SIZE_GIB * 2))
SPARSE="$CACHE/sparse-${SPARSE_GIB}G.img"
SPARSE_RUNS=$((SIZE_GIB * 4)) # runs of 64 MiB: SIZE_GIB/4 GiB of data
make_full() {
    [[ -f $FULL.ok && $(stat -c %s "$FULL" 2>/dev/null) == $((SIZE_GIB << 30)) ]] && return
    progress "generating $FULL ($SIZE_GIB GiB of random data)"
    rm -f "$FULL" "$FULL.ok"
    rand_stream full | dd of="$FULL.tmp" bs=1M count=$((SIZE_GIB * 1024)) iflag=fullblock status=none
    [[ $(stat -c %s "$FULL.tmp") == $((SIZE_GIB << 30)) ]] || die "could not generate $FULL"
    mv "$FULL.tmp" "$FULL" && touch "$FULL.ok"
}
make_sparse() {
    [[ -f $SPARSE.ok && $(stat -c %s "$SPARSE" 2>/dev/null) == $((SPARSE_GIB << 30)) ]] && return
    progress "generating $SPARSE ($SPARSE_GIB GiB virtual, $SPARSE_RUNS runs of 64 MiB random data)"
    rm -f "$SPARSE" "$SPARSE.ok" "$SPARSE.tmp"
    truncate -s "${SPARSE_GIB}G" "$SPARSE.tmp"
    local stride=$((SPARSE_GIB * 1024 / SPARSE_RUNS)) i off
    {
        for ((i = 0; i < SPARSE_RUNS; i++)); do
            # scattered, at odd MiB offsets too, so some VHD blocks (2 MiB) are partly used
            off=$((i * stride + (i * 97) % (stride - 64)))
            dd of="$SPARSE.tmp" bs=1M seek="$off" count=64 iflag=fullblock conv=notrunc status=none
        done
    } < <(rand_stream sparse)
    [[ $(stat -c %s "$SPARSE.tmp") == $((SPARSE_GIB << 30)) ]] || die "could not generate $SPARSE"
    mv "$SPARSE.tmp" "$SPARSE" && touch "$SPARSE.ok"
}
make_huge() { # make_huge GiB: a sparse file with 4 MiB of data (start, 1 GiB, middle, end)
    local gib=$1 f="$CACHE/huge-${1}G.img"
    [[ -f $f.ok && $(stat -c %s "$f" 2>/dev/null) == $((gib << 30)) ]] && return
    progress "generating $f ($gib GiB virtual, 4 MiB of data)"
    rm -f "$f" "$f.ok"
    truncate -s "${gib}G" "$f.tmp" || die "cannot create $f"
    local off
    {
        for off in 0 1024 $((gib * 512)) $((gib * 1024 - 1)); do
            dd of="$f.tmp" bs=1M seek="$off" count=1 iflag=fullblock conv=notrunc status=none
        done
    } < <(rand_stream "huge$gib")
    mv "$f.tmp" "$f" && touch "$f.ok"
}

# ---------------------------------------------------------------- p2vfsd instances
declare -A I_PID I_MNT I_SRC I_ARGS I_HWM I_RSS0 I_RA I_FORCE_RA I_STARTS I_READY
CUR_INST=""
inst_hwm_cb() { # inst_hwm_cb PID KiB: the watchdog is about to kill PID
    local n
    for n in "${!I_PID[@]}"; do
        [[ ${I_PID[$n]} == "$1" && -n ${2:-} ]] && ((${2} > ${I_HWM[$n]:-0})) && I_HWM[$n]=$2
    done
    return 0
}
SERVER_HWM_CB=inst_hwm_cb

# p2v_start NAME SOURCE [daemon options]: start p2vfsd on $WORK/mnt/NAME and wait
# for "ready" on its stderr. Sets I_READY[NAME] (seconds from spawn to ready),
# I_RSS0[NAME] (VmRSS KiB right after ready, first start only), T_SPAWN.
p2v_start() {
    local name=$1 src=$2
    shift 2
    new_mount "$name"
    local n=$((${I_STARTS[$name]:-0} + 1)) lf pid s0=$SECONDS
    I_STARTS[$name]=$n
    I_MNT[$name]=$MNT
    I_SRC[$name]=$src
    I_ARGS[$name]="$*"
    lf="$LOGDIR/p2vfsd-$name.$n.log"
    T_SPAWN=$(now)
    "$BIN" --mount "$MNT" --source "s=$src" "$@" 2>"$lf" &
    pid=$!
    PIDS+=("$pid")
    I_PID[$name]=$pid
    while :; do
        if [[ -s $lf && $(<"$lf") == *"ready"* ]]; then break; fi
        if ! kill -0 "$pid" 2>/dev/null; then progress "p2vfsd $name did not start:"; cat "$lf" >&2; return 1; fi
        if ((SECONDS - s0 > 60)); then progress "p2vfsd $name: no 'ready' after 60 s"; return 1; fi
        sleep 0.002
    done
    I_READY[$name]=$(elapsed "$T_SPAWN")
    local rss
    rss=$(vm "$pid" VmRSS)
    [[ -n ${I_RSS0[$name]:-} ]] || I_RSS0[$name]=$rss
    CUR_INST=$name
    return 0
}
# p2v_settle NAME: first access (completes FUSE INIT), then record or force read_ahead_kb
p2v_settle() {
    local name=$1
    stat "${I_MNT[$name]}/s" >/dev/null 2>&1
    [[ -n ${I_FORCE_RA[$name]:-} ]] && set_ra "${I_MNT[$name]}" "${I_FORCE_RA[$name]}"
    I_RA[$name]=$(read_ra "${I_MNT[$name]}")
    return 0
}
p2v_note_hwm() {
    local name=$1 h
    h=$(vm "${I_PID[$name]}" VmHWM)
    [[ -n $h ]] && ((h > ${I_HWM[$name]:-0})) && I_HWM[$name]=$h
    return 0
}
p2v_stop() {
    local name=$1 pid=${I_PID[$1]} i rc
    p2v_note_hwm "$name"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && { progress "p2vfsd $name ignored SIGTERM for 10 s; killing it"; kill -9 "$pid"; }
    fi
    wait "$pid" 2>/dev/null
    rc=$?
    ((rc == 0)) || logonly "p2vfsd $name exited with status $rc"
    forget_pid "$pid"
    unmount_dir "${I_MNT[$name]}"
    [[ $CUR_INST == "$name" ]] && CUR_INST=""
    return 0
}
# p2v_alive NAME: restart the instance if a hang killed it
p2v_alive() {
    local name=$1
    kill -0 "${I_PID[$name]}" 2>/dev/null && return 0
    wait "${I_PID[$name]}" 2>/dev/null
    forget_pid "${I_PID[$name]}"
    unmount_dir "${I_MNT[$name]}"
    progress "  restarting p2vfsd $name"
    # shellcheck disable=SC2086
    p2v_start "$name" "${I_SRC[$name]}" ${I_ARGS[$name]} && p2v_settle "$name"
}

VIEWS=(raw vhd fixed vmdk)
declare -A VFILE=([raw]=disk.raw [vhd]=disk.vhd [fixed]=disk-fixed.vhd [vmdk]=disk.vmdk)
declare -A VFMT=([raw]=raw [vhd]=vpc [fixed]=vpc [vmdk]=vmdk)
# Formats of newer builds: read too (default read path), when the mount shows them
EXTRA_VIEWS=(qcow2 vhdx vhdxfixed vdi)
VFILE+=([qcow2]=disk.qcow2 [vhdx]=disk.vhdx [vhdxfixed]=disk-fixed.vhdx [vdi]=disk.vdi)
EXTRAS=()
find_extras() { # find_extras NAME: EXTRAS = the extra view files instance NAME shows
    local v
    EXTRAS=()
    for v in "${EXTRA_VIEWS[@]}"; do [[ -e ${I_MNT[$1]}/s/${VFILE[$v]} ]] && EXTRAS+=("$v"); done
    return 0
}

# ---------------------------------------------------------------- peers
declare -A N_FUSE N_MNT
NBDKIT_PID="" NBD_SOCK="" NBD_HWM=0
nbdkit_start() { # nbdkit_start SOURCE: nbdkit's file plugin on a Unix socket
    NBD_SOCK="$WORK/nbdkit.sock"
    rm -f "$NBD_SOCK"
    nbdkit -f -r -U "$NBD_SOCK" file "$1" 2>>"$LOG" &
    NBDKIT_PID=$!
    PIDS+=("$NBDKIT_PID")
    local i
    for ((i = 0; i < 500; i++)); do [[ -S $NBD_SOCK ]] && return 0; sleep 0.01; done
    progress "nbdkit did not start"
    return 1
}
nbd_mount() { # nbd_mount NAME: an nbdfuse mount of the nbdkit server, file NAME/f
    new_mount "$1"
    N_MNT[$1]=$MNT
    nbdfuse -r "$MNT/f" --unix "$NBD_SOCK" 2>>"$LOG" &
    N_FUSE[$1]=$!
    PIDS+=("${N_FUSE[$1]}")
    local i
    for ((i = 0; i < 500; i++)); do [[ -f $MNT/f ]] && return 0; sleep 0.01; done
    progress "nbdfuse did not mount"
    return 1
}
nbd_stop_all() {
    local n h k
    k=$(vm "$NBDKIT_PID" VmHWM)
    for n in "${!N_FUSE[@]}"; do
        h=$(vm "${N_FUSE[$n]}" VmHWM)
        [[ -n $h && -n $k ]] && ((h + k > NBD_HWM)) && NBD_HWM=$((h + k))
        unmount_dir "${N_MNT[$n]}"
        kill -TERM "${N_FUSE[$n]}" 2>/dev/null
        wait "${N_FUSE[$n]}" 2>/dev/null
        forget_pid "${N_FUSE[$n]}"
    done
    N_FUSE=() N_MNT=()
    kill -TERM "$NBDKIT_PID" 2>/dev/null
    wait "$NBDKIT_PID" 2>/dev/null
    forget_pid "$NBDKIT_PID"
}
declare -A X_PID X_MNT X_FILE
XM_HWM=0
xm_mount() { # xm_mount NAME SOURCE vhd|vmdk: xmount puts itself in the background
    new_mount "$1"
    X_MNT[$1]=$MNT
    xmount --in raw "$2" --out "$3" "$MNT" >>"$LOG" 2>&1 || { progress "xmount failed"; return 1; }
}
xm_find() { # xm_find NAME: its pid, and the file that holds the data (.vhd, or the VMDK's flat .dd)
    local name=$1 p a f
    X_PID[$name]=""
    for p in /proc/[0-9]*; do
        mapfile -d '' a 2>/dev/null <"$p/cmdline" || continue
        ((${#a[@]})) || continue
        [[ ${a[0]##*/} == xmount && ${a[-1]} == "${X_MNT[$name]}" ]] && { X_PID[$name]=${p#/proc/}; break; }
    done
    [[ -n ${X_PID[$name]} ]] && PIDS+=("${X_PID[$name]}")
    for f in "${X_MNT[$name]}"/*.vhd "${X_MNT[$name]}"/*.dd; do [[ -e $f ]] && X_FILE[$name]=$f; done
    return 0
}
xm_stop() {
    local name=$1 h i pid=${X_PID[$1]:-}
    if [[ -n $pid ]]; then
        h=$(vm "$pid" VmHWM)
        [[ -n $h ]] && ((h > XM_HWM)) && XM_HWM=$h
    fi
    unmount_dir "${X_MNT[$name]}"
    if [[ -n $pid ]]; then
        for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -TERM "$pid" 2>/dev/null
        forget_pid "$pid"
    fi
    return 0
}

# ---------------------------------------------------------------- the run
progress "p2vfs benchmark: size $SIZE_GIB GiB, $RUNS rounds, stall limit ${STALL}s; logs in $LOGDIR"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
make_full
make_sparse
make_huge 1024
make_huge 2040
SPARSE_DATA=$(data_bytes "$SPARSE")

# ---- 1. sequential reads, fully allocated source
progress "== 1. sequential reads, fully allocated source ($SIZE_GIB GiB)"
dd if="$FULL" of=/dev/null bs=1M status=none # warm the page cache
p2v_start fs "$FULL" "${SPLICE_ARGS[@]}" && p2v_settle fs
p2v_start fn "$FULL" --no-splice && p2v_settle fn
if [[ $M == splice ]]; then MAIN_FULL=fs MAIN_SPARSE=ss; else MAIN_FULL=fn MAIN_SPARSE=sn; fi
RA_SHIPPED=${I_RA[$MAIN_FULL]:-?}
p2v_start fd "$FULL" && p2v_settle fd
FORCED=no
if [[ $RA_SHIPPED != 1024 ]]; then
    FORCED=yes
    progress " p2vfsd's mount has read_ahead_kb=$RA_SHIPPED, not 1024: also measuring with 1024 set by this script"
    I_FORCE_RA[fsr]=1024
    p2v_start fsr "$FULL" "${SPLICE_ARGS[@]}" && p2v_settle fsr
    I_FORCE_RA[fnr]=1024
    p2v_start fnr "$FULL" --no-splice && p2v_settle fnr
fi
nbdkit_start "$FULL" && nbd_mount nbd && nbd_mount nbdra
NBD_RA_DEFAULT=$(read_ra "${N_MNT[nbd]}")
stat "${N_MNT[nbdra]}/f" >/dev/null
set_ra "${N_MNT[nbdra]}" 1024
NBD_RA_SET=$(read_ra "${N_MNT[nbdra]}")
xm_mount xmvhd "$FULL" vhd && xm_find xmvhd
xm_mount xmvmdk "$FULL" vmdk && xm_find xmvmdk
XM_RA=$(read_ra "${X_MNT[xmvhd]}")

clear_readers
add_reader full.cat src "" "$FULL"
for v in "${VIEWS[@]}"; do add_reader "full.splice.$v" p2v fs "${VFILE[$v]}"; done
find_extras "$MAIN_FULL"
[[ $M == splice ]] && for v in "${EXTRAS[@]}"; do add_reader "full.splice.$v" p2v fs "${VFILE[$v]}"; done
for v in "${VIEWS[@]}"; do add_reader "full.nosplice.$v" p2v fn "${VFILE[$v]}"; done
[[ $M == nosplice ]] && for v in "${EXTRAS[@]}"; do add_reader "full.nosplice.$v" p2v fn "${VFILE[$v]}"; done
if [[ $FORCED == yes ]]; then
    for v in "${VIEWS[@]}"; do add_reader "full.splice-ra.$v" p2v fsr "${VFILE[$v]}"; done
    for v in "${VIEWS[@]}"; do add_reader "full.nosplice-ra.$v" p2v fnr "${VFILE[$v]}"; done
fi
for v in "${VIEWS[@]}"; do add_reader "full.direct.$v" p2v fd "${VFILE[$v]}" iflag=direct; done
add_reader full.nbd nbd nbd ""
add_reader full.nbd-ra nbd nbdra ""
add_reader full.nbd-direct nbd nbdra "" iflag=direct
add_reader full.xm-vhd xm xmvhd ""
add_reader full.xm-vmdk xm xmvmdk ""
rounds
p2v_stop fs
p2v_stop fn
p2v_stop fd
[[ $FORCED == yes ]] && { p2v_stop fsr; p2v_stop fnr; }
nbd_stop_all
xm_stop xmvhd
xm_stop xmvmdk

# ---- 1b. sequential reads, sparse source
progress "== 1b. sequential reads, sparse source ($SPARSE_GIB GiB virtual, $((SPARSE_DATA >> 20)) MiB data)"
dd if="$SPARSE" of=/dev/null bs=1M status=none
p2v_start ss "$SPARSE" "${SPLICE_ARGS[@]}" && p2v_settle ss
p2v_start sn "$SPARSE" --no-splice && p2v_settle sn
nbdkit_start "$SPARSE" && nbd_mount nbd && nbd_mount nbdra
stat "${N_MNT[nbdra]}/f" >/dev/null
set_ra "${N_MNT[nbdra]}" 1024
xm_mount xmvhd "$SPARSE" vhd && xm_find xmvhd
xm_mount xmvmdk "$SPARSE" vmdk && xm_find xmvmdk
clear_readers
add_reader sparse.cat src "" "$SPARSE"
for v in "${VIEWS[@]}"; do add_reader "sparse.splice.$v" p2v ss "${VFILE[$v]}"; done
find_extras "$MAIN_SPARSE"
[[ $M == splice ]] && for v in "${EXTRAS[@]}"; do add_reader "sparse.splice.$v" p2v ss "${VFILE[$v]}"; done
for v in "${VIEWS[@]}"; do add_reader "sparse.nosplice.$v" p2v sn "${VFILE[$v]}"; done
[[ $M == nosplice ]] && for v in "${EXTRAS[@]}"; do add_reader "sparse.nosplice.$v" p2v sn "${VFILE[$v]}"; done
add_reader sparse.nbd nbd nbd ""
add_reader sparse.nbd-ra nbd nbdra ""
add_reader sparse.xm-vhd xm xmvhd ""
add_reader sparse.xm-vmdk xm xmvmdk ""
rounds
p2v_stop ss
p2v_stop sn
nbd_stop_all
xm_stop xmvhd
xm_stop xmvmdk

# ---- 2. time until usable, conversion, materialization
OUTF="$WORK/out/o"
declare -A COMPARE
usable_and_convert() { # usable_and_convert SET SOURCE
    local set=$1 src=$2 i t ts=() tr=() rss=() xs=() m
    progress "== 2. time to usable and conversions, $set source"
    dd if="$src" of=/dev/null bs=1M status=none
    for ((i = 0; i < RUNS; i++)); do
        p2v_start "u$set" "$src" || break
        tr+=("${I_READY[u$set]}")
        if qemu-img info -f vmdk "${I_MNT[u$set]}/s/disk.vmdk" >>"$LOG" 2>&1; then
            ts+=("$(elapsed "$T_SPAWN")")
        fi
        rss+=("$(vm "${I_PID[u$set]}" VmRSS)")
        p2v_stop "u$set"
    done
    R[$set.ready]=$(med_of "${tr[@]}")
    R[$set.usable]=$(med_of "${ts[@]}")
    MEM[$set.rss0]=$(med_of "${rss[@]}")
    progress "  p2vfsd start -> ready ${R[$set.ready]} s, -> qemu-img info disk.vmdk ${R[$set.usable]} s"
    for ((i = 0; i < RUNS; i++)); do
        t=$(now)
        xm_mount xmu "$src" vmdk || break
        qemu-img info -f vmdk "${X_MNT[xmu]}/$(basename "${src%.*}").vmdk" >>"$LOG" 2>&1 && xs+=("$(elapsed "$t")")
        xm_find xmu
        xm_stop xmu
    done
    R[$set.xm-usable]=$(med_of "${xs[@]}")
    progress "  xmount start -> qemu-img info of its VMDK ${R[$set.xm-usable]} s"

    # conversions and copies: interleaved rounds too, medians
    p2v_start "c$set" "$src" && p2v_settle "c$set"
    m=${I_MNT[c$set]}
    # the same conversion reading through another FUSE file: nbdfuse, read_ahead_kb 1024
    nbdkit_start "$src" && nbd_mount nbdc
    stat "${N_MNT[nbdc]}/f" >/dev/null
    set_ra "${N_MNT[nbdc]}" 1024
    local r
    for ((r = 1; r <= RUNS; r++)); do
        progress " round $r of $RUNS"
        conv "$set.conv-vmdk" "" "$OUTF.vmdk" qemu-img convert -f raw -O vmdk "$src" "$OUTF.vmdk"
        conv "$set.conv-vpc" "" "$OUTF.vhd" qemu-img convert -f raw -O vpc "$src" "$OUTF.vhd"
        conv "$set.conv-fixed" "" "$OUTF.vhd" qemu-img convert -f raw -O vpc -o subformat=fixed "$src" "$OUTF.vhd"
        p2v_alive "c$set"
        conv "$set.conv-from-view" "${I_PID[c$set]}" "$OUTF.vmdk" qemu-img convert -f raw -O vmdk "$m/s/disk.raw" "$OUTF.vmdk"
        conv "$set.conv-from-nbd" "${N_FUSE[nbdc]}" "$OUTF.vmdk" qemu-img convert -f raw -O vmdk "${N_MNT[nbdc]}/f" "$OUTF.vmdk"
        p2v_alive "c$set"
        COMPARE_WITH=""
        ((r == 1)) && COMPARE_WITH=$src
        conv "$set.cp-vmdk" "${I_PID[c$set]}" "$OUTF.vmdk" cp --sparse=always "$m/s/disk.vmdk" "$OUTF.vmdk"
        COMPARE_WITH=""
        p2v_alive "c$set"
        conv "$set.cp-vhd" "${I_PID[c$set]}" "$OUTF.vhd" cp --sparse=always "$m/s/disk.vhd" "$OUTF.vhd"
        p2v_alive "c$set"
        conv "$set.cp-fixed" "${I_PID[c$set]}" "$OUTF.vhd" cp --sparse=always "$m/s/disk-fixed.vhd" "$OUTF.vhd"
    done
    p2v_stop "c$set"
    nbd_stop_all
    finalize "$set".{conv-vmdk,conv-vpc,conv-fixed,conv-from-view,conv-from-nbd,cp-vmdk,cp-vhd,cp-fixed}
}
# conv KEY SERVER_PID OUTPUT COMMAND...: time COMMAND (skipped after a hang),
# note the allocated size of OUTPUT, compare a copied VMDK with COMPARE_WITH
# if set, then remove OUTPUT
COMPARE_WITH=""
conv() {
    local key=$1 server=$2 out=$3
    shift 3
    [[ -n ${HUNGKEY[$key]:-} ]] && return 0
    rm -f "$out"
    timed "$key" "$server" "$@"
    [[ -f $out ]] && SZ[$key]=$(data_bytes "$out")
    if [[ -n $COMPARE_WITH && -f $out ]] && ! [[ ${TIMES[$key]} == *HANG* || ${TIMES[$key]} == *FAIL* ]]; then
        if qemu-img compare -f vmdk -F raw "$out" "$COMPARE_WITH" >>"$LOG" 2>&1; then COMPARE[${key%%.*}]="identical to the source"
        else COMPARE[${key%%.*}]="DIFFERS from the source"; fi
        progress "  qemu-img compare of the copied disk.vmdk with the source: ${COMPARE[${key%%.*}]}"
    fi
    rm -f "$out"
    sync
}
usable_and_convert sparse "$SPARSE"
usable_and_convert full "$FULL"

# ---- 4. huge sparse sources
declare -A HUGE_LABEL=([1024]="1 TiB" [2040]="2040 GiB")
for gib in 1024 2040; do
    src="$CACHE/huge-${gib}G.img"
    progress "== 4. opening a ${HUGE_LABEL[$gib]} sparse source"
    hr=()
    declare -A hv=()
    for ((i = 0; i < RUNS; i++)); do
        p2v_start "h$gib" "$src" || break
        hr+=("${I_READY[h$gib]}")
        for v in vmdk vhd fixed raw; do
            if qemu-img info -f "${VFMT[$v]}" "${I_MNT[h$gib]}/s/${VFILE[$v]}" >>"$LOG" 2>&1; then
                hv[$v]+="$(elapsed "$T_SPAWN") "
            fi
        done
        p2v_stop "h$gib"
    done
    R[h$gib.ready]=$(med_of "${hr[@]}")
    for v in vmdk vhd fixed raw; do
        # shellcheck disable=SC2086
        R[h$gib.info-$v]=$(med_of ${hv[$v]:-})
    done
    unset hv
    MEM[h$gib.rss0]=${I_RSS0[h$gib]:-}
    MEM[h$gib.hwm]=${I_HWM[h$gib]:-}
    progress "  ready ${R[h$gib.ready]} s; info vmdk ${R[h$gib.info-vmdk]}, vhd ${R[h$gib.info-vhd]}, fixed ${R[h$gib.info-fixed]}, raw ${R[h$gib.info-raw]} s; VmHWM ${MEM[h$gib.hwm]} KiB"
    for ((i = 0; i < RUNS; i++)); do
        conv "h$gib.conv-vmdk" "" "$OUTF.vmdk" qemu-img convert -f raw -O vmdk "$src" "$OUTF.vmdk"
        conv "h$gib.conv-vpc" "" "$OUTF.vhd" qemu-img convert -f raw -O vpc "$src" "$OUTF.vhd"
    done
    finalize "h$gib.conv-vmdk" "h$gib.conv-vpc"
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
T_TOTAL=$(elapsed "$T_START")

# ---------------------------------------------------------------- report
mibps() { isnum "${R[$1]:-}" && isnum "${SZ[$1]:-}" && awk -v b="${SZ[$1]}" -v s="${R[$1]}" 'BEGIN { printf "%.0f", b / 1048576 / s }' || echo "${R[$1]:-n/a}"; }
ratio() { isnum "${1:-}" && isnum "${2:-}" && awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }' || echo "n/a"; }
secs() { isnum "${1:-}" && awk -v s="$1" 'BEGIN { if (s < 10) printf "%.3f s", s; else printf "%.1f s", s }' || echo "${1:-n/a}"; }
mib() { isnum "${1:-}" && awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }' || echo "${1:-n/a}"; }
bytes_h() { isnum "${1:-}" && awk -v b="$1" 'BEGIN { if (b >= 1073741824) printf "%.2f GiB", b / 1073741824; else printf "%.0f MiB", b / 1048576 }' || echo "${1:-n/a}"; }

KERNEL=$(uname -r)
CPUS=$(nproc)
MEMG=$(awk '/MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)
OS=$(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")
DAEMON_INFO="$DAEMON, built $(date -r "$DAEMON" '+%Y-%m-%d %H:%M' 2>/dev/null)"
if [[ $DAEMON == "$REPO/build/fsd/p2vfsd" ]]; then
    DAEMON_INFO+=", tree at $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "?")"
    git -C "$REPO" diff --quiet HEAD -- fsd 2>/dev/null || DAEMON_INFO+=" with local changes in fsd/"
fi
[[ -n $LABEL ]] && DAEMON_INFO+=", $LABEL"

rep "p2vfs benchmark, $(date '+%Y-%m-%d %H:%M %Z')"
rep "machine: $CPUS cores, $MEMG GiB RAM, $OS, kernel $KERNEL"
rep "p2vfsd: $("$BIN" --version 2>/dev/null | head -n 1); $DAEMON_INFO"
rep "peers: $(qemu-img --version | head -n 1); $(nbdkit --version 2>&1 | head -n 1); $(nbdfuse --version 2>&1 | head -n 1); xmount $(dpkg-query -W -f '${Version}' xmount 2>/dev/null)"
rep "reads: dd bs=1M to /dev/null, page cache warm, nothing dropped; $RUNS interleaved rounds, median"
rep "conversions and copies: $RUNS interleaved rounds, median; they write to the page cache, the sync after each is not timed"
rep "load average before: $LOAD_BEFORE, after: $LOAD_AFTER; whole run ${T_TOTAL%.*} s"
rep "p2vfsd read path: ${MODE_NAME[$M]} by default (the figures 'as shipped'); the other one is measured too; O_DIRECT, conversions and starts use the default"
rep "FUSE read_ahead_kb: p2vfsd as shipped $RA_SHIPPED, nbdfuse default $NBD_RA_DEFAULT (raised to $NBD_RA_SET on a second mount), xmount ${XM_RA:-?}"
rep ""

COLS='  %-46s %10s %9s %8s %6s %10s %9s'
throughput_table() { # throughput_table SET TITLE
    local set=$1 cat_r nbd_r nbdra_r mode v
    cat_r=$(mibps "$set.cat"); nbd_r=$(mibps "$set.nbd"); nbdra_r=$(mibps "$set.nbd-ra")
    rep "$2"
    # shellcheck disable=SC2059
    rep "$(printf "$COLS" reader "file size" median MiB/s "x dd" "x nbd dflt" "x nbd1024")"
    row() { # row KEY LABEL
        local k=$1 r
        [[ -n ${R[$k]:-} ]] || return 0
        r=$(mibps "$k")
        # shellcheck disable=SC2059
        rep "$(printf "$COLS" "$2" "$(bytes_h "${SZ[$k]:-}")" "$(secs "${R[$k]:-}")" "$r" \
            "$(ratio "$r" "$cat_r")" "$(ratio "$r" "$nbd_r")" "$(ratio "$r" "$nbdra_r")")"
    }
    row "$set.cat" "dd of the source (the physical limit)"
    local first=$M second=splice
    [[ $M == splice ]] && second=nosplice
    for mode in "$first" "$second" splice-ra nosplice-ra direct; do
        for v in "${VIEWS[@]}" "${EXTRA_VIEWS[@]}"; do
            case $mode in
                splice | nosplice) row "$set.$mode.$v" "p2vfsd ${VFILE[$v]}, ${MODE_NAME[$mode]}" ;;
                splice-ra) row "$set.$mode.$v" "p2vfsd ${VFILE[$v]}, splice, ra 1024 set" ;;
                nosplice-ra) row "$set.$mode.$v" "p2vfsd ${VFILE[$v]}, copy, ra 1024 set" ;;
                direct) row "$set.$mode.$v" "p2vfsd ${VFILE[$v]}, O_DIRECT" ;;
            esac
        done
    done
    row "$set.nbd" "nbdfuse, read_ahead_kb ${NBD_RA_DEFAULT}"
    row "$set.nbd-ra" "nbdfuse, read_ahead_kb 1024"
    row "$set.nbd-direct" "nbdfuse, O_DIRECT"
    row "$set.xm-vhd" "xmount VHD (fixed: raw + footer)"
    row "$set.xm-vmdk" "xmount VMDK (its flat extent)"
    rep ""
}
throughput_table full "1. Sequential read, fully allocated source ($SIZE_GIB GiB of random data). x = throughput ratio, higher favours p2vfsd."
throughput_table sparse "1b. Sequential read, sparse source ($SPARSE_GIB GiB virtual, $(bytes_h "$SPARSE_DATA") of data). Dynamic views hold only data blocks."

rep "Splice against copy (MiB/s with splicing / with copying; > 1: splice is faster)"
for set in full sparse; do
    line="  $set:"
    for v in "${VIEWS[@]}"; do line+="  ${VFILE[$v]} $(ratio "$(mibps "$set.splice.$v")" "$(mibps "$set.nosplice.$v")")"; done
    rep "$line"
done
if [[ $FORCED == yes ]]; then
    line="  full, read_ahead_kb 1024:"
    for v in "${VIEWS[@]}"; do line+="  ${VFILE[$v]} $(ratio "$(mibps "full.splice-ra.$v")" "$(mibps "full.nosplice-ra.$v")")"; done
    rep "$line"
fi
rep ""

rep "2. Time until usable, conversion, materialization (wall clock; lower is better)"
rep "$(printf '  %-66s %12s %12s' measurement "sparse src" "full src")"
r2() { rep "$(printf '  %-66s %12s %12s' "$1" "$(secs "${R[sparse.$2]:-}")" "$(secs "${R[full.$2]:-}")")"; }
r2 "p2vfsd start -> 'ready'" ready
r2 "p2vfsd start -> qemu-img info disk.vmdk succeeds" usable
r2 "xmount start -> qemu-img info of its VMDK succeeds" xm-usable
r2 "qemu-img convert -O vmdk source" conv-vmdk
r2 "qemu-img convert -O vpc source" conv-vpc
r2 "qemu-img convert -O vpc -o subformat=fixed source" conv-fixed
r2 "qemu-img convert -O vmdk, reading p2vfsd's disk.raw" conv-from-view
r2 "qemu-img convert -O vmdk, reading nbdfuse (read_ahead_kb 1024)" conv-from-nbd
r2 "cp --sparse=always disk.vmdk (materialize)" cp-vmdk
r2 "cp --sparse=always disk.vhd (materialize)" cp-vhd
r2 "cp --sparse=always disk-fixed.vhd (materialize)" cp-fixed
rep "  the copied disk.vmdk, checked with qemu-img compare: sparse ${COMPARE[sparse]:-not checked}; full ${COMPARE[full]:-not checked}"
rep "  allocated size, sparse / full: convert -O vmdk $(bytes_h "${SZ[sparse.conv-vmdk]:-}") / $(bytes_h "${SZ[full.conv-vmdk]:-}"), cp disk.vmdk $(bytes_h "${SZ[sparse.cp-vmdk]:-}") / $(bytes_h "${SZ[full.cp-vmdk]:-}"); convert -O vpc $(bytes_h "${SZ[sparse.conv-vpc]:-}") / $(bytes_h "${SZ[full.conv-vpc]:-}"), cp disk.vhd $(bytes_h "${SZ[sparse.cp-vhd]:-}") / $(bytes_h "${SZ[full.cp-vhd]:-}")"
rep ""

rep "3. Memory"
rep "  p2vfsd VmRSS right after 'ready': sparse $(mib "${MEM[sparse.rss0]:-}"), full $(mib "${MEM[full.rss0]:-}"), 1 TiB $(mib "${MEM[h1024.rss0]:-}"), 2040 GiB $(mib "${MEM[h2040.rss0]:-}")"
rep "  p2vfsd VmHWM after all reads of a run (full source): splice $(mib "${I_HWM[fs]:-}"), copy $(mib "${I_HWM[fn]:-}"), O_DIRECT $(mib "${I_HWM[fd]:-}")$([[ $FORCED == yes ]] && echo ", splice ra 1024 $(mib "${I_HWM[fsr]:-}"), copy ra 1024 $(mib "${I_HWM[fnr]:-}")")"
rep "  p2vfsd VmHWM after all reads of a run (sparse source): splice $(mib "${I_HWM[ss]:-}"), copy $(mib "${I_HWM[sn]:-}")"
rep "  p2vfsd VmHWM after convert and cp through the mount: sparse $(mib "${I_HWM[csparse]:-}"), full $(mib "${I_HWM[cfull]:-}")"
rep "  peers: nbdfuse + nbdkit VmHWM $(mib "$NBD_HWM"); xmount VmHWM $(mib "$XM_HWM"); qemu-img convert -O vmdk max RSS $(mib "${MEM[full.conv-vmdk]:-}") (full), $(mib "${MEM[sparse.conv-vmdk]:-}") (sparse)"
rep ""

rep "4. Huge sparse sources (4 MiB of data): seconds from p2vfsd start, one daemon, the qemu-img info calls one after another"
HCOLS='  %-9s %8s %10s %10s %10s %10s %9s %9s %13s %12s'
# shellcheck disable=SC2059
rep "$(printf "$HCOLS" source ready "info vmdk" "info vhd" "info fixed" "info raw" RSS0 VmHWM "convert vmdk" "convert vpc")"
for gib in 1024 2040; do
    # shellcheck disable=SC2059
    rep "$(printf "$HCOLS" "${HUGE_LABEL[$gib]}" "$(secs "${R[h$gib.ready]:-}")" \
        "$(secs "${R[h$gib.info-vmdk]:-}")" "$(secs "${R[h$gib.info-vhd]:-}")" "$(secs "${R[h$gib.info-fixed]:-}")" "$(secs "${R[h$gib.info-raw]:-}")" \
        "$(mib "${MEM[h$gib.rss0]:-}")" "$(mib "${MEM[h$gib.hwm]:-}")" "$(secs "${R[h$gib.conv-vmdk]:-}")" "$(secs "${R[h$gib.conv-vpc]:-}")")"
done
rep ""

# ---- summary
rep "SUMMARY. ratio = p2vfsd / peer. Throughput (MiB/s): higher is better, so ratio > 1 favours p2vfsd."
rep "         Time and memory: lower is better, so ratio < 1 favours p2vfsd."
SCOLS='  %-44s %10s  %-32s %10s %7s  %s'
# shellcheck disable=SC2059
rep "$(printf "$SCOLS" measurement p2vfsd peer "peer" ratio better)"
S() { # shellcheck disable=SC2059
    rep "$(printf "$SCOLS" "$1" "$2" "$3" "$4" "$5" "$6")"
}
sum_tp() { # sum_tp LABEL P2VKEY PEERLABEL PEERKEY
    local a b
    [[ -n ${R[$2]:-} && -n ${R[$4]:-} ]] || return 0
    a=$(mibps "$2"); b=$(mibps "$4")
    S "$1" "$a" "$3" "$b" "$(ratio "$a" "$b")" "higher"
}
for v in "${VIEWS[@]}" "${EXTRA_VIEWS[@]}"; do sum_tp "read ${VFILE[$v]}, MiB/s" "full.$M.$v" "dd of the source" "full.cat"; done
for v in "${VIEWS[@]}" "${EXTRA_VIEWS[@]}"; do sum_tp "read ${VFILE[$v]}, MiB/s" "full.$M.$v" "nbdfuse, read_ahead_kb 1024" "full.nbd-ra"; done
for v in "${VIEWS[@]}"; do sum_tp "read ${VFILE[$v]}, MiB/s" "full.$M.$v" "nbdfuse, read_ahead_kb $NBD_RA_DEFAULT" "full.nbd"; done
sum_tp "read disk-fixed.vhd, MiB/s" "full.$M.fixed" "xmount VHD" full.xm-vhd
sum_tp "read disk.vmdk, MiB/s" "full.$M.vmdk" "xmount VMDK (flat)" full.xm-vmdk
for v in "${VIEWS[@]}"; do sum_tp "read ${VFILE[$v]}, splice, MiB/s" "full.splice.$v" "p2vfsd, copy" "full.nosplice.$v"; done
if [[ $FORCED == yes ]]; then
    for v in "${VIEWS[@]}"; do sum_tp "read ${VFILE[$v]}, ra 1024 set, MiB/s" "full.splice-ra.$v" "nbdfuse, read_ahead_kb 1024" "full.nbd-ra"; done
    for v in "${VIEWS[@]}"; do sum_tp "read ${VFILE[$v]}, --no-splice, ra 1024" "full.nosplice-ra.$v" "nbdfuse, read_ahead_kb 1024" "full.nbd-ra"; done
fi
for v in "${VIEWS[@]}"; do sum_tp "read ${VFILE[$v]}, O_DIRECT, MiB/s" "full.direct.$v" "nbdfuse, O_DIRECT" "full.nbd-direct"; done
sum_t() { # sum_t LABEL P2VKEY PEERLABEL PEERKEY
    [[ -n ${R[$2]:-} && -n ${R[$4]:-} ]] || return 0
    S "$1" "$(secs "${R[$2]}")" "$3" "$(secs "${R[$4]}")" "$(ratio "${R[$2]}" "${R[$4]}")" "lower"
}
sum_t "sparse: read disk.raw" "sparse.$M.raw" "nbdfuse, read_ahead_kb 1024" sparse.nbd-ra
sum_t "sparse: read disk.vhd" "sparse.$M.vhd" "xmount VHD" sparse.xm-vhd
sum_t "sparse: read disk.vmdk" "sparse.$M.vmdk" "xmount VMDK (flat)" sparse.xm-vmdk
for v in vhd vmdk "${EXTRA_VIEWS[@]}"; do sum_t "sparse: read ${VFILE[$v]}" "sparse.$M.$v" "p2vfsd disk.raw" "sparse.$M.raw"; done
for set in sparse full; do
    sum_t "$set: start -> info disk.vmdk" "$set.usable" "qemu-img convert -O vmdk" "$set.conv-vmdk"
    sum_t "$set: start -> info disk.vmdk" "$set.usable" "qemu-img convert -O vpc" "$set.conv-vpc"
    sum_t "$set: start -> info disk.vmdk" "$set.usable" "convert -O vpc subformat=fixed" "$set.conv-fixed"
    sum_t "$set: start -> info disk.vmdk" "$set.usable" "xmount start -> info its VMDK" "$set.xm-usable"
    sum_t "$set: convert -O vmdk from disk.raw view" "$set.conv-from-view" "convert -O vmdk from the source" "$set.conv-vmdk"
    sum_t "$set: convert -O vmdk from disk.raw view" "$set.conv-from-view" "convert -O vmdk from nbdfuse" "$set.conv-from-nbd"
    sum_t "$set: cp disk.vmdk (materialize)" "$set.cp-vmdk" "qemu-img convert -O vmdk" "$set.conv-vmdk"
    sum_t "$set: cp disk.vhd (materialize)" "$set.cp-vhd" "qemu-img convert -O vpc" "$set.conv-vpc"
    sum_t "$set: cp disk-fixed.vhd (materialize)" "$set.cp-fixed" "convert -O vpc subformat=fixed" "$set.conv-fixed"
done
for gib in 1024 2040; do
    sum_t "${HUGE_LABEL[$gib]}: start -> info disk.vmdk" "h$gib.info-vmdk" "qemu-img convert -O vmdk" "h$gib.conv-vmdk"
    sum_t "${HUGE_LABEL[$gib]}: start -> info disk.vhd" "h$gib.info-vhd" "qemu-img convert -O vpc" "h$gib.conv-vpc"
done
S "VmHWM after all full reads" "$(mib "${I_HWM[$MAIN_FULL]:-}")" "nbdfuse + nbdkit VmHWM" "$(mib "$NBD_HWM")" "$(ratio "${I_HWM[$MAIN_FULL]:-}" "$NBD_HWM")" "lower"
S "VmHWM after all full reads" "$(mib "${I_HWM[$MAIN_FULL]:-}")" "xmount VmHWM" "$(mib "$XM_HWM")" "$(ratio "${I_HWM[$MAIN_FULL]:-}" "$XM_HWM")" "lower"
S "VmHWM after cp/convert via mount (full)" "$(mib "${I_HWM[cfull]:-}")" "qemu-img convert -O vmdk max RSS" "$(mib "${MEM[full.conv-vmdk]:-}")" "$(ratio "${I_HWM[cfull]:-}" "${MEM[full.conv-vmdk]:-}")" "lower"
S "VmHWM, 2040 GiB, after info of 4 views" "$(mib "${MEM[h2040.hwm]:-}")" "qemu-img convert -O vmdk max RSS" "$(mib "${MEM[h2040.conv-vmdk]:-}")" "$(ratio "${MEM[h2040.hwm]:-}" "${MEM[h2040.conv-vmdk]:-}")" "lower"
rep ""
problems=()
for k in "${!R[@]}"; do [[ ${R[$k]} == HANG || ${R[$k]} == FAIL ]] && problems+=("$k=${R[$k]}"); done
if ((${#problems[@]})); then
    rep "PROBLEMS: $(printf '%s\n' "${problems[@]}" | sort | tr '\n' ' ')"
    rep "  HANG: the reader made no progress for ${STALL}s and its FUSE server was killed;"
    rep "  the kernel stacks of the reader and of the server's threads are in $LOG"
fi
[[ $RA_SHIPPED != 1024 ]] && rep "NOTE: p2vfsd's mount had read_ahead_kb=$RA_SHIPPED after start, not the 1024 it aims for."
rep "logs: $LOGDIR"

cat "$REPORT"
mkdir -p "$(dirname "$OUT")" && cp "$REPORT" "$OUT" && echo "report written to $OUT" >&2

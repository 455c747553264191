#!/usr/bin/env bash
# Benchmark of materialization: making a real virtual disk file out of a view,
# side by side in one run on one machine, each copy reading from the disk (the
# page cache is dropped before every run):
#   1. p2vfs:  p2vctl materialize SRC VIEW DEST --wait  (the daemon's job
#      engine reading the view itself), with its default options and again
#      with --parallel 1;
#   2. qemu-img convert -O FMT of the source image: what one would otherwise run;
#   3. cp --sparse=always of the same view file from the FUSE mount.
# For every view (default disk.raw and disk.vhdx) over a sparse source (half
# random data in scattered 64 MiB runs, half holes). Every result is checked
# against the source with qemu-img compare, so a fast wrong copy cannot win.
# Not part of the test suite.
# Run as root:  bash tools/bench/materialize-bench.sh [--size GiB] [--runs N]
# See tools/bench/README.md ("Materialization") for what each figure means.
set -uo pipefail
export LC_ALL=C # '.' as the decimal point, also in $EPOCHREALTIME

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tools/bench/options.sh
source "$SCRIPT_DIR/options.sh" # bench_option: --daemon, --ctl, --out, --cache-dir, --label
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)

SIZE_GIB=4
RUNS=3
OUT=""
CACHE=/var/tmp/p2vfs-bench
DAEMON="${P2VFSD:-$REPO/build/fsd/p2vfsd}"
CTL_BIN=""
VIEW_LIST=raw,vhdx
VARIANTS=("" "--parallel 1") # p2vctl materialize options of the p2vfs rows
LABEL=""

usage() {
    cat <<EOF
Usage: bash tools/bench/materialize-bench.sh [OPTIONS]   (as root)

  --size GiB        virtual size of the source (default $SIZE_GIB); half of it is random
                    data in 64 MiB runs, one in every 128 MiB at varying offsets
  --runs N          runs of every measurement; each figure is the median (default $RUNS)
  --views LIST      views to materialize, from raw, vhdx, vhd, vmdk, qcow2, vdi
                    (default $VIEW_LIST)
  --variant ARGS    one more p2vfs row per view: p2vctl materialize with ARGS,
                    e.g. --variant "--no-verify" (repeatable; the rows with the
                    default options and with --parallel 1 are always there)
  --daemon PATH     the p2vfsd binary (default: \$P2VFSD, else build/fsd/p2vfsd of
                    this tree)
  --ctl PATH        the p2vctl binary (default: tools/p2vctl of the daemon's build)
  --out FILE        also write the report to FILE
                    (default: $CACHE/materialize-results-DATE.txt)
  --cache-dir DIR   where the source is generated and kept, and the copies are
                    written (default $CACHE); keep it on the source's file system
  --label TEXT      a note on the daemon build, printed in the report
  -h, --help        this text

Needs qemu-img (qemu-utils), dbus-daemon (dbus-daemon or dbus), /usr/bin/time
(time), fusermount3 (fuse3) and script (bsdutils); uses openssl, if present,
to generate random data quickly. Installs nothing. Drops the page cache of the
whole machine (echo 3 > /proc/sys/vm/drop_caches) before every run. A run at
the default size takes about 4 minutes on 2 cores (with one --variant).
EOF
}

while (($#)); do
    case $1 in
        --size) SIZE_GIB=${2:-}; shift 2 ;;
        --size=*) SIZE_GIB=${1#*=}; shift ;;
        --runs) RUNS=${2:-}; shift 2 ;;
        --runs=*) RUNS=${1#*=}; shift ;;
        --views) VIEW_LIST=${2:-}; shift 2 ;;
        --views=*) VIEW_LIST=${1#*=}; shift ;;
        --variant) VARIANTS+=("${2:-}"); shift 2 ;;
        --variant=*) VARIANTS+=("${1#*=}"); shift ;;
        -h | --help) usage; exit 0 ;;
        *)
            bench_option "$@" || { echo "materialize-bench.sh: unknown argument: $1 (see --help)" >&2; exit 2; }
            shift "$BENCH_SHIFT"
            ;;
    esac
done

die() { echo "materialize-bench.sh: $*" >&2; exit 1; }
[[ $SIZE_GIB =~ ^[1-9][0-9]*$ ]] || die "--size wants a whole number of GiB"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs wants a positive number"
[[ $EUID -eq 0 ]] || die "run as root (FUSE mount, drop_caches, /proc/PID/clear_refs)"
[[ -c /dev/fuse ]] || die "/dev/fuse is missing"
[[ $CACHE != *[[:space:]]* ]] || die "--cache-dir must not contain spaces"
[[ -n $CTL_BIN ]] || CTL_BIN="$(dirname "$DAEMON")/../tools/p2vctl"

# View name -> file in the mount, qemu-img -O format and its -o options.
declare -A VFILE=([raw]=disk.raw [vhdx]=disk.vhdx [vhd]=disk.vhd [vmdk]=disk.vmdk [qcow2]=disk.qcow2 [vdi]=disk.vdi)
declare -A QFMT=([raw]=raw [vhdx]=vhdx [vhd]=vpc [vmdk]=vmdk [qcow2]=qcow2 [vdi]=vdi)
declare -A QOPT=([raw]="" [vhdx]="subformat=dynamic" [vhd]="subformat=dynamic" [vmdk]="subformat=monolithicSparse" [qcow2]="" [vdi]="")
IFS=, read -r -a VIEWS <<<"$VIEW_LIST"
((${#VIEWS[@]})) || die "--views is empty"
for v in "${VIEWS[@]}"; do [[ -n ${VFILE[$v]:-} ]] || die "--views: unknown view '$v' (raw, vhdx, vhd, vmdk, qcow2, vdi)"; done

# ---------------------------------------------------------------- tools
missing=()
need() { # need COMMAND PACKAGE
    if [[ $1 == /* ]]; then [[ -x $1 ]] || missing+=("$1 (package $2)")
    else command -v "$1" >/dev/null 2>&1 || missing+=("$1 (package $2)"); fi
}
need qemu-img qemu-utils
need dbus-daemon dbus-daemon
need /usr/bin/time time
need fusermount3 fuse3
need script bsdutils
need mountpoint util-linux
need truncate coreutils
need awk mawk
if ((${#missing[@]})); then
    echo "materialize-bench.sh: missing tools:" >&2
    printf '  %s\n' "${missing[@]}" >&2
    pkgs=$(printf '%s\n' "${missing[@]}" | sed -n 's/.*(package \(.*\))/\1/p' | sort -u | tr '\n' ' ')
    echo "install them with: apt-get install $pkgs" >&2
    exit 2
fi
HAVE_OPENSSL=no
command -v openssl >/dev/null 2>&1 && HAVE_OPENSSL=yes
[[ -x $DAEMON ]] || die "no p2vfsd at $DAEMON; build it with:
  cmake -S $REPO -B $REPO/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DP2VFS_TESTS=OFF && ninja -C $REPO/build"
[[ -x $CTL_BIN ]] || die "no p2vctl at $CTL_BIN (--ctl names it)"

# ---------------------------------------------------------------- state, cleanup
ME=materialize-bench.sh
# shellcheck source=tools/bench/lib.sh
source "$SCRIPT_DIR/lib.sh" # cleanup at exit: PIDS killed, MOUNTS unmounted, WORK removed
bench_workspace materialize mrun

max_of() { printf '%s\n' "$@" | sort -g | tail -n 1; }
bytes_on_disk() { du -B1 "$1" 2>/dev/null | awk '{ print $1 }'; }
mib() { isnum "${1:-}" && awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }' || echo "-"; }
gib_h() { isnum "${1:-}" && awk -v b="$1" 'BEGIN { if (b >= 1073741824) printf "%.2f GiB", b / 1073741824; else printf "%.0f MiB", b / 1048576 }' || echo "-"; }
rate() { isnum "${2:-}" && awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / 1048576 / s }' || echo "-"; }
ratio() { isnum "${1:-}" && isnum "${2:-}" && awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }' || echo "-"; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# ---------------------------------------------------------------- the source
rand_stream() {
    if [[ $HAVE_OPENSSL == yes ]]; then
        openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass "pass:p2vfs-bench-$1" -in /dev/zero 2>/dev/null
    else
        cat /dev/urandom
    fi
}
SRC="$CACHE/half-${SIZE_GIB}G.img"
NRUNS=$((SIZE_GIB * 8)) # one run of 64 MiB in every 128 MiB: half the disk
DATA_BYTES=$((NRUNS * 64 << 20))
VSIZE=$((SIZE_GIB << 30))
make_source() {
    [[ -f $SRC.ok && $(stat -c %s "$SRC" 2>/dev/null) == "$VSIZE" ]] && return
    progress "generating $SRC ($SIZE_GIB GiB virtual, $NRUNS runs of 64 MiB of random data)"
    rm -f "$SRC" "$SRC.ok" "$SRC.tmp"
    truncate -s "${SIZE_GIB}G" "$SRC.tmp" || die "cannot create $SRC"
    local i off
    {
        for ((i = 0; i < NRUNS; i++)); do
            # One run in every 128 MiB, at 0..63 MiB into it: holes of 1 to
            # 127 MiB between runs, and runs that start at odd MiB offsets, so
            # that some VHDX (32 MiB) and VHD (2 MiB) blocks are partly used.
            off=$((i * 128 + (i * 37) % 64))
            dd of="$SRC.tmp" bs=1M seek="$off" count=64 iflag=fullblock conv=notrunc status=none
        done
    } < <(rand_stream half)
    [[ $(stat -c %s "$SRC.tmp") == "$VSIZE" ]] || die "could not generate $SRC"
    mv "$SRC.tmp" "$SRC" && touch "$SRC.ok"
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

# ---------------------------------------------------------------- measurements
# Keys: VIEW.p2v.N (N indexes VARIANTS), VIEW.qemu, VIEW.cp.
declare -A TIMES CMDTIMES RSS DRSS DU CHECK JOBTIMES PHASES SZ_VIEW CPU
TICK=$(getconf CLK_TCK)
cpu_ticks() { # user + system time of PID so far, in clock ticks
    local st
    st=$(<"/proc/$1/stat") || return 1
    st=${st##*) }
    awk '{ print $12 + $13 }' <<<"$st"
}
ticks_s() { awk -v a="$1" -v b="$2" -v t="$TICK" 'BEGIN { printf "%.2f", (b - a) / t }'; }
LABEL_OF() { # tool label of a key
    local k=${1#*.}
    case $k in
        p2v.*) local a=${VARIANTS[${k#p2v.}]}; echo "p2vctl materialize${a:+ $a}" ;;
        qemu) local v=${1%%.*}; echo "qemu-img convert -O ${QFMT[$v]}" ;;
        cp) echo "cp --sparse=always (mount)" ;;
    esac
}

# verify KEY VIEW DEST: the copy holds the source's content
verify() {
    local key=$1 v=$2 dest=$3
    if qemu-img compare -q -f raw -F "${QFMT[$v]}" "$SRC" "$dest" >>"$LOG" 2>&1; then
        CHECK[$key]=${CHECK[$key]:-ok}
        logonly "  $key: qemu-img compare: identical"
    else
        CHECK[$key]=WRONG
        progress "  $key: qemu-img compare: the copy DIFFERS from the source"
        cp --sparse=always "$dest" "$LOGDIR/wrong-$key.${QFMT[$v]}" 2>/dev/null
    fi
}

# finish_run KEY VIEW DEST SECONDS: verify, record size and time, remove the copy
finish_run() {
    local key=$1 v=$2 dest=$3 t=$4
    if [[ ! -f $dest ]]; then
        TIMES[$key]+="FAIL "
        progress "  $key: no copy at $dest"
        return
    fi
    DU[$key]=$(bytes_on_disk "$dest")
    logonly "  $key: $dest: $(stat -c %s "$dest") bytes, ${DU[$key]} on disk"
    verify "$key" "$v" "$dest"
    TIMES[$key]+="$t "
    rm -f "$dest"
}

# The phases of a job, from p2vctl's progress line (drawn on a terminal every
# 250 ms; `script` gives it one) timestamped as it arrives.
phase_times() { # phase_times T0 FILE T1 -> "copying=S syncing=S verifying=S"
    # A phase that never showed on a progress line lasted less than one poll
    # (its time went to the next one seen): copying and syncing count 0 then;
    # verifying is left out (a job without verification has none).
    awk -v t0="$1" '
        # A record is stamped when the \r ending it arrives, i.e. with the
        # next line drawn; it was drawn when the record before it ended.
        { t = (NR > 1 ? prev : t0); prev = $1; $1 = ""; sub(/^ +/, "")
          split($0, w, " "); p = w[1]
          if (p != "copying" && p != "syncing" && p != "verifying") next
          if (!(p in first)) { first[p] = t; order[++n] = p } }
        END {
              for (i = 1; i <= n; i++) { p = order[i]; start[p] = (i == 1 ? t0 : first[p])
                  e = (i < n ? first[order[i + 1]] : end); d[p] = e - start[p] }
              out = sprintf("copying=%.2f syncing=%.2f", d["copying"] + 0, d["syncing"] + 0)
              if ("verifying" in d) out = out sprintf(" verifying=%.2f", d["verifying"])
              print out }' end="$3" "$2"
}

run_p2v() { # run_p2v VIEW N
    local v=$1 n=$2 key="$1.p2v.$2" dest="$WORK/out/p2v.${QFMT[$1]}" t0 t1 rc before after pf cmd id c0 c1
    local -a args
    read -r -a args <<<"${VARIANTS[$n]}"
    rm -f "$dest" "$dest.part"
    drop_caches
    echo 5 >"/proc/$DPID/clear_refs" 2>/dev/null # VmHWM := VmRSS
    before=$(vm "$DPID" VmHWM)
    c0=$(cpu_ticks "$DPID")
    pf="$WORK/progress.$key"
    printf -v cmd '%q ' "$CTL" --bus "$BUS" materialize s "${VFILE[$v]}" "$dest" "${args[@]}" --wait
    t0=$EPOCHREALTIME
    script -qfec "$cmd" /dev/null </dev/null | while IFS= read -r -d $'\r' line || [[ -n $line ]]; do
        printf '%s %s\n' "$EPOCHREALTIME" "${line//$'\n'/}"
    done >"$pf"
    rc=${PIPESTATUS[0]}
    t1=$EPOCHREALTIME
    after=$(vm "$DPID" VmHWM)
    c1=$(cpu_ticks "$DPID")
    local t
    t=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }')
    id=$(sed -n 's/.*job \([0-9]*\): .*/\1/p' "$pf" | tail -n 1)
    logonly "  $key: $cmd -> status $rc, $(grep -a 'job [0-9]*:' "$pf" | tail -n 1 | cut -d' ' -f2-)"
    if ((rc != 0)); then
        TIMES[$key]+="FAIL "
        progress "  $key: p2vctl materialize failed (status $rc); see $LOG"
        cat "$pf" >>"$LOG"
        return
    fi
    PHASES[$key]+="$(phase_times "$t0" "$pf" "$t1");"
    # The daemon's own figure: "materialized ...: 4 GiB in 9.3 s (...)"
    JOBTIMES[$key]+="$(grep -a 'materialized ' "$LOGDIR/p2vfsd.log" | tail -n 1 | sed -n 's/.* in \([0-9.]*\) s .*/\1/p') "
    [[ -n $after ]] && RSS[$key]+="$after "
    CPU[$key]+="$(ticks_s "$c0" "$c1") "
    logonly "  $key: p2vfsd VmHWM $before KiB after reset, $after KiB after the job; phases $(phase_times "$t0" "$pf" "$t1")"
    finish_run "$key" "$v" "$dest" "$t"
    [[ -n $id ]] && ctl forget "$id" >>"$LOG" 2>&1
    progress "  $key: $(secs "$t"), phases: $(phase_times "$t0" "$pf" "$t1")"
}

# run_tool KEY VIEW DEST COMMAND...: timed with /usr/bin/time; the copy is then
# made durable (fsync), and that is timed too: a materialization job returns
# only once its copy is synced, so the figure compared is the one with fsync.
run_tool() {
    local key=$1 v=$2 dest=$3 t0 t1 t2 rc kib before after c0 c1
    shift 3
    rm -f "$dest"
    drop_caches
    echo 5 >"/proc/$DPID/clear_refs" 2>/dev/null
    before=$(vm "$DPID" VmHWM)
    c0=$(cpu_ticks "$DPID")
    logonly "  $key: $*"
    t0=$EPOCHREALTIME
    /usr/bin/time -f '%e %M %U %S' -o "$WORK/time.$key" "$@" >>"$LOG" 2>&1
    rc=$?
    t1=$EPOCHREALTIME
    [[ -f $dest ]] && sync "$dest"
    t2=$EPOCHREALTIME
    after=$(vm "$DPID" VmHWM)
    c1=$(cpu_ticks "$DPID")
    if ((rc != 0)); then
        TIMES[$key]+="FAIL "
        progress "  $key: failed (status $rc); see $LOG"
        return
    fi
    kib=$(awk 'END { print $2 }' "$WORK/time.$key")
    isnum "$kib" && RSS[$key]+="$kib "
    # CPU: the command's, and for cp also the daemon's, which serves its reads
    CPU[$key]+="$(awk -v d="$(ticks_s "$c0" "$c1")" -v cp="$([[ $key == *.cp ]] && echo 1 || echo 0)" \
        'END { printf "%.2f", $3 + $4 + (cp ? d : 0) }' "$WORK/time.$key") "
    [[ $key == *.cp ]] && DRSS[$key]+="$after "
    CMDTIMES[$key]+="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }') "
    local t
    t=$(awk -v a="$t0" -v b="$t2" 'BEGIN { printf "%.4f", b - a }')
    logonly "  $key: status $rc, $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }') s, with fsync $t s, max RSS $kib KiB; p2vfsd VmHWM $before -> $after KiB"
    finish_run "$key" "$v" "$dest" "$t"
    progress "  $key: $(secs "$t") (command alone $(secs "$(last_cmd "$key")"))"
}
# (CMDTIMES has a trailing space; the last figure is the one before it.)
last_cmd() { local s=${CMDTIMES[$1]% }; echo "${s##* }"; }

# ---------------------------------------------------------------- run
make_source
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
T_RUN=$(now)
start_bus
start_daemon
views_csv=$(IFS=,; echo "${VIEWS[*]}")
ctl add s "raw:$SRC" --views "$views_csv" >>"$LOG" 2>&1 || die "p2vctl add failed; see $LOG"
ctl --json list >"$LOGDIR/list.json" 2>>"$LOG"
ALLOC=$(awk 'match($0, /"allocated": *[0-9]+/) { s = substr($0, RSTART, RLENGTH); sub(/.*: */, "", s); print s; exit }' "$LOGDIR/list.json")
logonly "source: $SRC, $VSIZE bytes, $DATA_BYTES bytes of data written, the daemon reports ${ALLOC:-?} allocated"
for v in "${VIEWS[@]}"; do
    [[ -f $MNT/s/${VFILE[$v]} ]] || die "the mount has no $MNT/s/${VFILE[$v]}"
    SZ_VIEW[$v]=$(stat -c %s "$MNT/s/${VFILE[$v]}")
done

KEYS=()
for v in "${VIEWS[@]}"; do
    for n in "${!VARIANTS[@]}"; do KEYS+=("$v.p2v.$n"); done
    KEYS+=("$v.qemu" "$v.cp")
done

run_key() { # run_key KEY: one run of one row
    local v=${1%%.*} k=${1#*.} q
    case $k in
        p2v.*) run_p2v "$v" "${k#p2v.}" ;;
        qemu)
            q=(qemu-img convert -f raw -O "${QFMT[$v]}")
            [[ -n ${QOPT[$v]} ]] && q+=(-o "${QOPT[$v]}")
            run_tool "$1" "$v" "$WORK/out/qemu.${QFMT[$v]}" "${q[@]}" "$SRC" "$WORK/out/qemu.${QFMT[$v]}"
            ;;
        cp) run_tool "$1" "$v" "$WORK/out/cp.${QFMT[$v]}" cp --sparse=always "$MNT/s/${VFILE[$v]}" "$WORK/out/cp.${QFMT[$v]}" ;;
    esac
}
# Warm-up, not counted: the first job after the start was 2-4x slower than
# the others in every run here (copying 7-16 s against 2), whatever it was.
progress "warm-up, not counted: ${KEYS[0]} and ${VIEWS[0]}.qemu"
for key in "${KEYS[0]}" "${VIEWS[0]}.qemu"; do
    run_key "$key"
    for a in TIMES CMDTIMES RSS DRSS DU CHECK JOBTIMES PHASES CPU; do unset "${a}[$key]"; done
done
# Each round runs every row once; round r starts (r-1)/RUNS of the way down
# the list, so that no row is always the first after the daemon started or
# always follows the same other row.
for ((r = 1; r <= RUNS; r++)); do
    progress "round $r of $RUNS"
    shift_by=$(((r - 1) * ${#KEYS[@]} / RUNS))
    for ((i = 0; i < ${#KEYS[@]}; i++)); do
        run_key "${KEYS[(i + shift_by) % ${#KEYS[@]}]}"
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
T_TOTAL=$(elapsed "$T_RUN")

# ---------------------------------------------------------------- medians
declare -A R RC RJOB
for key in "${KEYS[@]}"; do
    nums=()
    for t in ${TIMES[$key]:-}; do isnum "$t" && nums+=("$t"); done
    if ((${#nums[@]} == 0)); then R[$key]=FAIL; else R[$key]=$(med_of "${nums[@]}"); fi
    # shellcheck disable=SC2086
    [[ -n ${CMDTIMES[$key]:-} ]] && RC[$key]=$(med_of ${CMDTIMES[$key]})
    # shellcheck disable=SC2086
    [[ -n ${JOBTIMES[$key]:-} && -n ${JOBTIMES[$key]// /} ]] && RJOB[$key]=$(med_of ${JOBTIMES[$key]})
    logonly "$key: all ${TIMES[$key]:-} -> median ${R[$key]}; command only ${CMDTIMES[$key]:-}; job ${JOBTIMES[$key]:-}; phases ${PHASES[$key]:-}; RSS ${RSS[$key]:-}; p2vfsd during cp ${DRSS[$key]:-}; CPU ${CPU[$key]:-}"
done
usable() { isnum "${R[$1]:-}" && [[ ${CHECK[$1]:-} == ok ]]; }
# median of each phase over the runs of KEY
phase_med() { # phase_med KEY PHASE
    local vals=() run p runs_=()
    IFS=';' read -r -a runs_ <<<"${PHASES[$1]:-}"
    for run in "${runs_[@]}"; do
        for p in $run; do [[ ${p%%=*} == "$2" ]] && vals+=("${p#*=}"); done
    done
    ((${#vals[@]})) && med_of "${vals[@]}" || echo "-"
}

# ---------------------------------------------------------------- report
CPUS=$(nproc)
MEMG=$(awk '/MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)
OS=$(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")
KVM="no KVM"
grep -qwE 'vmx|svm' /proc/cpuinfo && [[ -c /dev/kvm ]] && KVM="KVM available (not used)"
DAEMON_INFO="$DAEMON, built $(date -r "$DAEMON" '+%Y-%m-%d %H:%M' 2>/dev/null)"
if git -C "$REPO" rev-parse --short HEAD >/dev/null 2>&1 && [[ $(cd "$(dirname "$DAEMON")/../.." && pwd) == "$REPO" ]]; then
    DAEMON_INFO+=", tree at $(git -C "$REPO" rev-parse --short HEAD)"
    git -C "$REPO" diff --quiet HEAD -- fsd 2>/dev/null || DAEMON_INFO+=" with local changes in fsd/"
fi
[[ -n $LABEL ]] && DAEMON_INFO+=", $LABEL"
FS=$(df -PT "$CACHE" | awk 'NR == 2 { print $2 " on " $1 }')

rep "p2vfs materialization benchmark, $(date '+%Y-%m-%d %H:%M %Z')"
rep "machine: $CPUS cores, $MEMG GiB RAM, $OS, kernel $(uname -r), $KVM"
rep "p2vfsd: $("$BIN" --version 2>/dev/null | head -n 1); $DAEMON_INFO"
rep "peers: $(qemu-img --version | head -n 1); $(cp --version | head -n 1)"
rep "source: $SRC, $(gib_h "$VSIZE") virtual, $(gib_h "$DATA_BYTES") of random data in $NRUNS runs of 64 MiB (one in every 128 MiB), the rest holes; $FS"
rep "copies: written to $WORK/out (the same file system), page cache dropped before every run (sync; echo 3 > drop_caches)"
rep "figures: median of $RUNS runs, interleaved (each round runs every row once, starting further down the list each time); load average before: $LOAD_BEFORE, after: $LOAD_AFTER; whole run ${T_TOTAL%.*} s"
rep ""
rep "seconds: until the copy is durable. p2vctl materialize --wait returns when the job is done: copied, synced,"
rep "  read back and verified (unless --no-verify), renamed into place. qemu-img convert and cp return with the copy"
rep "  in the page cache: their time includes an fsync of the result after they exit (command alone: 'cmd only')."
rep "MiB/s virt: the view's virtual size ($(gib_h "$VSIZE")) / seconds; MiB/s data: the source's data ($(gib_h "$DATA_BYTES")) / seconds."
rep "CPU: user + system seconds (median): of p2vfsd during the job; of qemu-img; of cp plus p2vfsd, which serves its"
rep "  reads. Less disturbed than the wall clock by other load on the machine."
rep "on disk: du of the copy. peak RSS: VmHWM of p2vfsd during the job (reset through /proc/PID/clear_refs before it),"
rep "  max RSS of qemu-img and cp (/usr/bin/time), for cp with p2vfsd's VmHWM while it served the copy in brackets."
rep "x qemu-img, x cp: the p2vfs row's throughput / that of qemu-img convert or cp for the same view (= their time /"
rep "  p2vfs's time); above 1 favours p2vfs. check: qemu-img compare of every run's copy against the source."
rep ""
COLS='  %-33s %-10s %8s %8s %7s %10s %10s %9s %-21s %10s %5s %5s'
# shellcheck disable=SC2059
rep "$(printf "$COLS" tool view seconds "cmd only" CPU "MiB/s virt" "MiB/s data" "on disk" "peak RSS" "x qemu-img" "x cp" check)"
for v in "${VIEWS[@]}"; do
    for key in "${KEYS[@]}"; do
        [[ ${key%%.*} == "$v" ]] || continue
        t=${R[$key]}
        rss="-"
        # shellcheck disable=SC2086
        [[ -n ${RSS[$key]:-} ]] && rss=$(mib "$(max_of ${RSS[$key]})")
        # shellcheck disable=SC2086
        [[ -n ${DRSS[$key]:-} ]] && rss+=" (+$(mib "$(max_of ${DRSS[$key]})"))"
        xq="" xc=""
        if [[ $key == *.p2v.* ]]; then
            xq="-" xc="-"
            usable "$key" && usable "$v.qemu" && xq=$(ratio "${R[$v.qemu]}" "$t")
            usable "$key" && usable "$v.cp" && xc=$(ratio "${R[$v.cp]}" "$t")
        fi
        # shellcheck disable=SC2086
        cpu=$([[ -n ${CPU[$key]:-} ]] && secs "$(med_of ${CPU[$key]})" || echo -)
        # shellcheck disable=SC2059
        rep "$(printf "$COLS" "$(LABEL_OF "$key")" "${VFILE[$v]}" "$(secs "$t")" "$(secs "${RC[$key]:-}")" "$cpu" \
            "$(rate "$VSIZE" "$t")" "$(rate "$DATA_BYTES" "$t")" "$(gib_h "${DU[$key]:-}")" "$rss" "$xq" "$xc" "${CHECK[$key]:-FAIL}")"
    done
done
rep ""
rep "p2vfs jobs by phase (median seconds; from p2vctl's progress line, 250 ms resolution), and the daemon's own figure"
rep "  from its log ('materialized ... in S s'; it leaves out the D-Bus calls and p2vctl's 250 ms polling):"
PCOLS='  %-33s %-10s %9s %9s %9s %9s %12s'
# shellcheck disable=SC2059
rep "$(printf "$PCOLS" tool view copying syncing verifying total "daemon says")"
for key in "${KEYS[@]}"; do
    [[ $key == *.p2v.* ]] || continue
    # shellcheck disable=SC2059
    rep "$(printf "$PCOLS" "$(LABEL_OF "$key")" "${VFILE[${key%%.*}]}" "$(secs "$(phase_med "$key" copying)")" \
        "$(secs "$(phase_med "$key" syncing)")" "$(secs "$(phase_med "$key" verifying)")" "$(secs "${R[$key]}")" "$(secs "${RJOB[$key]:-}")")"
done
rep ""
rep "view sizes in the mount: $(for v in "${VIEWS[@]}"; do printf '%s %s  ' "${VFILE[$v]}" "$(gib_h "${SZ_VIEW[$v]}")"; done)"
problems=()
for key in "${KEYS[@]}"; do
    [[ ${R[$key]} == FAIL ]] && problems+=("$key failed")
    [[ ${CHECK[$key]:-} == WRONG ]] && problems+=("$key: a copy differed from the source")
done
((${#problems[@]})) && rep "PROBLEMS: ${problems[*]}"
rep "logs: $LOGDIR"

cat "$REPORT"
mkdir -p "$(dirname "$OUT")" && cp "$REPORT" "$OUT" && echo "report written to $OUT" >&2
cp "$REPORT" "$LOGDIR/report.txt"

# shellcheck shell=bash
# What the benchmarks share: the processes and mounts a run started (killed
# and unmounted at exit, however it ends), timing, logging, medians, /proc
# and bdi readers, and for the control-plane ones a private bus with a
# p2vfsd on it. Sourced after the script has set ME (its name, for
# messages), WORK, LOG, REPORT and LOGDIR (and BIN, CTL for the daemon).

PIDS=()   # every server process the script started
MOUNTS=() # every mount point it used
BG=()     # readers and workers
T_START=$(date +%s.%N)

# mounted DIR: DIR is a mount point, also when its FUSE server is dead (where
# mountpoint(1) fails with "Transport endpoint is not connected")
mounted() { local _d d _r; while read -r _d d _r; do [[ $d == "$1" ]] && return 0; done </proc/self/mounts; return 1; }

cleanup() {
    local rc=$? p m i alive
    set +e
    trap - EXIT INT TERM
    for p in "${BG[@]}"; do kill -9 "$p" 2>/dev/null; done
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        m=${MOUNTS[i]}
        mounted "$m" && { fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; }
    done
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for i in 1 2 3 4 5 6 7 8 9 10; do
        alive=0
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.3
    done
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    for m in "${MOUNTS[@]}"; do
        mounted "$m" && umount -l "$m" 2>/dev/null
    done
    rm -rf --one-file-system "$WORK"
    ((rc)) && echo "$ME: stopped (status $rc); logs in $LOGDIR" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.4f", b - a }'; }
progress() { # to the terminal and the log
    local t
    t=$(awk -v a="$T_START" -v b="$(now)" 'BEGIN { printf "%4d", b - a }')
    echo "[${t}s] $*" >&2
    echo "[${t}s] $*" >>"$LOG"
}
logonly() { echo "$*" >>"$LOG"; }
rep() { echo "$*" >>"$REPORT"; }
isnum() { [[ ${1:-} =~ ^[0-9]+([.][0-9]+)?([eE][-+]?[0-9]+)?$ ]]; }
# med_of VALUES...: their median, FAIL when there are none
med_of() { if (($#)); then printf '%s\n' "$@" | median; else echo FAIL; fi; }
# secs S: "1.23 s", "12.3 s"; anything but a number as it is
secs() { isnum "${1:-}" && awk -v s="$1" 'BEGIN { printf (s < 10 ? "%.2f s" : "%.1f s"), s }' || echo "${1:--}"; }
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) exit 1; if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
forget_pid() { local p keep=(); for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done; PIDS=("${keep[@]}"); }
vm() { # vm PID FIELD (VmHWM...) -> KiB (no fork, so it can sit inside timed sections)
    local k v _
    while read -r k v _; do [[ $k == "$2:" ]] && { echo "$v"; return 0; }; done 2>/dev/null <"/proc/$1/status"
    return 1
}
bdi_of() { echo "/sys/class/bdi/$(mountpoint -d "$1")/read_ahead_kb"; }
read_ra() { cat "$(bdi_of "$1")" 2>/dev/null || echo "?"; }
set_ra() { echo "$2" >"$(bdi_of "$1")" 2>/dev/null; }
unmount_dir() {
    mounted "$1" || return 0
    fusermount3 -u "$1" 2>/dev/null || umount -l "$1" 2>/dev/null || true
}

# ---------------------------------------------------------------- bus and daemon
# A private dbus-daemon in $WORK/bus (made by the script) and a p2vfsd on it,
# driven with ctl. At exit the daemon must be stopped first, while its bus is
# still there, and then cleanup stops the bus and removes the rest (cleanup
# sends SIGTERM to all at once; a p2vfsd whose bus went away first aborted on
# an uncaught sdbus::Error, "Failed to emit InterfacesRemoved signal").
BUS=""
DPID=""
start_bus() {
    cat >"$WORK/bus/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>p2vfs-bench</type>
  <listen>unix:path=$WORK/bus/socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
CONF
    dbus-daemon --config-file="$WORK/bus/bus.conf" --nofork --nopidfile 2>>"$LOG" &
    PIDS+=("$!")
    local i
    for ((i = 0; i < 100; i++)); do [[ -S $WORK/bus/socket ]] && break; sleep 0.1; done
    [[ -S $WORK/bus/socket ]] || die "dbus-daemon did not create $WORK/bus/socket"
    BUS="unix:path=$WORK/bus/socket"
}
ctl() { "$CTL" --bus "$BUS" "$@"; }
# start_p2vfsd MOUNT STATE_DIR LOG_FILE: a p2vfsd without default views,
# answering on the bus (DPID).
start_p2vfsd() {
    local mnt=$1 state=$2 lf=$3 i
    mkdir -p "$mnt" "$state"
    MOUNTS+=("$mnt")
    "$BIN" --mount "$mnt" --bus "$BUS" --state-dir "$state" --views none 2>"$lf" &
    DPID=$!
    PIDS+=("$DPID")
    for ((i = 0; i < 200; i++)); do
        kill -0 "$DPID" 2>/dev/null || { cat "$lf" >&2; die "p2vfsd exited at start"; }
        ctl formats >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    cat "$lf" >&2
    die "p2vfsd does not answer on $BUS"
}
# stop_p2vfsd MOUNT: SIGTERM and wait (a status other than 0 or 143 is
# logged), then the mount goes.
stop_p2vfsd() {
    local i st=0
    [[ -n $DPID ]] || return 0
    if kill -0 "$DPID" 2>/dev/null; then
        kill -TERM "$DPID" 2>/dev/null
        for ((i = 0; i < 100; i++)); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
    fi
    wait "$DPID" 2>/dev/null || st=$?
    ((st != 0 && st != 143)) && echo "$ME: p2vfsd exited with status $st when stopped" >>"$LOG"
    forget_pid "$DPID"
    unmount_dir "$1"
    DPID=""
}

# bench_workspace KIND PREFIX: the run's places under $CACHE: the report OUT
# (KIND-results-STAMP.txt unless given), LOGDIR with LOG, WORK (PREFIX.XXXXXX:
# mnt, out, state, bus; REPORT), and private copies of $DAEMON and $CTL_BIN
# as BIN and CTL, so a rebuild of the tree during the run cannot mix binaries.
bench_workspace() {
    mkdir -p "$CACHE" || die "cannot create $CACHE"
    STAMP=$(date +%Y%m%d-%H%M%S)
    [[ -n $OUT ]] || OUT="$CACHE/$1-results-$STAMP.txt"
    WORK=$(mktemp -d "$CACHE/$2.XXXXXX") || die "cannot create a work directory in $CACHE"
    LOGDIR="$CACHE/$1-logs-$STAMP"
    mkdir -p "$LOGDIR" "$WORK/mnt" "$WORK/out" "$WORK/state" "$WORK/bus"
    LOG="$LOGDIR/bench.log"
    REPORT="$WORK/report.txt"
    : >"$REPORT"
    BIN="$WORK/p2vfsd"
    CTL="$WORK/p2vctl"
    cp "$DAEMON" "$BIN" || die "cannot copy $DAEMON"
    cp "$CTL_BIN" "$CTL" || die "cannot copy $CTL_BIN"
}

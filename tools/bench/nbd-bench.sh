#!/usr/bin/env bash
# Benchmark of p2vfsd over an NBD source against nbdfuse over the same nbdkit,
# side by side in one run, with nbdkit's delay filter emulating a WAN round trip:
#   (a) sequential read of disk.raw, cold (fresh mount: no page cache, empty
#       p2vfsd cache), against nbdfuse's file;
#   (b) the same for disk.vmdk (a view with metadata);
#   (c) a second read of the same range, kernel page cache dropped: p2vfsd's
#       cache is warm, nbdfuse has none; NBD requests counted on the server
#       side (nbdkit's log filter);
#   (d) random 4 KiB reads (O_DIRECT), then the same offsets again;
# plus the peak RSS of both FUSE servers.
# Run as root:  bash tools/bench/nbd-bench.sh [--daemon PATH] [--out FILE]
# See tools/bench/README.md ("NBD sources over a slow link") for the figures.
set -uo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)

SIZE_MIB=512
RUNS=3
OUT=""
CACHE=/var/tmp/p2vfs-bench
DAEMON="${P2VFSD:-$REPO/build/fsd/p2vfsd}"
DELAYS="0 10:128 50:64"
RANDOM_SPEC="200:64"
TUNED_RA=32M
TIMEOUT=180
LABEL=""

usage() {
    cat <<EOF
Usage: bash tools/bench/nbd-bench.sh [OPTIONS]   (as root)

  --daemon PATH     the p2vfsd binary (default: \$P2VFSD, else build/fsd/p2vfsd of
                    this tree)
  --size MiB        size of the generated source (default $SIZE_MIB): 8 MiB chunks
                    of log-like text, random data, written zeros and holes
  --delays LIST     round trips to emulate, in ms, each as MS or MS:MiB, where MiB
                    is how much of each file is read at that delay (default: the
                    whole file); default "$DELAYS". 0 means no delay filter.
  --random N:MiB    random-read pattern: N reads of 4 KiB at random offsets in the
                    first MiB of the disk, then the same offsets again (default
                    $RANDOM_SPEC; 0 skips it)
  --tuned-readahead SIZE
                    also read disk.raw with p2vfsd --readahead SIZE (default
                    $TUNED_RA; "" skips that row)
  --runs N          rounds; every figure is the median of N (default $RUNS)
  --out FILE        also write the report to FILE
                    (default: $CACHE/nbd-results-DATE.txt)
  --cache-dir DIR   where the source is generated and kept (default $CACHE)
  --timeout SECONDS a read that takes longer counts as hung: its FUSE server is
                    killed and the figure reads HANG (default $TIMEOUT)
  --label TEXT      a note on the daemon build, printed in the report
  -h, --help        this text

Needs nbdkit (with its log and delay filters), nbdfuse, python3, fincore
(util-linux) and fusermount3 (fuse3). Installs nothing. A run with the
defaults takes about 6 minutes on 2 cores.
EOF
}

while (($#)); do
    case $1 in
        --daemon) DAEMON=${2:-}; shift 2 ;;
        --daemon=*) DAEMON=${1#*=}; shift ;;
        --size) SIZE_MIB=${2:-}; shift 2 ;;
        --size=*) SIZE_MIB=${1#*=}; shift ;;
        --delays) DELAYS=${2:-}; shift 2 ;;
        --delays=*) DELAYS=${1#*=}; shift ;;
        --random) RANDOM_SPEC=${2:-}; shift 2 ;;
        --random=*) RANDOM_SPEC=${1#*=}; shift ;;
        --tuned-readahead) TUNED_RA=${2-}; shift 2 ;;
        --tuned-readahead=*) TUNED_RA=${1#*=}; shift ;;
        --runs) RUNS=${2:-}; shift 2 ;;
        --runs=*) RUNS=${1#*=}; shift ;;
        --out) OUT=${2:-}; shift 2 ;;
        --out=*) OUT=${1#*=}; shift ;;
        --cache-dir) CACHE=${2:-}; shift 2 ;;
        --cache-dir=*) CACHE=${1#*=}; shift ;;
        --timeout) TIMEOUT=${2:-}; shift 2 ;;
        --timeout=*) TIMEOUT=${1#*=}; shift ;;
        --label) LABEL=${2:-}; shift 2 ;;
        --label=*) LABEL=${1#*=}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "nbd-bench.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

die() { echo "nbd-bench.sh: $*" >&2; exit 1; }
[[ $SIZE_MIB =~ ^[1-9][0-9]*$ && $((SIZE_MIB % 8)) == 0 ]] || die "--size wants a multiple of 8 MiB"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs wants a positive number"
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "--timeout wants a number of seconds"
[[ $RANDOM_SPEC == 0 || $RANDOM_SPEC =~ ^[1-9][0-9]*:[1-9][0-9]*$ ]] || die "--random wants N:MiB or 0"
DELAY_MS=() DELAY_MIB=()
for d in $DELAYS; do
    [[ $d =~ ^([0-9]+)(:([1-9][0-9]*))?$ ]] || die "--delays: '$d' is not MS or MS:MiB"
    DELAY_MS+=("${BASH_REMATCH[1]}")
    m=${BASH_REMATCH[3]:-$SIZE_MIB}
    ((m > SIZE_MIB)) && m=$SIZE_MIB
    DELAY_MIB+=("$m")
done
((${#DELAY_MS[@]})) || die "--delays is empty"
RAND_N=0 RAND_MIB=0
if [[ $RANDOM_SPEC != 0 ]]; then
    RAND_N=${RANDOM_SPEC%%:*} RAND_MIB=${RANDOM_SPEC#*:}
    ((RAND_MIB > SIZE_MIB)) && RAND_MIB=$SIZE_MIB
fi
[[ $EUID -eq 0 ]] || die "run as root (FUSE mounts, bdi read_ahead_kb)"
[[ -c /dev/fuse ]] || die "/dev/fuse is missing"
[[ $CACHE != *[[:space:]]* ]] || die "--cache-dir must not contain spaces"

# ---------------------------------------------------------------- tools
missing=()
need() { # need COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 || missing+=("$1 (package $2)")
}
need nbdkit nbdkit
need nbdfuse nbdfuse
need python3 python3
need fincore util-linux
need fusermount3 fuse3
need mountpoint util-linux
if ((${#missing[@]})); then
    echo "nbd-bench.sh: missing tools:" >&2
    printf '  %s\n' "${missing[@]}" >&2
    exit 2
fi
FILTERDIR=$(nbdkit --dump-config 2>/dev/null | sed -n 's/^filterdir=//p')
for f in log delay; do
    [[ -e $FILTERDIR/nbdkit-$f-filter.so ]] || die "nbdkit's $f filter is missing (package nbdkit)"
done
# The system's interpreter: it has O_DIRECT and os.preadv, and no per-user shims.
PY=$(command -v /usr/bin/python3 || command -v python3)
[[ -x $DAEMON ]] || die "no p2vfsd at $DAEMON; build it with:
  cmake -S $REPO -B $REPO/build -G Ninja -DP2VFS_TESTS=OFF && ninja -C $REPO/build
or name one with --daemon PATH (or P2VFSD=PATH)"

# ---------------------------------------------------------------- state, cleanup
mkdir -p "$CACHE" || die "cannot create $CACHE"
STAMP=$(date +%Y%m%d-%H%M%S)
[[ -n $OUT ]] || OUT="$CACHE/nbd-results-$STAMP.txt"
WORK=$(mktemp -d "$CACHE/nbdrun.XXXXXX") || die "cannot create a work directory in $CACHE"
LOGDIR="$CACHE/nbd-logs-$STAMP"
mkdir -p "$LOGDIR" "$WORK/mnt"
LOG="$LOGDIR/bench.log"
REPORT="$WORK/report.txt"
: >"$REPORT"
# A private copy, so a rebuild of the tree during the run cannot mix binaries.
BIN="$WORK/p2vfsd"
cp "$DAEMON" "$BIN" || die "cannot copy $DAEMON"
DAEMON_INFO="$DAEMON, built $(date -r "$DAEMON" '+%Y-%m-%d %H:%M' 2>/dev/null)"
if [[ $DAEMON == "$REPO"/build*/fsd/p2vfsd ]]; then
    DAEMON_INFO+="; the tree was at $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "?") when the run started"
    git -C "$REPO" diff --quiet HEAD -- fsd nbd-bridge 2>/dev/null || DAEMON_INFO+=", with local changes in fsd/ or nbd-bridge/"
fi
[[ -n $LABEL ]] && DAEMON_INFO+=", $LABEL"

ME=nbd-bench.sh
# shellcheck source=tools/bench/lib.sh
source "$SCRIPT_DIR/lib.sh"
NMNT=0
new_mount() { # new_mount -> MNT, a fresh empty directory
    NMNT=$((NMNT + 1))
    MNT="$WORK/mnt/$NMNT"
    mkdir -p "$MNT"
    MOUNTS+=("$MNT")
}

# ---------------------------------------------------------------- helper (python)
HELPER="$WORK/helper.py"
cat >"$HELPER" <<'EOF'
import mmap, os, random, re, sys, time, zlib
from datetime import datetime

def gen(path, mib):
    """8 MiB chunks, by chunk number mod 8: 0 2 5 log-like text (lz4 keeps
    about a fifth), 1 3 6 random, 4 written zeros, 7 a hole."""
    chunk = 8 << 20
    rng = random.Random(20261124)
    hosts = ["web01", "db02", "cache03", "build04"]
    msgs = ["sshd[{}]: Accepted publickey for deploy from 10.0.{}.{} port {} ssh2",
            "CRON[{}]: pam_unix(cron:session): session opened for user root(uid={}) by (uid={})",
            "kernel: EXT4-fs (sda{}): mounted filesystem with ordered data mode. Quota mode: {}.",
            "systemd[1]: Started apt-daily-upgrade.service - Daily apt upgrade ({} {})."]
    line_no = 0
    def text(n):
        nonlocal line_no
        out = bytearray()
        while len(out) < n:
            i = line_no
            m = msgs[i % 4]
            out += "2026-11-{:02d}T{:02d}:{:02d}:{:02d} {} {}\n".format(
                1 + i // 100000 % 28, i // 3600 % 24, i // 60 % 60, i % 60, hosts[i * 7 % 4],
                m.format(*(rng.randrange(65536) for _ in range(m.count("{}"))))).encode()
            line_no += 1
        return bytes(out[:n])
    with open(path, "wb") as f:
        f.truncate(mib << 20)
        for i in range((mib << 20) // chunk):
            kind = i % 8
            f.seek(i * chunk)
            if kind in (0, 2, 5):
                f.write(text(chunk))
            elif kind in (1, 3, 6):
                f.write(rng.randbytes(chunk))
            elif kind == 4:
                f.write(bytes(chunk))

def offsets(n, mib, seed, out):
    """n 4 KiB-aligned offsets in the first mib MiB; the second line is the
    same offsets in another order."""
    rng = random.Random(seed)
    first = [rng.randrange((mib << 20) // 4096) * 4096 for _ in range(n)]
    again = first[:]
    rng.shuffle(again)
    with open(out, "w") as f:
        f.write(" ".join(map(str, first)) + "\n" + " ".join(map(str, again)) + "\n")

def randread(path, offs_file, line, source):
    """4 KiB O_DIRECT reads at the offsets of line 1 or 2; prints the seconds
    they took and whether the bytes equal the source's."""
    offs = [int(x) for x in open(offs_file).read().splitlines()[int(line) - 1].split()]
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, 4096)
    crc = 0
    t = time.perf_counter()
    for off in offs:
        if os.preadv(fd, [buf], off) != 4096:
            sys.exit(f"short read at {off}")
        crc = zlib.crc32(buf, crc)
    dt = time.perf_counter() - t
    os.close(fd)
    ref = 0
    with open(source, "rb") as s:
        for off in offs:
            s.seek(off)
            ref = zlib.crc32(s.read(4096), ref)
    print(f"{dt:.6f} {'same' if crc == ref else 'DIFFERENT'}")

LINE = re.compile(r"^\x00*(\S+ \S+) (?:connection=(\d+) )?(\.\.\.)?(\w+)(?: id=(\d+))?(.*)$")

def logstat(path, first, last):
    """Requests in lines [first, last) of an nbdkit log filter file: reads,
    bytes read, block status (Extents) requests, connections opened, and the
    time-weighted mean number of reads in flight from the first read's start
    to the last one's end."""
    with open(path, "rb") as f:
        lines = f.read().decode("latin-1").split("\n")[int(first):int(last)]
    reads = nbytes = extents = connects = 0
    start = {}
    spans = []
    for ln in lines:
        m = LINE.match(ln)
        if not m:
            continue
        ts, conn, leave, act, rid, rest = m.groups()
        if act == "Connect" and not leave:
            connects += 1
        if act == "Extents" and not leave:
            extents += 1
        if act != "Read":
            continue
        t = datetime.strptime(ts, "%Y-%m-%d %H:%M:%S.%f").timestamp()
        if not leave:
            reads += 1
            c = re.search(r"count=(0x[0-9a-fA-F]+|\d+)", rest)
            nbytes += int(c.group(1), 0) if c else 0
            start[(conn, rid)] = t
        elif (conn, rid) in start:
            spans.append((start.pop((conn, rid)), t))
    inflight = "-"
    if spans:
        t0 = min(a for a, _ in spans)
        t1 = max(b for _, b in spans)
        busy = sum(b - a for a, b in spans)
        inflight = f"{busy / (t1 - t0):.2f}" if t1 > t0 else "-"
    print(reads, nbytes, extents, connects, inflight)

if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"gen": lambda: gen(args[0], int(args[1])),
     "offsets": lambda: offsets(int(args[0]), int(args[1]), int(args[2]), args[3]),
     "randread": lambda: randread(*args),
     "logstat": lambda: logstat(*args)}[cmd]()
EOF

# ---------------------------------------------------------------- the source
SRC="$CACHE/nbd-mixed-${SIZE_MIB}M.img"
make_source() {
    [[ -f $SRC.ok && $(stat -c %s "$SRC" 2>/dev/null) == $((SIZE_MIB << 20)) ]] && return
    progress "generating $SRC ($SIZE_MIB MiB: text, random, zeros, holes)"
    rm -f "$SRC" "$SRC.ok" "$SRC.tmp"
    "$PY" "$HELPER" gen "$SRC.tmp" "$SIZE_MIB" 2>>"$LOG" || die "could not generate $SRC"
    mv "$SRC.tmp" "$SRC" && touch "$SRC.ok"
}

# ---------------------------------------------------------------- nbdkit
NBDKIT_PID="" SOCK="" NLOG=""
nbdkit_start() { # nbdkit_start DELAY_MS [again]: file plugin, log filter outermost, then delay
    local d=$1 filters=(--filter=log) params=() i
    SOCK="$WORK/nbdkit.sock"
    NLOG="$LOGDIR/nbdkit-${d}ms.log"
    rm -f "$SOCK"
    if ((d > 0)); then
        filters+=(--filter=delay)
        params=("delay-read=${d}ms" "delay-extents=${d}ms")
    fi
    if [[ ${2:-} == again ]]; then params+=(logappend=true); else rm -f "$NLOG"; fi
    nbdkit -f -r -U "$SOCK" "${filters[@]}" file "$SRC" "logfile=$NLOG" "${params[@]}" 2>>"$LOG" &
    NBDKIT_PID=$!
    PIDS+=("$NBDKIT_PID")
    for ((i = 0; i < 1000; i++)); do [[ -S $SOCK ]] && return 0; sleep 0.01; done
    die "nbdkit did not start (see $LOG)"
}
# nbdkit_check: a server that ended under the run (killed from outside) is
# noted and started again, appending to its log
nbdkit_check() {
    kill -0 "$NBDKIT_PID" 2>/dev/null && return 0
    wait "$NBDKIT_PID" 2>/dev/null
    local rc=$?
    forget_pid "$NBDKIT_PID"
    NOTE[nbdkit.$CUR_DELAY]="nbdkit ended (status $rc) during the ${CUR_DELAY} ms rounds and was restarted (a reader running at that moment shows FAIL)"
    progress "  nbdkit ended (status $rc): starting it again"
    nbdkit_start "$CUR_DELAY" again
}
nbdkit_stop() {
    kill -TERM "$NBDKIT_PID" 2>/dev/null
    wait "$NBDKIT_PID" 2>/dev/null
    forget_pid "$NBDKIT_PID"
}
loglines() { local n; n=$(wc -l <"$NLOG" 2>/dev/null) || n=0; echo "${n:-0}"; }
# settle: wait until the server log has not grown for a while (requests still
# in flight after a read, p2vfsd's readahead, are counted with that read)
settle() {
    local quiet last cur still=0 i
    quiet=$(awk -v d="$CUR_DELAY" 'BEGIN { q = 4 * d / 1000; if (q < 0.3) q = 0.3; printf "%d", q / 0.05 }')
    last=$(stat -c %s "$NLOG" 2>/dev/null || echo 0)
    for ((i = 0; i < 400; i++)); do
        sleep 0.05
        cur=$(stat -c %s "$NLOG" 2>/dev/null || echo 0)
        if [[ $cur == "$last" ]]; then
            still=$((still + 1))
            ((still >= quiet)) && return 0
        else
            still=0 last=$cur
        fi
    done
}

# ---------------------------------------------------------------- FUSE servers
SPID="" SMNT="" SFILE="" SREADY="" SKIND=""
# p2v_start [daemon options]: p2vfsd on a fresh mount over the nbdkit socket;
# waits for "ready" and the first request (after which the daemon sets its
# read_ahead_kb); SFILE is the folder of views
P2V_STARTS=0 P2V_FAILS=0
p2v_start() {
    nbdkit_check
    new_mount
    P2V_STARTS=$((P2V_STARTS + 1))
    local lf="$LOGDIR/p2vfsd.$P2V_STARTS.log" t0 s0=$SECONDS
    t0=$(now)
    "$BIN" --mount "$MNT" --source "s=nbd+unix:///?socket=$SOCK" "$@" 2>"$lf" &
    SPID=$!
    PIDS+=("$SPID")
    SMNT=$MNT SKIND=p2v
    while :; do
        [[ -s $lf && $(<"$lf") == *"ready"* ]] && break
        if ! kill -0 "$SPID" 2>/dev/null; then
            progress "p2vfsd did not start:"
            cat "$lf" >&2
            P2V_FAILS=$((P2V_FAILS + 1))
            NOTE[p2vstart]="p2vfsd did not start $P2V_FAILS time(s): $(head -n 1 "$lf")"
            return 1
        fi
        if ((SECONDS - s0 > 60)); then
            progress "p2vfsd: no 'ready' after 60 s"
            P2V_FAILS=$((P2V_FAILS + 1))
            NOTE[p2vstart]="p2vfsd did not start $P2V_FAILS time(s): no 'ready' after 60 s"
            return 1
        fi
        sleep 0.005
    done
    stat "$MNT/s" >/dev/null 2>&1
    SREADY=$(elapsed "$t0")
    SFILE="$MNT/s"
    return 0
}
# nbd_start: nbdfuse with its defaults on a fresh mount; SFILE is its file
NBD_FAILS=0
nbd_start() {
    nbdkit_check
    new_mount
    local i t0
    t0=$(now)
    nbdfuse -r "$MNT/disk.img" --unix "$SOCK" 2>>"$LOG" &
    SPID=$!
    PIDS+=("$SPID")
    SMNT=$MNT SKIND=nbd
    for ((i = 0; i < 3000; i++)); do
        [[ -f $MNT/disk.img ]] && break
        kill -0 "$SPID" 2>/dev/null || break
        sleep 0.005
    done
    if [[ ! -f $MNT/disk.img ]]; then
        progress "nbdfuse did not mount"
        NBD_FAILS=$((NBD_FAILS + 1))
        NOTE[nbdstart]="nbdfuse did not mount $NBD_FAILS time(s) (see $LOG)"
        return 1
    fi
    SREADY=$(elapsed "$t0")
    SFILE="$MNT/disk.img"
    return 0
}
declare -A HWM # peak RSS (KiB) by server kind (or KIND) and delay, the largest seen
server_stop() { # server_stop [KIND]
    local h i key="${1:-$SKIND}.$CUR_DELAY"
    h=$(vm "$SPID" VmHWM)
    [[ -n $h ]] && ((h > ${HWM[$key]:-0})) && HWM[$key]=$h
    unmount_dir "$SMNT"
    kill -TERM "$SPID" 2>/dev/null
    for ((i = 0; i < 100; i++)); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SPID" 2>/dev/null
    wait "$SPID" 2>/dev/null
    forget_pid "$SPID"
    SPID=""
}

# ---------------------------------------------------------------- measurements
declare -A TIMES REQS MIBS INFL BYTES NOTE ST_READY ST_CONN ST_EXT RA
CUR_DELAY=0 CUR_MIB=0
# run_bg SECONDS_FILE COMMAND...: run a reader in the background, kill its FUSE
# server if it takes longer than --timeout (aborting the connection fails the
# reader); returns the reader's status, 124 on a hang
run_bg() {
    local rp t0=$SECONDS
    "$@" &
    rp=$!
    BG+=("$rp")
    while kill -0 "$rp" 2>/dev/null; do
        if ((SECONDS - t0 > TIMEOUT)); then
            progress "  no end after ${TIMEOUT}s: treating it as a hang, killing the FUSE server"
            [[ -n $SPID ]] && kill -9 "$SPID" 2>/dev/null
            sleep 1
            kill -9 "$rp" 2>/dev/null
            wait "$rp" 2>/dev/null
            return 124
        fi
        sleep 0.02
    done
    wait "$rp"
}
# account KEY LINE0: the requests since log line LINE0, appended to KEY's figures
account() {
    local key=$1 l0=$2 l1 s r b f
    settle
    l1=$(loglines)
    s=$("$PY" "$HELPER" logstat "$NLOG" "$l0" "$l1" 2>>"$LOG") || s="? ? ? ? -"
    read -r r b _ _ f <<<"$s"
    REQS[$key]+="$r " MIBS[$key]+="$(awk -v b="$b" 'BEGIN { printf "%.1f", b / 1048576 }') " INFL[$key]+="$f "
    logonly "  $key: requests $s"
}
# seq_read KEY FILE: dd bs=1M of the first CUR_MIB MiB of FILE (or all of it),
# timed inside the reader, open included
seq_read() {
    local key=$1 file=$2 tf="$WORK/t" l0 rc size
    size=$(stat -c %s "$file" 2>/dev/null) || size=0
    BYTES[$key]=$(((CUR_MIB << 20) < size ? (CUR_MIB << 20) : size))
    rm -f "$tf"
    settle
    l0=$(loglines)
    # shellcheck disable=SC2016 # expanded by the inner shell
    run_bg bash -c 't0=$(date +%s.%N); dd if="$1" of=/dev/null bs=1M count="$2" status=none || exit 1
        awk -v a="$t0" -v b="$(date +%s.%N)" "BEGIN { printf \"%.4f\", b - a }" >"$3"' _ "$file" "$CUR_MIB" "$tf" 2>>"$LOG"
    rc=$?
    if ((rc == 124)); then TIMES[$key]+="HANG "
    elif ((rc != 0)) || [[ ! -s $tf ]]; then TIMES[$key]+="FAIL "
    else TIMES[$key]+="$(<"$tf") "; fi
    account "$key" "$l0"
    show "$key"
}
# drop_cache FILE: drop FILE's pages from the kernel page cache, and check
drop_cache() {
    local res
    dd if="$1" iflag=nocache count=0 status=none 2>>"$LOG"
    res=$(fincore -n -b -o RES "$1" 2>/dev/null | tr -d ' ')
    if [[ $res != 0 ]]; then
        NOTE[cache]="page cache of $1 still held $res bytes after the drop"
        progress "  warning: ${NOTE[cache]}"
    fi
}
# rand_read KEY FILE LINE: the random pattern (line 1: first pass, 2: again)
rand_read() {
    local key=$1 file=$2 line=$3 l0 out rc
    BYTES[$key]=$((RAND_N * 4096))
    settle
    l0=$(loglines)
    out=$(run_bg "$PY" "$HELPER" randread "$file" "$WORK/offsets" "$line" "$SRC" 2>>"$LOG")
    rc=$?
    if ((rc == 124)); then TIMES[$key]+="HANG "
    elif ((rc != 0)); then TIMES[$key]+="FAIL "
    else
        TIMES[$key]+="${out%% *} "
        [[ $out == *DIFFERENT* ]] && { NOTE[$key]="bytes DIFFER from the source"; progress "  $key: the bytes differ from the source"; }
    fi
    account "$key" "$l0"
    show "$key"
}
last_of() { local v=${1% }; echo "${v##* }"; }
show() {
    local key=$1 t r
    t=$(last_of "${TIMES[$key]}")
    r=$(last_of "${REQS[$key]}")
    if isnum "$t" && [[ $key == *rand* ]]; then
        progress "  $key: $t s ($(awk -v n="$RAND_N" -v s="$t" 'BEGIN { printf "%.0f", n / s }') reads/s), $r NBD reads"
    elif isnum "$t"; then
        progress "  $key: $t s ($(awk -v b="${BYTES[$key]}" -v s="$t" 'BEGIN { printf "%.1f", b / 1048576 / s }') MiB/s), $r NBD reads"
    else
        progress "  $key: $t"
    fi
}
# startup KEY LINE0: connections and block status requests a server made on
# its way up, and the time it took
startup() {
    local key=$1 l0=$2 s e c
    settle
    s=$("$PY" "$HELPER" logstat "$NLOG" "$l0" "$(loglines)" 2>>"$LOG") || s="? ? ? ? -"
    read -r _ _ e c _ <<<"$s"
    ST_READY[$key]+="$SREADY " ST_CONN[$key]=$c ST_EXT[$key]=$e
}

# ---------------------------------------------------------------- the run
progress "p2vfsd over NBD against nbdfuse: ${SIZE_MIB} MiB source, delays ${DELAY_MS[*]} ms, $RUNS rounds; logs in $LOGDIR"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
make_source
SRC_DATA=$(du -B1 "$SRC" | awk '{ print $1 }')
((RAND_N > 0)) && "$PY" "$HELPER" offsets "$RAND_N" "$RAND_MIB" 4096 "$WORK/offsets"

for di in "${!DELAY_MS[@]}"; do
    CUR_DELAY=${DELAY_MS[di]} CUR_MIB=${DELAY_MIB[di]}
    D=$CUR_DELAY
    progress "== delay ${D} ms: reading the first $CUR_MIB MiB of each file"
    dd if="$SRC" of=/dev/null bs=1M status=none # the server reads from memory
    nbdkit_start "$D"
    for ((r = 1; r <= RUNS; r++)); do
        progress " round $r of $RUNS"
        # (a) + (c): disk.raw cold, then again with the kernel's page cache dropped
        l0=$(loglines)
        if p2v_start; then
            startup "p2v.$D" "$l0"
            RA[p2v]=$(read_ra "$SMNT")
            seq_read "$D.p2v.raw" "$SFILE/disk.raw"
            drop_cache "$SFILE/disk.raw"
            seq_read "$D.p2v.raw2" "$SFILE/disk.raw"
            server_stop
        fi
        # (b): disk.vmdk cold
        p2v_start && { seq_read "$D.p2v.vmdk" "$SFILE/disk.vmdk"; server_stop; }
        # what the cache does: none at all, and a larger readahead
        p2v_start --cache-size 0 && { seq_read "$D.p2v.nocache" "$SFILE/disk.raw"; server_stop p2vnocache; }
        if [[ -n $TUNED_RA ]]; then
            p2v_start --readahead "$TUNED_RA" && { seq_read "$D.p2v.ra" "$SFILE/disk.raw"; server_stop p2vra; }
        fi
        # the peer: nbdfuse with its defaults, cold, then again
        l0=$(loglines)
        if nbd_start; then
            startup "nbd.$D" "$l0"
            RA[nbd]=$(read_ra "$SMNT")
            seq_read "$D.nbd.raw" "$SFILE"
            drop_cache "$SFILE"
            seq_read "$D.nbd.raw2" "$SFILE"
            server_stop
        fi
        # nbdfuse with read_ahead_kb 1024, as p2vfsd sets on its own mount
        if nbd_start; then
            stat "$SFILE" >/dev/null
            set_ra "$SMNT" 1024
            RA[nbd1024]=$(read_ra "$SMNT")
            seq_read "$D.nbd.ra" "$SFILE"
            server_stop
        fi
        # (d) random 4 KiB reads, then the same offsets again
        if ((RAND_N > 0)); then
            p2v_start && {
                rand_read "$D.p2v.rand1" "$SFILE/disk.raw" 1
                rand_read "$D.p2v.rand2" "$SFILE/disk.raw" 2
                server_stop
            }
            nbd_start && {
                rand_read "$D.nbd.rand1" "$SFILE" 1
                rand_read "$D.nbd.rand2" "$SFILE" 2
                server_stop
            }
        fi
    done
    nbdkit_stop
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
T_TOTAL=$(elapsed "$T_START")

# ---------------------------------------------------------------- report
med() { # med LIST: the median of the numbers in LIST, or HANG / FAIL
    local t nums=() bad=""
    for t in $1; do if isnum "$t"; then nums+=("$t"); else bad=$t; fi; done
    if ((${#nums[@]} == 0)); then echo "${bad:-n/a}"
    elif [[ -n $bad ]]; then echo "$bad"
    else printf '%s\n' "${nums[@]}" | median; fi
}
T() { med "${TIMES[$1]:-}"; }
mibps() { local t; t=$(T "$1"); isnum "$t" && awk -v b="${BYTES[$1]}" -v s="$t" 'BEGIN { printf "%.1f", b / 1048576 / s }' || echo "$t"; }
iops() { local t; t=$(T "$1"); isnum "$t" && awk -v n="$RAND_N" -v s="$t" 'BEGIN { printf "%.0f", n / s }' || echo "$t"; }
ratio() { isnum "${1:-}" && isnum "${2:-}" && awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else if (a / b >= 100) printf "%.0f", a / b; else printf "%.2f", a / b }' || echo "n/a"; }
secs() { isnum "${1:-}" && awk -v s="$1" 'BEGIN { if (s < 10) printf "%.3f s", s; else printf "%.1f s", s }' || echo "${1:-n/a}"; }
mib() { isnum "${1:-}" && awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }' || echo "${1:-n/a}"; }
# counts: the median of the runs, and the range if they differ
cnt() {
    local v=${1:-} m lo hi
    m=$(med "$v")
    lo=$(tr ' ' '\n' <<<"$v" | grep -E '^[0-9.]+$' | sort -g | head -n 1)
    hi=$(tr ' ' '\n' <<<"$v" | grep -E '^[0-9.]+$' | sort -g | tail -n 1)
    if [[ -n $lo && $lo != "$hi" ]]; then echo "$m ($lo-$hi)"; else echo "$m"; fi
}

KERNEL=$(uname -r)
CPUS=$(nproc)
MEMG=$(awk '/MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)
# shellcheck disable=SC1091
OS=$(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")
D0=${DELAY_MS[0]}

rep "p2vfsd over NBD against nbdfuse, $(date '+%Y-%m-%d %H:%M %Z')"
rep "machine: $CPUS cores, $MEMG GiB RAM, $OS, kernel $KERNEL"
rep "p2vfsd: $("$BIN" --version 2>/dev/null | head -n 1); $DAEMON_INFO"
rep "peers: $(nbdkit --version 2>&1 | head -n 1); $(nbdfuse --version 2>&1 | head -n 1)"
rep "source: $(awk -v m="$SIZE_MIB" -v b="$SRC_DATA" 'BEGIN { printf "%d MiB, %.0f MiB allocated", m, b / 1048576 }') (8 MiB chunks: 3/8 log-like text, 3/8 random, 1/8 written zeros, 1/8 holes)"
rep "server: nbdkit -r -U SOCK --filter=log --filter=delay file FILE logfile=LOG delay-read=Dms delay-extents=Dms (no delay filter for D = 0); one server per delay D, the source in its page cache"
rep "p2vfsd: --source s=nbd+unix:///?socket=SOCK, defaults (--nbd-connections 4, --cache-size 256M, --readahead 8M); $(cnt "${ST_CONN[p2v.$D0]:-}") connections, $(cnt "${ST_EXT[p2v.$D0]:-}") block status request(s) at start; read_ahead_kb ${RA[p2v]:-?}"
rep "nbdfuse: -r MNT/disk.img --unix SOCK, defaults; $(cnt "${ST_CONN[nbd.$D0]:-}") connections (multi-conn), read_ahead_kb ${RA[nbd]:-?}; a second mount with read_ahead_kb raised to ${RA[nbd1024]:-1024}"
rep "each sequential read: dd bs=1M count=MiB from a fresh mount (empty page cache, empty p2vfsd cache), open included; $RUNS interleaved rounds, median"
rep "NBD reads, MiB: counted by nbdkit's log filter between the start of a read and the moment the server log goes quiet after it (so readahead still running counts); in flight: mean number of read requests outstanding at the server while that read's requests ran"
rep "load average before: $LOAD_BEFORE, after: $LOAD_AFTER; whole run ${T_TOTAL%.*} s"
rep ""

COLS='  %-44s %9s %8s %10s %10s %11s %12s %10s'
for di in "${!DELAY_MS[@]}"; do
    D=${DELAY_MS[di]} M=${DELAY_MIB[di]}
    if ((D == 0)); then dl="no delay filter"; else dl="delay-read=${D}ms delay-extents=${D}ms"; fi
    nb=$(mibps "$D.nbd.raw") nb1=$(mibps "$D.nbd.ra")
    rep "Delay $D ms ($dl): the first $M MiB of each file. x = throughput ratio p2vfsd / nbdfuse."
    # shellcheck disable=SC2059
    rep "$(printf "$COLS" "reader" median MiB/s "x nbdfuse" "x nbd1024" "NBD reads" "MiB fetched" "in flight")"
    row() { # row KEY LABEL
        local k=$1 m
        [[ -n ${TIMES[$k]:-} ]] || return 0
        m=$(mibps "$k")
        # shellcheck disable=SC2059
        rep "$(printf "$COLS" "$2" "$(secs "$(T "$k")")" "$m" "$(ratio "$m" "$nb")" "$(ratio "$m" "$nb1")" \
            "$(cnt "${REQS[$k]:-}")" "$(cnt "${MIBS[$k]:-}")" "$(med "${INFL[$k]:-}")")"
    }
    row "$D.p2v.raw" "(a) p2vfsd disk.raw, cold"
    row "$D.p2v.vmdk" "(b) p2vfsd disk.vmdk, cold"
    row "$D.p2v.nocache" "    p2vfsd disk.raw, --cache-size 0"
    row "$D.p2v.ra" "    p2vfsd disk.raw, --readahead $TUNED_RA"
    row "$D.nbd.raw" "(a) nbdfuse disk.img, cold (defaults)"
    row "$D.nbd.ra" "    nbdfuse disk.img, read_ahead_kb 1024"
    rep "  second read of the same range, kernel page cache dropped (x: against nbdfuse's second read):"
    nb=$(mibps "$D.nbd.raw2")
    row "$D.p2v.raw2" "(c) p2vfsd disk.raw, its cache warm"
    row "$D.nbd.raw2" "(c) nbdfuse disk.img (it has no cache)"
    if ((RAND_N > 0)); then
        rep "  random: $RAND_N reads of 4 KiB (O_DIRECT, one at a time) in the first $RAND_MIB MiB, then the same offsets again"
        RC='  %-44s %9s %8s %10s %10s %11s %12s'
        # shellcheck disable=SC2059
        rep "$(printf "$RC" "reader" median reads/s "x nbdfuse" "" "NBD reads" "MiB fetched")"
        for pass in 1 2; do
            nb=$(iops "$D.nbd.rand$pass")
            for who in p2v nbd; do
                k="$D.$who.rand$pass"
                [[ -n ${TIMES[$k]:-} ]] || continue
                lab="(d) $([[ $who == p2v ]] && echo "p2vfsd disk.raw" || echo "nbdfuse disk.img"), $([[ $pass == 1 ]] && echo "first pass" || echo "same offsets again")"
                [[ -n ${NOTE[$k]:-} ]] && lab+=" ${NOTE[$k]}"
                # shellcheck disable=SC2059
                rep "$(printf "$RC" "$lab" "$(secs "$(T "$k")")" "$(iops "$k")" "$(ratio "$(iops "$k")" "$nb")" "" \
                    "$(cnt "${REQS[$k]:-}")" "$(cnt "${MIBS[$k]:-}")")"
            done
        done
    fi
    rep "  start, spawn -> the mount answers: p2vfsd $(secs "$(med "${ST_READY[p2v.$D]:-}")") ($(cnt "${ST_EXT[p2v.$D]:-}") block status request), nbdfuse $(secs "$(med "${ST_READY[nbd.$D]:-}")")"
    line="  peak RSS (VmHWM, the largest at this delay): p2vfsd $(mib "${HWM[p2v.$D]:-}") (--cache-size 0: $(mib "${HWM[p2vnocache.$D]:-}")"
    [[ -n $TUNED_RA ]] && line+=", --readahead $TUNED_RA: $(mib "${HWM[p2vra.$D]:-}")"
    rep "$line), nbdfuse $(mib "${HWM[nbd.$D]:-}")"
    rep ""
done

rep "SUMMARY. ratio = p2vfsd / nbdfuse (defaults) throughput; > 1 favours p2vfsd."
hdr="  $(printf '%-56s' scenario)"
for D in "${DELAY_MS[@]}"; do hdr+=$(printf '%10s' "${D} ms"); done
rep "$hdr"
srow() { # srow LABEL P2VKEY PEERKEY [iops]
    local line d a b
    line="  $(printf '%-56s' "$1")"
    for d in "${DELAY_MS[@]}"; do
        if [[ ${4:-} == iops ]]; then a=$(iops "$d.$2") b=$(iops "$d.$3"); else a=$(mibps "$d.$2") b=$(mibps "$d.$3"); fi
        line+=$(printf '%10s' "$(ratio "$a" "$b")")
    done
    rep "$line"
}
srow "(a) sequential disk.raw, cold" p2v.raw nbd.raw
srow "(b) disk.vmdk, cold (p2vfsd) / disk.img, cold (nbdfuse)" p2v.vmdk nbd.raw
srow "(c) second read: p2vfsd cache warm / nbdfuse again" p2v.raw2 nbd.raw2
if ((RAND_N > 0)); then
    srow "(d) random 4 KiB, first pass" p2v.rand1 nbd.rand1 iops
    srow "(d) random 4 KiB, same offsets again" p2v.rand2 nbd.rand2 iops
fi
srow "(a) against nbdfuse with read_ahead_kb 1024" p2v.raw nbd.ra
srow "    view cost: disk.vmdk / disk.raw (both p2vfsd)" p2v.vmdk p2v.raw
srow "    default / --cache-size 0 (both p2vfsd)" p2v.raw p2v.nocache
[[ -n $TUNED_RA ]] && srow "    --readahead $TUNED_RA / default (both p2vfsd)" p2v.ra p2v.raw
line="  $(printf '%-56s' "NBD reads in the second read: p2vfsd / nbdfuse")"
for d in "${DELAY_MS[@]}"; do line+=$(printf '%10s' "$(med "${REQS[$d.p2v.raw2]:-}")/$(med "${REQS[$d.nbd.raw2]:-}")"); done
rep "$line"
line="  $(printf '%-56s' "peak RSS, MiB: p2vfsd / nbdfuse")"
for d in "${DELAY_MS[@]}"; do
    line+=$(printf '%10s' "$(awk -v a="${HWM[p2v.$d]:-0}" -v b="${HWM[nbd.$d]:-0}" 'BEGIN { printf "%.0f/%.0f", a / 1024, b / 1024 }')")
done
rep "$line"
problems=""
for k in "${!TIMES[@]}"; do [[ ${TIMES[$k]} == *HANG* || ${TIMES[$k]} == *FAIL* ]] && problems+=" $k(${TIMES[$k]% })"; done
for k in "${!NOTE[@]}"; do problems+=" $k: ${NOTE[$k]};"; done
[[ -n $problems ]] && rep "PROBLEMS:$problems"

cat "$REPORT"
cp "$REPORT" "$OUT" 2>/dev/null && progress "report written to $OUT"
cp "$REPORT" "$LOGDIR/report.txt" 2>/dev/null
exit 0

#!/usr/bin/env bash
# Benchmark of the overlay store (fsd/overlay/), in one run on one machine:
#   1. sequential read of a view over an overlay holding many scattered
#      chunks, against the same view without the overlay and against the
#      source file, page cache dropped before each pass; for random and for
#      compressible data, with and without lz4 chunk records;
#   2. Overlay::open at 10 thousand, 100 thousand and a million chunks, cold
#      and warm, and the first read of a chunk after it;
#   3. for context, qemu: a qcow2 overlay backed by the same source, the same
#      writes made with qemu-io, read with qemu-img bench.
# The engine is driven by overlay_bench (tools/bench/overlay-bench.cpp), one
# step per call. Run as root:  bash tools/bench/overlay-bench.sh [--bin PATH]
# See tools/bench/README.md ("Overlay") for what each figure means.
set -uo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)

SIZE_GIB=2
RUNS=3
OPEN_RUNS=5
OPEN_SPECS="10000@128 100000@128 1000000@128 100000@2048"
QEMU=yes
REBUILD=no
OUT=""
CACHE=/var/tmp/p2vfs-bench
BIN_SRC="${OVERLAY_BENCH:-$REPO/build/tools/overlay_bench}"
LABEL=""

usage() {
    cat <<EOF
Usage: bash tools/bench/overlay-bench.sh [OPTIONS]   (as root)

  --bin PATH        the overlay_bench binary (default: \$OVERLAY_BENCH, else
                    build/tools/overlay_bench of this tree; build it with
                    ninja -C build overlay_bench)
  --size GiB        size of the two sources of the read passes (default $SIZE_GIB):
                    one of random data, one of log-like text
  --runs N          rounds of read passes; every figure is the median of N
                    (default $RUNS)
  --open LIST       the overlays whose open is timed, each CHUNKS@GiB: that many
                    chunks at random places of a sparse disk of that size
                    (default "$OPEN_SPECS")
  --open-runs N     cold and warm opens per overlay; median (default $OPEN_RUNS)
  --no-qemu         skip the qcow2 comparison
  --rebuild         remake the sources and the overlays kept between runs
  --out FILE        also write the report to FILE
                    (default: $CACHE/overlay-results-DATE.txt)
  --cache-dir DIR   where sources and the overlays of section 2 are kept
                    between runs (default $CACHE)
  --label TEXT      a note on the build, printed in the report
  -h, --help        this text

Drops the page cache (sync; echo 3 > /proc/sys/vm/drop_caches) before every
timed pass. Needs qemu-img and qemu-io (qemu-utils) for section 3 only.
Installs nothing. A run with the defaults takes 7-9 minutes on 2 cores and
needs about 15 GiB free in the cache directory the first time (sources and
the overlays of section 2 are kept there), 6 GiB afterwards.
EOF
}

while (($#)); do
    case $1 in
        --bin) BIN_SRC=${2:-}; shift 2 ;;
        --bin=*) BIN_SRC=${1#*=}; shift ;;
        --size) SIZE_GIB=${2:-}; shift 2 ;;
        --size=*) SIZE_GIB=${1#*=}; shift ;;
        --runs) RUNS=${2:-}; shift 2 ;;
        --runs=*) RUNS=${1#*=}; shift ;;
        --open) OPEN_SPECS=${2:-}; shift 2 ;;
        --open=*) OPEN_SPECS=${1#*=}; shift ;;
        --open-runs) OPEN_RUNS=${2:-}; shift 2 ;;
        --open-runs=*) OPEN_RUNS=${1#*=}; shift ;;
        --no-qemu) QEMU=no; shift ;;
        --rebuild) REBUILD=yes; shift ;;
        --out) OUT=${2:-}; shift 2 ;;
        --out=*) OUT=${1#*=}; shift ;;
        --cache-dir) CACHE=${2:-}; shift 2 ;;
        --cache-dir=*) CACHE=${1#*=}; shift ;;
        --label) LABEL=${2:-}; shift 2 ;;
        --label=*) LABEL=${1#*=}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "overlay-bench.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

die() { echo "overlay-bench.sh: $*" >&2; exit 1; }
[[ $SIZE_GIB =~ ^[1-9][0-9]*$ ]] || die "--size wants a whole number of GiB"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs wants a positive number"
[[ $OPEN_RUNS =~ ^[1-9][0-9]*$ ]] || die "--open-runs wants a positive number"
for spec in $OPEN_SPECS; do
    [[ $spec =~ ^([1-9][0-9]*)@([1-9][0-9]*)$ ]] || die "--open: '$spec' is not CHUNKS@GiB"
    ((BASH_REMATCH[1] <= BASH_REMATCH[2] * 16384 - 1)) || die "--open: $spec: that many chunks do not fit the disk"
done
[[ $EUID -eq 0 ]] || die "run as root (it drops the page cache)"
[[ -w /proc/sys/vm/drop_caches ]] || die "/proc/sys/vm/drop_caches is not writable"
[[ $CACHE != *[[:space:]]* ]] || die "--cache-dir must not contain spaces"
[[ -x $BIN_SRC ]] && BIN_SRC=$(realpath "$BIN_SRC")
[[ -x $BIN_SRC ]] || die "no overlay_bench at $BIN_SRC; build it with:
  cmake -S $REPO -B $REPO/build -G Ninja -DCMAKE_BUILD_TYPE=Release && ninja -C $REPO/build overlay_bench
or name one with --bin PATH (or OVERLAY_BENCH=PATH)"
QEMU_NOTE=""
if [[ $QEMU == yes ]] && ! { command -v qemu-img && command -v qemu-io; } >/dev/null 2>&1; then
    QEMU_NOTE="skipped: qemu-img or qemu-io missing (package qemu-utils)"
    QEMU=no
fi

# ---------------------------------------------------------------- state, cleanup
mkdir -p "$CACHE" || die "cannot create $CACHE"
STAMP=$(date +%Y%m%d-%H%M%S)
[[ -n $OUT ]] || OUT="$CACHE/overlay-results-$STAMP.txt"
WORK=$(mktemp -d "$CACHE/overlay-run.XXXXXX") || die "cannot create a work directory in $CACHE"
LOGDIR="$CACHE/overlay-logs-$STAMP"
mkdir -p "$LOGDIR"
LOG="$LOGDIR/bench.log"
REPORT="$WORK/report.txt"
: >"$REPORT"
# A private copy, so a rebuild of the tree during the run cannot mix binaries.
BIN="$WORK/overlay_bench"
cp "$BIN_SRC" "$BIN" || die "cannot copy $BIN_SRC"
BIN_INFO="$BIN_SRC, built $(date -r "$BIN_SRC" '+%Y-%m-%d %H:%M' 2>/dev/null)"
if [[ $BIN_SRC == "$REPO"/build*/tools/overlay_bench ]]; then
    BIN_INFO+="; the tree was at $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "?") when the run started"
    git -C "$REPO" diff --quiet HEAD -- fsd 2>/dev/null || BIN_INFO+=", with local changes in fsd/"
    BT=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "${BIN_SRC%/tools/overlay_bench}/CMakeCache.txt" 2>/dev/null)
    BIN_INFO+=", ${BT:-RelWithDebInfo (default)} build"
fi
[[ -n $LABEL ]] && BIN_INFO+=", $LABEL"

ME=overlay-bench.sh
# shellcheck source=tools/bench/lib.sh
source "$SCRIPT_DIR/lib.sh"

# ob OUTFILE ARGS...: one overlay_bench call; its KEY=VALUE lines go to
# OUTFILE, the call and its stderr to the log. False when it fails.
ob() {
    local out=$1
    shift
    logonly "  overlay_bench $*"
    if ! "$BIN" "$@" >"$out" 2>>"$LOG"; then
        logonly "  -> failed"
        return 1
    fi
    logonly "  -> $(tr '\n' ' ' <"$out")"
}
kv() { sed -n "s/^$2=//p" "$1" 2>/dev/null | head -n 1; } # kv FILE KEY
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
med_of() { if (($#)); then printf '%s\n' "$@" | median; else echo FAIL; fi; }
ratio() { isnum "${1:-}" && isnum "${2:-}" && awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }' || echo "n/a"; }
secs() { isnum "${1:-}" && awk -v s="$1" 'BEGIN { if (s < 0.001) printf "%.3f ms", s * 1000; else if (s < 10) printf "%.3f s", s; else printf "%.1f s", s }' || echo "${1:-n/a}"; }
mibps() { isnum "${1:-}" && isnum "${2:-}" && awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / 1048576 / s }' || echo "n/a"; }
bytes_h() { isnum "${1:-}" && awk -v b="$1" 'BEGIN { if (b >= 1073741824) printf "%.2f GiB", b / 1073741824; else if (b >= 1048576) printf "%.0f MiB", b / 1048576; else printf "%.0f KiB", b / 1024 }' || echo "${1:-n/a}"; }
# host_warm SOURCE [OVERLAY_STATE]: read the files a pass will read once,
# untimed, before its page cache is dropped. On a virtual machine whose host
# caches the disk image (this one's does, and holds only a few GiB), a cold
# pass would otherwise read from the host's cache or from its disk depending
# on what the passes before it read; this way every cold pass starts alike:
# nothing in this machine's page cache, its files in the host's.
host_warm() {
    local logs=()
    [[ -n ${2:-} ]] && mapfile -t logs < <(find "$2" -name log -type f)
    cat "$1" "${logs[@]}" >/dev/null
}
# rotated ROUND ITEM...: the items, each round starting further on, so that
# no reader always follows the same one (what a pass finds in the caches
# depends a little on what the pass before it read).
rotated() {
    local r=$1
    shift
    local n=$# i
    local items=("$@")
    for ((i = 0; i < n; i++)); do echo "${items[(i + (r - 1) * n / RUNS) % n]}"; done
}
avail() { df -B1 --output=avail "$CACHE" | tail -n 1 | tr -d ' '; }

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
AVAIL_START=$(avail)
NOTES=()

# ---------------------------------------------------------------- sources
SIZE=$((SIZE_GIB << 30))
declare -A SRC=([random]="$CACHE/ov-random-${SIZE_GIB}G.img" [text]="$CACHE/ov-text-${SIZE_GIB}G.img")
need=0
for k in random text; do [[ -f ${SRC[$k]}.ok && $REBUILD == no ]] || need=$((need + SIZE)); done
# The overlays of section 1 for random data (they hold 10%, 19%, 50%, 75%,
# 10% and 50% of the disk), and those of section 2 not kept yet (one 4 KiB
# record per chunk, and the index).
need=$((need + SIZE * 23 / 10))
for spec in $OPEN_SPECS; do
    n=${spec%@*} gib=${spec#*@}
    [[ -f $CACHE/ov-open-$n-${gib}G.ok && $REBUILD == no ]] || need=$((need + n * 4096 + gib * 256 * 1024))
done
if ((AVAIL_START < need + (1 << 30))); then
    die "$CACHE has $(bytes_h "$AVAIL_START") free; this run needs about $(bytes_h "$need") (use --open-counts or --size to ask for less)"
fi
progress "$(bytes_h "$AVAIL_START") free in $CACHE; this run writes up to $(bytes_h "$need") there"

for k in random text; do
    f=${SRC[$k]}
    [[ -f $f.ok && $REBUILD == no && $(stat -c %s "$f" 2>/dev/null) == "$SIZE" ]] && continue
    progress "generating $f ($SIZE_GIB GiB of $k data)"
    rm -f "$f" "$f.ok"
    ob "$WORK/gen" make-source "$f.tmp" "$SIZE" "$k" || die "could not generate $f (see $LOG)"
    mv "$f.tmp" "$f" && touch "$f.ok"
done
sparse_of() { echo "$CACHE/ov-sparse-$1G.img"; } # sparse_of GiB
for spec in $OPEN_SPECS; do
    gib=${spec#*@} f=$(sparse_of "${spec#*@}")
    if [[ ! -f $f || $(stat -c %s "$f") != $((gib << 30)) ]]; then
        rm -f "$f"
        truncate -s "${gib}G" "$f" || die "cannot make $f"
    fi
done

# ---------------------------------------------------------------- 1. reads
# Overlays: name -> populate arguments.
CONFIGS=(a10 u10 a50 u50 a10n a50n)
declare -A CARGS=([a10]="--fraction 0.1" [u10]="--fraction 0.1 --unaligned"
    [a50]="--fraction 0.5" [u50]="--fraction 0.5 --unaligned"
    [a10n]="--fraction 0.1 --no-compress" [a50n]="--fraction 0.5 --no-compress")
declare -A CLABEL=([a10]="10% aligned, lz4" [u10]="10% unaligned, lz4" [a50]="50% aligned, lz4"
    [u50]="50% unaligned, lz4" [a10n]="10% aligned, no lz4" [a50n]="50% aligned, no lz4")
# Readers: src (the source), b.VIEW (the view without overlay), c.VIEW.CONFIG
# (over the overlay); b4k/c4k: 4 KiB requests over the first SMALL bytes.
READERS=(src b.raw b.vmdk b.qcow2 c.raw.a10 c.raw.u10 c.raw.a50 c.raw.u50 c.raw.a10n c.raw.a50n
    c.vmdk.a10 c.qcow2.a10 b4k.raw c4k.raw.a50)
SMALL=$((256 << 20))
declare -A T CPU WT WCPU BYTES POP

progress "CPU cost of a chunk's steps"
ob "$WORK/costs" costs || progress "  costs FAILED (see $LOG)"

for k in random text; do
    progress "1. $k data: making ${#CONFIGS[@]} overlays over ${SRC[$k]}"
    for c in "${CONFIGS[@]}"; do
        sync # the previous overlay's writes, so they do not throttle this one's
        # shellcheck disable=SC2086
        if ob "$WORK/pop.$k.$c" populate "$WORK/st-$k-$c" "${SRC[$k]}" ${CARGS[$c]} --content "$k"; then
            POP[$k.$c]=ok
            progress "  ${CLABEL[$c]}: $(kv "$WORK/pop.$k.$c" writes) writes in $(secs "$(kv "$WORK/pop.$k.$c" write_seconds)"), flush $(secs "$(kv "$WORK/pop.$k.$c" flush_seconds)"), $(kv "$WORK/pop.$k.$c" chunks) chunks, log $(bytes_h "$(kv "$WORK/pop.$k.$c" log_allocated)")"
        else
            progress "  ${CLABEL[$c]}: populate FAILED (see $LOG)"
        fi
    done
    for ((r = 1; r <= RUNS; r++)); do
        progress " $k data, round $r of $RUNS"
        for key in $(rotated "$r" "${READERS[@]}"); do
            args=(read "${SRC[$k]}" --drop-caches --warm)
            v=${key#*.} c=${v#*.} v=${v%%.*} st=""
            case $key in
                src) ;;
                b.* | b4k.*) args+=(--view "$v") ;;
                c.* | c4k.*)
                    [[ ${POP[$k.$c]:-} == ok ]] || continue
                    st="$WORK/st-$k-$c"
                    args+=(--view "$v" --overlay "$st")
                    ;;
            esac
            host_warm "${SRC[$k]}" "$st"
            [[ $key == ?4k.* ]] && args+=(--request 4096 --length "$SMALL")
            f="$WORK/read.$k.$key.$r"
            if ob "$f" "${args[@]}"; then
                T[$k.$key]+="$(kv "$f" read_seconds) "
                CPU[$k.$key]+="$(kv "$f" cpu_seconds) "
                WT[$k.$key]+="$(kv "$f" warm_read_seconds) "
                WCPU[$k.$key]+="$(kv "$f" warm_cpu_seconds) "
                BYTES[$k.$key]=$(kv "$f" bytes)
                progress "  $key: cold $(mibps "$(kv "$f" bytes)" "$(kv "$f" read_seconds)") MiB/s, warm $(mibps "$(kv "$f" bytes)" "$(kv "$f" warm_read_seconds)") MiB/s"
            else
                progress "  $key: FAILED (see $LOG)"
            fi
        done
    done
    for key in "${READERS[@]}"; do
        # shellcheck disable=SC2086
        T[$k.$key]=$(med_of ${T[$k.$key]:-})
        # shellcheck disable=SC2086
        CPU[$k.$key]=$(med_of ${CPU[$k.$key]:-})
        # shellcheck disable=SC2086
        WT[$k.$key]=$(med_of ${WT[$k.$key]:-})
        # shellcheck disable=SC2086
        WCPU[$k.$key]=$(med_of ${WCPU[$k.$key]:-})
    done
    # Section 3 makes its own (qcow2) overlays: these are not needed any more.
    for c in "${CONFIGS[@]}"; do rm -rf "${WORK:?}/st-$k-$c"; done
done

# ---------------------------------------------------------------- 2. open
declare -A OPEN
for spec in $OPEN_SPECS; do
    n=${spec%@*} gib=${spec#*@}
    st="$CACHE/ov-open-$n-${gib}G" sparse=$(sparse_of "$gib")
    ok=no
    if [[ -f $st.ok && $REBUILD == no ]] && ob "$WORK/probe.$spec" open "$st" "$sparse" --read-only; then
        ok=yes
    fi
    if [[ $ok == no ]]; then
        progress "2. making an overlay of $n chunks over $sparse ($gib GiB, sparse)"
        rm -rf "$st" "$st.ok" "$st.populate"
        sync
        if ob "$st.populate" populate "$st" "$sparse" --chunks "$n" --content tiny --verify 1000; then
            echo "made=$(date '+%Y-%m-%d %H:%M')" >>"$st.populate"
            touch "$st.ok"
            ok=yes
        else
            progress "  FAILED (see $LOG)"
            NOTES+=("the overlay of $n chunks over $gib GiB could not be made (see $LOG)")
        fi
    fi
    [[ $ok == yes ]] || continue
    OPEN[$spec.made]=$(kv "$st.populate" made)
    OPEN[$spec.write]=$(kv "$st.populate" write_seconds)
    OPEN[$spec.flush]=$(kv "$st.populate" flush_seconds)
    progress "2. $n chunks over $gib GiB: $OPEN_RUNS cold and warm opens, writable and read-only"
    for mode in rw ro; do
        extra=()
        [[ $mode == ro ]] && extra=(--read-only)
        cold=() warm=() rcold=() rwarm=()
        for ((r = 1; r <= OPEN_RUNS; r++)); do
            f="$WORK/open.$spec.$mode.$r"
            if ob "$f.cold" open "$st" "$sparse" "${extra[@]}" --seed "$r" --drop-caches &&
                ob "$f.warm" open "$st" "$sparse" "${extra[@]}" --seed "$((r + 100))"; then
                cold+=("$(kv "$f.cold" open_seconds)") rcold+=("$(kv "$f.cold" first_read_seconds)")
                warm+=("$(kv "$f.warm" open_seconds)") rwarm+=("$(kv "$f.warm" first_read_seconds)")
                OPEN[$spec.rss]=$(kv "$f.cold" max_rss_kib)
                OPEN[$spec.log]=$(kv "$f.cold" log_bytes)
                OPEN[$spec.logalloc]=$(kv "$f.cold" log_allocated)
                OPEN[$spec.index]=$(kv "$f.cold" index_bytes)
                OPEN[$spec.indexalloc]=$(kv "$f.cold" index_allocated)
            fi
        done
        OPEN[$spec.$mode.cold]=$(med_of "${cold[@]}")
        OPEN[$spec.$mode.warm]=$(med_of "${warm[@]}")
        OPEN[$spec.$mode.rcold]=$(med_of "${rcold[@]}")
        OPEN[$spec.$mode.rwarm]=$(med_of "${rwarm[@]}")
        progress "  $mode: cold $(secs "${OPEN[$spec.$mode.cold]}"), warm $(secs "${OPEN[$spec.$mode.warm]}")"
    done
done

# ---------------------------------------------------------------- 3. qemu
QCONFIGS=(a10 a50 u10)
declare -A QCARGS=([a10]="--fraction 0.1" [a50]="--fraction 0.5" [u10]="--fraction 0.1 --unaligned")
declare -A Q
qbench() { # qbench KEY FORMAT FILE: qemu-img bench, page cache dropped, then again at once
    local out="$WORK/q.$1" t w
    cat "${SRC[random]}" "$3" >/dev/null # as host_warm in section 1
    drop
    logonly "  qemu-img bench -f $2 -c $((SIZE >> 20)) -s 1M -S 1M -d 1 -t writeback $3 (twice)"
    if qemu-img bench -f "$2" -c $((SIZE >> 20)) -s 1M -S 1M -d 1 -t writeback "$3" >"$out" 2>>"$LOG" &&
        qemu-img bench -f "$2" -c $((SIZE >> 20)) -s 1M -S 1M -d 1 -t writeback "$3" >"$out.warm" 2>>"$LOG"; then
        t=$(sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p' "$out")
        w=$(sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p' "$out.warm")
        Q[$1]+="$t " Q[$1.warm]+="$w "
        progress "  qemu $1: cold $(mibps "$SIZE" "$t") MiB/s, warm $(mibps "$SIZE" "$w") MiB/s"
    else
        progress "  qemu $1: FAILED (see $LOG)"
    fi
}
if [[ $QEMU == yes ]]; then
    progress "3. qemu: qcow2 overlays over ${SRC[random]}"
    for c in "${QCONFIGS[@]}"; do
        q="$WORK/q-$c.qcow2"
        qemu-img create -q -f qcow2 -b "${SRC[random]}" -F raw "$q" >>"$LOG" 2>&1 || { progress "  qemu-img create failed"; continue; }
        # shellcheck disable=SC2086
        "$BIN" qemu-writes "${SRC[random]}" ${QCARGS[$c]} >"$WORK/q-$c.cmds" 2>>"$LOG" || continue
        t0=$(now)
        if qemu-io -f qcow2 -t writeback "$q" <"$WORK/q-$c.cmds" >/dev/null 2>>"$LOG"; then
            Q[$c.write]=$(elapsed "$t0")
            Q[$c.writes]=$(($(wc -l <"$WORK/q-$c.cmds") - 1))
            Q[$c.size]=$(stat -c %s "$q")
            progress "  ${CLABEL[$c]}: ${Q[$c.writes]} writes with qemu-io in $(secs "${Q[$c.write]}")"
        else
            progress "  ${CLABEL[$c]}: qemu-io failed (see $LOG)"
            rm -f "$q"
        fi
    done
    for ((r = 1; r <= RUNS; r++)); do
        progress " qemu, round $r of $RUNS"
        for c in $(rotated "$r" base "${QCONFIGS[@]}"); do
            if [[ $c == base ]]; then
                qbench base raw "${SRC[random]}"
            elif [[ -f $WORK/q-$c.qcow2 ]]; then
                qbench "$c" qcow2 "$WORK/q-$c.qcow2"
            fi
        done
    done
    for key in base "${QCONFIGS[@]}"; do
        # shellcheck disable=SC2086
        Q[$key]=$(med_of ${Q[$key]:-})
        # shellcheck disable=SC2086
        Q[$key.warm]=$(med_of ${Q[$key.warm]:-})
    done
fi

# ---------------------------------------------------------------- report
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
T_TOTAL=$(elapsed "$T_START")
OS=$(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")
rep "p2vfs overlay benchmark, $(date '+%Y-%m-%d %H:%M %Z')"
rep "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo) GiB RAM, $OS, kernel $(uname -r); $CACHE on $(df --output=source,fstype "$CACHE" | tail -n 1 | tr -s ' ')"
rep "overlay_bench: $BIN_INFO"
[[ $QEMU == yes ]] && rep "qemu: $(qemu-img --version | head -n 1)"
rep "load average before: $LOAD_BEFORE, after: $LOAD_AFTER; whole run ${T_TOTAL%.*} s"
rep ""

rep "reads: one thread, sequential requests of 1 MiB (4 KiB where marked) through the engine (BlockDevice::read)."
rep "  cold: the page cache dropped (sync; echo 3 > /proc/sys/vm/drop_caches) just before the pass; warm: the same pass again at once, from the page cache."
rep "  $RUNS interleaved rounds, each starting at another reader; median. Before each cold pass its files are read once, untimed, so that every cold pass finds them in the host's cache alike. x (b): MiB/s over the same view without the overlay, read the same way. CPU: user + system seconds of the reader in the warm pass."
rep "CPU cost of one 64 KiB chunk's steps here (GiB/s, data in cache): CRC-32C $(printf '%.2f' "$(kv "$WORK/costs" crc32c_gib_s)") (crc32c(), which uses the CPU's instruction where there is one: $(grep -q -m1 -w sse4_2 /proc/cpuinfo && echo "SSE4.2 here" || echo "none here"); by table look-ups, crc32c_portable(): $(printf '%.2f' "$(kv "$WORK/costs" crc32c_portable_gib_s)")), lz4 decompress $(printf '%.2f' "$(kv "$WORK/costs" lz4_decompress_text_gib_s)") (text; output bytes), lz4 compress $(printf '%.2f' "$(kv "$WORK/costs" lz4_compress_text_gib_s)") (text) and $(printf '%.2f' "$(kv "$WORK/costs" lz4_compress_random_gib_s)") (random, given up), memcpy $(printf '%.1f' "$(kv "$WORK/costs" memcpy_gib_s)")"
rep ""

COLS='  %-44s %13s %8s %9s %6s %6s %9s %6s %6s %5s'
for k in random text; do
    if [[ $k == random ]]; then
        rep "1. Sequential read, $SIZE_GIB GiB of random data ($(basename "${SRC[$k]}"))."
    else
        rep "1b. The same, $SIZE_GIB GiB of log-like text ($(basename "${SRC[$k]}"); lz4 keeps about half)."
    fi
    # shellcheck disable=SC2059
    rep "$(printf "$COLS" "" "" "" "cold" "" "" "warm" "" "" "")"
    # shellcheck disable=SC2059
    rep "$(printf "$COLS" reader "overlay holds" "log" median MiB/s "x (b)" median MiB/s "x (b)" "CPU")"
    for key in "${READERS[@]}"; do
        [[ -n ${BYTES[$k.$key]:-} ]] || continue
        holds="-" log="-" base="" label=""
        v=${key#*.} c=${v#*.} v=${v%%.*}
        case $key in
            src) label="(a) the source file" ;;
            b.*) label="(b) $v view, no overlay" ;;
            b4k.*) label="(b) $v view, 4 KiB requests, first $(bytes_h "$SMALL")" ;;
            c.* | c4k.*)
                label="(c) $v view, ${CLABEL[$c]}"
                base=b.$v
                if [[ $key == c4k.* ]]; then label+=", 4 KiB requests"; base=b4k.$v; fi
                p="$WORK/pop.$k.$c"
                holds="$(kv "$p" chunks) ($(awk -v a="$(kv "$p" chunks)" -v b="$(kv "$p" disk_chunks)" 'BEGIN { printf "%.0f%%", 100 * a / b }'))"
                log=$(bytes_h "$(kv "$p" log_allocated)")
                ;;
        esac
        r=$(mibps "${BYTES[$k.$key]}" "${T[$k.$key]}")
        w=$(mibps "${BYTES[$k.$key]}" "${WT[$k.$key]}")
        xb="" xw=""
        if [[ -n $base ]]; then
            xb=$(ratio "$r" "$(mibps "${BYTES[$k.$base]:-}" "${T[$k.$base]:-}")")
            xw=$(ratio "$w" "$(mibps "${BYTES[$k.$base]:-}" "${WT[$k.$base]:-}")")
        fi
        # shellcheck disable=SC2059
        rep "$(printf "$COLS" "$label" "$holds" "$log" "$(secs "${T[$k.$key]}")" "$r" "$xb" \
            "$(secs "${WT[$k.$key]}")" "$w" "$xw" "$(awk -v c="${WCPU[$k.$key]}" 'BEGIN { printf "%.2f", c }')")"
    done
    rep "  overlays: N writes of 64 KiB at distinct random chunks, through overlay->device(user, user), then flush(); write s: the writes, with the syncs every 4096 writes; flush: the last sync"
    PCOLS='  %-24s %8s %10s %10s %9s %10s %12s'
    # shellcheck disable=SC2059
    rep "$(printf "$PCOLS" overlay writes "write s" "MiB/s" "flush" "stored" "stored/held")"
    for c in "${CONFIGS[@]}"; do
        p="$WORK/pop.$k.$c"
        [[ ${POP[$k.$c]:-} == ok ]] || { rep "  ${CLABEL[$c]}: FAILED"; continue; }
        # shellcheck disable=SC2059
        rep "$(printf "$PCOLS" "${CLABEL[$c]}" "$(kv "$p" writes)" "$(secs "$(kv "$p" write_seconds)")" \
            "$(mibps "$(($(kv "$p" writes) * 65536))" "$(kv "$p" write_seconds)")" "$(secs "$(kv "$p" flush_seconds)")" \
            "$(bytes_h "$(kv "$p" stored_bytes)")" "$(ratio "$(kv "$p" stored_bytes)" "$(($(kv "$p" chunks) * 65536))")")"
    done
    rep ""
done

rep "2. Overlay::open of one overlay (two layers; the user layer holds N chunks at random places of a sparse disk, each record one 4 KiB block), median of $OPEN_RUNS"
rep "   cold: page cache dropped just before; warm: opened again at once. first read: one 64 KiB read of a random chunk the overlay holds, right after the open"
rep "   index: the two layers' index files, 16 bytes per chunk of the disk each, apparent size / allocated (the pages the entries written touched)"
OCOLS='  %-8s %9s %-10s %9s %9s %10s %10s %21s %19s %9s'
# shellcheck disable=SC2059
rep "$(printf "$OCOLS" chunks disk open cold warm "read cold" "read warm" "index" "log size/alloc." "peak RSS")"
for spec in $OPEN_SPECS; do
    n=${spec%@*} gib=${spec#*@}
    [[ -n ${OPEN[$spec.rw.cold]:-} ]] || { rep "  $n chunks over $gib GiB: not measured"; continue; }
    for mode in rw ro; do
        # shellcheck disable=SC2059
        rep "$(printf "$OCOLS" "$n" "$gib GiB" "$([[ $mode == rw ]] && echo writable || echo read-only)" "$(secs "${OPEN[$spec.$mode.cold]}")" \
            "$(secs "${OPEN[$spec.$mode.warm]}")" "$(secs "${OPEN[$spec.$mode.rcold]}")" "$(secs "${OPEN[$spec.$mode.rwarm]}")" \
            "$(bytes_h "${OPEN[$spec.index]}") / $(bytes_h "${OPEN[$spec.indexalloc]}")" "$(bytes_h "${OPEN[$spec.log]}") / $(bytes_h "${OPEN[$spec.logalloc]}")" \
            "$(awk -v k="${OPEN[$spec.rss]}" 'BEGIN { printf "%.0f MiB", k / 1024 }')")"
    done
done
line="  making them (writes, then the final flush):"
for spec in $OPEN_SPECS; do
    [[ -n ${OPEN[$spec.write]:-} ]] && line+=" $spec: $(secs "${OPEN[$spec.write]}") + $(secs "${OPEN[$spec.flush]}") (${OPEN[$spec.made]});"
done
rep "$line"
rep ""

if [[ $QEMU == yes ]]; then
    rep "3. For context, qemu: qcow2 over the random source (qemu-img create -f qcow2 -b SRC -F raw), the same writes by one qemu-io -t writeback,"
    rep "   read with qemu-img bench -c $((SIZE >> 20)) -s 1M -S 1M -d 1 -t writeback (sequential 1 MiB, one at a time): cold (page cache dropped) and warm (again at once); median of $RUNS"
    QCOLS='  %-38s %9s %7s %7s %9s %7s %7s %8s %11s'
    # shellcheck disable=SC2059
    rep "$(printf "$QCOLS" reader "cold" MiB/s "x base" "warm" MiB/s "x base" writes "write time")"
    qb=$(mibps "$SIZE" "${Q[base]}") qw=$(mibps "$SIZE" "${Q[base.warm]}")
    # shellcheck disable=SC2059
    rep "$(printf "$QCOLS" "qemu: raw source (base)" "$(secs "${Q[base]}")" "$qb" "" "$(secs "${Q[base.warm]}")" "$qw" "" "" "")"
    for c in "${QCONFIGS[@]}"; do
        [[ -n ${Q[$c.write]:-} ]] || continue
        # shellcheck disable=SC2059
        rep "$(printf "$QCOLS" "qemu: qcow2, ${CLABEL[$c]%, lz4}" "$(secs "${Q[$c]}")" "$(mibps "$SIZE" "${Q[$c]}")" \
            "$(ratio "$(mibps "$SIZE" "${Q[$c]}")" "$qb")" "$(secs "${Q[$c.warm]}")" "$(mibps "$SIZE" "${Q[$c.warm]}")" \
            "$(ratio "$(mibps "$SIZE" "${Q[$c.warm]}")" "$qw")" "${Q[$c.writes]}" "$(secs "${Q[$c.write]}")")"
    done
    rep ""
elif [[ -n $QEMU_NOTE ]]; then
    rep "3. qemu: $QEMU_NOTE"
    rep ""
fi

rep "SUMMARY. (c)/(b): MiB/s of a view over the overlay / the same view without it; 1 = the overlay costs nothing."
SCOLS='  %-48s %10s %10s %10s %10s'
# shellcheck disable=SC2059
rep "$(printf "$SCOLS" "" "random" "" "text" "")"
# shellcheck disable=SC2059
rep "$(printf "$SCOLS" "" cold warm cold warm)"
for key in "${READERS[@]}"; do
    [[ $key == c* ]] || continue
    v=${key#*.} c=${v#*.} v=${v%%.*} base=b.$v label="$v, ${CLABEL[$c]}"
    [[ $key == c4k.* ]] && base=b4k.$v label+=", 4 KiB requests"
    line=()
    for k in random text; do
        line+=("$(ratio "$(mibps "${BYTES[$k.$key]:-}" "${T[$k.$key]:-}")" "$(mibps "${BYTES[$k.$base]:-}" "${T[$k.$base]:-}")")")
        line+=("$(ratio "$(mibps "${BYTES[$k.$key]:-}" "${WT[$k.$key]:-}")" "$(mibps "${BYTES[$k.$base]:-}" "${WT[$k.$base]:-}")")")
    done
    # shellcheck disable=SC2059
    rep "$(printf "$SCOLS" "$label" "${line[@]}")"
done
if [[ $QEMU == yes ]]; then
    for c in "${QCONFIGS[@]}"; do
        [[ -n ${Q[$c.write]:-} ]] || continue
        # shellcheck disable=SC2059
        rep "$(printf "$SCOLS" "qemu: qcow2 / raw source, ${CLABEL[$c]%, lz4}" "$(ratio "$(mibps "$SIZE" "${Q[$c]}")" "$(mibps "$SIZE" "${Q[base]}")")" \
            "$(ratio "$(mibps "$SIZE" "${Q[$c.warm]}")" "$(mibps "$SIZE" "${Q[base.warm]}")")" "" "")"
    done
fi
for n in "${NOTES[@]}"; do rep "NOTE: $n"; done
rep "logs: $LOGDIR"

cat "$REPORT"
mkdir -p "$(dirname "$OUT")" && cp "$REPORT" "$OUT" && echo "report written to $OUT" >&2

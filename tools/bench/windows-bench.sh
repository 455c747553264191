#!/usr/bin/env bash
# Benchmark of Windows conversion: the time from adding a Windows disk to a
# fixed-up disk for KVM, side by side in one run on one machine, on the
# Windows-like disks of the integration tests (tests/integration/
# windows_image.sh: Server 2008 R2, 2016 and 2022, 1 GiB sparse, hives and
# driver files but nothing that boots):
#   1. p2vfs:   p2vctl add NAME IMAGE; until info.json in the mount is
#               inspected; p2vctl fixups apply NAME --profile kvm (win2016
#               with a fake virtio-win tree, --drivers); until NAME/kvm.qcow2
#               is in the mount and its first MiB reads;
#   2. manual:  what one does without p2vfs, given the same edits:
#               qemu-img convert of the source to a new file (raw, losetup
#               -o; or qcow2 and qemu-nbd --connect when the nbd module is
#               loaded), ntfs-3g mount of the copy's system partition,
#               hivexregedit --merge of .reg files holding every registry
#               edit of p2vfs's plan (p2vctl --json fixups plan), the plan's
#               file copies, unmount (and for the raw copy, qemu-img
#               convert -O qcow2 of it: the disk p2vfs shows);
#   3. virt-v2v -i disk IMAGE -o local -of qcow2, once per disk, under a
#               timeout: it is expected to refuse disks that are not real
#               Windows; its error is then reported as "not comparable".
# Both results of the first round are checked (untimed): their hives, exported
# by hivexregedit, differ from the source's by exactly the plan
# (tests/integration/regdiff.py), and copied files are the driver tree's.
# Not part of the test suite.
# Run as root:  bash tools/bench/windows-bench.sh [--runs N] [--machines LIST]
# See tools/bench/README.md ("Windows") for what each figure means.
set -uo pipefail
export LC_ALL=C # '.' as the decimal point, also in $EPOCHREALTIME

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tools/bench/options.sh
source "$SCRIPT_DIR/options.sh" # bench_option: --daemon, --ctl, --out, --cache-dir, --label
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)

RUNS=5
MACHINE_LIST=win2008r2,win2016,win2022
PROFILE=kvm
V2V=auto
V2V_TIMEOUT=900
V2V_ABSENT=""
OUT=""
CACHE=/var/tmp/p2vfs-bench
DAEMON="${P2VFSD:-$REPO/build/fsd/p2vfsd}"
CTL_BIN=""
LABEL=""

usage() {
    cat <<EOF
Usage: bash tools/bench/windows-bench.sh [OPTIONS]   (as root)

  --runs N          runs of the p2vfs and manual routes on every disk; each figure
                    is the median (default $RUNS)
  --machines LIST   the disks, from win2008r2, win2016, win2022 (default $MACHINE_LIST)
  --no-v2v          do not run virt-v2v (by default it runs once per disk when
                    installed)
  --v2v-timeout S   seconds virt-v2v may take per disk (default $V2V_TIMEOUT)
  --daemon PATH     the p2vfsd binary (default: \$P2VFSD, else build/fsd/p2vfsd of
                    this tree)
  --ctl PATH        the p2vctl binary (default: tools/p2vctl of the daemon's build)
  --out FILE        also write the report to FILE
                    (default: $CACHE/windows-results-DATE.txt)
  --cache-dir DIR   where the disks are copied and the copies written (default $CACHE)
  --label TEXT      a note on the daemon build, printed in the report
  -h, --help        this text

Needs qemu-img and qemu-nbd (qemu-utils), dbus-daemon, fusermount3 (fuse3),
ntfs-3g, hivexregedit (libwin-hivex-perl), losetup (mount), sfdisk (fdisk),
python3, timeout (coreutils) and /usr/bin/time (time); to build the disks
(once, cached in \${P2VFS_FIXTURES:-/var/tmp/p2vfs-fixtures}) also mkntfs
(ntfs-3g), mkfs.vfat (dosfstools), mmd and mcopy (mtools) and perl; virt-v2v
if it is to run (LIBGUESTFS_BACKEND=direct, TCG). Installs nothing. Drops the
page cache of the whole machine (echo 3 > /proc/sys/vm/drop_caches) before
every run.
EOF
}

while (($#)); do
    case $1 in
        --runs) RUNS=${2:-}; shift 2 ;;
        --runs=*) RUNS=${1#*=}; shift ;;
        --machines) MACHINE_LIST=${2:-}; shift 2 ;;
        --machines=*) MACHINE_LIST=${1#*=}; shift ;;
        --no-v2v) V2V=no; shift ;;
        --v2v-timeout) V2V_TIMEOUT=${2:-}; shift 2 ;;
        --v2v-timeout=*) V2V_TIMEOUT=${1#*=}; shift ;;
        -h | --help) usage; exit 0 ;;
        *)
            bench_option "$@" || { echo "windows-bench.sh: unknown argument: $1 (see --help)" >&2; exit 2; }
            shift "$BENCH_SHIFT"
            ;;
    esac
done

die() { echo "windows-bench.sh: $*" >&2; exit 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs wants a positive number"
[[ $V2V_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "--v2v-timeout wants a positive number of seconds"
IFS=, read -r -a MACHINES <<<"$MACHINE_LIST"
((${#MACHINES[@]})) || die "--machines is empty"
for m in "${MACHINES[@]}"; do
    case $m in win2008r2 | win2016 | win2022) ;; *) die "--machines: unknown disk '$m' (win2008r2, win2016, win2022)" ;; esac
done
[[ $EUID -eq 0 ]] || die "run as root (FUSE and ntfs-3g mounts, loop devices, drop_caches)"
[[ -c /dev/fuse ]] || die "/dev/fuse is missing"
[[ $CACHE != *[[:space:]]* ]] || die "--cache-dir must not contain spaces"
[[ -n $CTL_BIN ]] || CTL_BIN="$(dirname "$DAEMON")/../tools/p2vctl"

# ---------------------------------------------------------------- tools
missing=()
need() { # need COMMAND PACKAGE
    if [[ $1 == /* ]]; then [[ -x $1 ]] || missing+=("$1 (package $2)")
    else command -v "$1" >/dev/null 2>&1 || missing+=("$1 (package $2)"); fi
}
need qemu-img qemu-utils
need qemu-nbd qemu-utils
need dbus-daemon dbus-daemon
need fusermount3 fuse3
need ntfs-3g ntfs-3g
need hivexregedit libwin-hivex-perl
need losetup mount
need sfdisk fdisk
need python3 python3
need timeout coreutils
need /usr/bin/time time
need mountpoint util-linux
need awk mawk
if ((${#missing[@]})); then
    echo "windows-bench.sh: missing tools:" >&2
    printf '  %s\n' "${missing[@]}" >&2
    pkgs=$(printf '%s\n' "${missing[@]}" | sed -n 's/.*(package \(.*\))/\1/p' | sort -u | tr '\n' ' ')
    echo "install them with: apt-get install $pkgs" >&2
    exit 2
fi
if [[ $V2V == auto ]]; then
    V2V=no
    command -v virt-v2v >/dev/null 2>&1 && V2V=yes
    V2V_ABSENT=$([[ $V2V == no ]] && echo "virt-v2v is not installed")
fi
[[ -x $DAEMON ]] || die "no p2vfsd at $DAEMON; build it with:
  cmake -S $REPO -B $REPO/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DP2VFS_TESTS=OFF && ninja -C $REPO/build"
[[ -x $CTL_BIN ]] || die "no p2vctl at $CTL_BIN (--ctl names it)"

# ---------------------------------------------------------------- state, cleanup
ME=windows-bench.sh
# shellcheck source=tools/bench/lib.sh
source "$SCRIPT_DIR/lib.sh" # cleanup at exit: PIDS killed, MOUNTS unmounted, WORK removed
bench_workspace windows wrun
# shellcheck source=tests/integration/windows_image.sh
source "$REPO/tests/integration/windows_image.sh"
REGDIFF="$REPO/tests/integration/regdiff.py"
[[ -f $REGDIFF ]] || die "no $REGDIFF"

# The manual route's loop devices, ntfs-3g mounts and NBD device: undone at
# exit, before lib.sh's cleanup (mounts first, then their devices).
NTFS_MNTS=()
LOOPS=()
NBD_DEV=""
NBD_CONNECTED=no
MNT=""
manual_cleanup() {
    local d l
    for d in "${NTFS_MNTS[@]}"; do
        mounted "$d" && { umount "$d" 2>/dev/null || umount -l "$d" 2>/dev/null; }
    done
    for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
    [[ $NBD_CONNECTED == yes ]] && qemu-nbd --disconnect "$NBD_DEV" >/dev/null 2>&1
    NTFS_MNTS=() LOOPS=() NBD_CONNECTED=no NTFS_LOOP=""
}
stop_daemon_first() {
    local rc=$?
    manual_cleanup
    stop_p2vfsd "$MNT"
    (exit "$rc")
    cleanup
}
trap stop_daemon_first EXIT

mib() { isnum "${1:-}" && awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }' || echo "-"; }
size_h() { isnum "${1:-}" && awk -v b="$1" 'BEGIN { if (b >= 1073741824) printf "%.2f GiB", b / 1073741824; else printf "%.1f MiB", b / 1048576 }' || echo "-"; }
span() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", b - a }'; }
ratio() { isnum "${1:-}" && isnum "${2:-}" && awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }' || echo "-"; }
max_of() { printf '%s\n' "$@" | sort -g | tail -n 1; }
# ms S: "0.043 s" below a second (the figures here are tens of milliseconds), else as secs
ms() {
    if isnum "${1:-}" && awk -v s="$1" 'BEGIN { exit !(s < 1) }'; then
        awk -v s="$1" 'BEGIN { printf "%.3f s", s }'
    else
        secs "${1:-}"
    fi
}
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
du_bytes() { du -s -B1 "$1" 2>/dev/null | awk '{ print $1 }'; }
# 1-minute load average, for the report
load1() { local l _; read -r l _ </proc/loadavg; echo "$l"; }
# nap SECONDS: a sleep without a fork (a read that times out on a pipe that
# never delivers), so that polls every 2 ms cost next to nothing
exec {NAP_FD}<> <(:)
nap() { read -r -t "$1" -u "$NAP_FD" || :; }

# ---------------------------------------------------------------- helpers (python)
# plan2reg.py PLAN OUTDIR: OUTDIR/HIVE.reg for every hive the plan edits
# (hivexregedit --merge input: every key made, every value set to the plan's
# "after" right-hand side, every value removed as "name"=-, every key
# removed as [-key]; the parents of a key first, as sections of their own,
# since the merge makes no missing parents), OUTDIR/hives (their names) and
# OUTDIR/copies.tsv (host file TAB guest path of every file the plan copies).
cat >"$WORK/plan2reg.py" <<'PY'
import json, os, sys

plan_path, out = sys.argv[1:]
plan = json.load(open(plan_path))
if plan.get("refusals"):
    sys.exit("the plan has refusals: %r" % plan["refusals"])


def esc(s):
    return s.replace("\\", "\\\\").replace('"', '\\"')


hives = {}  # hive -> {key lower: {"name", "lines", "delete"}}, in order
copies = []
edits = 0
for step in plan.get("steps", []):
    for e in step.get("edits") or []:
        if e.get("kind") != "copy" or e.get("after") is None:
            sys.exit("step %s: a %s edit of %s (only copies are supported)"
                     % (step.get("name"), e.get("kind"), e.get("path")))
        copies.append((e["after"], e["path"]))
    for r in step.get("registry") or []:
        edits += 1
        keys = hives.setdefault(r["hive"], {})
        parts = [p for p in r["key"].split("\\") if p]
        for i in range(1, len(parts) + 1):
            sub = "\\".join(parts[:i])
            keys.setdefault(sub.lower(), {"name": sub, "lines": [], "delete": False})
        entry = keys["\\".join(parts).lower()] if parts else keys.setdefault(
            "", {"name": "", "lines": [], "delete": False})
        value = r.get("value")
        if value is None:
            if r.get("after") == "(key)":
                pass  # made: its section makes it
            elif r.get("after") is None and r.get("before") == "(key)":
                entry["delete"] = True
            else:
                sys.exit("unexpected key edit: %r" % r)
        else:
            name = "@" if value == "" else '"%s"' % esc(value)
            rhs = "-" if r.get("after") is None else r["after"]
            entry["lines"].append("%s=%s" % (name, rhs))
os.makedirs(out, exist_ok=True)
for hive, keys in hives.items():
    with open(os.path.join(out, hive + ".reg"), "w") as f:
        f.write("Windows Registry Editor Version 5.00\n\n")
        for k in keys.values():
            if k["delete"]:
                f.write("[-\\%s]\n\n" % k["name"])
                continue
            f.write("[\\%s]\n" % k["name"])
            for line in k["lines"]:
                f.write(line + "\n")
            f.write("\n")
with open(os.path.join(out, "hives"), "w") as f:
    f.write("".join(h + "\n" for h in hives))
with open(os.path.join(out, "copies.tsv"), "w") as f:
    f.write("".join("%s\t%s\n" % c for c in copies))
print("%d registry edits in %s, %d file copies" % (edits, " ".join(hives) or "no hive", len(copies)))
PY

# resolve.py ROOT WINPATH...: each Windows path (\Windows\System32\..., a
# drive letter dropped) as a path under ROOT (an ntfs-3g mount, which is
# case-sensitive), each existing component in the case it has there, the
# missing ones as given.
cat >"$WORK/resolve.py" <<'PY'
import os, sys

root = sys.argv[1]
for w in sys.argv[2:]:
    if len(w) > 1 and w[1] == ":":
        w = w[2:]
    cur, rel = root, []
    for part in [p for p in w.split("\\") if p]:
        found = None
        if os.path.isdir(cur):
            for entry in os.listdir(cur):
                if entry.lower() == part.lower():
                    found = entry
                    break
        rel.append(found or part)
        cur = os.path.join(cur, found or part)
    print("/".join(rel))
PY

# json_get FILE EXPR: a value of the JSON in FILE (EXPR on j, python)
json_get() { python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }

# ---------------------------------------------------------------- ntfs-3g mounts
# ntfs_mount FILE_OR_DEVICE OFFSET SIZE DIR [ro]: the range through a loop
# device (NTFS_LOOP), mounted by ntfs-3g on DIR.
NTFS_LOOP=""
ntfs_mount() {
    local src=$1 off=$2 size=$3 dir=$4 ro=${5:-} lo
    local -a lflags=(-o "$off" --sizelimit "$size") nflags=()
    [[ $ro == ro ]] && { lflags+=(-r); nflags=(-o ro); }
    lo=$(losetup -f --show "${lflags[@]}" "$src") || return 1
    LOOPS+=("$lo")
    NTFS_LOOP=$lo
    mkdir -p "$dir"
    NTFS_MNTS+=("$dir")
    ntfs-3g "${nflags[@]}" "$lo" "$dir"
}
# ntfs_umount DIR: unmounts (umount of a fuseblk mount returns once ntfs-3g
# has let go of the volume) and detaches the loop device.
ntfs_umount() {
    local dir=$1 keep=() d l
    umount "$dir" || return 1
    losetup -d "$NTFS_LOOP" || return 1
    for d in "${NTFS_MNTS[@]}"; do [[ $d == "$dir" ]] || keep+=("$d"); done
    NTFS_MNTS=("${keep[@]}")
    keep=()
    for l in "${LOOPS[@]}"; do [[ $l == "$NTFS_LOOP" ]] || keep+=("$l"); done
    LOOPS=("${keep[@]}")
    NTFS_LOOP=""
}

# ---------------------------------------------------------------- the manual route's copy
# Without the nbd module a qcow2 copy cannot be mounted: the copy is raw,
# reached through losetup -o, and converted to qcow2 after the edits. The
# module is used if it is loaded (the script loads no kernel module itself).
NBD=no
if [[ -e /sys/module/nbd ]]; then
    for d in /sys/block/nbd*; do
        [[ -e $d/size ]] || continue
        [[ $(<"$d/size") == 0 && ! -e $d/pid ]] || continue
        NBD_DEV=/dev/${d##*/}
        NBD=yes
        break
    done
fi
if [[ $NBD == yes ]]; then
    MANUAL_ROUTE="qemu-img convert -O qcow2, qemu-nbd --connect $NBD_DEV, losetup -o, ntfs-3g, hivexregedit --merge, umount"
else
    MANUAL_ROUTE="qemu-img convert -O raw, losetup -o, ntfs-3g, hivexregedit --merge, umount, then qemu-img convert -O qcow2 (nbd module not loaded: no qemu-nbd --connect)"
fi

# ---------------------------------------------------------------- the disks
# A fake virtio-win tree for win2016, as tests/integration/test_windows_fixups.sh
# makes it (DRIVER/OS/ARCH/).
DRIVERS="$WORK/virtio-win"
mkdir -p "$DRIVERS/viostor/2k16/amd64"
perl -e 'print "MZ", substr("viostor 2k16 amd64 test driver " x 400, 0, 10001)' \
    >"$DRIVERS/viostor/2k16/amd64/viostor.sys"
# shellcheck disable=SC2016 # $WINDOWS NT$ is INF syntax
printf '; viostor.inf (p2vfs test)\r\n[Version]\r\nSignature="$WINDOWS NT$"\r\nClass=SCSIAdapter\r\n' \
    >"$DRIVERS/viostor/2k16/amd64/viostor.inf"
perl -e 'print map { chr(($_ * 7) & 0xff) } 0 .. 2047' >"$DRIVERS/viostor/2k16/amd64/viostor.cat"
drivers_args() { [[ $1 == win2016 ]] && echo "--drivers $DRIVERS"; }

declare -A SUM SPART SOFF SSIZE SYSROOT IMG_ALLOC
T_RUN=$(now)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for m in "${MACHINES[@]}"; do
    progress "disk $m: copying it from the fixture cache (building it first if needed)"
    windows_image "$m" "$WORK/$m.img" 2>>"$LOG" || die "cannot make the $m disk; see $LOG"
    SUM[$m]=$(md5sum <"$WORK/$m.img" | cut -d' ' -f1)
    IMG_ALLOC[$m]=$(du_bytes "$WORK/$m.img")
done

# The plans and the sources' hives, from one daemon with every disk (untimed).
progress "plans: p2vctl --json fixups plan NAME --profile $PROFILE of every disk"
start_bus
MNT="$WORK/mnt.prep"
start_p2vfsd "$MNT" "$WORK/state.prep" "$LOGDIR/p2vfsd.prep.log"
# wait_inspected FILE TIMEOUT: info.json is there and no longer "inspecting"
wait_inspected() {
    local f=$1 end=$((${EPOCHREALTIME/./} + $2 * 1000000)) text
    while :; do
        text=""
        [[ -f $f ]] && IFS= read -r -d '' text <"$f"
        [[ -n $text && $text != *'"state": "inspecting"'* ]] && return 0
        ((${EPOCHREALTIME/./} < end)) || return 1
        nap 0.002
    done
}
for m in "${MACHINES[@]}"; do
    ctl add "$m" "$WORK/$m.img" >>"$LOG" 2>&1 || die "p2vctl add $m failed; see $LOG"
done
for m in "${MACHINES[@]}"; do
    wait_inspected "$MNT/$m/info.json" 120 || die "$m: not inspected within 120 s"
    cp "$MNT/$m/info.json" "$LOGDIR/info.$m.json"
    # shellcheck disable=SC2046 # --drivers DIR or nothing
    ctl --json fixups plan "$m" --profile "$PROFILE" $(drivers_args "$m") >"$LOGDIR/plan.$m.json" 2>>"$LOG" ||
        die "p2vctl fixups plan $m failed; see $LOG"
    SPART[$m]=$(json_get "$LOGDIR/info.$m.json" 'j["windows"]["system_partition"]') || die "$m: no system partition in info.json"
    SYSROOT[$m]=$(json_get "$LOGDIR/info.$m.json" 'j["windows"]["system_root"]')
    SOFF[$m]=$(windows_partition_offset "$WORK/$m.img" "${SPART[$m]}") || die "$m: no partition ${SPART[$m]}"
    SSIZE[$m]=$(windows_partition_size "$WORK/$m.img" "${SPART[$m]}")
    python3 "$WORK/plan2reg.py" "$LOGDIR/plan.$m.json" "$WORK/reg.$m" >"$WORK/reg.$m.summary" 2>>"$LOG" ||
        die "$m: cannot make .reg files of the plan; see $LOG"
    cp -r "$WORK/reg.$m" "$LOGDIR/reg.$m"
    logonly "$m: system partition ${SPART[$m]} at ${SOFF[$m]} (${SSIZE[$m]} bytes), root ${SYSROOT[$m]}; $(cat "$WORK/reg.$m.summary")"
done
stop_p2vfsd "$MNT"
MNT=""

# The source's hives (for the checks), and the paths on the volume of the
# hives and of the files the plan copies, as ntfs-3g names them.
for m in "${MACHINES[@]}"; do
    d="$WORK/ntfs.src"
    ntfs_mount "$WORK/$m.img" "${SOFF[$m]}" "${SSIZE[$m]}" "$d" ro || die "$m: ntfs-3g cannot mount partition ${SPART[$m]}"
    mkdir -p "$WORK/before.$m"
    : >"$WORK/reg.$m/hives.tsv"
    while read -r hive; do
        rel=$(python3 "$WORK/resolve.py" "$d" "${SYSROOT[$m]}\\System32\\config\\$hive")
        [[ -f $d/$rel ]] || die "$m: no hive $rel on partition ${SPART[$m]}"
        printf '%s\t%s\n' "$hive" "$rel" >>"$WORK/reg.$m/hives.tsv"
    done <"$WORK/reg.$m/hives"
    for hive in SYSTEM SOFTWARE; do
        rel=$(python3 "$WORK/resolve.py" "$d" "${SYSROOT[$m]}\\System32\\config\\$hive")
        hivexregedit --export "$d/$rel" "\\" >"$WORK/before.$m/$hive.reg" || die "$m: cannot export $hive"
    done
    : >"$WORK/reg.$m/copies.rel"
    while IFS=$'\t' read -r host guest; do
        printf '%s\t%s\n' "$host" "$(python3 "$WORK/resolve.py" "$d" "$guest")" >>"$WORK/reg.$m/copies.rel"
    done <"$WORK/reg.$m/copies.tsv"
    ntfs_umount "$d" || die "cannot unmount $d"
done

# ---------------------------------------------------------------- checks (untimed)
declare -A CHECK
# check_result KEY MACHINE FILE FORMAT: FILE's hives differ from the source's
# by exactly the plan, and the files the plan copies are the host's.
check_result() {
    local key=$1 m=$2 file=$3 fmt=$4 raw="$WORK/out/check.raw" d="$WORK/ntfs.check" after="$LOGDIR/after.$1" hive host rel bad=""
    rm -f "$raw"
    if ! qemu-img convert -f "$fmt" -O raw "$file" "$raw" >>"$LOG" 2>&1; then
        CHECK[$key]="WRONG: qemu-img convert of $(basename "$file") failed"
        return
    fi
    if ! ntfs_mount "$raw" "${SOFF[$m]}" "${SSIZE[$m]}" "$d" ro >>"$LOG" 2>&1; then
        CHECK[$key]="WRONG: ntfs-3g cannot mount partition ${SPART[$m]}"
        manual_cleanup
        rm -f "$raw"
        return
    fi
    mkdir -p "$after"
    for hive in SYSTEM SOFTWARE; do
        rel=$(python3 "$WORK/resolve.py" "$d" "${SYSROOT[$m]}\\System32\\config\\$hive")
        hivexregedit --export "$d/$rel" "\\" >"$after/$hive.reg" 2>>"$LOG" || bad+=" cannot export $hive;"
    done
    while IFS=$'\t' read -r host rel; do
        cmp -s "$host" "$d/$rel" || bad+=" $rel is not $(basename "$host");"
    done <"$WORK/reg.$m/copies.rel"
    ntfs_umount "$d" >>"$LOG" 2>&1 || manual_cleanup
    rm -f "$raw"
    if python3 "$REGDIFF" "$LOGDIR/plan.$m.json" "$WORK/before.$m" "$after" >"$LOGDIR/regdiff.$key.txt" 2>&1 && [[ -z $bad ]]; then
        CHECK[$key]=ok
        logonly "  $key: check: $(tail -n 1 "$LOGDIR/regdiff.$key.txt"); $(wc -l <"$WORK/reg.$m/copies.rel") copied file(s) identical"
    else
        CHECK[$key]="WRONG:${bad} $(tail -n 1 "$LOGDIR/regdiff.$key.txt")"
        progress "  $key: check: ${CHECK[$key]} (see $LOGDIR/regdiff.$key.txt)"
    fi
}

# ---------------------------------------------------------------- measurements
declare -A T      # T[KEY]: "S S ..." per run; keys MACHINE.p2v.{inspect,apply,view,total}, MACHINE.man.{conv,mount,edit,umount,edited,qcow2,total}
declare -A HWM    # HWM[MACHINE]: p2vfsd VmHWM (KiB) at the end of each run
declare -A ONDISK # ONDISK[MACHINE.p2v|man]: bytes
declare -A FAILED # FAILED[MACHINE.SIDE]: why runs failed
LOADS=()
add_t() { T[$1]+="$2 "; }

# wait_view FILE TIMEOUT: FILE is in the mount and its first MiB reads
wait_view() {
    local f=$1 end=$((${EPOCHREALTIME/./} + $2 * 1000000)) n
    while :; do
        if [[ -f $f ]]; then
            n=$(head -c 1048576 "$f" 2>/dev/null | wc -c)
            [[ $n == 1048576 ]] && return 0
        fi
        ((${EPOCHREALTIME/./} < end)) || return 1
        nap 0.002
    done
}

# run_p2v MACHINE RUN: a fresh daemon (a second apply over the same overlay
# would find its fixups made), then add, inspected, apply, the view readable.
run_p2v() {
    local m=$1 n=$2 t0 t1 t2 t3 rc=0 why="" hwm state="$WORK/state.$1.$2"
    MNT="$WORK/mnt.$m.$n"
    start_p2vfsd "$MNT" "$state" "$LOGDIR/p2vfsd.$m.$n.log"
    drop_caches
    LOADS+=("$(load1)")
    t0=$EPOCHREALTIME
    ctl add "$m" "$WORK/$m.img" >>"$LOG" 2>&1 || { rc=$?; why="p2vctl add failed (status $rc)"; }
    if [[ -z $why ]] && ! wait_inspected "$MNT/$m/info.json" 120; then why="not inspected within 120 s"; fi
    t1=$EPOCHREALTIME
    if [[ -z $why ]]; then
        # shellcheck disable=SC2046 # --drivers DIR or nothing
        ctl fixups apply "$m" --profile "$PROFILE" $(drivers_args "$m") >>"$LOG" 2>&1 ||
            { rc=$?; why="p2vctl fixups apply failed (status $rc): $(tail -n 1 "$LOG")"; }
    fi
    t2=$EPOCHREALTIME
    if [[ -z $why ]] && ! wait_view "$MNT/$m/$PROFILE.qcow2" 60; then why="no readable $m/$PROFILE.qcow2 within 60 s"; fi
    t3=$EPOCHREALTIME
    hwm=$(vm "$DPID" VmHWM)
    if [[ -n $why ]]; then
        FAILED[$m.p2v]+="run $n: $why; "
        progress "  $m p2vfs run $n: $why; see $LOG"
    else
        add_t "$m.p2v.inspect" "$(span "$t0" "$t1")"
        add_t "$m.p2v.apply" "$(span "$t1" "$t2")"
        add_t "$m.p2v.view" "$(span "$t2" "$t3")"
        add_t "$m.p2v.total" "$(span "$t0" "$t3")"
        [[ -n $hwm ]] && HWM[$m]+="$hwm "
        progress "  $m p2vfs run $n: $(ms "$(span "$t0" "$t3")") (add to inspected $(ms "$(span "$t0" "$t1")"), apply $(ms "$(span "$t1" "$t2")"), view $(ms "$(span "$t2" "$t3")")), VmHWM ${hwm:-?} KiB"
        [[ -z ${CHECK[$m.p2v]:-} ]] && check_result "$m.p2v" "$m" "$MNT/$m/$PROFILE.qcow2" qcow2
    fi
    stop_p2vfsd "$MNT"
    MNT=""
    [[ -z $why ]] && ONDISK[$m.p2v]=$(du_bytes "$state")
    rm -rf "$state"
}

# run_manual MACHINE RUN
run_manual() {
    local m=$1 n=$2 t0 tc tm te tu tq why="" copy q="$WORK/out/$1.manual.qcow2" d="$WORK/ntfs.manual" base hive rel host i
    copy="$WORK/out/$m.manual.raw"
    [[ $NBD == yes ]] && copy=$q
    rm -f "$copy" "$q"
    drop_caches
    LOADS+=("$(load1)")
    logonly "$m manual run $n: $MANUAL_ROUTE"
    t0=$EPOCHREALTIME
    if [[ $NBD == yes ]]; then
        qemu-img convert -f raw -O qcow2 "$WORK/$m.img" "$copy" >>"$LOG" 2>&1 || why="qemu-img convert failed"
        if [[ -z $why ]]; then
            if qemu-nbd --connect="$NBD_DEV" -f qcow2 "$copy" >>"$LOG" 2>&1; then
                NBD_CONNECTED=yes
                base=$NBD_DEV
                # until the kernel knows the device's size
                for ((i = 0; i < 500; i++)); do
                    [[ $(<"/sys/block/${NBD_DEV#/dev/}/size") != 0 ]] && break
                    nap 0.01
                done
            else
                why="qemu-nbd --connect failed"
            fi
        fi
    else
        qemu-img convert -f raw -O raw "$WORK/$m.img" "$copy" >>"$LOG" 2>&1 || why="qemu-img convert failed"
        base=$copy
    fi
    tc=$EPOCHREALTIME
    [[ -z $why ]] && { ntfs_mount "$base" "${SOFF[$m]}" "${SSIZE[$m]}" "$d" >>"$LOG" 2>&1 || why="ntfs-3g cannot mount partition ${SPART[$m]} of the copy"; }
    tm=$EPOCHREALTIME
    if [[ -z $why ]]; then
        while IFS=$'\t' read -r hive rel; do
            hivexregedit --merge "$d/$rel" "$WORK/reg.$m/$hive.reg" </dev/null >>"$LOG" 2>&1 ||
                why="hivexregedit --merge of $hive failed"
        done <"$WORK/reg.$m/hives.tsv"
        while IFS=$'\t' read -r host rel; do
            if ! mkdir -p "$(dirname "$d/$rel")" || ! cp "$host" "$d/$rel"; then
                why="cannot copy $host to $rel"
            fi
        done <"$WORK/reg.$m/copies.rel"
    fi
    te=$EPOCHREALTIME
    if [[ -n $NTFS_LOOP ]]; then ntfs_umount "$d" >>"$LOG" 2>&1 || why="cannot unmount the copy"; fi
    if [[ $NBD_CONNECTED == yes ]]; then
        qemu-nbd --disconnect "$NBD_DEV" >>"$LOG" 2>&1 || why="qemu-nbd --disconnect failed"
        NBD_CONNECTED=no
    fi
    tu=$EPOCHREALTIME
    if [[ -z $why && $NBD == no ]]; then
        qemu-img convert -f raw -O qcow2 "$copy" "$q" >>"$LOG" 2>&1 || why="qemu-img convert -O qcow2 of the edited copy failed"
    fi
    tq=$EPOCHREALTIME
    if [[ -n $why ]]; then
        manual_cleanup
        FAILED[$m.man]+="run $n: $why; "
        progress "  $m manual run $n: $why; see $LOG"
        rm -f "$copy" "$q"
        return
    fi
    add_t "$m.man.conv" "$(span "$t0" "$tc")"
    add_t "$m.man.mount" "$(span "$tc" "$tm")"
    add_t "$m.man.edit" "$(span "$tm" "$te")"
    add_t "$m.man.umount" "$(span "$te" "$tu")"
    add_t "$m.man.edited" "$(span "$t0" "$tu")"
    [[ $NBD == no ]] && add_t "$m.man.qcow2" "$(span "$tu" "$tq")"
    add_t "$m.man.total" "$(span "$t0" "$tq")"
    progress "  $m manual run $n: $(ms "$(span "$t0" "$tq")") (convert $(ms "$(span "$t0" "$tc")"), mount $(ms "$(span "$tc" "$tm")"), edit $(ms "$(span "$tm" "$te")"), unmount $(ms "$(span "$te" "$tu")")$([[ $NBD == no ]] && echo ", to qcow2 $(ms "$(span "$tu" "$tq")")"))"
    ONDISK[$m.man]=$(du_bytes "$q")
    [[ -z ${CHECK[$m.man]:-} ]] && check_result "$m.man" "$m" "$q" qcow2
    rm -f "$copy" "$q"
}

# virt-v2v, once per disk; the fake Windows is likely refused.
declare -A V2V_T V2V_WHY V2V_RSS
run_v2v() {
    local m=$1 out="$WORK/v2v.$1" vlog="$LOGDIR/virt-v2v.$1.log" t0 t1 rc=0 err
    local -a envs=(LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg)
    # win2016 gets the fake virtio-win tree, as p2vfs does.
    [[ $m == win2016 ]] && envs+=("VIRTIO_WIN=$DRIVERS")
    rm -rf "$out"
    mkdir -p "$out"
    drop_caches
    progress "  virt-v2v $m: started (up to $V2V_TIMEOUT s; its log: $vlog)"
    logonly "$m: ${envs[*]} timeout $V2V_TIMEOUT virt-v2v -i disk -if raw $WORK/$m.img -o local -os $out -of qcow2 -on $m"
    t0=$EPOCHREALTIME
    env "${envs[@]}" /usr/bin/time -f '%e %M' -o "$WORK/time.v2v.$m" \
        timeout --kill-after=30 "$V2V_TIMEOUT" \
        virt-v2v -i disk -if raw "$WORK/$m.img" -o local -os "$out" -of qcow2 -on "$m" \
        </dev/null >"$vlog" 2>&1 || rc=$?
    t1=$EPOCHREALTIME
    V2V_RSS[$m]=$(awk 'END { print $2 }' "$WORK/time.v2v.$m" 2>/dev/null)
    if ((rc == 0)) && [[ -f $out/$m-sda ]]; then
        V2V_T[$m]=$(span "$t0" "$t1")
        progress "  virt-v2v $m: converted in $(secs "${V2V_T[$m]}")"
    else
        # Its error message, continuation lines joined, up to the blank line.
        err=$(awk '/^virt-v2v: error:/ { on = 1 } on && /^[[:space:]]*$/ { exit } on { printf "%s%s", sep, $0; sep = " " }' "$vlog" | tr -s ' ')
        if ((rc == 124 || rc == 137)); then
            err="timed out after $V2V_TIMEOUT s (status $rc)${err:+: $err}"
        elif [[ -z $err ]]; then
            err="status $rc, no error line: $(grep -a -v '^[[:space:]]*$' "$vlog" | tail -n 1)"
        fi
        V2V_WHY[$m]="$err (after $(ms "$(span "$t0" "$t1")"))"
        progress "  virt-v2v $m: not comparable: ${V2V_WHY[$m]}"
    fi
    rm -rf "$out"
}

# ---------------------------------------------------------------- run
progress "$RUNS round(s); each runs p2vfs and the manual route on every disk (the order alternating)"
for ((r = 1; r <= RUNS; r++)); do
    progress "round $r of $RUNS"
    for m in "${MACHINES[@]}"; do
        if ((r % 2)); then
            run_p2v "$m" "$r"
            run_manual "$m" "$r"
        else
            run_manual "$m" "$r"
            run_p2v "$m" "$r"
        fi
    done
done
if [[ $V2V == yes ]]; then
    progress "virt-v2v: once per disk"
    for m in "${MACHINES[@]}"; do run_v2v "$m"; done
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
T_TOTAL=$(elapsed "$T_RUN")
declare -A SRC_OK
for m in "${MACHINES[@]}"; do
    [[ $(md5sum <"$WORK/$m.img" | cut -d' ' -f1) == "${SUM[$m]}" ]] && SRC_OK[$m]=unchanged || SRC_OK[$m]=CHANGED
done

# ---------------------------------------------------------------- report
med() { # med KEY: median of T[KEY], or FAIL
    local v=()
    read -r -a v <<<"${T[$1]:-}"
    med_of "${v[@]}"
}
nruns() { local v=(); read -r -a v <<<"${T[$1.total]:-}"; echo "${#v[@]}"; }
CPUS=$(nproc)
MEMG=$(awk '/MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)
OS=$(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")
KVM="no KVM"
grep -qwE 'vmx|svm' /proc/cpuinfo && [[ -c /dev/kvm ]] && KVM="KVM available (virt-v2v forced to TCG all the same)"
DAEMON_INFO="$DAEMON, built $(date -r "$DAEMON" '+%Y-%m-%d %H:%M' 2>/dev/null)"
if git -C "$REPO" rev-parse --short HEAD >/dev/null 2>&1 && [[ $(cd "$(dirname "$DAEMON")/../.." && pwd) == "$REPO" ]]; then
    DAEMON_INFO+=", tree at $(git -C "$REPO" rev-parse --short HEAD)"
    # Local changes count if they are older than the binary (made after it,
    # they are not in it).
    changed=$( (git -C "$REPO" diff --name-only HEAD -- fsd dbus tools/p2vctl.cpp
        git -C "$REPO" ls-files --others --exclude-standard -- fsd dbus) 2>/dev/null)
    if [[ -n $changed ]]; then
        older=no
        while read -r f; do
            [[ -e $REPO/$f && $(stat -c %Y "$REPO/$f") -le $(stat -c %Y "$DAEMON") ]] && older=yes
        done <<<"$changed"
        if [[ $older == yes ]]; then DAEMON_INFO+=" with local changes in fsd/"
        else DAEMON_INFO+=" (local changes in fsd/ made after the build are not in it)"; fi
    fi
    # A binary older than the last commit to the daemon's sources is not that tree.
    last=$(git -C "$REPO" log -1 --format='%ct %h' -- fsd dbus tools/p2vctl.cpp 2>/dev/null)
    if [[ -n $last ]] && (($(stat -c %Y "$DAEMON") < ${last%% *})); then
        DAEMON_INFO+=" (but the binary is older than ${last#* }, which changed its sources)"
    fi
fi
[[ -n $LABEL ]] && DAEMON_INFO+=", $LABEL"
FS=$(df -PT "$CACHE" | awk 'NR == 2 { print $2 " on " $1 }')
LOAD_RANGE=$(printf '%s\n' "${LOADS[@]}" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo "-" hi }')

rep "p2vfs Windows benchmark (add to fixed-up $PROFILE view, against the manual route and virt-v2v), $(date '+%Y-%m-%d %H:%M %Z')"
rep "machine: $CPUS cores, $MEMG GiB RAM, $OS, kernel $(uname -r), $KVM"
rep "p2vfsd: $("$BIN" --version 2>/dev/null | head -n 1); $DAEMON_INFO"
rep "peers: $(qemu-img --version | head -n 1); ntfs-3g $(ntfs-3g --version 2>&1 | awk '/ntfs-3g/ { print $2; exit }'); hivex $(dpkg-query -W -f='${Version}' libwin-hivex-perl 2>/dev/null || echo '?')$([[ $V2V == yes ]] && echo "; $(virt-v2v --version 2>/dev/null | head -n 1) (LIBGUESTFS_BACKEND=direct, TCG)")"
disks=""
for m in "${MACHINES[@]}"; do disks+="$m ($(size_h "${IMG_ALLOC[$m]}") allocated, system partition ${SPART[$m]}, $(sed 's/ in .*,/,/' "$WORK/reg.$m.summary"); ${SRC_OK[$m]}), "; done
rep "disks: 1 GiB sparse raw, tests/integration/windows_image.sh: ${disks%, }; $FS"
rep "manual route: $MANUAL_ROUTE"
rep "figures: median of $RUNS runs, the page cache dropped before every run; 1-min load average at the runs' starts $LOAD_RANGE (before: $LOAD_BEFORE, after: $LOAD_AFTER); whole run ${T_TOTAL%.*} s"
rep ""
rep "p2vfs: add->inspected: from p2vctl add NAME IMAGE to info.json no longer \"inspecting\" (polled every 2 ms);"
rep "  apply: p2vctl fixups apply NAME --profile $PROFILE$([[ " ${MACHINES[*]} " == *" win2016 "* ]] && echo " (win2016: --drivers, a fake virtio-win tree)"), until it returns; view: until"
rep "  NAME/$PROFILE.qcow2 is in the mount and its first MiB reads; total: all three. A fresh p2vfsd per run (not timed)."
rep "  peak RSS: p2vfsd's VmHWM at the end of a run (largest of the runs); on disk: its state directory (the overlay)."
rep "manual: convert: qemu-img convert of the source to a new file; mount: losetup -o of the system partition and"
rep "  ntfs-3g; edit: hivexregedit --merge of one .reg per hive (and the plan's file copies); unmount: umount and"
rep "  losetup -d; edited copy: all these; + qcow2: qemu-img convert -O qcow2 of the edited raw copy; total: to the qcow2."
rep "  The .reg files hold every registry edit of the plan (made from p2vctl --json fixups plan, not timed): the manual"
rep "  route is given what to change. on disk: its qcow2. Neither side syncs its result."
rep "check (first run of each side): qemu-img convert of the result to raw, its hives exported by hivexregedit differ"
rep "  from the source's by exactly the plan (tests/integration/regdiff.py), copied files identical to the tree's."
rep ""
PCOLS='  %-10s %5s %14s %9s %9s %9s %10s %9s  %s'
# shellcheck disable=SC2059
rep "$(printf "$PCOLS" p2vfs runs "add->inspected" apply view total "peak RSS" "on disk" check)"
for m in "${MACHINES[@]}"; do
    # shellcheck disable=SC2086
    rss=$([[ -n ${HWM[$m]:-} ]] && mib "$(max_of ${HWM[$m]})" || echo -)
    # shellcheck disable=SC2059
    rep "$(printf "$PCOLS" "$m" "$(nruns "$m.p2v")/$RUNS" "$(ms "$(med "$m.p2v.inspect")")" "$(ms "$(med "$m.p2v.apply")")" \
        "$(ms "$(med "$m.p2v.view")")" "$(ms "$(med "$m.p2v.total")")" "$rss" "$(size_h "${ONDISK[$m.p2v]:-}")" "${CHECK[$m.p2v]:-FAIL}")"
done
rep ""
MCOLS='  %-10s %5s %9s %9s %9s %9s %12s %9s %9s %9s  %s'
# shellcheck disable=SC2059
rep "$(printf "$MCOLS" manual runs convert mount edit unmount "edited copy" "+ qcow2" total "on disk" check)"
for m in "${MACHINES[@]}"; do
    # shellcheck disable=SC2059
    rep "$(printf "$MCOLS" "$m" "$(nruns "$m.man")/$RUNS" "$(ms "$(med "$m.man.conv")")" "$(ms "$(med "$m.man.mount")")" \
        "$(ms "$(med "$m.man.edit")")" "$(ms "$(med "$m.man.umount")")" "$(ms "$(med "$m.man.edited")")" \
        "$([[ $NBD == no ]] && ms "$(med "$m.man.qcow2")" || echo -)" "$(ms "$(med "$m.man.total")")" \
        "$(size_h "${ONDISK[$m.man]:-}")" "${CHECK[$m.man]:-FAIL}")"
done
rep ""
rep "side by side (medians; ratios: p2vfs's time / the other's, below 1 favours p2vfs):"
SCOLS='  %-10s %12s %13s %15s %14s %17s  %s'
# shellcheck disable=SC2059
rep "$(printf "$SCOLS" disk "p2vfs total" "manual total" "p2vfs / manual" "manual edited" "p2vfs / m. edited" virt-v2v)"
for m in "${MACHINES[@]}"; do
    pt=$(med "$m.p2v.total")
    mt=$(med "$m.man.total")
    me=$(med "$m.man.edited")
    if [[ $V2V == no ]]; then
        vv="not run${V2V_ABSENT:+: $V2V_ABSENT}"
    elif [[ -n ${V2V_T[$m]:-} ]]; then
        vv="$(secs "${V2V_T[$m]}") (p2vfs / virt-v2v $(ratio "$pt" "${V2V_T[$m]}"), peak RSS $(mib "${V2V_RSS[$m]:-}"))"
    else
        vv="not comparable: ${V2V_WHY[$m]:-?}"
    fi
    # shellcheck disable=SC2059
    rep "$(printf "$SCOLS" "$m" "$(ms "$pt")" "$(ms "$mt")" "$(ratio "$pt" "$mt")" "$(ms "$me")" "$(ratio "$pt" "$me")" "$vv")"
done
problems=()
for k in $(printf '%s\n' "${!FAILED[@]}" | sort); do problems+=("$k: ${FAILED[$k]}"); done
for k in $(printf '%s\n' "${!CHECK[@]}" | sort); do [[ ${CHECK[$k]} == ok ]] || problems+=("$k: ${CHECK[$k]}"); done
for m in "${MACHINES[@]}"; do [[ ${SRC_OK[$m]} == CHANGED ]] && problems+=("$m: the source image changed during the run"); done
if ((${#problems[@]})); then
    rep ""
    rep "PROBLEMS:"
    for p in "${problems[@]}"; do rep "  $p"; done
fi
rep ""
rep "every run (seconds):"
for k in $(printf '%s\n' "${!T[@]}" | sort); do rep "  $k: ${T[$k]}"; done
rep "logs: $LOGDIR"

cat "$REPORT"
mkdir -p "$(dirname "$OUT")" && cp "$REPORT" "$OUT" && echo "report written to $OUT" >&2
cp "$REPORT" "$LOGDIR/report.txt"

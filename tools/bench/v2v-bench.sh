#!/usr/bin/env bash
# Benchmark of conversion: the time from a physical machine's disk to a disk
# that boots on KVM, side by side in one run on one machine, on the same
# image (the Debian 12 fixture of tests/integration/debian_image.sh: a real
# system that names its root /dev/cciss/c0d0p1, so it does not boot on
# virtual hardware as it is):
#   1. p2vfs:    p2vctl add pc raw:IMAGE, then p2vctl fixups apply pc
#                --profile kvm, until the command returns and the target's
#                disk (pc/kvm.qcow2, the first of the files it names) is in
#                the mount: the fixups go into the source's overlay, nothing
#                is copied;
#   2. virt-v2v: virt-v2v -i disk IMAGE -o local -os DIR -of qcow2 (libguestfs
#                with its direct backend and TCG), until it exits: it copies
#                the disk and rebuilds the initramfs in its appliance. It
#                cannot convert the fixture as it is: libguestfs does not map
#                /dev/cciss/* fstab names to its own disks ("We don't try to
#                guess mappings for cciss devices", resolve_cciss in
#                daemon/inspect_fs_unix_fstab.ml), so inspection fails to
#                mount the root. So virt-v2v also runs on a copy whose fstab,
#                grub.cfg, /etc/default/grub and resume name /dev/sda1 and
#                /dev/sda2 (as a box with a plain SATA/SAS controller would),
#                which it does convert: that is the figure compared.
# With --boot, both results are then booted under qemu on the controller the
# fixups chose (virtio-blk for kvm; virt-v2v's output on virtio-blk too) to see
# that they come up (tests/integration/qemu_boot.sh).
# Not part of the test suite.
# Run as root:  bash tools/bench/v2v-bench.sh [--boot] [--runs N] [--only p2vfs|v2v]
# See tools/bench/README.md ("Conversion") for what each figure means.
set -uo pipefail
export LC_ALL=C # '.' as the decimal point, also in $EPOCHREALTIME

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tools/bench/options.sh
source "$SCRIPT_DIR/options.sh" # bench_option: --daemon, --ctl, --out, --cache-dir, --label
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)

RUNS=3
V2V_RUNS=1
V2V_INPUTS=as-is,sda
ONLY=""
BOOT=no
BOOT_TIMEOUT=300
IMAGE=""
OUT=""
CACHE=/var/tmp/p2vfs-bench
DAEMON="${P2VFSD:-$REPO/build/fsd/p2vfsd}"
CTL_BIN=""
PROFILE=kvm
LABEL=""
KEEP=no

usage() {
    cat <<EOF
Usage: bash tools/bench/v2v-bench.sh [OPTIONS]   (as root)

  --boot            boot both results under qemu (TCG; virtio-blk, or the controller
                    the fixups chose) and report whether and how fast they reach
                    the guest's boot marker
  --boot-timeout S  seconds a boot may take (default $BOOT_TIMEOUT)
  --runs N          runs of the p2vfs side; its figures are medians (default $RUNS)
  --v2v-runs N      runs of virt-v2v on each input (default $V2V_RUNS; one conversion
                    takes ~20 minutes here)
  --v2v-inputs LIST what virt-v2v converts, from as-is (the image as it is; virt-v2v
                    fails on the fixture's cciss names within a minute) and sda (a
                    copy whose configuration names /dev/sda1, /dev/sda2 instead of
                    the fixture's cciss names) (default $V2V_INPUTS)
  --only SIDE       p2vfs or v2v: run one side only
  --image PATH      the source image (raw); default: the Debian 12 fixture, built
                    or taken from its cache (\$P2VFS_FIXTURES) and copied to --cache-dir
  --profile NAME    p2vctl fixups' target profile (default $PROFILE; virt-v2v's side
                    is always its KVM output)
  --daemon PATH     the p2vfsd binary (default: \$P2VFSD, else build/fsd/p2vfsd of
                    this tree)
  --ctl PATH        the p2vctl binary (default: tools/p2vctl of the daemon's build)
  --out FILE        also write the report to FILE
                    (default: $CACHE/v2v-results-DATE.txt)
  --cache-dir DIR   where the image copy and virt-v2v's output go (default $CACHE)
  --label TEXT      a note on the daemon build, printed in the report
  --keep            keep virt-v2v's output of the first run (its qcow2 and
                    libvirt XML) in the log directory
  -h, --help        this text

Needs qemu-img (qemu-utils), dbus-daemon, fusermount3 (fuse3), /usr/bin/time
(time) for the p2vfs side; virt-v2v (package virt-v2v, which brings
libguestfs and its appliance) for the other; qemu-system-x86_64
(qemu-system-x86) for --boot; and, to build the fixture, what
tests/integration/debian_image.sh needs (debootstrap, grub-common, network
to the Debian mirror). Installs nothing. Drops the page cache of the whole
machine before every run. virt-v2v runs with LIBGUESTFS_BACKEND=direct and
LIBGUESTFS_BACKEND_SETTINGS=force_tcg (no usable KVM here).
EOF
}

while (($#)); do
    case $1 in
        --boot) BOOT=yes; shift ;;
        --keep) KEEP=yes; shift ;;
        --boot-timeout) BOOT_TIMEOUT=${2:-}; shift 2 ;;
        --boot-timeout=*) BOOT_TIMEOUT=${1#*=}; shift ;;
        --runs) RUNS=${2:-}; shift 2 ;;
        --runs=*) RUNS=${1#*=}; shift ;;
        --v2v-runs) V2V_RUNS=${2:-}; shift 2 ;;
        --v2v-runs=*) V2V_RUNS=${1#*=}; shift ;;
        --v2v-inputs) V2V_INPUTS=${2:-}; shift 2 ;;
        --v2v-inputs=*) V2V_INPUTS=${1#*=}; shift ;;
        --only) ONLY=${2:-}; shift 2 ;;
        --only=*) ONLY=${1#*=}; shift ;;
        --image) IMAGE=${2:-}; shift 2 ;;
        --image=*) IMAGE=${1#*=}; shift ;;
        --profile) PROFILE=${2:-}; shift 2 ;;
        --profile=*) PROFILE=${1#*=}; shift ;;
        -h | --help) usage; exit 0 ;;
        *)
            bench_option "$@" || { echo "v2v-bench.sh: unknown argument: $1 (see --help)" >&2; exit 2; }
            shift "$BENCH_SHIFT"
            ;;
    esac
done

die() { echo "v2v-bench.sh: $*" >&2; exit 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs wants a positive number"
[[ $V2V_RUNS =~ ^[1-9][0-9]*$ ]] || die "--v2v-runs wants a positive number"
[[ $BOOT_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "--boot-timeout wants a positive number of seconds"
case $ONLY in "" | p2vfs | v2v) ;; *) die "--only wants p2vfs or v2v" ;; esac
IFS=, read -r -a V2V_IN <<<"$V2V_INPUTS"
((${#V2V_IN[@]})) || die "--v2v-inputs is empty"
for v in "${V2V_IN[@]}"; do [[ $v == as-is || $v == sda ]] || die "--v2v-inputs: unknown input '$v' (as-is, sda)"; done
[[ $EUID -eq 0 ]] || die "run as root (FUSE mount, loop devices, drop_caches)"
[[ $CACHE != *[[:space:]]* ]] || die "--cache-dir must not contain spaces"
[[ -n $CTL_BIN ]] || CTL_BIN="$(dirname "$DAEMON")/../tools/p2vctl"
DO_P2V=yes DO_V2V=yes
[[ $ONLY == v2v ]] && DO_P2V=no
[[ $ONLY == p2vfs ]] && DO_V2V=no
declare -A QEMU_FMT=([raw]=raw [qcow2]=qcow2 [vmdk]=vmdk [vhdx]=vhdx [vhd]=vpc [vdi]=vdi)
# The fixups' controller -> qemu_boot's bus (others: not booted).
declare -A BUS_OF=([virtio-blk]=virtio [virtio-scsi]=scsi [sata]=ahci [ide]=ide)

# ---------------------------------------------------------------- tools
missing=()
need() { # need COMMAND PACKAGE
    if [[ $1 == /* ]]; then [[ -x $1 ]] || missing+=("$1 (package $2)")
    else command -v "$1" >/dev/null 2>&1 || missing+=("$1 (package $2)"); fi
}
need qemu-img qemu-utils
need /usr/bin/time time
need awk mawk
if [[ $DO_P2V == yes ]]; then
    need dbus-daemon dbus-daemon
    need fusermount3 fuse3
fi
need python3 python3
if [[ $DO_V2V == yes ]]; then
    need virt-v2v virt-v2v
    need sfdisk fdisk
    need losetup mount
fi
[[ $BOOT == yes ]] && need qemu-system-x86_64 qemu-system-x86
if ((${#missing[@]})); then
    echo "v2v-bench.sh: missing tools:" >&2
    printf '  %s\n' "${missing[@]}" >&2
    pkgs=$(printf '%s\n' "${missing[@]}" | sed -n 's/.*(package \(.*\))/\1/p' | sort -u | tr '\n' ' ')
    echo "install them with: apt-get install $pkgs" >&2
    exit 2
fi
if [[ $DO_P2V == yes ]]; then
    [[ -x $DAEMON ]] || die "no p2vfsd at $DAEMON; build it with:
  cmake -S $REPO -B $REPO/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DP2VFS_TESTS=OFF && ninja -C $REPO/build
(or --only v2v)"
    [[ -x $CTL_BIN ]] || die "no p2vctl at $CTL_BIN (--ctl names it)"
fi

# ---------------------------------------------------------------- state, cleanup
mkdir -p "$CACHE" || die "cannot create $CACHE"
STAMP=$(date +%Y%m%d-%H%M%S)
[[ -n $OUT ]] || OUT="$CACHE/v2v-results-$STAMP.txt"
WORK=$(mktemp -d "$CACHE/vrun.XXXXXX") || die "cannot create a work directory in $CACHE"
LOGDIR="$CACHE/v2v-logs-$STAMP"
mkdir -p "$LOGDIR" "$WORK/bus"
LOG="$LOGDIR/bench.log"
REPORT="$WORK/report.txt"
: >"$REPORT"
if [[ $DO_P2V == yes ]]; then
    # Private copies, so a rebuild of the tree during the run cannot mix binaries.
    BIN="$WORK/p2vfsd"
    CTL="$WORK/p2vctl"
    cp "$DAEMON" "$BIN" || die "cannot copy $DAEMON"
    cp "$CTL_BIN" "$CTL" || die "cannot copy $CTL_BIN"
fi

# shellcheck disable=SC2034 # lib.sh's messages use it
ME=v2v-bench.sh
# shellcheck source=tools/bench/lib.sh
source "$SCRIPT_DIR/lib.sh" # cleanup at exit: PIDS killed, MOUNTS unmounted, WORK removed
# shellcheck source=tests/integration/qemu_boot.sh
source "$REPO/tests/integration/qemu_boot.sh"

max_of() { printf '%s\n' "$@" | sort -g | tail -n 1; }
mib() { isnum "${1:-}" && awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }' || echo "-"; }
size_h() { isnum "${1:-}" && awk -v b="$1" 'BEGIN { if (b >= 1073741824) printf "%.2f GiB", b / 1073741824; else printf "%.1f MiB", b / 1048576 }' || echo "-"; }
ratio() { isnum "${1:-}" && isnum "${2:-}" && awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf (a / b < 10 ? "%.2f" : "%.0f"), a / b; else print "-" }' || echo "-"; }
span() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", b - a }'; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
du_bytes() { du -s -B1 "$1" 2>/dev/null | awk '{ print $1 }'; }

# ---------------------------------------------------------------- the image
# A private copy: neither side writes its source, but a fixture cache that a
# test suite rebuilds meanwhile must not change under a run.
if [[ -z $IMAGE ]]; then
    # shellcheck source=tests/integration/debian_image.sh
    source "$REPO/tests/integration/debian_image.sh"
    IMAGE="$WORK/debian12.img"
    progress "image: the Debian 12 fixture (building it if its cache is empty: 2-4 minutes)"
    debian_image "$IMAGE" 2>>"$LOG" || die "cannot make the Debian 12 image; see $LOG"
    IMAGE_INFO="Debian 12 fixture (recipe $DEBIAN12_RECIPE): kernel $DEBIAN12_KERNEL, root $DEBIAN12_PHYS_ROOT, $(size_h "$DEBIAN12_IMAGE_SIZE") raw, $(size_h "$(du_bytes "$IMAGE")") allocated"
else
    [[ -f $IMAGE ]] || die "no image $IMAGE"
    IMAGE=$(realpath "$IMAGE")
    IMAGE_INFO="$IMAGE, $(size_h "$(stat -c %s "$IMAGE")") raw, $(size_h "$(du_bytes "$IMAGE")") allocated"
fi
IMAGE_SUM=$(md5sum <"$IMAGE" | cut -d' ' -f1) # neither side may write it

# The sda input of virt-v2v: a copy of the image whose configuration names
# the disk /dev/sda instead of /dev/cciss/c0d0 (in fstab, grub.cfg,
# /etc/default/grub and initramfs-tools' resume), edited through a loop
# device on partition 1 (the fixture's root; --image must have the same
# layout).
SDA_IMAGE=""
SDA_LOOP=""
SDA_MNT=""
sda_cleanup() {
    [[ -n $SDA_MNT ]] && mounted "$SDA_MNT" && { umount "$SDA_MNT" 2>/dev/null || umount -l "$SDA_MNT"; }
    [[ -n $SDA_LOOP ]] && losetup "$SDA_LOOP" >/dev/null 2>&1 && losetup -d "$SDA_LOOP"
    SDA_MNT="" SDA_LOOP=""
}
make_sda_image() {
    local off size f
    SDA_IMAGE="$WORK/debian12-sda.img"
    cp --sparse=always "$IMAGE" "$SDA_IMAGE" || die "cannot copy $IMAGE"
    read -r off size < <(sfdisk -J "$SDA_IMAGE" | python3 -c 'import json, sys
p = json.load(sys.stdin)["partitiontable"]["partitions"][0]
print(p["start"] * 512, p["size"] * 512)') || die "cannot read the partition table of $SDA_IMAGE"
    SDA_LOOP=$(losetup -f --show -o "$off" --sizelimit "$size" "$SDA_IMAGE") || die "losetup failed on $SDA_IMAGE"
    SDA_MNT="$WORK/sda-root"
    mkdir -p "$SDA_MNT"
    mount "$SDA_LOOP" "$SDA_MNT" || { sda_cleanup; die "cannot mount partition 1 of $SDA_IMAGE"; }
    for f in etc/fstab boot/grub/grub.cfg etc/default/grub etc/initramfs-tools/conf.d/resume; do
        [[ -f $SDA_MNT/$f ]] && sed -i 's|/dev/cciss/c0d0p|/dev/sda|g' "$SDA_MNT/$f"
    done
    grep -rl cciss "$SDA_MNT/etc/fstab" "$SDA_MNT/boot/grub/grub.cfg" >/dev/null 2>&1 &&
        { sda_cleanup; die "the sda copy still names cciss devices"; }
    logonly "sda copy: $(grep -h -E '^/dev|root=' "$SDA_MNT/etc/fstab" "$SDA_MNT/boot/grub/grub.cfg" | tr '\n' ';')"
    sda_cleanup
}

# ---------------------------------------------------------------- bus and daemon
MNT=""
# start_daemon N: a daemon with a fresh mount and state directory for run N
# (the fixups of a run stay in its overlay, so every run needs its own).
start_daemon() {
    MNT="$WORK/mnt.$1"
    start_p2vfsd "$MNT" "$WORK/state.$1" "$LOGDIR/p2vfsd.$1.log"
}
stop_daemon() { stop_p2vfsd "$MNT"; }
stop_daemon_first() {
    local rc=$?
    qemu_boot_cleanup
    sda_cleanup
    stop_daemon
    (exit "$rc")
    cleanup
}
trap stop_daemon_first EXIT

# ---------------------------------------------------------------- measurements
declare -A T         # T[p2v.N], T[v2v.N]: seconds to a bootable disk
declare -A PART      # PART[add.N], PART[fixups.N]: the p2vfs steps
declare -A RSS       # peak RSS (KiB): of p2vfsd during the run; of virt-v2v and its children
declare -A OUTSZ     # bytes on disk the result takes
declare -A BOOTED    # BOOTED[p2v], BOOTED[v2v]: the qemu_boot verdict line
declare -A FAILED    # why a run failed

# The p2vfs side, run N: add the source, apply the fixups, the target's
# disk file there.
P2V_DISK=""   # the target's disk of the first run, and its format and bus
P2V_FMT=""
P2V_BUS=""
run_p2v() {
    local n=$1
    local t0 t1 t2 rc=0 before after applied="$LOGDIR/applied.$n.json" disk="" i
    start_daemon "$n"
    drop_caches
    echo 5 >"/proc/$DPID/clear_refs" 2>/dev/null
    before=$(vm "$DPID" VmHWM)
    logonly "p2v.$n: add pc raw:$IMAGE; --json fixups apply pc --profile $PROFILE"
    t0=$EPOCHREALTIME
    ctl add pc "raw:$IMAGE" >>"$LOG" 2>&1 || rc=$?
    t1=$EPOCHREALTIME
    if ((rc != 0)); then
        FAILED[p2v.$n]="p2vctl add failed (status $rc)"
    else
        ctl --json fixups apply pc --profile "$PROFILE" >"$applied" 2>>"$LOG" || rc=$?
        if ((rc != 0)); then
            FAILED[p2v.$n]="p2vctl fixups apply failed (status $rc): $(tail -n 1 "$LOG")"
        else
            # The files apply shows: the target's disk first, then the VM description.
            disk=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["files"][0])' "$applied" 2>/dev/null)
            [[ -n $disk ]] || disk=$MNT/pc/$PROFILE.qcow2
            for ((i = 0; i < 200; i++)); do [[ -f $disk ]] && break; sleep 0.05; done
            [[ -f $disk ]] || { rc=1; FAILED[p2v.$n]="no $disk in the mount after the fixups"; }
        fi
    fi
    t2=$EPOCHREALTIME
    after=$(vm "$DPID" VmHWM)
    if ((rc != 0)); then
        progress "  p2vfs run $n: ${FAILED[p2v.$n]}; see $LOG"
        stop_daemon
        return 1
    fi
    T[p2v.$n]=$(span "$t0" "$t2")
    PART[add.$n]=$(span "$t0" "$t1")
    PART[fixups.$n]=$(span "$t1" "$t2")
    [[ -n $after ]] && RSS[p2v.$n]=$after
    OUTSZ[p2v.$n]=$(du_bytes "$WORK/state.$n")
    logonly "p2v.$n: add $(secs "${PART[add.$n]}"), fixups $(secs "${PART[fixups.$n]}"), total $(secs "${T[p2v.$n]}"); VmHWM $before -> $after KiB; state dir ${OUTSZ[p2v.$n]} bytes; disk $disk"
    progress "  p2vfs run $n: $(secs "${T[p2v.$n]}") (add $(secs "${PART[add.$n]}"), fixups apply $(secs "${PART[fixups.$n]}"))"
    if [[ $n == 1 ]]; then
        P2V_DISK=$disk
        P2V_FMT=${QEMU_FMT[${disk##*.}]:-}
        P2V_BUS=${BUS_OF[$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("controller", ""))' "$applied" 2>/dev/null)]:-}
        if [[ $BOOT == yes ]]; then
            if [[ -n $P2V_FMT && -n $P2V_BUS ]]; then
                boot_check p2v "$disk" "$P2V_FMT" "$P2V_BUS"
            else
                BOOTED[p2v]="not tried: no qemu bus or format for $(basename "$disk") (see $applied)"
            fi
        fi
    fi
    stop_daemon
    return 0
}

# The virt-v2v side: run N on INPUT (as-is or sda). Keys: v2v-INPUT.N.
V2V_PHASES=""
run_v2v() {
    local inp=$1 n=$2
    local key="v2v-$inp.$n" src=$IMAGE out="$WORK/v2v-$inp.$n" t0 t1 rc=0 vlog="$LOGDIR/virt-v2v-$inp.$n.log"
    [[ $inp == sda ]] && src=$SDA_IMAGE
    rm -rf "$out"
    mkdir -p "$out"
    drop_caches
    logonly "$key: virt-v2v -i disk -if raw $src -o local -os $out -of qcow2 -on p2vfs-bench"
    progress "  virt-v2v ($inp) run $n: started (its log: $vlog)"
    t0=$EPOCHREALTIME
    LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg \
        /usr/bin/time -f '%e %M %U %S' -o "$WORK/time.$key" \
        virt-v2v -i disk -if raw "$src" -o local -os "$out" -of qcow2 -on p2vfs-bench \
        </dev/null >"$vlog" 2>&1 || rc=$?
    t1=$EPOCHREALTIME
    RSS[$key]=$(awk 'END { print $2 }' "$WORK/time.$key" 2>/dev/null)
    if ((rc != 0)) || [[ ! -f $out/p2vfs-bench-sda ]]; then
        FAILED[$key]="virt-v2v failed after $(secs "$(span "$t0" "$t1")") (status $rc): $(grep -a -m1 'virt-v2v: error' "$vlog")"
        progress "  virt-v2v ($inp) run $n: ${FAILED[$key]}"
        rm -rf "$out"
        return 1
    fi
    T[$key]=$(span "$t0" "$t1")
    OUTSZ[$key]=$(du_bytes "$out/p2vfs-bench-sda")
    # Its own progress lines: "[  12.3] Opening the source", from the last run.
    V2V_PHASES=$(grep -a -E '^\[ *[0-9]+\.[0-9]\] ' "$vlog")
    logonly "$key: status $rc, $(secs "${T[$key]}"), max RSS ${RSS[$key]} KiB (/usr/bin/time: $(cat "$WORK/time.$key"))"
    progress "  virt-v2v ($inp) run $n: $(secs "${T[$key]}")"
    if [[ $BOOT == yes && $n == 1 ]]; then
        boot_check "v2v-$inp" "$out/p2vfs-bench-sda" qcow2 virtio
    fi
    if [[ $KEEP == yes && $n == 1 ]]; then
        mv "$out" "$LOGDIR/virt-v2v-output-$inp" && progress "  kept virt-v2v's output in $LOGDIR/virt-v2v-output-$inp"
    fi
    rm -rf "$out" # ~700 MiB
    return 0
}

boot_check() { # SIDE DISK FORMAT BUS
    local side=$1 rc=0 blog="$LOGDIR/boot.$1.log"
    progress "  booting the $side result ($(basename "$2")) on $4 (up to $BOOT_TIMEOUT s)"
    QEMU_BOOT_BUS=$4 QEMU_BOOT_QUIET=1 qemu_boot "$2" "$3" "$blog" "$BOOT_TIMEOUT" || rc=$?
    case $rc in
        0) BOOTED[$side]="yes ($4), marker after $(secs "$QEMU_BOOT_SECONDS"): ${QEMU_BOOT_MARKER#P2VFS-BOOT-MARKER }" ;;
        1) BOOTED[$side]="NO ($4), after $(secs "$QEMU_BOOT_SECONDS"): $QEMU_BOOT_FAILURE" ;;
        2) BOOTED[$side]="NO: no marker within $BOOT_TIMEOUT s" ;;
        *) BOOTED[$side]="not tried: qemu_boot could not start qemu (status $rc)" ;;
    esac
    progress "  $side boots: ${BOOTED[$side]} (console: $blog)"
}

# ---------------------------------------------------------------- run
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
T_RUN=$(now)
APPLIANCE_CACHED=no
ls -d /var/tmp/.guestfs-"$(id -u)"/appliance.d >/dev/null 2>&1 && APPLIANCE_CACHED=yes
if [[ $DO_P2V == yes ]]; then
    start_bus
    progress "p2vfs: $RUNS run(s) of add + fixups apply --profile $PROFILE"
    for ((r = 1; r <= RUNS; r++)); do run_p2v "$r"; done
fi
if [[ $DO_V2V == yes ]]; then
    for inp in "${V2V_IN[@]}"; do
        if [[ $inp == sda ]]; then
            make_sda_image
            progress "virt-v2v on a copy naming /dev/sda: $V2V_RUNS run(s)"
        else
            progress "virt-v2v on the image as it is: $V2V_RUNS run(s)"
        fi
        for ((r = 1; r <= V2V_RUNS; r++)); do run_v2v "$inp" "$r"; done
    done
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
T_TOTAL=$(elapsed "$T_RUN")
[[ $(md5sum <"$IMAGE" | cut -d' ' -f1) == "$IMAGE_SUM" ]] && IMAGE_OK="unchanged" || IMAGE_OK="CHANGED"

# ---------------------------------------------------------------- report
vals() { # vals PREFIX: the figures of every run of a side
    local k
    for k in "${!T[@]}"; do [[ $k == "$1".* ]] && echo "${T[$k]}"; done
}
med_side() { local v; v=$(vals "$1"); [[ -n $v ]] && echo "$v" | median || echo FAIL; }
med_part() { # med_part add|fixups
    local k v=()
    for k in "${!PART[@]}"; do [[ $k == "$1".* ]] && v+=("${PART[$k]}"); done
    ((${#v[@]})) && med_of "${v[@]}" || echo "-"
}
max_rss() { local k v=(); for k in "${!RSS[@]}"; do [[ $k == "$1".* ]] && v+=("${RSS[$k]}"); done; ((${#v[@]})) && max_of "${v[@]}" || echo "-"; }
max_out() { local k v=(); for k in "${!OUTSZ[@]}"; do [[ $k == "$1".* ]] && v+=("${OUTSZ[$k]}"); done; ((${#v[@]})) && max_of "${v[@]}" || echo "-"; }
nruns() { vals "$1" | grep -c . ; }

P2V_T=$(med_side p2v)
declare -A V2V_T
for inp in "${V2V_IN[@]}"; do V2V_T[$inp]=$(med_side "v2v-$inp"); done
CPUS=$(nproc)
MEMG=$(awk '/MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)
OS=$(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")
KVM="no KVM"
grep -qwE 'vmx|svm' /proc/cpuinfo && [[ -c /dev/kvm ]] && KVM="KVM available (not used: TCG)"
FS=$(df -PT "$CACHE" | awk 'NR == 2 { print $2 " on " $1 }')

rep "p2vfs conversion benchmark (to a disk that boots on $PROFILE), $(date '+%Y-%m-%d %H:%M %Z')"
rep "machine: $CPUS cores, $MEMG GiB RAM, $OS, kernel $(uname -r), $KVM"
if [[ $DO_P2V == yes ]]; then
    info="$DAEMON, built $(date -r "$DAEMON" '+%Y-%m-%d %H:%M' 2>/dev/null)"
    [[ -n $LABEL ]] && info+=", $LABEL"
    rep "p2vfsd: $("$BIN" --version 2>/dev/null | head -n 1); $info"
fi
if [[ $DO_V2V == yes ]]; then
    rep "virt-v2v: $(virt-v2v --version 2>/dev/null | head -n 1), libguestfs $(dpkg-query -W -f='${Version}' libguestfs0 2>/dev/null || echo '?'), backend direct, TCG; appliance cached before the run: $APPLIANCE_CACHED"
fi
rep "image: $IMAGE_INFO; $FS; $IMAGE_OK by the run"
rep "figures: median of the runs; page cache dropped before every run; load average before: $LOAD_BEFORE, after: $LOAD_AFTER; whole run ${T_TOTAL%.*} s"
rep ""
rep "seconds: from adding the source to a disk that should boot on $PROFILE."
if [[ $DO_P2V == yes ]]; then
    rep "  p2vfs: p2vctl add pc raw:IMAGE, then p2vctl fixups apply pc --profile $PROFILE, until it returns and the"
    rep "  target's disk it names is in the mount (${P2V_DISK:+$(basename "$P2V_DISK"); }the fixups go into the overlay, the rest is read from the source)."
fi
if [[ $DO_V2V == yes ]]; then
    rep "  virt-v2v: until it exits, its qcow2 written; on the image as it is (as-is) and/or on a copy whose fstab,"
    rep "  grub.cfg, /etc/default/grub and resume name /dev/sda1 and /dev/sda2 instead of /dev/cciss/c0d0p1 and p2 (sda)."
    rep "  A failed run: FAIL, and why, with the time it took to fail."
fi
rep "peak RSS: p2vfsd's VmHWM during the run (reset before it); virt-v2v's, largest of its process tree (/usr/bin/time;"
rep "  the appliance's qemu counts). on disk: p2vfs's state directory (overlay), virt-v2v's qcow2."
[[ $BOOT == yes ]] && rep "boots: the result booted under qemu (TCG, on the bus named, through a throwaway qcow2 overlay) until the guest's marker."
rep ""
COLS='  %-44s %5s %10s %11s %10s  %s'
# shellcheck disable=SC2059
rep "$(printf "$COLS" tool runs seconds "peak RSS" "on disk" "$([[ $BOOT == yes ]] && echo boots)")"
if [[ $DO_P2V == yes ]]; then
    # shellcheck disable=SC2059
    rep "$(printf "$COLS" "p2vctl add + fixups apply --profile $PROFILE" "$(nruns p2v)/$RUNS" "$(secs "$P2V_T")" "$(mib "$(max_rss p2v)")" "$(size_h "$(max_out p2v)")" "${BOOTED[p2v]:-}")"
    # shellcheck disable=SC2059
    rep "$(printf "$COLS" "  of which p2vctl add" "" "$(secs "$(med_part add)")" "" "" "")"
    # shellcheck disable=SC2059
    rep "$(printf "$COLS" "  of which p2vctl fixups apply" "" "$(secs "$(med_part fixups)")" "" "" "")"
fi
if [[ $DO_V2V == yes ]]; then
    for inp in "${V2V_IN[@]}"; do
        t=${V2V_T[$inp]}
        b=${BOOTED[v2v-$inp]:-}
        if [[ $t == FAIL ]]; then
            # The first failure, with how long it took to fail.
            t="FAIL" b=${FAILED[v2v-$inp.1]:-failed}
        fi
        # shellcheck disable=SC2059
        rep "$(printf "$COLS" "virt-v2v -i disk -o local -of qcow2 ($inp)" "$(nruns "v2v-$inp")/$V2V_RUNS" "$(secs "$t")" "$(mib "$(max_rss "v2v-$inp")")" "$(size_h "$(max_out "v2v-$inp")")" "$b")"
    done
fi
if [[ $DO_P2V == yes && $DO_V2V == yes ]]; then
    sep=""
    for inp in "${V2V_IN[@]}"; do
        isnum "${V2V_T[$inp]}" || continue
        [[ -z $sep ]] && { rep ""; sep=yes; }
        note=""
        # A time to a disk that does not boot is not a time to a bootable disk.
        [[ ${BOOTED[v2v-$inp]:-} == NO* ]] && note="; but virt-v2v's result did not boot"
        [[ ${BOOTED[p2v]:-} == NO* ]] && note+="; but p2vfs's result did not boot"
        rep "virt-v2v ($inp) / p2vfs: $(ratio "${V2V_T[$inp]}" "$P2V_T")x (above 1 favours p2vfs$note)"
    done
fi
if [[ -n $V2V_PHASES ]]; then
    rep ""
    rep "virt-v2v's own progress lines (seconds since it started), its last successful run:"
    while IFS= read -r l; do rep "  $l"; done <<<"$V2V_PHASES"
fi
problems=()
for k in $(printf '%s\n' "${!FAILED[@]}" | sort); do problems+=("$k: ${FAILED[$k]}"); done
[[ $IMAGE_OK == CHANGED ]] && problems+=("the source image changed during the run")
if ((${#problems[@]})); then
    rep ""
    rep "PROBLEMS:"
    for p in "${problems[@]}"; do rep "  $p"; done
fi
rep "logs: $LOGDIR"

cat "$REPORT"
mkdir -p "$(dirname "$OUT")" && cp "$REPORT" "$OUT" && echo "report written to $OUT" >&2
cp "$REPORT" "$LOGDIR/report.txt"

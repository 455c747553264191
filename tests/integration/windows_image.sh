# shellcheck shell=bash
# Windows-like test disks, built here from scratch (no Windows image is
# needed): the partition tables, NTFS and FAT volumes, registry hives and
# files that Windows inspection reads and Windows fixups edit. Nothing in
# them boots; every value a test asserts is fixed.
#
#   source tests/integration/windows_image.sh
#   windows_image NAME OUT_IMG              # a sparse copy of machine NAME
#   windows_partition_offset IMG N          # partition N's byte offset
#   windows_partition_size IMG N            # and its length in bytes
#   windows_mount_partition IMG N DIR       # ntfs-3g -o ro of partition N (needs lib.sh)
#   windows_unmount_partition DIR
#   windows_export_hives IMG PART OUTDIR    # OUTDIR/{SYSTEM,SOFTWARE}.reg (needs lib.sh)
#
# or from a shell, to build or refresh the cache and get a copy:
#
#   bash tests/integration/windows_image.sh NAME OUT_IMG
#
# The machines (1 GiB sparse raw disks, 512-byte sectors; the hives are
# tests/data/registry/minimal.hive merged with the .reg files named):
#
#   win2008r2    physical HP ProLiant, Windows Server 2008 R2 SP1, BIOS.
#                MBR, label-id 0x2008a2b1.
#                p1 2048 +204800, type 7, active: NTFS "System Reserved":
#                   bootmgr, Boot/BCD (bcd.reg)
#                p2 206848 .. end - 1 MiB, type 7: NTFS, no label, C::
#                   Windows/System32/config/{SYSTEM,SOFTWARE}
#                   (win2008r2-{system,software}.reg), the storage drivers'
#                   .sys files, hiberfil.sys (1 MiB of zeros)
#   win2016      formerly a VMware VM, Windows Server 2016 Datacenter, UEFI.
#                GPT, disk GUID 20162016-0000-4000-8000-000000000000,
#                partition N's GUID 20162016-0000-4000-8000-00000000000N.
#                p1 2048 +204800, EFI System: FAT32 (volume id 20160001):
#                   EFI/Microsoft/Boot/{bootmgfw.efi,BCD}, EFI/Boot/bootx64.efi
#                p2 206848 +32768, Microsoft reserved, no file system
#                p3 239616 .. end - 1 MiB, basic data: NTFS, C: (hives from
#                   win2016-*.reg, drivers; no hiberfil.sys)
#   win2022      physical Dell PowerEdge, Windows Server 2022 Standard, UEFI.
#                GPT as win2016 with 2022 in the GUIDs (FAT volume id 20220001);
#                p3 239616 .. end - 65 MiB (C:, win2022-*.reg);
#                p4 the 64 MiB after it, Windows recovery: NTFS "Recovery"
#                   holding Recovery/WindowsRE/ReAgent.xml
#   win2008r2-hibernated  win2008r2 whose hiberfil.sys starts "HIBR".
#   win2016-dynamic       win2016 with p3 33 MiB shorter, then p4 "LDM metadata"
#                (5808C8AA-..., 1 MiB) and p5 "LDM data" (AF9B60A0-..., 32 MiB).
#   win2022-bitlocker     win2022 with p3 32 MiB shorter and p5 (basic data,
#                32 MiB, GUID ...0005) in the room before p4: a BitLocker boot
#                sector (EB 58 90 "-FVE-FS-", 512 bytes per sector, 55 AA) and
#                zeros.
#
# Files of 4 KiB named DRIVER.sys under Windows/System32/drivers hold "MZ"
# and then DRIVER (the file's name without .sys) repeated; bootmgr,
# bootmgfw.efi and bootx64.efi (64 KiB) likewise. NTFS volumes are made by
# mkntfs in a file of the partition's size (with -T: a fixed volume serial
# number), filled through an ntfs-3g mount of that file and written into the
# disk at the partition's offset; FAT volumes by mkfs.vfat and mtools. The
# bytes of the files and hives are the same on every build; the file
# systems' timestamps are not.
#
# Cache: ${P2VFS_FIXTURES:-/var/tmp/p2vfs-fixtures}/windows-HASH/NAME.img,
# where HASH covers this file, the .reg files and minimal.hive: a changed
# recipe builds anew. A flock on the directory's lock file makes concurrent
# callers wait for one build; copies take it shared. A build runs in its own
# bash process in a temporary directory there, and only a finished image is
# renamed into place, so a killed build leaves nothing half-made (its stale
# directory is removed by the next build). build-NAME.log holds the last
# build's output. A build takes a few seconds; a copy well under one.

# The tools a build needs (a test skips when one is missing).
# shellcheck disable=SC2034 # used by the tests
WINDOWS_IMAGE_TOOLS=(mkntfs ntfs-3g mkfs.vfat mmd mcopy sfdisk hivexregedit perl python3 flock losetup)
WINDOWS_IMAGE_NAMES=(win2008r2 win2016 win2022 win2008r2-hibernated win2016-dynamic win2022-bitlocker)

_WINDOWS_IMAGE_LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
_WINDOWS_REGISTRY=$(cd "$(dirname "${BASH_SOURCE[0]}")/../data/registry" && pwd)

_windows_cache_dir() {
    local hash
    hash=$(cd "$_WINDOWS_REGISTRY" && cat "$_WINDOWS_IMAGE_LIB" ./*.reg minimal.hive | sha256sum | cut -c1-16)
    echo "${P2VFS_FIXTURES:-/var/tmp/p2vfs-fixtures}/windows-$hash"
}

_windows_known() {
    local n
    for n in "${WINDOWS_IMAGE_NAMES[@]}"; do
        [[ $n == "$1" ]] && return 0
    done
    return 1
}

windows_image() {
    local name=${1:?usage: windows_image NAME OUT_IMG} dest=${2:?usage: windows_image NAME OUT_IMG}
    local dir fd rc=0
    if ! _windows_known "$name"; then
        echo "windows_image: unknown machine '$name' (one of: ${WINDOWS_IMAGE_NAMES[*]})" >&2
        return 1
    fi
    dir=$(_windows_cache_dir)
    mkdir -p "$dir" || { echo "windows_image: cannot create $dir" >&2; return 1; }
    exec {fd}>>"$dir/lock" || { echo "windows_image: cannot open $dir/lock" >&2; return 1; }
    if ! flock -s -w 600 "$fd"; then
        exec {fd}>&-
        echo "windows_image: waited 10 minutes for the lock on $dir/lock" >&2
        return 1
    fi
    if [[ ! -f $dir/$name.img ]]; then
        flock -u "$fd"
        if ! flock -x -w 600 "$fd"; then
            exec {fd}>&-
            echo "windows_image: waited 10 minutes for the lock on $dir/lock" >&2
            return 1
        fi
        # Another caller may have built it meanwhile.
        if [[ ! -f $dir/$name.img ]]; then
            _windows_build_cached "$dir" "$name" {fd}>&- || rc=$?
        fi
    fi
    if ((rc == 0)); then
        rm -f "$dest"
        cp --sparse=always "$dir/$name.img" "$dest" || {
            echo "windows_image: cannot copy $dir/$name.img to $dest" >&2
            rc=1
        }
    fi
    exec {fd}>&-
    return "$rc"
}

# Runs the builder (under the exclusive lock) into a temporary directory
# of DIR and renames its image into place.
_windows_build_cached() {
    local dir=$1 name=$2 tmp stale rc=0
    for stale in "$dir/.tmp-$name".*; do
        [[ -e $stale ]] || continue
        _windows_unmount_under "$stale"
        rm -rf --one-file-system "$stale" || {
            echo "windows_image: cannot remove the stale build $stale" >&2
            return 1
        }
    done
    tmp=$(mktemp -d "$dir/.tmp-$name.XXXXXX") || return 1
    # Its own bash: without the caller's options and traps (lib.sh's ERR
    # trap), and with a cleanup of its own mounts.
    bash "$_WINDOWS_IMAGE_LIB" --build "$name" "$tmp" >"$dir/build-$name.log" 2>&1 || rc=$?
    if ((rc == 0)); then
        mv -T "$tmp/disk.img" "$dir/$name.img" || rc=$?
    else
        tail -n 20 "$dir/build-$name.log" >&2
        echo "windows_image: building $name failed (status $rc); see $dir/build-$name.log" >&2
    fi
    _windows_unmount_under "$tmp"
    rm -rf --one-file-system "$tmp"
    return "$rc"
}

# Unmounts whatever a killed build left mounted under DIR.
_windows_unmount_under() {
    local m
    awk -v p="$1/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r m; do
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
        done
}

# ---------------------------------------------------------------- partitions

# _windows_partition IMG N: "START SIZE" of partition N in bytes, from
# sfdisk --json (the partition's node is the device name and N).
_windows_partition() {
    local img=$1 n=$2
    sfdisk --json "$img" | python3 -c '
import json, sys
t = json.load(sys.stdin)["partitiontable"]
n = sys.argv[1]
ss = t.get("sectorsize", 512)
for p in t["partitions"]:
    rest = p["node"][len(t["device"]):]
    if rest.lstrip("p") == n:
        print(p["start"] * ss, p["size"] * ss)
        sys.exit(0)
sys.exit("%s: no partition %s" % (t["device"], n))' "$n"
}

windows_partition_offset() { # IMG N
    local geometry
    geometry=$(_windows_partition "$1" "$2") || return 1
    echo "${geometry% *}"
}

windows_partition_size() { # IMG N
    local geometry
    geometry=$(_windows_partition "$1" "$2") || return 1
    echo "${geometry#* }"
}

# ---------------------------------------------------------------- reading (tests)
# These need lib.sh (attach_loop, push_cleanup, force_unmount, $T).

# The cleanup-stack entries of each mount, "LOOP-INDEX MOUNT-INDEX LOOP".
declare -A _WINDOWS_MOUNTS=()

# windows_mount_partition IMG N DIR: partition N of IMG (a file; may lie in a
# FUSE mount) through a read-only loop device, mounted read-only by ntfs-3g
# on DIR. Both are undone at exit, or earlier by windows_unmount_partition.
windows_mount_partition() {
    local img=$1 n=$2 dir=$3 geometry loop_index mount_index
    geometry=$(_windows_partition "$img" "$n") || fail "cannot read the partition table of $img"
    loop_index=${#_CLEANUP[@]}
    attach_loop -r -o "${geometry% *}" --sizelimit "${geometry#* }" "$img"
    mkdir -p "$dir"
    mount_index=${#_CLEANUP[@]}
    push_cleanup force_unmount "$dir"
    ntfs-3g -o ro "$LOOP_DEV" "$dir" ||
        fail "ntfs-3g cannot mount partition $n of $img (loop device $LOOP_DEV)"
    _WINDOWS_MOUNTS[$dir]="$loop_index $mount_index $LOOP_DEV"
}

# windows_unmount_partition DIR: undoes windows_mount_partition now, and
# takes its two entries off the cleanup stack, so that the exit does not
# detach a loop device of that number attached by someone else meanwhile.
windows_unmount_partition() {
    local dir=$1 loop_index mount_index loop
    [[ -n ${_WINDOWS_MOUNTS[$dir]:-} ]] || fail "windows_unmount_partition: nothing mounted on $dir by windows_mount_partition"
    read -r loop_index mount_index loop <<<"${_WINDOWS_MOUNTS[$dir]}"
    # A block device's FUSE mount (fuseblk): umount returns once ntfs-3g has
    # let go of the volume.
    umount "$dir" || fail "cannot unmount $dir"
    losetup -d "$loop" || fail "cannot detach $loop"
    _CLEANUP[loop_index]=:
    _CLEANUP[mount_index]=:
    unset "_WINDOWS_MOUNTS[$dir]"
}

# windows_export_hives IMG PART OUTDIR: SYSTEM.reg and SOFTWARE.reg in
# OUTDIR, `hivexregedit --export HIVE '\'` of the hives on partition PART.
windows_export_hives() {
    local img=$1 part=$2 out=$3 dir hive
    mkdir -p "$out"
    dir=$(mktemp -d "$T/ntfs.XXXXXX")
    windows_mount_partition "$img" "$part" "$dir"
    for hive in SYSTEM SOFTWARE; do
        hivexregedit --export "$dir/Windows/System32/config/$hive" "\\" >"$out/$hive.reg" ||
            fail "hivexregedit --export of $hive on partition $part of $img failed"
    done
    windows_unmount_partition "$dir"
    rmdir "$dir"
}

# ---------------------------------------------------------------- the build
# Everything below runs in the builder process (bash windows_image.sh
# --build NAME WORKDIR), with the cache's lock held by the caller. It writes
# WORKDIR/disk.img; everything else it makes in WORKDIR is scratch.

_WB_SECTORS=2097152 # 1 GiB
_WB_NTFS_PID=
_WB_NTFS_MNT=

_wb_die() {
    echo "windows_image: $*" >&2
    exit 1
}

_wb_cleanup() {
    local rc=$?
    set +e
    trap - EXIT
    if [[ -n $_WB_NTFS_MNT ]]; then
        umount "$_WB_NTFS_MNT" 2>/dev/null || umount -l "$_WB_NTFS_MNT" 2>/dev/null
    fi
    if [[ -n $_WB_NTFS_PID ]]; then
        kill "$_WB_NTFS_PID" 2>/dev/null
        wait "$_WB_NTFS_PID" 2>/dev/null
    fi
    exit "$rc"
}

# _wb_pattern FILE SIZE TEXT [PREFIX]: SIZE bytes, PREFIX then TEXT repeated.
_wb_pattern() {
    perl -e 'my ($size, $text, $prefix) = @ARGV;
             my $s = $prefix . ($text x (int($size / length($text)) + 1));
             print substr($s, 0, $size);' "$2" "$3" "${4:-}" >"$1" ||
        _wb_die "cannot write $1"
}

# _wb_ntfs FILE START SECTORS [LABEL]: an NTFS volume of SECTORS sectors in
# FILE, for a partition starting at sector START.
_wb_ntfs() {
    local file=$1 start=$2 sectors=$3 label=${4:-} args=()
    [[ -z $label ]] || args=(-L "$label")
    truncate -s $((sectors * 512)) "$file" || _wb_die "cannot create $file"
    mkntfs -Q -F -q -T "${args[@]}" -p "$start" -H 255 -S 63 "$file" ||
        _wb_die "mkntfs failed on $file"
}

# _wb_mount FILE DIR: ntfs-3g of the file FILE on DIR, in the foreground of
# a background job (a plain "fuse" mount: umount returns before ntfs-3g has
# written everything back, so _wb_umount waits for the process).
_wb_mount() {
    local file=$1 dir=$2 i
    mkdir -p "$dir"
    ntfs-3g -o no_detach "$file" "$dir" &
    _WB_NTFS_PID=$!
    _WB_NTFS_MNT=$dir
    for ((i = 0; i < 100; i++)); do
        mountpoint -q "$dir" && return 0
        kill -0 "$_WB_NTFS_PID" 2>/dev/null || break
        sleep 0.1
    done
    _wb_die "ntfs-3g did not mount $file on $dir"
}

_wb_umount() {
    umount "$_WB_NTFS_MNT" || _wb_die "cannot unmount $_WB_NTFS_MNT"
    _WB_NTFS_MNT=
    wait "$_WB_NTFS_PID" || _wb_die "ntfs-3g exited with status $? after the unmount"
    _WB_NTFS_PID=
}

# _wb_place FILE IMG START: FILE into IMG at sector START; FILE removed.
_wb_place() {
    dd if="$1" of="$2" bs=1M seek=$(($3 * 512)) oflag=seek_bytes conv=notrunc,sparse status=none ||
        _wb_die "cannot write $1 into $2 at sector $3"
    rm -f "$1"
}

# _wb_hive OUT REG: minimal.hive merged with REG.
_wb_hive() {
    cp "$_WINDOWS_REGISTRY/minimal.hive" "$1" || _wb_die "cannot copy minimal.hive"
    hivexregedit --merge "$1" "$_WINDOWS_REGISTRY/$2" || _wb_die "hivexregedit --merge $2 failed"
}

# _wb_windows_volume WORK FILE MACHINE DRIVER...: the Windows directory of
# MACHINE on the mounted volume FILE: its hives and its drivers' files.
_wb_windows_volume() {
    local work=$1 file=$2 machine=$3 m=$1/mnt d
    shift 3
    _wb_hive "$work/SYSTEM" "$machine-system.reg"
    _wb_hive "$work/SOFTWARE" "$machine-software.reg"
    _wb_mount "$file" "$m"
    mkdir -p "$m/Windows/System32/config" "$m/Windows/System32/drivers"
    cp "$work/SYSTEM" "$work/SOFTWARE" "$m/Windows/System32/config/" || _wb_die "cannot copy the hives"
    for d in "$@"; do
        _wb_pattern "$m/Windows/System32/drivers/$d.sys" 4096 "$d" MZ
    done
}

# _wb_esp WORK IMG START SECTORS VOLID: the EFI System partition.
_wb_esp() {
    local work=$1 img=$2 start=$3 sectors=$4 volid=$5 f=$1/esp
    truncate -s $((sectors * 512)) "$f" || _wb_die "cannot create $f"
    mkfs.vfat -F 32 -i "$volid" -h "$start" "$f" >/dev/null || _wb_die "mkfs.vfat failed"
    _wb_hive "$work/BCD" bcd.reg
    _wb_pattern "$work/bootmgfw.efi" 65536 bootmgfw MZ
    _wb_pattern "$work/bootx64.efi" 65536 bootx64 MZ
    export MTOOLS_SKIP_CHECK=1
    mmd -i "$f" ::/EFI ::/EFI/Microsoft ::/EFI/Microsoft/Boot ::/EFI/Boot || _wb_die "mmd failed"
    mcopy -i "$f" "$work/bootmgfw.efi" "$work/BCD" ::/EFI/Microsoft/Boot/ || _wb_die "mcopy failed"
    mcopy -i "$f" "$work/bootx64.efi" ::/EFI/Boot/ || _wb_die "mcopy failed"
    _wb_place "$f" "$img" "$start"
}

_wb_2008r2() {
    local work=$1 img=$2 variant=$3 end p2_size
    end=$((_WB_SECTORS - 2048))
    p2_size=$((end - 206848))
    sfdisk --quiet --no-reread --no-tell-kernel "$img" <<EOF || _wb_die "sfdisk failed"
label: dos
label-id: 0x2008a2b1
unit: sectors

start=2048, size=204800, type=7, bootable
start=206848, size=$p2_size, type=7
EOF
    _wb_ntfs "$work/p1" 2048 204800 "System Reserved"
    _wb_hive "$work/BCD" bcd.reg
    _wb_mount "$work/p1" "$work/mnt"
    _wb_pattern "$work/mnt/bootmgr" 65536 bootmgr
    mkdir -p "$work/mnt/Boot"
    cp "$work/BCD" "$work/mnt/Boot/BCD" || _wb_die "cannot copy the BCD"
    _wb_umount
    _wb_place "$work/p1" "$img" 2048

    _wb_ntfs "$work/p2" 206848 "$p2_size"
    _wb_windows_volume "$work" "$work/p2" win2008r2 \
        msahci intelide pciide atapi lsi_sas lsi_scsi storvsc HpCISSs2
    # 1 MiB: zeros (hibernation enabled, the machine shut down), or a
    # hibernation image's signature and zeros.
    local magic=
    [[ $variant != hibernated ]] || magic=HIBR
    perl -e 'print $ARGV[0], "\0" x ((1 << 20) - length($ARGV[0]))' "$magic" >"$work/mnt/hiberfil.sys" ||
        _wb_die "cannot write hiberfil.sys"
    _wb_umount
    _wb_place "$work/p2" "$img" 206848
}

# _wb_gpt WORK IMG YEAR P3_SIZE DRIVERS EXTRA: the GPT machines. EXTRA: the
# sfdisk lines of the partitions after p3.
_wb_gpt() {
    local work=$1 img=$2 year=$3 p3_size=$4 drivers=$5 extra=$6 guid
    guid=$year$year-0000-4000-8000-00000000000
    sfdisk --quiet --no-reread --no-tell-kernel "$img" <<EOF || _wb_die "sfdisk failed"
label: gpt
label-id: ${guid}0
unit: sectors

start=2048, size=204800, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=${guid}1
start=206848, size=32768, type=E3C9E316-0B5C-4DB8-817D-F92DF00215AE, uuid=${guid}2
start=239616, size=$p3_size, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, uuid=${guid}3
$extra
EOF
    _wb_esp "$work" "$img" 2048 204800 "${year}0001"
    _wb_ntfs "$work/p3" 239616 "$p3_size"
    # shellcheck disable=SC2086 # a list of names
    _wb_windows_volume "$work" "$work/p3" "win$year" $drivers
    _wb_umount
    _wb_place "$work/p3" "$img" 239616
}

_wb_2016() {
    local work=$1 img=$2 variant=$3 end p3_size extra=
    end=$((_WB_SECTORS - 2048))
    p3_size=$((end - 239616))
    if [[ $variant == dynamic ]]; then
        p3_size=$((p3_size - 33 * 2048))
        local p4=$((239616 + p3_size))
        extra="start=$p4, size=2048, type=5808C8AA-7E8F-42E0-85D2-E1E90434CFB3, uuid=20162016-0000-4000-8000-000000000004, name=\"LDM metadata\"
start=$((p4 + 2048)), size=65536, type=AF9B60A0-1431-4F62-BC68-3311714A69AD, uuid=20162016-0000-4000-8000-000000000005, name=\"LDM data\""
    fi
    _wb_gpt "$work" "$img" 2016 "$p3_size" \
        "storahci stornvme intelide pciide atapi lsi_sas lsi_sas2 lsi_sas3 storvsc pvscsi" "$extra"
}

_wb_2022() {
    local work=$1 img=$2 variant=$3 p4 p3_size extra
    p4=$((_WB_SECTORS - 65 * 2048))
    p3_size=$((p4 - 239616))
    extra="start=$p4, size=131072, type=DE94BBA4-06D1-4D40-A16A-BFD50179D6AC, uuid=20222022-0000-4000-8000-000000000004"
    if [[ $variant == bitlocker ]]; then
        p3_size=$((p3_size - 32 * 2048))
        extra+="
start=$((239616 + p3_size)), size=65536, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, uuid=20222022-0000-4000-8000-000000000005"
    fi
    _wb_gpt "$work" "$img" 2022 "$p3_size" \
        "storahci stornvme intelide pciide atapi lsi_sas lsi_sas2 lsi_sas3 storvsc percsas3i" "$extra"

    _wb_ntfs "$work/p4" "$p4" 131072 Recovery
    _wb_mount "$work/p4" "$work/mnt"
    mkdir -p "$work/mnt/Recovery/WindowsRE"
    cat >"$work/mnt/Recovery/WindowsRE/ReAgent.xml" <<'EOF' || _wb_die "cannot write ReAgent.xml"
<?xml version='1.0' encoding='utf-8'?>
<WindowsRE version="2.0">
  <WinreLocation path="\Recovery\WindowsRE" guid="{20222022-0000-4000-8000-000000000004}"/>
  <InstallState state="1"/>
</WindowsRE>
EOF
    _wb_umount
    _wb_place "$work/p4" "$img" "$p4"

    if [[ $variant == bitlocker ]]; then
        # The first sector of a BitLocker volume: the jump, the signature
        # "-FVE-FS-" where NTFS has its OEM name, 512 bytes per sector, 55 AA.
        perl -e 'my $s = "\0" x 512;
                 substr($s, 0, 11) = "\xeb\x58\x90-FVE-FS-";
                 substr($s, 11, 2) = pack("v", 512);
                 substr($s, 510, 2) = "\x55\xaa";
                 print $s;' >"$work/p5" || _wb_die "cannot write the BitLocker boot sector"
        _wb_place "$work/p5" "$img" $((239616 + p3_size))
    fi
}

_wb_main() {
    local name=$1 work=$2 img=$2/disk.img
    set -euo pipefail
    trap _wb_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    _windows_known "$name" || _wb_die "unknown machine '$name'"
    [[ $(id -u) -eq 0 ]] || _wb_die "building needs root (ntfs-3g mounts)"
    local c
    for c in "${WINDOWS_IMAGE_TOOLS[@]}"; do
        command -v "$c" >/dev/null || _wb_die "'$c' is not installed"
    done
    echo "windows_image: building $name in $work" >&2
    truncate -s $((_WB_SECTORS * 512)) "$img" || _wb_die "cannot create $img"
    case $name in
    win2008r2) _wb_2008r2 "$work" "$img" "" ;;
    win2008r2-hibernated) _wb_2008r2 "$work" "$img" hibernated ;;
    win2016) _wb_2016 "$work" "$img" "" ;;
    win2016-dynamic) _wb_2016 "$work" "$img" dynamic ;;
    win2022) _wb_2022 "$work" "$img" "" ;;
    win2022-bitlocker) _wb_2022 "$work" "$img" bitlocker ;;
    esac
    [[ $(stat -c %s "$img") == $((_WB_SECTORS * 512)) ]] || _wb_die "$img changed size"
    # dd wrote whole MiB blocks that hold any data: give back their zeros.
    fallocate --dig-holes "$img" 2>/dev/null || true
    sfdisk -d "$img" >&2
    echo "windows_image: $name done, $(du -B1K "$img" | cut -f1) KiB allocated" >&2
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    case ${1:-} in
    --build)
        shift
        _wb_main "$@"
        ;;
    -* | "")
        echo "usage: $0 NAME OUT_IMG (NAME: ${WINDOWS_IMAGE_NAMES[*]})" >&2
        exit 2
        ;;
    *)
        windows_image "$@"
        ;;
    esac
fi

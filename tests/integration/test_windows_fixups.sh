#!/usr/bin/env bash
# Windows guests end to end, on disks built here (windows_image.sh): a BIOS
# Windows Server 2008 R2 from an HP ProLiant, a UEFI 2016 that was a VMware
# VM and a UEFI 2022 from a Dell PowerEdge, and their variants, all exposed
# by one p2vfsd on a private bus.
#
# Inspection: info.json names the Windows, its boot mode and BCD store, its
# storage drivers, hypervisor tools, vendor agents and drive letters, as the
# disks were built (the expectations are the python dicts below).
#
# Fixups: the registry edits a plan lists are exactly the edits made — the
# hives read back through the fixed-up disk.raw (ntfs-3g on a loop device
# over the FUSE file, exported by hivexregedit) differ from the source's in
# those edits and no others (regdiff.py) — and a few edits every target
# needs are in the plan: 2008 R2 on kvm without drivers boots from SATA
# (msahci, its CriticalDeviceDatabase entry), the drive letters of hardware
# gone are dropped and the HP agents disabled, and with a virtio-win tree it
# boots from viostor copied in; 2016 on kvm gets viostor staged for Plug and
# Play but boots from SATA (Windows 8 and later bind a boot controller only
# through a driver they installed) and its VMware Tools disabled, while on
# vmware it keeps its tools and pvscsi; 2022 on hyperv gets storvsc and its
# Dell agents disabled. The source images never change, and discarding the fixups gives
# the source's hives back.
#
# The variants a fixup must not touch — hibernated, a dynamic disk, a
# BitLocker volume — are blockers of inspection, and apply is refused.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/dbus_lib.sh"
source "$(dirname "$0")/windows_image.sh"
need_root
need_cmd "${WINDOWS_IMAGE_TOOLS[@]}"
need_cmd sha256sum
[[ -c /dev/fuse ]] || skip "no /dev/fuse (ntfs-3g mounts)"

regdiff=$LIB_DIR/regdiff.py

# sha256 of a 1 GiB image: openssl's (SHA extensions) is several times
# faster than sha256sum's, which would take most of the test's time.
sha256_of() {
    if command -v openssl >/dev/null 2>&1; then
        openssl dgst -sha256 -r "$1" | cut -d' ' -f1
    else
        sha256sum "$1" | cut -d' ' -f1
    fi
}

# ---- the machines --------------------------------------------------------
# name -> the system partition (the one holding the hives)
declare -A SYSTEM_PART=([win2008r2]=2 [win2016]=3 [win2022]=3
    [win2008r2-hibernated]=2 [win2016-dynamic]=3 [win2022-bitlocker]=3)
declare -A SUM=()
for m in "${WINDOWS_IMAGE_NAMES[@]}"; do
    windows_image "$m" "$T/$m.img" || fail "cannot make the $m disk (see above)"
    SUM[$m]=$(sha256_of "$T/$m.img")
done
for m in win2008r2 win2016 win2022; do
    windows_export_hives "$T/$m.img" "${SYSTEM_PART[$m]}" "$T/source/$m"
done

# A virtio-win tree with a fake viostor for Windows Server 2016 (its layout:
# DRIVER/OS/ARCH/), of deterministic bytes; its .sys is not a multiple of
# the NTFS cluster size.
drivers=$T/virtio-win
mkdir -p "$drivers/viostor/2k16/amd64" "$drivers/viostor/2k8R2/amd64"
perl -e 'print "MZ", substr("viostor 2k8R2 amd64 test driver " x 400, 0, 9001)' \
    >"$drivers/viostor/2k8R2/amd64/viostor.sys"
perl -e 'print "MZ", substr("viostor 2k16 amd64 test driver " x 400, 0, 10001)' \
    >"$drivers/viostor/2k16/amd64/viostor.sys"
# shellcheck disable=SC2016 # $WINDOWS NT$ is INF syntax
printf '; viostor.inf (p2vfs test)\r\n[Version]\r\nSignature="$WINDOWS NT$"\r\nClass=SCSIAdapter\r\n' \
    >"$drivers/viostor/2k16/amd64/viostor.inf"
perl -e 'print map { chr(($_ * 7) & 0xff) } 0 .. 2047' >"$drivers/viostor/2k16/amd64/viostor.cat"

start_bus
mnt=$T/mnt
start_bus_daemon "$mnt" --state-dir "$T/state" --views raw
for m in "${WINDOWS_IMAGE_NAMES[@]}"; do
    ctl add "$m" "$T/$m.img" >/dev/null
done

# ---- inspection ------------------------------------------------------------
cat >"$T/check_inspection.py" <<'PY'
import json, sys

# ============================================================================
# Expected info["windows"] of each machine (tests/integration/windows_image.sh
# and tests/data/registry/*.reg build them). Lists of services are sorted by
# lower-case name.
# ============================================================================
WIN2008R2 = {
    "system_partition": 2,
    "product_name": "Windows Server 2008 R2 Standard",
    "edition_id": "ServerStandard",
    "installation_type": "Server",
    "current_version": "6.1",
    "current_build": "7601",
    "display_version": "",
    "version": "6.1",
    "system_root": "C:\\Windows",
    "architecture": "x86_64",
    "control_set": "ControlSet001",
    "boot_mode": "bios",
    "boot_partition": 1,
    "bcd_partition": 1,
    "bcd_path": "\\Boot\\BCD",
    "hostname": "W2K8R2-FS01",
    "hiberfil": True,
    "hibernation_enabled": True,
    "hibernated": False,
    "fast_startup": False,
    "storage_drivers": [
        {"name": "atapi", "start": 0, "group": "SCSI miniport", "file": True},
        {"name": "HpCISSs2", "start": 0, "group": "SCSI miniport", "file": True},
        {"name": "intelide", "start": 3, "group": "System Bus Extender", "file": True},
        {"name": "LSI_SAS", "start": 3, "group": "SCSI miniport", "file": True},
        {"name": "LSI_SCSI", "start": 3, "group": "SCSI miniport", "file": True},
        {"name": "msahci", "start": 3, "group": "SCSI miniport", "file": True},
        {"name": "pciide", "start": 3, "group": "System Bus Extender", "file": True},
        {"name": "storvsc", "start": 3, "group": "SCSI miniport", "file": True},
    ],
    "hypervisor_tools": [],
    "vendor_agents": [
        {"name": "CqMgHost", "start": 2},
        {"name": "CqMgServ", "start": 2},
        {"name": "CqMgStor", "start": 2},
        {"name": "SysMgmtHp", "start": 2},
    ],
    "bitlocker_partitions": [],
    "dynamic_disk": False,
    "drive_letters": [
        {"letter": "C:", "target": "partition 2"},
        {"letter": "D:", "target": "device \\??\\IDE#CdRomHL-DT-ST_DVD-ROM_DH40N#5&2a2f1c3e&0&1.0.0#{53f56308-b6bf-11d0-94f2-00a0c91efb8b}"},
        {"letter": "E:", "target": "disk 0x5eedf00d at 0x100000"},
        {"letter": "F:", "target": "device _??_USBSTOR#Disk&Ven_Kingston&Prod_DataTraveler_3.0&Rev_PMAP#60A44C3FAE2EBF81A97F0093&0#{53f56307-b6bf-11d0-94f2-00a0c91efb8b}"},
    ],
}

# ============================================================================
WIN2016 = {
    "system_partition": 3,
    "product_name": "Windows Server 2016 Datacenter",
    "edition_id": "ServerDatacenter",
    "installation_type": "Server",
    "current_version": "6.3",
    "current_build": "14393",
    "display_version": "",
    "version": "10.0",
    "system_root": "C:\\Windows",
    "architecture": "x86_64",
    "control_set": "ControlSet001",
    "boot_mode": "uefi",
    "boot_partition": 0,
    "bcd_partition": 1,
    "bcd_path": "\\EFI\\Microsoft\\Boot\\BCD",
    "hostname": "W2016-APP01",
    "hiberfil": False,
    "hibernation_enabled": False,
    "hibernated": False,
    "fast_startup": False,
    "storage_drivers": [
        {"name": "atapi", "start": 3, "group": "SCSI Miniport", "file": True},
        {"name": "intelide", "start": 3, "group": "System Bus Extender", "file": True},
        {"name": "LSI_SAS", "start": 0, "group": "SCSI Miniport", "file": True},
        {"name": "LSI_SAS2", "start": 3, "group": "SCSI Miniport", "file": True},
        {"name": "LSI_SAS3", "start": 3, "group": "SCSI Miniport", "file": True},
        {"name": "pciide", "start": 3, "group": "System Bus Extender", "file": True},
        {"name": "pvscsi", "start": 0, "group": "SCSI miniport", "file": True},
        {"name": "storahci", "start": 3, "group": "SCSI Miniport", "file": True},
        {"name": "stornvme", "start": 3, "group": "SCSI Miniport", "file": True},
        {"name": "storvsc", "start": 3, "group": "SCSI miniport", "file": True},
    ],
    "hypervisor_tools": [
        {"name": "VGAuthService", "start": 2},
        {"name": "vm3dservice", "start": 2},
        {"name": "VMTools", "start": 2},
        {"name": "vmvss", "start": 3},
    ],
    "vendor_agents": [],
    "bitlocker_partitions": [],
    "dynamic_disk": False,
    "drive_letters": [
        {"letter": "C:", "target": "partition 3"},
        {"letter": "D:", "target": "device \\??\\SCSI#CdRom&Ven_NECVMWar&Prod_VMware_SATA_CD01#5&1b2c3d4e&0&000000#{53f56308-b6bf-11d0-94f2-00a0c91efb8b}"},
    ],
}

# ============================================================================
WIN2022 = {
    "system_partition": 3,
    "product_name": "Windows Server 2022 Standard",
    "edition_id": "ServerStandard",
    "installation_type": "Server",
    "current_version": "6.3",
    "current_build": "20348",
    "display_version": "21H2",
    "version": "10.0",
    "system_root": "C:\\Windows",
    "architecture": "x86_64",
    "control_set": "ControlSet001",
    "boot_mode": "uefi",
    "boot_partition": 0,
    "bcd_partition": 1,
    "bcd_path": "\\EFI\\Microsoft\\Boot\\BCD",
    "hostname": "W2022-DB01",
    "hiberfil": False,
    "hibernation_enabled": False,
    "hibernated": False,
    "fast_startup": False,
    "storage_drivers": [
        {"name": "atapi", "start": 3, "group": "SCSI Miniport", "file": True},
        {"name": "intelide", "start": 3, "group": "System Bus Extender", "file": True},
        {"name": "LSI_SAS", "start": 3, "group": "SCSI Miniport", "file": True},
        {"name": "LSI_SAS2", "start": 3, "group": "SCSI Miniport", "file": True},
        {"name": "LSI_SAS3", "start": 3, "group": "SCSI Miniport", "file": True},
        {"name": "pciide", "start": 3, "group": "System Bus Extender", "file": True},
        {"name": "percsas3i", "start": 0, "group": "SCSI Miniport", "file": True},
        {"name": "storahci", "start": 3, "group": "SCSI Miniport", "file": True},
        {"name": "stornvme", "start": 0, "group": "SCSI Miniport", "file": True},
        {"name": "storvsc", "start": 3, "group": "SCSI Miniport", "file": True},
    ],
    "hypervisor_tools": [],
    "vendor_agents": [
        {"name": "dsm_om_connsvc", "start": 2},
        {"name": "dsm_om_shrsvc", "start": 2},
        {"name": "dsm_sa_datamgrsvc", "start": 2},
        {"name": "dsm_sa_eventmgr", "start": 2},
        {"name": "iSM", "start": 2},
    ],
    "bitlocker_partitions": [],
    "dynamic_disk": False,
    "drive_letters": [
        {"letter": "C:", "target": "partition 3"},
        {"letter": "E:", "target": "device _??_USBSTOR#Disk&Ven_SanDisk&Prod_Cruzer_Blade&Rev_1.00#4C530001230415117143&0#{53f56307-b6bf-11d0-94f2-00a0c91efb8b}"},
    ],
}

# The variants: their machine's expectations with these changed, and the
# blocker inspection must report.
MACHINES = {
    "win2008r2": (WIN2008R2, {}, None),
    "win2016": (WIN2016, {}, None),
    "win2022": (WIN2022, {}, None),
    "win2008r2-hibernated": (WIN2008R2, {"hibernated": True}, "hibernated"),
    "win2016-dynamic": (WIN2016, {"dynamic_disk": True}, "dynamic-disk"),
    "win2022-bitlocker": (WIN2022, {"bitlocker_partitions": [5]}, "bitlocker"),
}
# ============================================================================

path, name = sys.argv[1:]
info = json.load(open(path))
base, changes, blocker = MACHINES[name]
want = dict(base, **changes)
problems = []
for field, value in (("os", "windows"), ("firmware", want["boot_mode"])):
    if info.get(field) != value:
        problems.append("%s: expected %r, got %r" % (field, value, info.get(field)))
w = info.get("windows")
if not isinstance(w, dict):
    problems.append("no \"windows\" object")
    w = {}
for field, value in want.items():
    if field not in w:
        problems.append("windows.%s: missing (expected %r)" % (field, value))
    elif w[field] == value:
        pass
    elif isinstance(value, list) and isinstance(w[field], list):
        missing = [e for e in value if e not in w[field]]
        extra = [e for e in w[field] if e not in value]
        if missing or extra:
            problems.append("windows.%s: missing %r, unexpected %r" % (field, missing, extra))
        else:
            problems.append("windows.%s: expected the order %r, got %r" % (field, value, w[field]))
    else:
        problems.append("windows.%s: expected %r, got %r" % (field, value, w[field]))
findings = info.get("findings", [])
# (One finding per partition: a dynamic disk's two LDM partitions give two.)
blockers = sorted(set(f["id"] for f in findings if f.get("severity") == "blocker"))
if blockers != ([blocker] if blocker else []):
    problems.append("blocker findings: expected %r, got %r" % ([blocker] if blocker else [], blockers))
for p in problems:
    print("%s: info.json: %s" % (name, p))
sys.exit(1 if problems else 0)
PY
for m in "${WINDOWS_IMAGE_NAMES[@]}"; do
    wait_for 30 test -s "$mnt/$m/info.json" || fail "$m: no info.json in $mnt/$m"
    python3 "$T/check_inspection.py" "$mnt/$m/info.json" "$m" ||
        fail "$m: inspection differs from the expectations (above)"
done

# ---- fixups: the plan's registry edits, exactly ----------------------------
cat >"$T/check_plan.py" <<'PY'
import json, sys

# ============================================================================
# Edits each plan must hold: (hive, key, value, before, after), value None
# for a key made (after "(key)"), before/after as hivexregedit --export
# writes them (None: absent). NOT: (hive, key, value) no edit may touch
# (value "*": any value of that key, or the key itself); NOT_UNDER: key
# prefixes no edit may touch.
# ============================================================================
DISABLE = "dword:00000004"
PLANS = {
    "win2008r2 kvm": {
        "controller": "sata",
        "edits": [
            ("SYSTEM", r"ControlSet001\Services\msahci", "Start", "dword:00000003", "dword:00000000"),
            ("SYSTEM", r"ControlSet001\Control\CriticalDeviceDatabase\pci#ven_8086&dev_2922&cc_0106", None, None, "(key)"),
            ("SYSTEM", r"ControlSet001\Control\CrashControl", "AutoReboot", "dword:00000001", "dword:00000000"),
            ("SYSTEM", r"ControlSet001\Services\CqMgHost", "Start", "dword:00000002", DISABLE),
            ("SYSTEM", "MountedDevices", r"\DosDevices\D:", "*", None),
            ("SYSTEM", "MountedDevices", r"\DosDevices\F:", "*", None),
        ],
        "not": [
            ("SYSTEM", "MountedDevices", r"\DosDevices\C:"),
            ("SYSTEM", "MountedDevices", r"\DosDevices\E:"),
        ],
        "not_under": [],
    },
    # Windows 8 and later boot only from a controller whose driver Windows
    # installed: viostor is staged, the disk goes on SATA (storahci).
    "win2016 kvm": {
        "controller": "sata",
        "edits": [
            ("SYSTEM", r"ControlSet001\Services\storahci", "Start", "dword:00000003", "dword:00000000"),
            ("SYSTEM", r"ControlSet001\Services\VMTools", "Start", "dword:00000002", DISABLE),
        ],
        "not": [
            ("SYSTEM", r"ControlSet001\Services\viostor", "*"),
        ],
        "not_under": [r"ControlSet001\Control\CriticalDeviceDatabase"],
    },
    # Before Windows 8 a copied viostor boots: its service, Start=0 and the
    # CriticalDeviceDatabase entries of virtio-blk's PCI ids.
    "win2008r2 kvm virtio": {
        "controller": "virtio-blk",
        "edits": [
            ("SYSTEM", r"ControlSet001\Services\viostor", None, None, "(key)"),
            ("SYSTEM", r"ControlSet001\Services\viostor", "Start", None, "dword:00000000"),
            ("SYSTEM", r"ControlSet001\Control\CriticalDeviceDatabase\pci#ven_1af4&dev_1001&subsys_00021af4&rev_00", None, None, "(key)"),
            ("SYSTEM", r"ControlSet001\Services\CqMgHost", "Start", "dword:00000002", DISABLE),
        ],
        "not": [
            ("SYSTEM", r"ControlSet001\Services\msahci", "*"),
        ],
        "not_under": [],
    },
    "win2016 vmware": {
        "controller": "pvscsi",
        "edits": [],
        # The tools belong to the target; pvscsi starts at boot already.
        "not": [
            ("SYSTEM", r"ControlSet001\Services\VMTools", "*"),
            ("SYSTEM", r"ControlSet001\Services\VGAuthService", "*"),
            ("SYSTEM", r"ControlSet001\Services\vm3dservice", "*"),
            ("SYSTEM", r"ControlSet001\Services\vmvss", "*"),
            ("SYSTEM", r"ControlSet001\Services\pvscsi", "Start"),
        ],
        "not_under": [],
    },
    "win2022 hyperv": {
        "controller": "hyperv-scsi",
        "edits": [
            ("SYSTEM", r"ControlSet001\Services\storvsc", "Start", "dword:00000003", "dword:00000000"),
        ] + [
            ("SYSTEM", "ControlSet001\\Services\\" + s, "Start", "dword:00000002", DISABLE)
            for s in ("dsm_om_connsvc", "dsm_om_shrsvc", "dsm_sa_datamgrsvc", "dsm_sa_eventmgr", "iSM")
        ],
        "not": [],
        # Windows 8 and later have no CriticalDeviceDatabase.
        "not_under": [r"ControlSet001\Control\CriticalDeviceDatabase"],
    },
}
# ============================================================================

path, case = sys.argv[1:]
plan = json.load(open(path))
want = PLANS[case]
edits = [e for s in plan.get("steps", []) for e in (s.get("registry") or [])]
low = lambda v: None if v is None else v.lower()
problems = []
if plan.get("controller") != want["controller"]:
    problems.append("controller: expected %r, got %r" % (want["controller"], plan.get("controller")))
if plan.get("refusals"):
    problems.append("refusals: %r" % plan["refusals"])
for hive, key, value, before, after in want["edits"]:
    found = [e for e in edits if e["hive"] == hive and e["key"].lower() == key.lower()
             and low(e.get("value")) == low(value)]
    if not found:
        problems.append("no edit of %s %s %r" % (hive, key, value))
        continue
    e = found[0]
    if (before != "*" and e.get("before") != before) or e.get("after") != after:
        problems.append("%s %s %r: expected %s -> %s, planned %s -> %s" % (
            hive, key, value, before, after, e.get("before"), e.get("after")))
for hive, key, value in want["not"]:
    for e in edits:
        if e["hive"] == hive and e["key"].lower() == key.lower() and (
                value == "*" or low(e.get("value")) == low(value)):
            problems.append("unexpected edit: %s %s %r: %s -> %s" % (
                hive, e["key"], e.get("value"), e.get("before"), e.get("after")))
for prefix in want["not_under"]:
    for e in edits:
        if e["key"].lower().startswith(prefix.lower()):
            problems.append("unexpected edit under %s: %s %r" % (prefix, e["key"], e.get("value")))
for p in problems:
    print("%s: plan: %s" % (case, p))
sys.exit(1 if problems else 0)
PY

# fixups_exactly NAME PROFILE [--drivers DIR]: plans (into $T/plan-NAME-PROFILE.json),
# checks the plan's specific edits, applies, and compares the hives of the
# fixed-up disk.raw with the source's.
# CASE names the expectations (default "NAME PROFILE").
fixups_exactly() {
    local m=$1 profile=$2
    shift 2
    local case=${CASE:-$m $profile}
    local plan=$T/plan-${case// /-}.json after=$T/after/${case// /-}
    ctl --json fixups plan "$m" --profile "$profile" "$@" >"$plan"
    python3 "$T/check_plan.py" "$plan" "$case" ||
        fail "$m: the $profile plan differs from the expectations (above)"
    ctl fixups apply "$m" --profile "$profile" "$@" >"$T/apply-$m-$profile.txt"
    windows_export_hives "$mnt/$m/disk.raw" "${SYSTEM_PART[$m]}" "$after"
    python3 "$regdiff" "$plan" "$T/source/$m" "$after" >"$T/regdiff.out" || {
        cat "$T/regdiff.out" >&2
        fail "$m: the registry edits of the $profile fixups differ from the plan (above)"
    }
    log "$case: $(tail -n 1 "$T/regdiff.out")"
}

# discard_back_to_source NAME: discards the fixups; the hives of disk.raw are
# the source's again.
discard_back_to_source() {
    local m=$1 back=$T/discarded/$1 h
    ctl fixups discard "$m" >/dev/null
    rm -rf "$back"
    windows_export_hives "$mnt/$m/disk.raw" "${SYSTEM_PART[$m]}" "$back"
    for h in SYSTEM SOFTWARE; do
        diff -u "$T/source/$m/$h.reg" "$back/$h.reg" >&2 ||
            fail "$m: the $h hive of disk.raw after discard differs from the source's (above)"
    done
}

# 2008 R2 on kvm, without drivers: SATA (msahci), which Windows has.
fixups_exactly win2008r2 kvm
discard_back_to_source win2008r2

# copied_exactly PLAN NAME PART FILE: every file PLAN copies is in NAME's
# disk.raw byte for byte, FILE (a path on the volume) among them.
copied_exactly() {
    local plan=$1 m=$2 part=$3 want=$4 sys_dir=$T/ntfs-$2 host guest on_ntfs
    python3 - "$plan" >"$T/copies.txt" <<'PY'
import json, sys
for step in json.load(open(sys.argv[1]))["steps"]:
    for e in step.get("edits") or []:
        if e["kind"] == "copy":
            print(e["after"] + "\t" + e["path"])
PY
    grep -qiF "$want" "$T/copies.txt" || fail "$m: the plan does not copy $want"
    windows_mount_partition "$mnt/$m/disk.raw" "$part" "$sys_dir"
    while IFS=$'\t' read -r host guest; do
        on_ntfs=${guest//\\//}
        cmp "$host" "$sys_dir/${on_ntfs#/}" || fail "$m: $guest in disk.raw is not a copy of $host"
    done <"$T/copies.txt"
    windows_unmount_partition "$sys_dir"
}

# 2008 R2 on kvm with a virtio-win tree: viostor boots it, copied in byte for
# byte into System32\drivers.
CASE="win2008r2 kvm virtio" fixups_exactly win2008r2 kvm --drivers "$drivers"
copied_exactly "$T/plan-win2008r2-kvm-virtio.json" win2008r2 2 '\Windows\System32\drivers\viostor.sys'
discard_back_to_source win2008r2

# 2016 on kvm with a virtio-win tree: viostor staged for Plug and Play in
# \Windows\Drivers\VirtIO, the disk on SATA.
fixups_exactly win2016 kvm --drivers "$drivers"
copied_exactly "$T/plan-win2016-kvm.json" win2016 3 '\Windows\Drivers\VirtIO\viostor.sys'
discard_back_to_source win2016

# 2016 on vmware: it keeps its tools and its pvscsi.
fixups_exactly win2016 vmware
discard_back_to_source win2016

# 2022 on hyperv (UEFI: generation 2, SCSI).
fixups_exactly win2022 hyperv
discard_back_to_source win2022

# ---- what fixups must not touch ----------------------------------------------
for spec in "win2008r2-hibernated:hibernat" "win2016-dynamic:dynamic disk" "win2022-bitlocker:BitLocker"; do
    m=${spec%%:*}
    run_rc ctl fixups apply "$m" --profile kvm
    assert_eq 1 "$RC" "$m: fixups apply exit status"
    assert_file_has_text "$T/run.err" "${spec#*:}" "$m: fixups apply error"
    assert_eq none "$(ctl --json list | python3 -c '
import json, sys
print(next(s["overlay"] for s in json.load(sys.stdin) if s["name"] == sys.argv[1]))' "$m")" \
        "$m: overlay after a refused apply"
done

# ---- the sources never changed -----------------------------------------------
for m in "${WINDOWS_IMAGE_NAMES[@]}"; do
    assert_eq "${SUM[$m]}" "$(sha256_of "$T/$m.img")" "$m: source image checksum"
done
log "ok"

#!/usr/bin/env bash
# Fixups for the vmware and hyperv targets on the Debian 12 fixture: the
# controller each picks from the guest's initramfs, the disk view and VM
# description in the folder (a .vmx naming the VMDK, whose descriptor has
# the matching adapter; a Hyper-V summary with the generation from the boot
# mode), their survival across a daemon restart, and the errors a caller
# gets for what cannot be done.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/dbus_lib.sh"
source "$(dirname "$0")/debian_image.sh"
need_root
need_cmd qemu-img
need_cmd python3

src=$T/pc.img
debian_image "$src" || fail "cannot make the Debian 12 image (see above)"

start_bus
mnt=$T/mnt
start_bus_daemon "$mnt" --state-dir "$T/state" --views raw

ctl add pc "$src" >/dev/null

# ---- errors first --------------------------------------------------------
run_rc ctl fixups apply pc --profile xen
assert_eq 1 "$RC" "unknown profile"
assert_file_has_text "$T/run.err" "unknown target profile 'xen'"
run_rc ctl fixups discard pc
assert_eq 1 "$RC" "discard without fixups"
assert_file_has_text "$T/run.err" "source 'pc' has no fixups to discard"
run_rc ctl fixups plan nosuch
assert_eq 5 "$RC" "plan of a missing source"
run_rc ctl fixups apply pc --profile vmware --cpus 0
assert_eq 1 "$RC" "zero CPUs"
assert_file_has_text "$T/run.err" "cpus 0: use 1 to 1024"
run_rc ctl fixups apply pc --profile vmware --agents 'x;rm -rf /'
assert_eq 1 "$RC" "a hostile agent name"
assert_file_has_text "$T/run.err" "vendor agent 'x;rm -rf /'"
# Nothing was made by the refused calls.
assert_eq none "$(ctl --json list | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["overlay"])')" "overlay"

# ---- vmware ----------------------------------------------------------------
ctl fixups apply pc --profile vmware --memory 4096 --cpus 2 >"$T/vmware.txt"
assert_file_has_text "$T/vmware.txt" "Fixups for vmware (disk controller pvscsi, the guest's disk /dev/sda)"
vmx=$mnt/pc/vmware.vmx
assert_file_has_text "$vmx" 'scsi0.virtualDev = "pvscsi"'
assert_file_has_text "$vmx" 'scsi0:0.fileName = "vmware.vmdk"'
assert_file_has_text "$vmx" 'memsize = "4096"'
assert_file_has_text "$vmx" 'numvcpus = "2"'
assert_file_has_text "$vmx" 'guestOS = "debian12-64"'
head -c 2048 "$mnt/pc/vmware.vmdk" | grep -aq 'ddb.adapterType = "pvscsi"' || fail "vmware.vmdk's adapter is not pvscsi"
qemu-img compare -q -f vmdk -F raw "$mnt/pc/vmware.vmdk" "$mnt/pc/disk.raw" || fail "vmware.vmdk differs from the fixed-up disk"
assert_eq vmware "$(ctl --json list | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["fixups"])')" "Fixups property"
# Applying again is refused until the first are discarded.
run_rc ctl fixups apply pc --profile hyperv
assert_eq 1 "$RC" "second apply"
assert_file_has_text "$T/run.err" "has fixups for vmware applied already; discard them first"

# ---- they survive a restart ------------------------------------------------
stop_daemon "$mnt"
start_bus_daemon "$mnt" --state-dir "$T/state" --views raw
wait_for 20 test -e "$mnt/pc/vmware.vmx" || fail "vmware.vmx is not back after a restart"
assert_file_has_text "$mnt/pc/vmware.vmx" 'scsi0.virtualDev = "pvscsi"'
wait_for 30 grep -q '"profile": "vmware"' "$mnt/pc/info.json" || fail "info.json does not name the fixups after a restart"
assert_file_has_text "$mnt/pc/report.txt" "Fixups applied for vmware (disk controller pvscsi)."

# ---- hyperv ----------------------------------------------------------------
ctl fixups discard pc >/dev/null
[[ ! -e $mnt/pc/vmware.vmx ]] || fail "vmware.vmx stays after discard"
ctl --json fixups apply pc --profile hyperv >"$T/hyperv.json"
python3 - "$T/hyperv.json" "$mnt" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))
assert a["controller"] == "hyperv-scsi" and a["firmware"] == "bios", a
assert a["files"] == [sys.argv[2] + "/pc/hyperv.vhdx", sys.argv[2] + "/pc/hyperv.txt"], a["files"]
PY
assert_file_contains "$mnt/pc/hyperv.txt" "Generation: *1"
assert_file_has_text "$mnt/pc/hyperv.txt" "New-VM -Name \"pc\" -Generation 1"
qemu-img compare -q -f vhdx -F raw "$mnt/pc/hyperv.vhdx" "$mnt/pc/disk.raw" || fail "hyperv.vhdx differs from the fixed-up disk"
ctl fixups discard pc >/dev/null
cmp "$mnt/pc/disk.raw" "$src" || fail "disk.raw differs from the source after discard"
log "ok"

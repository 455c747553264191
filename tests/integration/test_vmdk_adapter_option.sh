#!/bin/bash
# vmdk.adapter and vmdk.hwversion end up in the VMDK's embedded descriptor
# (found through the header's descriptorOffset/descriptorSize, in sectors),
# the VMDK stays valid for qemu and vmdkinfo; an invalid value is a usage
# error: exit status 2 and one line naming the option.
source "$(dirname "$0")/lib.sh"
need_root
need_cmd qemu-img vmdkinfo od

src=$(fixture tiny)

# descriptor FILE: the text of the embedded descriptor, NULs dropped.
descriptor() {
    local f=$1 magic off len
    magic=$(head -c 4 "$f")
    assert_eq KDMV "$magic" "$f: VMDK magic"
    read -r off len < <(od -An -t u8 -j 28 -N 16 "$f")
    [[ $off -gt 0 && $len -gt 0 ]] || fail "$f: no embedded descriptor (offset $off, size $len)"
    dd if="$f" bs=512 skip="$off" count="$len" status=none | tr -d '\000'
}

start_daemon "$T/mnt" --source t="$src" --option vmdk.adapter=lsilogic --option vmdk.hwversion=7
f=$T/mnt/t/disk.vmdk
descriptor "$f" >"$T/descriptor.txt"
assert_file_contains "$T/descriptor.txt" '^ddb\.adapterType = "lsilogic"$' "descriptor"
assert_file_contains "$T/descriptor.txt" '^ddb\.virtualHWVersion = "7"$' "descriptor"
assert_eq 1 "$(grep -c '^ddb\.adapterType' "$T/descriptor.txt")" "number of adapterType lines"
assert_eq 1 "$(grep -c '^ddb\.virtualHWVersion' "$T/descriptor.txt")" "number of virtualHWVersion lines"
assert_file_contains "$T/descriptor.txt" '^createType="monolithicSparse"$' "descriptor"
run_rc qemu-img check -f vmdk "$f"
assert_eq 0 "$RC" "qemu-img check -f vmdk exit status"
run_rc qemu-img compare -f raw -F vmdk "$src" "$f"
assert_eq 0 "$RC" "qemu-img compare exit status"
vmdkinfo "$f" >/dev/null || fail "vmdkinfo $f failed"
stop_daemon

# The other adapters (pvscsi exists from hardware version 7 on).
for adapter in ide buslogic pvscsi; do
    start_daemon "$T/mnt" --source t="$src" --option vmdk.adapter=$adapter --option vmdk.hwversion=7
    descriptor "$T/mnt/t/disk.vmdk" >"$T/descriptor.txt"
    assert_file_contains "$T/descriptor.txt" "^ddb\\.adapterType = \"$adapter\"\$" "descriptor ($adapter)"
    stop_daemon
done

mkdir -p "$T/mnt-bad"
run_daemon_fg --mount "$T/mnt-bad" --source t="$src" --option vmdk.adapter=scsi
expect_startup_error 2 'adapter' "vmdk.adapter=scsi"
assert_file_contains "$T/run.err" 'scsi' "vmdk.adapter=scsi: stderr names the value"
is_mounted "$T/mnt-bad" && fail "a mount was left at $T/mnt-bad"

run_daemon_fg --mount "$T/mnt-bad" --source t="$src" --option vmdk.hwversion=abc
expect_startup_error 2 'hwversion' "vmdk.hwversion=abc"

run_daemon_fg --mount "$T/mnt-bad" --source t="$src" --option vmdk.nosuchkey=1
expect_startup_error 2 'nosuchkey' "vmdk.nosuchkey=1"
exit 0

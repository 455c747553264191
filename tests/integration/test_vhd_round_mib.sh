#!/bin/bash
# vhd.round=mib and vhd-fixed.round=mib round the VHD virtual size up to
# whole MiB (Azure requires it): for the odd fixture (10 MiB + 12345 bytes)
# qemu sees exactly 11 MiB, the added tail reads as zeros, so qemu-img
# compare against the source still passes, and vhdiinfo agrees. The other
# views keep their sizes.
source "$(dirname "$0")/lib.sh"
need_root
need_cmd qemu-img vhdiinfo

src=$(fixture odd)
size=$(stat -c %s "$src")
MiB=$((1 << 20))
want=$(round_up "$size" $MiB)
assert_eq $((11 * MiB)) "$want" "odd fixture rounded to MiB"

start_daemon "$T/mnt" --source odd="$src" --option vhd.round=mib --option vhd-fixed.round=mib

for view in disk.vhd disk-fixed.vhd; do
    f=$T/mnt/odd/$view
    vsize=$(qemu_virtual_size vpc "$f")
    assert_eq "$want" "$vsize" "$view: qemu-img info virtual-size"
    assert_eq 0 $((vsize % MiB)) "$view: virtual size modulo 1 MiB"
    run_rc qemu-img compare -f raw -F vpc "$src" "$f"
    [[ $RC -eq 0 ]] || fail "$view: qemu-img compare exited $RC: $(cat "$T/run.out" "$T/run.err")"
    # qemu warns about the differing sizes, then finds the extra tail zero.
    assert_eq $'Warning: Image size mismatch!\nImages are identical.' "$(cat "$T/run.out")" \
        "$view: qemu-img compare output"
    out=$(vhdiinfo "$f") || fail "vhdiinfo $f failed"
    assert_eq "$want" "$(sed -n 's/.*Media size.*(\([0-9]*\) bytes).*/\1/p' <<<"$out")" "$view: vhdiinfo media size"
done

# A fixed VHD is the disk followed by a 512-byte footer.
assert_eq $((want + 512)) "$(stat -c %s "$T/mnt/odd/disk-fixed.vhd")" "size of disk-fixed.vhd"
# The option is per format: raw and VMDK are not rounded to MiB.
assert_eq "$size" "$(stat -c %s "$T/mnt/odd/disk.raw")" "size of disk.raw"
assert_eq "$(round_up "$size" 512)" "$(qemu_virtual_size vmdk "$T/mnt/odd/disk.vmdk")" "disk.vmdk virtual-size"

stop_daemon

# Each option applies to its own format only: vhd.round=mib alone leaves the
# fixed VHD at whole sectors.
start_daemon "$T/mnt" --source odd="$src" --option vhd.round=mib
assert_eq "$want" "$(qemu_virtual_size vpc "$T/mnt/odd/disk.vhd")" "disk.vhd virtual-size (vhd.round=mib only)"
assert_eq "$(round_up "$size" 512)" "$(qemu_virtual_size vpc "$T/mnt/odd/disk-fixed.vhd")" \
    "disk-fixed.vhd virtual-size (vhd.round=mib only)"
stop_daemon

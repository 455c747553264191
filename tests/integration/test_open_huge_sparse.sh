#!/bin/bash
# Opening a 1 TiB sparse disk costs time and space in proportion to its data
# (8 KiB at each end), not its size: the daemon is ready within 5 s (the
# benchmarks measure it precisely), qemu opens every view with the right size,
# the first and last MiB of each view hold the source's bytes, and the
# dynamic views are small:
#   VHD:  the BAT has 4 B per 2 MiB block (2 MiB for 1 TiB) + 2 data blocks
#         of 2 MiB: ~6 MiB; bound 16 MiB. (1 TiB is under VHD's 2040 GiB.)
#   VMDK: two copies of the grain tables, 4 B per 64 KiB grain each (64 MiB
#         per copy for 1 TiB) + 2 grains: ~128 MiB; bound 160 MiB.
source "$(dirname "$0")/lib.sh"
need_root
need_cmd qemu-img

src=$(fixture huge)
size=$(stat -c %s "$src")
MiB=$((1 << 20))
assert_eq $((1 << 40)) "$size" "size of the huge fixture"

t0=$(date +%s%N)
start_daemon "$T/mnt" --source h="$src"
elapsed_ms=$((($(date +%s%N) - t0) / 1000000))
log "ready after $elapsed_ms ms"
assert_lt "$elapsed_ms" 5000 "milliseconds until the daemon was ready"

d=$T/mnt/h
assert_eq "$size" "$(stat -c %s "$d/disk.raw")" "size of disk.raw"
assert_eq $((size + 512)) "$(stat -c %s "$d/disk-fixed.vhd")" "size of disk-fixed.vhd"

head -c $MiB "$src" >"$T/src-first"
tail -c $MiB "$src" >"$T/src-last"
for view in "${VIEWS[@]}"; do
    fmt=$(qemu_format "$view")
    f=$d/$view
    assert_eq "$fmt" "$(qemu_format_name "$fmt" "$f")" "$view: qemu-img info format"
    assert_eq "$size" "$(qemu_virtual_size "$fmt" "$f")" "$view: qemu-img info virtual-size"
    qemu_extract "$fmt" "$f" 0 $MiB "$T/first"
    cmp "$T/src-first" "$T/first" || fail "$view: the first MiB differs from the source"
    qemu_extract "$fmt" "$f" $((size - MiB)) $MiB "$T/last"
    cmp "$T/src-last" "$T/last" || fail "$view: the last MiB differs from the source"
done

vhd_size=$(stat -c %s "$d/disk.vhd")
vmdk_size=$(stat -c %s "$d/disk.vmdk")
log "disk.vhd: $vhd_size bytes, disk.vmdk: $vmdk_size bytes"
assert_lt "$vhd_size" $((16 * MiB)) "size of disk.vhd"
assert_lt "$vmdk_size" $((160 * MiB)) "size of disk.vmdk"

run_rc qemu-img check -f vmdk "$d/disk.vmdk"
[[ $RC -eq 0 ]] || fail "qemu-img check of disk.vmdk exited $RC: $(cat "$T/run.out" "$T/run.err")"
stop_daemon

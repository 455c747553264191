#!/bin/bash
# disk.vdi holds the source's bytes, as two readers that no one here wrote
# see them. VirtualBox's own tools are not in Debian 12, and libyal has no
# VDI library there; 7-Zip (package 7zip, command 7zz) reads VDI with code
# of its own, so it stands in for VirtualBox next to qemu:
#  - qemu-img compare (source as raw, view as vdi) says "identical";
#  - qemu-img check finds no errors (it checks the block map and the
#    allocated block count against each other);
#  - qemu-img info names the format vdi and the virtual size: the source
#    rounded up to 512 bytes (VirtualBox rounds a size that is not whole
#    sectors down, so the view rounds it up);
#  - 7zz, told the file is a VDI (-tVDI: otherwise it opens the partition
#    table and file system inside), lists a dynamic VDI of that size whose
#    creation UUID is the version-8 UUID the view derives (so the RTUUID
#    byte order is right), and extracts exactly the source's bytes (plus
#    the zero padding);
#  - 7zz, left to open what is inside sparse-ext4's VDI, reads files out of
#    its ext4 file system that equal the files it was made from.
# And the file of sparse-ext4 is small: with A bytes in the 1 MiB blocks
# that hold any extent of the source (FIEMAP, written or not), it is at most
# the 2 MiB of header and block map (a 4 GiB disk has 4096 blocks, 16 KiB of
# map, both aligned to 1 MiB as VirtualBox aligns them) plus A, and at least
# the 148 MiB of random file data the file system holds.
source "$(dirname "$0")/lib.sh"
need_root
need_cmd qemu-img 7zz perl filefrag

MiB=$((1 << 20))
declare -A SRC=()
SRC[sparse]=$(fixture sparse-ext4)
SRC[random]=$(fixture random)
SRC[tiny]=$(fixture tiny)
SRC[odd]=$(fixture odd)

args=()
for name in "${!SRC[@]}"; do
    args+=(--source "$name=${SRC[$name]}")
done
start_daemon "$T/mnt" "${args[@]}"

for name in sparse random tiny odd; do
    src=${SRC[$name]}
    size=$(stat -c %s "$src")
    disk_size=$(round_up "$size" 512)
    f=$T/mnt/$name/disk.vdi
    what="$name/disk.vdi"
    [[ -f $f ]] || fail "$f is missing"
    log "checking $what ($size bytes of source)"

    run_rc qemu-img compare -f raw -F vdi "$src" "$f"
    [[ $RC -eq 0 ]] || fail "$what: qemu-img compare exited $RC: $(cat "$T/run.out" "$T/run.err")"
    assert_eq "Images are identical." "$(cat "$T/run.out")" "$what: qemu-img compare output"

    run_rc qemu-img check -f vdi "$f"
    [[ $RC -eq 0 ]] || fail "$what: qemu-img check exited $RC: $(cat "$T/run.out" "$T/run.err")"
    assert_file_contains "$T/run.out" "^No errors were found on the image\.$" "$what: qemu-img check"

    assert_eq vdi "$(qemu_format_name vdi "$f")" "$what: qemu-img info format"
    assert_eq "$disk_size" "$(qemu_virtual_size vdi "$f")" "$what: qemu-img info virtual-size"

    run_rc 7zz l -slt -tVDI "$f"
    [[ $RC -eq 0 ]] || fail "$what: 7zz l exited $RC: $(cat "$T/run.out" "$T/run.err")"
    assert_file_contains "$T/run.out" "^Type = VDI$" "$what: 7zz type"
    assert_file_contains "$T/run.out" "^Method = Dynamic$" "$what: 7zz method"
    assert_file_contains "$T/run.out" "^Size = $disk_size$" "$what: 7zz size"
    assert_file_contains "$T/run.out" \
        "^Creat *: \{[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\}$" \
        "$what: 7zz creation UUID"
    # Extracted whole: the source followed by the zeros that round it up.
    7zz e -so -tVDI "$f" 2>"$T/7zz.err" | cmp - <(cat "$src"; head -c $((disk_size - size)) /dev/zero) ||
        fail "$what: 7zz extracts other bytes than the source's ($(cat "$T/7zz.err"))"
done

# Through the VDI, the MBR and the ext4 inside it, as 7-Zip reads them.
tree=$(fixture_dir sparse-ext4)/tree
for file in blobs/blob12.bin blobs/deeper/deepest/odd.bin "dir1/a file with spaces.txt"; do
    7zz e -so "$T/mnt/sparse/disk.vdi" "$file" 2>"$T/7zz.err" | cmp - "$tree/$file" ||
        fail "sparse/disk.vdi: 7zz reads $file out of the ext4 inside differently ($(cat "$T/7zz.err"))"
done

# The sparse file system's VDI holds its data blocks and little more.
dir=$(fixture_dir sparse-ext4)
src=$dir/disk.img
size=$(stat -c %s "$src")
blocks_bytes=$(extent_blocks_bytes "$src" $MiB)
random_bytes=$(find "$dir/tree/blobs" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
vdi_size=$(stat -c %s "$T/mnt/sparse/disk.vdi")
metadata=$(round_up $((MiB + 4 * size / MiB)) $MiB)
log "sparse: $size bytes, $blocks_bytes in 1 MiB blocks with extents; disk.vdi: $vdi_size bytes"
assert_eq 0 $(((vdi_size - metadata) % MiB)) "disk.vdi: header and map, then whole 1 MiB blocks"
assert_le "$vdi_size" $((metadata + blocks_bytes)) "disk.vdi size vs 2 MiB + its source's 1 MiB blocks"
assert_le "$random_bytes" "$vdi_size" "disk.vdi size vs the random data in the file system"
assert_lt "$vdi_size" $((size / 10)) "disk.vdi size vs a tenth of the virtual size"

stop_daemon

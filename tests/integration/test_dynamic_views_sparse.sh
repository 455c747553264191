#!/bin/bash
# Dynamic views of a sparse source are sparse: disk.vhd and disk.vmdk of the
# 4 GiB sparse-ext4 fixture (~220 MiB allocated) hold only the blocks and
# grains that hold data, plus their metadata.
#
# Bounds, for a source with A bytes allocated (du --block-size=1):
#  - Loose, as the contract states it: size <= A + A/10 + 16 MiB (38 MiB
#    of slack here). Rounding each of the image's ~15 extent runs out to
#    whole 2 MiB blocks (VHD) or 64 KiB grains (VMDK) costs at most two
#    blocks per run, less where runs share a block: ~24 MiB for the VHD and
#    under 1 MiB for the VMDK here. The VHD's bitmaps add 512 B per 2 MiB
#    block, the metadata under 1 MiB for either format.
#  - Tight, from the file's extent map (FIEMAP: written, unwritten and
#    delayed extents, so it bounds what SEEK_DATA reports whatever the page
#    cache holds): the number of 2 MiB blocks (64 KiB grains) that hold any
#    extent, times the block size, plus the format's fixed metadata
#    for a 4 GiB disk, plus 1 MiB for aligning the first data block:
#      VHD:  blocks * (2 MiB + 512 B bitmap) + BAT (2048 * 4 B) + footer,
#            footer copy and dynamic header (512 + 512 + 1024 B)
#      VMDK: grains * 64 KiB + 2 grain tables (65536 * 4 B each) + 2 grain
#            directories (128 * 4 B each, a sector each) + header and
#            descriptor (covered by the 1 MiB)
#  - Lower: the tree's random files (148 MiB of bytes that are not zero)
#    must be in there.
#  - Far below the virtual size: under a tenth of 4 GiB.
source "$(dirname "$0")/lib.sh"
need_root
need_cmd perl filefrag

dir=$(fixture_dir sparse-ext4)
src=$dir/disk.img
start_daemon "$T/mnt" --source s="$src"

MiB=$((1 << 20))
size=$(stat -c %s "$src")
allocated=$(du --block-size=1 "$src" | cut -f1)
blocks_bytes=$(extent_blocks_bytes "$src" $((2 * MiB)))
grains_bytes=$(extent_blocks_bytes "$src" $((64 << 10)))
random_bytes=$(find "$dir/tree/blobs" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
log "source: $size bytes, $allocated allocated, $blocks_bytes in 2 MiB blocks, $grains_bytes in 64 KiB grains"

vhd_size=$(stat -c %s "$T/mnt/s/disk.vhd")
vmdk_size=$(stat -c %s "$T/mnt/s/disk.vmdk")
log "disk.vhd: $vhd_size bytes, disk.vmdk: $vmdk_size bytes"

loose=$((allocated + allocated / 10 + 16 * MiB))
assert_le "$vhd_size" "$loose" "disk.vhd size vs allocated + 10% + 16 MiB"
assert_le "$vmdk_size" "$loose" "disk.vmdk size vs allocated + 10% + 16 MiB"

vhd_blocks=$((blocks_bytes / (2 * MiB)))
vhd_entries=$(((size + 2 * MiB - 1) / (2 * MiB)))
vhd_tight=$((vhd_blocks * (2 * MiB + 512) + $(round_up $((vhd_entries * 4)) 512) + 2048 + MiB))
assert_le "$vhd_size" "$vhd_tight" "disk.vhd size vs its allocated 2 MiB blocks + metadata"

vmdk_grains=$((size / (64 << 10)))
vmdk_tight=$((grains_bytes + 2 * $(round_up $((vmdk_grains * 4)) 512) + 2 * 512 + MiB))
assert_le "$vmdk_size" "$vmdk_tight" "disk.vmdk size vs its allocated grains + metadata"

assert_le "$random_bytes" "$vhd_size" "disk.vhd size vs the random data in the file system"
assert_le "$random_bytes" "$vmdk_size" "disk.vmdk size vs the random data in the file system"

assert_lt "$vhd_size" $((size / 10)) "disk.vhd size vs a tenth of the virtual size"
assert_lt "$vmdk_size" $((size / 10)) "disk.vmdk size vs a tenth of the virtual size"

stop_daemon

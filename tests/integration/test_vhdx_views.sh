#!/bin/bash
# VHDX views hold the source's bytes, as readers that no one here wrote see
# them. For the fixtures sparse-ext4, random, tiny and odd, each source shows
# disk.vhdx (dynamic) and disk-fixed.vhdx (fixed) with the defaults (32 MiB
# blocks, 512-byte logical sectors), and both again with block-size=1M and
# with logical-sector-size=4096:
#  - 512-byte sectors: qemu-img compare -f raw -F vhdx says "Images are
#    identical.", qemu-img check -f vhdx finds no errors, qemu-img info names
#    the format and the virtual size (the source rounded up to 512 bytes);
#  - 4096-byte sectors: the virtual size is the source rounded up to 4096
#    bytes (VHDX sizes are whole logical sectors). qemu 7.2 refuses such
#    files ("Operation not supported": its VHDX driver reads only 512-byte
#    sectors), asserted so that a qemu that learns them is noticed; libvhdi's
#    vhdimount reads the disk instead, and it must be the source followed by
#    zeros;
#  - libvhdi's vhdiinfo reports the same media size for every file;
#  - file sizes are exact: 3 MiB (header section, log, metadata) + the BAT in
#    whole MiB + the payload blocks. The dynamic file of sparse-ext4 stores
#    only the blocks that hold data: at most the source's extents (FIEMAP)
#    rounded out to whole blocks, at least the random data in its file system.
# The huge fixture (1 TiB, data at both ends) needs sector bitmap entries in
# the BAT after every 128 payload entries (chunk ratio): qemu reads its first
# and last MiB back through them from both files, and checks them clean.
source "$(dirname "$0")/lib.sh"
need_root
need_cmd qemu-img vhdiinfo vhdimount fusermount3 perl filefrag

MiB=$((1 << 20))

declare -A SRC=()
SRC[sparse]=$(fixture sparse-ext4)
SRC[random]=$(fixture random)
SRC[tiny]=$(fixture tiny)
SRC[odd]=$(fixture odd)

args=(--views "vhdx,vhdx-fixed")
for name in "${!SRC[@]}"; do
    args+=(--source "$name=${SRC[$name]}"
        --view "$name/b1m.vhdx=vhdx,block-size=1M"
        --view "$name/b1m-fixed.vhdx=vhdx-fixed,block-size=1M"
        --view "$name/l4k.vhdx=vhdx,logical-sector-size=4096"
        --view "$name/l4k-fixed.vhdx=vhdx-fixed,logical-sector-size=4096")
done
MNT=$T/mnt
start_daemon "$MNT" "${args[@]}"

# libyal info tools print "Media size : 10 MiB (10485760 bytes)".
vhdiinfo_field() { # FILE REGEX: the first number in parentheses, else the first number
    local out
    out=$(vhdiinfo "$1") || fail "vhdiinfo $1 exited with status $?"
    grep -E "$2" <<<"$out" | head -n 1 | perl -ne 'print /\((\d+) bytes\)/ ? $1 : /(\d+)/ ? $1 : ""'
}

# expected_file_size VIEW-KIND DISK-SIZE BLOCK-SIZE LOGICAL-SECTOR DYNAMIC-BLOCKS
# The layout of vhdx.cpp: 3 MiB, then the BAT (payload entries plus a sector
# bitmap entry after every chunk ratio of them) in whole MiB, then blocks.
expected_file_size() {
    local kind=$1 disk=$2 block=$3 lss=$4 stored=$5
    local blocks=$(((disk + block - 1) / block))
    local ratio=$(((1 << 23) * lss / block))
    local entries=$((blocks + (blocks - 1) / ratio))
    local bat
    bat=$(round_up $((entries * 8)) $MiB)
    [[ $kind == fixed ]] && stored=$blocks
    echo $((3 * MiB + bat + stored * block))
}

VHDI_MOUNTS=0
# vhdi_compare FILE SRC DISK-SIZE WHAT: libvhdi's vhdimount shows FILE's disk
# as vhdi1; it must be DISK-SIZE bytes, SRC followed by zeros.
vhdi_compare() {
    local f=$1 src=$2 want=$3 what=$4
    local dir=$T/vhdi.$((VHDI_MOUNTS++)) size pid
    size=$(stat -c %s "$src")
    mkdir -p "$dir"
    # (vhdimount prints its version on stdout.)
    # shellcheck disable=SC2016 # $1 and $2 are the inner shell's arguments
    bg_tracked sh -c 'exec vhdimount "$1" "$2" >/dev/null' vhdimount "$f" "$dir"
    pid=$BG_PID
    push_cleanup force_unmount "$dir"
    wait_for 10 test -e "$dir/vhdi1" || fail "$what: vhdimount shows no $dir/vhdi1"
    assert_eq "$want" "$(stat -c %s "$dir/vhdi1")" "$what: size of the disk vhdimount shows"
    cmp -n "$size" "$src" "$dir/vhdi1" || fail "$what: vhdimount reads other bytes than the source"
    if ((want > size)); then
        cmp <(head -c $((want - size)) /dev/zero) <(tail -c $((want - size)) "$dir/vhdi1") ||
            fail "$what: the padding after the source is not zeros"
    fi
    fusermount3 -u "$dir"
    _kill_pid "$pid"
}

for name in sparse random tiny odd; do
    src=${SRC[$name]}
    size=$(stat -c %s "$src")
    dir=$MNT/$name
    [[ -d $dir ]] || fail "$dir is missing"
    assert_eq "b1m-fixed.vhdx b1m.vhdx disk-fixed.vhdx disk.vhdx l4k-fixed.vhdx l4k.vhdx " \
        "$(list_views "$dir")" "files in $dir"

    for view in disk.vhdx disk-fixed.vhdx b1m.vhdx b1m-fixed.vhdx l4k.vhdx l4k-fixed.vhdx; do
        f=$dir/$view
        what="$name/$view"
        kind=dynamic
        [[ $view == *fixed* ]] && kind=fixed
        block=$((32 * MiB))
        [[ $view == b1m* ]] && block=$MiB
        lss=512
        [[ $view == l4k* ]] && lss=4096
        disk=$(round_up "$size" $lss)
        log "checking $what ($kind, block $block, sector $lss)"

        assert_eq "$disk" "$(vhdiinfo_field "$f" 'Media size')" "$what: vhdiinfo media size"
        assert_eq "$lss" "$(vhdiinfo_field "$f" 'Bytes per sector')" "$what: vhdiinfo bytes per sector"
        want_type=Dynamic
        [[ $kind == fixed ]] && want_type=Fixed
        info=$(vhdiinfo "$f") || fail "vhdiinfo $f exited with status $?"
        grep -Eq "Disk type[[:space:]]*: $want_type\$" <<<"$info" ||
            fail "$what: vhdiinfo does not report disk type $want_type: $info"

        if [[ $kind == fixed ]]; then
            assert_eq "$(expected_file_size fixed "$disk" $block $lss 0)" "$(stat -c %s "$f")" \
                "$what: file size"
        fi

        if [[ $lss == 4096 ]]; then
            run_rc qemu-img info -f vhdx "$f"
            assert_ne 0 "$RC" "$what: qemu-img info exit status (qemu reads 512-byte sectors only)"
            assert_file_has_text "$T/run.err" "Operation not supported" "$what: qemu-img info"
            vhdi_compare "$f" "$src" "$disk" "$what"
            continue
        fi

        run_rc qemu-img compare -f raw -F vhdx "$src" "$f"
        [[ $RC -eq 0 ]] || fail "$what: qemu-img compare exited $RC: $(cat "$T/run.out" "$T/run.err")"
        assert_eq "Images are identical." "$(cat "$T/run.out")" "$what: qemu-img compare output"

        assert_eq vhdx "$(qemu_format_name vhdx "$f")" "$what: qemu-img info format"
        assert_eq "$disk" "$(qemu_virtual_size vhdx "$f")" "$what: qemu-img info virtual-size"

        run_rc qemu-img check -f vhdx "$f"
        [[ $RC -eq 0 ]] || fail "$what: qemu-img check exited $RC: $(cat "$T/run.out" "$T/run.err")"
        assert_file_contains "$T/run.out" "^No errors were found on the image\.$" "$what: qemu-img check"
    done
done

# The dynamic files of sparse-ext4 (4 GiB, ~220 MiB allocated) hold exactly
# the blocks that hold any extent of the source, or fewer (unwritten extents
# are left out): bound = expected size with every such block stored.
src=${SRC[sparse]}
size=$(stat -c %s "$src")
random_bytes=$(find "$(dirname "$src")/tree/blobs" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
for view in disk.vhdx b1m.vhdx; do
    f=$MNT/sparse/$view
    block=$((32 * MiB))
    [[ $view == b1m.vhdx ]] && block=$MiB
    touched=$(extent_blocks_bytes "$src" $block)
    bound=$(expected_file_size dynamic "$size" $block 512 $((touched / block)))
    actual=$(stat -c %s "$f")
    log "sparse/$view: $actual bytes; source extents in $block-byte blocks: $touched bytes; bound $bound"
    assert_le "$actual" "$bound" "sparse/$view size vs its blocks holding extents + metadata"
    assert_le "$random_bytes" "$actual" "sparse/$view size vs the random data in the file system"
    assert_eq 0 $(((actual - 4 * MiB) % block)) "sparse/$view: payload is whole blocks after 4 MiB"
done
assert_lt "$(stat -c %s "$MNT/sparse/disk.vhdx")" $((size / 4)) "sparse/disk.vhdx vs a quarter of 4 GiB"
assert_lt "$(stat -c %s "$MNT/sparse/b1m.vhdx")" $((size / 10)) "sparse/b1m.vhdx vs a tenth of 4 GiB"

stop_daemon

# 1 TiB: 32768 payload blocks of 32 MiB, a sector bitmap entry after each
# 128 of them. The dynamic file holds the first and the last block only.
src=$(fixture huge)
size=$(stat -c %s "$src")
start_daemon "$T/mnt-huge" --views vhdx,vhdx-fixed --source h="$src"
head -c $MiB "$src" >"$T/src-first"
tail -c $MiB "$src" >"$T/src-last"
for view in disk.vhdx disk-fixed.vhdx; do
    f=$T/mnt-huge/h/$view
    assert_eq "$size" "$(qemu_virtual_size vhdx "$f")" "huge/$view: qemu-img info virtual-size"
    assert_eq "$size" "$(vhdiinfo_field "$f" 'Media size')" "huge/$view: vhdiinfo media size"
    qemu_extract vhdx "$f" 0 $MiB "$T/first"
    cmp "$T/src-first" "$T/first" || fail "huge/$view: the first MiB differs from the source"
    qemu_extract vhdx "$f" $((size - MiB)) $MiB "$T/last"
    cmp "$T/src-last" "$T/last" || fail "huge/$view: the last MiB differs from the source"
    run_rc qemu-img check -f vhdx "$f"
    [[ $RC -eq 0 ]] || fail "huge/$view: qemu-img check exited $RC: $(cat "$T/run.out" "$T/run.err")"
done
assert_eq "$(expected_file_size dynamic "$size" $((32 * MiB)) 512 2)" \
    "$(stat -c %s "$T/mnt-huge/h/disk.vhdx")" "huge/disk.vhdx size"
assert_eq "$(expected_file_size fixed "$size" $((32 * MiB)) 512 0)" \
    "$(stat -c %s "$T/mnt-huge/h/disk-fixed.vhdx")" "huge/disk-fixed.vhdx size"
stop_daemon "$T/mnt-huge"

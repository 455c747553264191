#!/bin/bash
# Every view of every source holds the source's bytes, as readers that no one
# here wrote see them:
#  - qemu-img compare (source as raw, view in its format) says "identical";
#  - qemu-img info names the format and the virtual size (the source size
#    rounded up to 512 bytes; qemu reports raw files that way too, and
#    stat(2) of disk.raw must be the exact source size);
#  - qemu-img check passes every format that has checks (VMDK, VHDX, qcow2,
#    VDI), and reports "not supported" (exit 63) for raw and vpc, so a change
#    in qemu is noticed;
#  - libyal's vhdiinfo, vmdkinfo and qcowinfo open the VHD/VHDX, VMDK and
#    qcow2 files and report the same media size.
source "$(dirname "$0")/lib.sh"
need_root
need_cmd qemu-img vhdiinfo vmdkinfo qcowinfo

declare -A SRC=()
SRC[sparse]=$(fixture sparse-ext4)
SRC[random]=$(fixture random)
SRC[tiny]=$(fixture tiny)
SRC[odd]=$(fixture odd)

args=()
for name in "${!SRC[@]}"; do
    args+=(--source "$name=${SRC[$name]}")
done
MNT=$T/mnt
start_daemon "$MNT" "${args[@]}"

# libyal info tools print "Media size : 10 MiB (10485760 bytes)".
libyal_media_size() { # TOOL FILE
    local out
    out=$("$1" "$2") || fail "$1 $2 exited with status $?"
    sed -n 's/.*Media size.*(\([0-9]*\) bytes).*/\1/p' <<<"$out" | head -n 1
}

for name in sparse random tiny odd; do
    src=${SRC[$name]}
    size=$(stat -c %s "$src")
    dir=$MNT/$name
    [[ -d $dir ]] || fail "$dir is missing"
    listing=$(list_views "$dir")
    assert_eq "$(sorted_listing "${VIEWS[@]}")" "$listing" "files in $dir"

    assert_eq "$size" "$(stat -c %s "$dir/disk.raw")" "$name: size of disk.raw"
    # A fixed VHD is the disk, whole sectors, followed by a 512-byte footer.
    assert_eq $(($(round_up "$size" 512) + 512)) "$(stat -c %s "$dir/disk-fixed.vhd")" \
        "$name: size of disk-fixed.vhd"

    for view in "${VIEWS[@]}"; do
        f=$dir/$view
        fmt=$(qemu_format "$view")
        what="$name/$view"
        log "checking $what"

        run_rc qemu-img compare -f raw -F "$fmt" "$src" "$f"
        [[ $RC -eq 0 ]] || fail "$what: qemu-img compare exited $RC: $(cat "$T/run.out" "$T/run.err")"
        assert_eq "Images are identical." "$(cat "$T/run.out")" "$what: qemu-img compare output"

        assert_eq "$fmt" "$(qemu_format_name "$fmt" "$f")" "$what: qemu-img info format"
        want=$(expected_virtual_size "$view" "$size")
        assert_eq "$want" "$(qemu_virtual_size "$fmt" "$f")" "$what: qemu-img info virtual-size"

        run_rc qemu-img check -f "$fmt" "$f"
        if qemu_checkable "$fmt"; then
            [[ $RC -eq 0 ]] || fail "$what: qemu-img check exited $RC: $(cat "$T/run.out" "$T/run.err")"
            assert_file_contains "$T/run.out" "^No errors were found on the image\.$" "$what: qemu-img check"
        else
            assert_eq 63 "$RC" "$what: qemu-img check -f $fmt exit status (format has no checks)"
        fi

        reader=$(libyal_reader "$view")
        if [[ -n $reader ]]; then
            assert_eq "$(round_up "$size" 512)" "$(libyal_media_size "$reader" "$f")" \
                "$what: $reader media size"
        fi
    done
done

stop_daemon

#!/bin/bash
# The VMDK flat pair (format vmdk-flat): disk-esx.vmdk, a descriptor naming
# disk-esx-flat.vmdk by its bare name, and the flat extent itself.
#  - qemu-img compare (source as raw, descriptor as vmdk) says "identical",
#    qemu-img check is clean, qemu-img info says create type "vmfs" and the
#    virtual size; the extent is the source rounded up to 512 bytes;
#  - libyal's vmdkinfo reports the media size, and vmdkmount reads the same
#    bytes as the source;
#  - the pair copied together to another directory still compares identical
#    (the descriptor names the extent relatively), and a descriptor copied
#    alone does not open;
#  - with vmdk-flat.createtype=monolithicFlat the descriptor has a FLAT
#    extent line and qemu reports that create type.
source "$(dirname "$0")/lib.sh"
need_root
need_cmd qemu-img vmdkinfo vmdkmount perl

declare -A SRC=()
SRC[sparse]=$(fixture sparse-ext4)
SRC[random]=$(fixture random)
SRC[tiny]=$(fixture tiny)
SRC[odd]=$(fixture odd)
NAMES=(sparse random tiny odd)

# create_type FILE: format-specific create-type of qemu-img info.
create_type() {
    qemu-img info --output=json -f vmdk "$1" | perl -MJSON::PP -e '
        local $/; my $v = decode_json(<STDIN>)->{"format-specific"}{data}{"create-type"};
        defined $v or die "no create-type\n"; print "$v\n";'
}

# same_as_source WHAT SRC VMDK: qemu-img compare says identical.
same_as_source() {
    run_rc qemu-img compare -f raw -F vmdk "$2" "$3"
    [[ $RC -eq 0 ]] || fail "$1: qemu-img compare exited $RC: $(cat "$T/run.out" "$T/run.err")"
    assert_eq "Images are identical." "$(cat "$T/run.out")" "$1: qemu-img compare output"
}

# check_clean WHAT VMDK
check_clean() {
    run_rc qemu-img check -f vmdk "$2"
    [[ $RC -eq 0 ]] || fail "$1: qemu-img check exited $RC: $(cat "$T/run.out" "$T/run.err")"
    assert_file_contains "$T/run.out" "^No errors were found on the image\.$" "$1: qemu-img check"
}

# libvmdk_reads WHAT VMDK SRC: vmdkmount shows the source's bytes.
libvmdk_reads() {
    local mnt=$T/vmdkmount size
    mkdir -p "$mnt"
    # (vmdkmount prints its banner on stdout)
    bg_tracked sh -c 'exec vmdkmount "$0" "$1" >/dev/null' "$2" "$mnt"
    push_cleanup force_unmount "$mnt"
    wait_for 10 test -e "$mnt/vmdk1" || fail "$1: vmdkmount did not show $mnt/vmdk1"
    size=$(stat -c %s "$3")
    cmp -n "$size" "$mnt/vmdk1" "$3" || fail "$1: vmdkmount reads other bytes than the source"
    force_unmount "$mnt"
}

args=()
for name in "${NAMES[@]}"; do
    args+=(--source "$name=${SRC[$name]}")
done
start_daemon "$T/mnt" "${args[@]}"

for name in "${NAMES[@]}"; do
    src=${SRC[$name]}
    size=$(stat -c %s "$src")
    sectors=$(($(round_up "$size" 512) / 512))
    desc=$T/mnt/$name/disk-esx.vmdk
    flat=$T/mnt/$name/disk-esx-flat.vmdk
    what="$name/disk-esx.vmdk"
    log "checking $what"
    [[ -f $desc && -f $flat ]] || fail "$name: disk-esx.vmdk or disk-esx-flat.vmdk missing: $(list_dir "$T/mnt/$name")"
    assert_eq "$(round_up "$size" 512)" "$(stat -c %s "$flat")" "$name: size of the flat extent"

    cp "$desc" "$T/desc.txt"
    assert_file_contains "$T/desc.txt" '^createType="vmfs"$' "$what"
    assert_file_contains "$T/desc.txt" "^RW $sectors VMFS \"disk-esx-flat\\.vmdk\"\$" "$what: extent line"
    assert_eq 1 "$(grep -c '^RW ' "$T/desc.txt")" "$what: number of extent lines"

    same_as_source "$what" "$src" "$desc"
    check_clean "$what" "$desc"
    assert_eq vmfs "$(create_type "$desc")" "$what: qemu-img info create type"
    assert_eq "$(round_up "$size" 512)" "$(qemu_virtual_size vmdk "$desc")" "$what: virtual size"
    run_rc vmdkinfo "$desc"
    [[ $RC -eq 0 ]] || fail "$what: vmdkinfo exited $RC: $(cat "$T/run.err")"
    assert_file_contains "$T/run.out" "Media size:.*\\($(round_up "$size" 512) bytes\\)" "$what: vmdkinfo"

    # The pair travels together (to a datastore, say): the copy opens too.
    copy=$T/copy-$name
    mkdir -p "$copy"
    cp --sparse=always "$desc" "$flat" "$copy/"
    same_as_source "$name: copied pair" "$src" "$copy/disk-esx.vmdk"
    check_clean "$name: copied pair" "$copy/disk-esx.vmdk"
    # The descriptor alone has nothing to point to: the extent is not found
    # by some absolute path back in the mount.
    mkdir -p "$T/alone-$name"
    cp "$desc" "$T/alone-$name/"
    run_rc qemu-img info -f vmdk "$T/alone-$name/disk-esx.vmdk"
    assert_ne 0 "$RC" "$name: qemu-img info of a descriptor without its extent"
    rm -rf "$copy" "$T/alone-$name"
done

libvmdk_reads "odd/disk-esx.vmdk" "$T/mnt/odd/disk-esx.vmdk" "${SRC[odd]}"
libvmdk_reads "random/disk-esx.vmdk" "$T/mnt/random/disk-esx.vmdk" "${SRC[random]}"
stop_daemon

# The hosted products' flat disk.
start_daemon "$T/mnt" --source odd="${SRC[odd]}" --source tiny="${SRC[tiny]}" \
    --option vmdk-flat.createtype=monolithicFlat --option vmdk-flat.adapter=lsilogic \
    --option vmdk-flat.hwversion=7
for name in odd tiny; do
    src=${SRC[$name]}
    sectors=$(($(round_up "$(stat -c %s "$src")" 512) / 512))
    desc=$T/mnt/$name/disk-esx.vmdk
    what="$name/disk-esx.vmdk (monolithicFlat)"
    cp "$desc" "$T/desc.txt"
    assert_file_contains "$T/desc.txt" '^createType="monolithicFlat"$' "$what"
    assert_file_contains "$T/desc.txt" "^RW $sectors FLAT \"disk-esx-flat\\.vmdk\" 0\$" "$what: extent line"
    assert_file_contains "$T/desc.txt" '^ddb\.adapterType = "lsilogic"$' "$what"
    assert_file_contains "$T/desc.txt" '^ddb\.virtualHWVersion = "7"$' "$what"
    same_as_source "$what" "$src" "$desc"
    check_clean "$what" "$desc"
    assert_eq monolithicFlat "$(create_type "$desc")" "$what: qemu-img info create type"
done
stop_daemon

mkdir -p "$T/mnt-bad"
run_daemon_fg --mount "$T/mnt-bad" --source t="${SRC[tiny]}" --option vmdk-flat.createtype=sparse
expect_startup_error 2 'createtype' "vmdk-flat.createtype=sparse"
exit 0

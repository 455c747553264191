#!/bin/bash
# The stream-optimized VMDK (format vmdk-stream), written to a plain file by
# tests/tools/write_view (which prepares the view: compresses its grains):
#  - qemu-img compare (source as raw) says "identical", qemu-img check is
#    clean, qemu-img info says create type "streamOptimized" and the virtual
#    size;
#  - libyal's vmdkinfo says "Stream optimized" with the media size, and
#    vmdkmount reads the source's bytes;
#  - the file ends as the specification's stream does: footer marker, footer
#    (a header with the grain directory's offset), end-of-stream marker;
#  - two runs, with different cache directories, give identical files, and
#    leave no cache files behind;
#  - sources with random extent maps compare identical and check clean too.
source "$(dirname "$0")/lib.sh"
need_root # vmdkmount
need_cmd qemu-img vmdkinfo vmdkmount od perl cmp python3

WRITE_VIEW=${P2VFS_WRITE_VIEW:-$(dirname "$P2VFSD")/../tests/write_view}
[[ -x $WRITE_VIEW ]] || fail "write_view not found at $WRITE_VIEW (build the 'write_view' target, or set P2VFS_WRITE_VIEW)"

declare -A SRC=()
SRC[sparse]=$(fixture sparse-ext4)
SRC[random]=$(fixture random)
SRC[tiny]=$(fixture tiny)
SRC[odd]=$(fixture odd)
NAMES=(tiny odd random sparse)

create_type() {
    qemu-img info --output=json -f vmdk "$1" | perl -MJSON::PP -e '
        local $/; my $v = decode_json(<STDIN>)->{"format-specific"}{data}{"create-type"};
        defined $v or die "no create-type\n"; print "$v\n";'
}

# u32/u64 FILE OFFSET: a little-endian field.
u32() { od -An -t u4 -j "$2" -N 4 "$1" | tr -d ' '; }
u64() { od -An -t u8 -j "$2" -N 8 "$1" | tr -d ' '; }

libvmdk_reads() { # WHAT VMDK SRC
    local mnt=$T/vmdkmount
    mkdir -p "$mnt"
    # (vmdkmount prints its banner on stdout)
    bg_tracked sh -c 'exec vmdkmount "$0" "$1" >/dev/null' "$2" "$mnt"
    push_cleanup force_unmount "$mnt"
    wait_for 10 test -e "$mnt/vmdk1" || fail "$1: vmdkmount did not show $mnt/vmdk1"
    cmp -n "$(stat -c %s "$3")" "$mnt/vmdk1" "$3" || fail "$1: vmdkmount reads other bytes than the source"
    force_unmount "$mnt"
}

for name in "${NAMES[@]}"; do
    src=${SRC[$name]}
    size=$(stat -c %s "$src")
    out=$T/$name
    mkdir -p "$out/a" "$out/b"
    f=$out/a/disk-stream.vmdk
    what="$name/disk-stream.vmdk"
    log "writing and checking $what"
    run_rc "$WRITE_VIEW" vmdk-stream "$src" "$out/a" "cachedir=$T/cache-a"
    [[ $RC -eq 0 ]] || fail "$what: write_view exited $RC: $(cat "$T/run.err")"

    run_rc qemu-img compare -f raw -F vmdk "$src" "$f"
    [[ $RC -eq 0 ]] || fail "$what: qemu-img compare exited $RC: $(cat "$T/run.out" "$T/run.err")"
    assert_eq "Images are identical." "$(cat "$T/run.out")" "$what: qemu-img compare output"
    run_rc qemu-img check -f vmdk "$f"
    [[ $RC -eq 0 ]] || fail "$what: qemu-img check exited $RC: $(cat "$T/run.out" "$T/run.err")"
    assert_file_contains "$T/run.out" "^No errors were found on the image\.$" "$what: qemu-img check"
    assert_eq streamOptimized "$(create_type "$f")" "$what: qemu-img info create type"
    assert_eq "$(round_up "$size" 512)" "$(qemu_virtual_size vmdk "$f")" "$what: virtual size"

    run_rc vmdkinfo "$f"
    [[ $RC -eq 0 ]] || fail "$what: vmdkinfo exited $RC: $(cat "$T/run.err")"
    assert_file_contains "$T/run.out" "Disk type:[[:space:]]+Stream optimized" "$what: vmdkinfo"
    assert_file_contains "$T/run.out" "Media size:.*\\($(round_up "$size" 512) bytes\\)" "$what: vmdkinfo"

    # The tail, from the end: end-of-stream marker (all zeros), footer
    # ("KDMV", gdOffset pointing just after the grain-directory marker),
    # footer marker (type 3).
    len=$(stat -c %s "$f")
    assert_eq 0 $((len % 512)) "$what: file size in whole sectors"
    [[ -z $(tail -c 512 "$f" | tr -d '\000') ]] || fail "$what: last sector is not an end-of-stream marker"
    assert_eq KDMV "$(tail -c 1024 "$f" | head -c 4)" "$what: footer magic"
    assert_eq 3 "$(u32 "$f" $((len - 1536 + 12)))" "$what: footer marker type"
    assert_eq 18446744073709551615 "$(u64 "$f" 56)" "$what: header gdOffset (GD_AT_END)"
    gd=$(u64 "$f" $((len - 1024 + 56)))
    assert_eq 2 "$(u32 "$f" $((gd * 512 - 512 + 12)))" "$what: grain directory marker type"

    # Same source, other cache directory: the same bytes.
    run_rc "$WRITE_VIEW" vmdk-stream "$src" "$out/b" "cachedir=$T/cache-b"
    [[ $RC -eq 0 ]] || fail "$what: second write_view exited $RC: $(cat "$T/run.err")"
    cmp "$f" "$out/b/disk-stream.vmdk" || fail "$what: two runs gave different files"

    # (Not the 4 GiB one: a FUSE read of 4 GiB adds half a minute.)
    [[ $name == sparse ]] || libvmdk_reads "$what" "$f" "$src"
    rm -rf "$out"
done

# Sources with random extent maps (data, written zeros, preallocated ranges
# and holes across grain and grain-table boundaries). P2VFS_SEED=N repeats.
seed=${P2VFS_SEED:-$(date +%s)}
log "random sources: seed $seed (repeat with P2VFS_SEED=$seed)"
python3 "$LIB_DIR/make_random_sources.py" "$seed" 8 "$T/rnd" >"$T/rnd-sizes"
while read -r name size; do
    mkdir -p "$T/rnd-out"
    run_rc "$WRITE_VIEW" vmdk-stream "$T/rnd/$name.img" "$T/rnd-out" "cachedir=$T/cache-a"
    [[ $RC -eq 0 ]] || fail "seed $seed: $name: write_view exited $RC: $(cat "$T/run.err")"
    out=$(qemu-img compare -f raw -F vmdk "$T/rnd/$name.img" "$T/rnd-out/disk-stream.vmdk" 2>&1) ||
        fail "seed $seed: $name ($size bytes): differs: $out"
    out=$(qemu-img check -f vmdk "$T/rnd-out/disk-stream.vmdk" 2>&1) ||
        fail "seed $seed: $name ($size bytes): qemu-img check: $out"
    rm -rf "$T/rnd-out"
done <"$T/rnd-sizes"

# The cache files are anonymous: nothing is left in the cache directories.
assert_eq "" "$(list_dir "$T/cache-a")$(list_dir "$T/cache-b")" "files left in the cache directories"
exit 0

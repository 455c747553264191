#!/bin/bash
# disk.qcow2 holds the source's bytes in a qcow2 version 3 image that qemu
# finds clean, at the default 64 KiB clusters and at cluster-size=4096 and
# cluster-size=2M (extra view files c4k.qcow2 and c2m.qcow2):
#  - qemu-img compare (source as raw) says "Images are identical.";
#  - qemu-img check exits 0 with "No errors were found on the image.": every
#    refcount matches the clusters in use, COPIED is set where it must be;
#  - qemu-img info: format qcow2, compat 1.1, 16-bit refcounts, not corrupt,
#    the virtual size (source rounded up to 512 bytes) and the cluster size;
#  - libyal's qcowinfo (another reader, not qemu) sees version 3 and the
#    same media size, and qcowmount serves the same bytes as the source for
#    the small sources;
#  - a source whose 4 KiB-cluster image needs a second refcount block that
#    must count itself (2041 data clusters: 2048 clusters before the blocks);
#  - the 1 TiB sparse fixture: clean, right size, first and last MiB right,
#    a file of a few clusters;
#  - sparse-ext4's image is bounded by its allocated data (see below).
source "$(dirname "$0")/lib.sh"
need_root
need_cmd qemu-img qcowinfo qcowmount perl filefrag

declare -A SRC=()
SRC[sparse]=$(fixture sparse-ext4)
SRC[random]=$(fixture random)
SRC[tiny]=$(fixture tiny)
SRC[odd]=$(fixture odd)
# 16 MiB, its first 2041 4 KiB clusters data: with 4 KiB clusters the header,
# L1, refcount table, 4 L2 tables and the data make 2048 clusters, so the
# image needs a second refcount block, which counts itself.
SRC[boundary]=$T/boundary.img
truncate -s 16M "${SRC[boundary]}"
head -c $((2041 * 4096)) /dev/zero | tr '\000' 'q' |
    dd of="${SRC[boundary]}" conv=notrunc status=none
huge=$(fixture huge)

VARIANTS=(disk.qcow2 c4k.qcow2 c2m.qcow2)
declare -A CLUSTER=([disk.qcow2]=65536 [c4k.qcow2]=4096 [c2m.qcow2]=2097152)

args=(--views qcow2)
for name in "${!SRC[@]}" huge; do
    if [[ $name == huge ]]; then
        args+=(--source "huge=$huge")
    else
        args+=(--source "$name=${SRC[$name]}")
    fi
    args+=(--view "$name/c4k.qcow2=qcow2,cluster-size=4096" --view "$name/c2m.qcow2=qcow2,cluster-size=2M")
done
MNT=$T/mnt
start_daemon "$MNT" "${args[@]}"

# "FORMAT VIRTUAL-SIZE CLUSTER-SIZE COMPAT REFCOUNT-BITS CORRUPT" from qemu-img info.
qcow2_info() { # FILE
    local json
    json=$(qemu-img info --output=json -f qcow2 "$1") || fail "qemu-img info -f qcow2 $1 failed"
    printf '%s' "$json" | perl -MJSON::PP -e '
        local $/; my $j = decode_json(<STDIN>); my $d = $j->{"format-specific"}{data};
        print join(" ", $j->{format}, $j->{"virtual-size"}, $j->{"cluster-size"},
                   $d->{compat}, $d->{"refcount-bits"},
                   $d->{corrupt} ? "corrupt" : "not-corrupt"), "\n";'
}

check_clean() { # FILE WHAT
    run_rc qemu-img check -f qcow2 "$1"
    [[ $RC -eq 0 ]] || fail "$2: qemu-img check exited $RC: $(cat "$T/run.out" "$T/run.err")"
    assert_file_contains "$T/run.out" "^No errors were found on the image\.$" "$2: qemu-img check"
}

check_qcowinfo() { # FILE SIZE WHAT
    local out
    out=$(qcowinfo "$1") || fail "$3: qcowinfo exited with status $?"
    assert_eq 3 "$(sed -n 's/.*Format version[^0-9]*\([0-9]*\).*/\1/p' <<<"$out")" "$3: qcowinfo format version"
    assert_eq "$2" "$(sed -n 's/.*Media size.*(\([0-9]*\) bytes).*/\1/p' <<<"$out")" "$3: qcowinfo media size"
}

# qcowmount FILE, then the disk it serves must equal SRC, its sector padding zero.
check_qcowmount() { # FILE SRC WHAT
    local qm=$T/qcowmount size
    mkdir -p "$qm"
    qcowmount "$1" "$qm" >"$T/qcowmount.log" 2>&1 || fail "$3: qcowmount failed: $(cat "$T/qcowmount.log")"
    push_cleanup force_unmount "$qm"
    wait_for 10 test -e "$qm/qcow1" || fail "$3: qcowmount shows no $qm/qcow1"
    size=$(stat -c %s "$2")
    assert_eq "$(round_up "$size" 512)" "$(stat -c %s "$qm/qcow1")" "$3: size of the disk qcowmount serves"
    cmp -n "$size" "$2" "$qm/qcow1" || fail "$3: qcowmount reads other bytes than the source"
    assert_eq 0 "$(tail -c +$((size + 1)) "$qm/qcow1" | tr -d '\0' | wc -c)" "$3: padding past the source"
    force_unmount "$qm"
    log "$3: qcowmount serves the source's bytes"
}

for name in sparse random tiny odd boundary; do
    src=${SRC[$name]}
    size=$(stat -c %s "$src")
    assert_eq "c2m.qcow2 c4k.qcow2 disk.qcow2 " "$(list_views "$MNT/$name")" "files of $name"
    for view in "${VARIANTS[@]}"; do
        f=$MNT/$name/$view
        what="$name/$view"
        log "checking $what"
        run_rc qemu-img compare -f raw -F qcow2 "$src" "$f"
        [[ $RC -eq 0 ]] || fail "$what: qemu-img compare exited $RC: $(cat "$T/run.out" "$T/run.err")"
        assert_eq "Images are identical." "$(cat "$T/run.out")" "$what: qemu-img compare output"
        check_clean "$f" "$what"
        assert_eq "qcow2 $(round_up "$size" 512) ${CLUSTER[$view]} 1.1 16 not-corrupt" \
            "$(qcow2_info "$f")" "$what: qemu-img info (format size cluster compat refcount corrupt)"
        assert_eq 0 $(($(stat -c %s "$f") % ${CLUSTER[$view]})) "$what: file size in whole clusters"
        check_qcowinfo "$f" "$(round_up "$size" 512)" "$what"
        if [[ $name != sparse ]]; then
            check_qcowmount "$f" "$src" "$what"
        fi
    done
done

# The 1 TiB sparse fixture (8 KiB of data at each end): qemu opens every
# variant clean with the right size, its first and last MiB are the source's,
# and the file is a few clusters of metadata and data. Largest: 4 KiB
# clusters, whose L1 table has 2^19 entries (4 MiB).
MiB=$((1 << 20))
hsize=$(stat -c %s "$huge")
head -c $MiB "$huge" >"$T/src-first"
tail -c $MiB "$huge" >"$T/src-last"
for view in "${VARIANTS[@]}"; do
    f=$MNT/huge/$view
    what="huge/$view"
    log "checking $what"
    check_clean "$f" "$what"
    assert_eq "qcow2 $hsize ${CLUSTER[$view]} 1.1 16 not-corrupt" "$(qcow2_info "$f")" "$what: qemu-img info"
    qemu_extract qcow2 "$f" 0 $MiB "$T/first"
    cmp "$T/src-first" "$T/first" || fail "$what: the first MiB differs from the source"
    qemu_extract qcow2 "$f" $((hsize - MiB)) $MiB "$T/last"
    cmp "$T/src-last" "$T/last" || fail "$what: the last MiB differs from the source"
    check_qcowinfo "$f" "$hsize" "$what"
done
assert_lt "$(stat -c %s "$MNT/huge/c4k.qcow2")" $((5 * MiB)) "size of huge/c4k.qcow2"
# header, L1, refcount table, refcount block, 2 L2 tables, 2 data clusters
assert_eq $((8 * 65536)) "$(stat -c %s "$MNT/huge/disk.qcow2")" "size of huge/disk.qcow2"

# sparse-ext4 (4 GiB, ~220 MiB allocated) stays sparse. For cluster size C,
# D = the bytes of the C-sized clusters that hold any extent of the source
# file (FIEMAP through filefrag; an upper bound of what the daemon stores):
#  - tight: size <= D + C * (header + L1 clusters + refcount table + an L2
#    table for every L1 entry + the refcount blocks for all of these);
#  - loose, as for the other dynamic formats: size <= A + A/10 + 16 MiB for
#    A allocated bytes (du), at 64 KiB and 4 KiB clusters (2 MiB clusters
#    round each extent run out to 2 MiB: the tight bound holds them);
#  - lower: the 148 MiB of random files in the file system are in there.
dir=$(fixture_dir sparse-ext4)
src=${SRC[sparse]}
size=$(stat -c %s "$src")
allocated=$(du --block-size=1 "$src" | cut -f1)
random_bytes=$(find "$dir/tree/blobs" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
for view in "${VARIANTS[@]}"; do
    c=${CLUSTER[$view]}
    f=$MNT/sparse/$view
    fsize=$(stat -c %s "$f")
    data=$(extent_blocks_bytes "$src" "$c")
    l2_range=$((c * c / 8))
    l1_entries=$(((size + l2_range - 1) / l2_range))
    l1_clusters=$(((l1_entries * 8 + c - 1) / c))
    others=$((data / c + 1 + l1_clusters + 1 + l1_entries))
    blocks=$(((others + 1 + c / 2 - 1) / (c / 2) + 1))
    tight=$(((others + blocks) * c))
    log "sparse/$view: $fsize bytes; source: $allocated allocated, $data in clusters of $c; tight bound $tight"
    assert_le "$fsize" "$tight" "sparse/$view size vs its data clusters + metadata"
    if [[ $view != c2m.qcow2 ]]; then
        assert_le "$fsize" $((allocated + allocated / 10 + 16 * MiB)) "sparse/$view size vs allocated + 10% + 16 MiB"
    fi
    assert_le "$random_bytes" "$fsize" "sparse/$view size vs the random data in the file system"
    assert_lt "$fsize" $((size / 10)) "sparse/$view size vs a tenth of the virtual size"
done

stop_daemon

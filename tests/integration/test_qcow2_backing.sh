#!/bin/bash
# A qcow2 view with backing-file and backing-format shows a new disk N as its
# changes over a base disk B. The view's source is D: a sparse file holding
# only what changed from B to N (data where data changed, unwritten extents
# from `fallocate -z` where N became zeros, holes elsewhere), as an overlay's
# delta device reports its chunks. Then, at 64 KiB and at 4 KiB clusters:
#  - qemu-img info: the backing file and its format, as given;
#  - qemu-img check: clean;
#  - qemu-img compare of the view (with its backing file) and N: identical;
#    and not identical to B, so the comparison can fail;
#  - qemu-img map: the changed ranges from the image itself (the zeroed one
#    as zeros, not read from B), everything else from the backing file;
#  - the file holds only metadata and the changed data clusters;
# and a view whose 2 MiB clusters would each mix changed and unchanged bytes
# is refused, naming the cluster.
source "$(dirname "$0")/lib.sh"
need_root
need_cmd qemu-img perl filefrag fallocate

KiB=1024
MiB=$((1024 * KiB))
C=$((64 * KiB))

# B: 16 MiB of random data, with a hole from 10 to 12 MiB.
B=$T/base.raw
truncate -s $((16 * MiB)) "$B"
head -c $((10 * MiB)) /dev/urandom | dd of="$B" conv=notrunc status=none
head -c $((4 * MiB)) /dev/urandom | dd of="$B" bs=$MiB seek=12 conv=notrunc status=none

# N: B with four ranges changed. D: only those ranges.
N=$T/new.raw
D=$T/delta.raw
cp --sparse=always "$B" "$N"
truncate -s $((16 * MiB)) "$D"
change_data() { # OFFSET LENGTH: new random data at OFFSET in N, copied to D
    head -c "$2" /dev/urandom >"$T/piece"
    dd if="$T/piece" of="$N" bs=$C seek=$(($1 / C)) conv=notrunc status=none
    dd if="$T/piece" of="$D" bs=$C seek=$(($1 / C)) conv=notrunc status=none
}
change_data $((MiB + C)) $((3 * C))        # data over data
change_data $((10 * MiB + 2 * C)) $C       # data where N and B had a hole
change_data $((16 * MiB - C)) $C           # the last cluster
ZERO_AT=$((4 * MiB))                       # data over data made zeros
ZERO_LEN=$((4 * C))
dd if=/dev/zero of="$N" bs=$C seek=$((ZERO_AT / C)) count=$((ZERO_LEN / C)) conv=notrunc status=none
fallocate -z -o "$ZERO_AT" -l "$ZERO_LEN" "$D" ||
    skip "fallocate -z is not supported on the scratch file system"
filefrag -v "$D" | grep -q unwritten ||
    skip "the scratch file system keeps no unwritten extents (FIEMAP): no Zero range to test"
cmp -s "$B" "$N" && fail "N must differ from B"

MNT=$T/mnt
start_daemon "$MNT" --source "d=$D" --views none \
    --view "d/delta.qcow2=qcow2,backing-file=$B,backing-format=raw" \
    --view "d/delta4k.qcow2=qcow2,cluster-size=4K,backing-file=$B,backing-format=raw"
assert_eq "delta.qcow2 delta4k.qcow2 " "$(list_views "$MNT/d")" "files of d"

# "BACKING-FILENAME BACKING-FORMAT" from qemu-img info.
backing_info() { # FILE
    local json
    json=$(qemu-img info --output=json -f qcow2 "$1") || fail "qemu-img info -f qcow2 $1 failed"
    printf '%s' "$json" | perl -MJSON::PP -e '
        local $/; my $j = decode_json(<STDIN>);
        print join(" ", $j->{"backing-filename"} // "none",
                   $j->{"backing-filename-format"} // "none"), "\n";'
}

# qemu-img map as "START END WHERE" lines, adjacent ones of the same kind
# merged; WHERE is "data" or "zero" for ranges the image itself maps, and
# "backing" for ranges read from the backing file.
map_summary() { # FILE
    qemu-img map --output=json -f qcow2 "$1" | perl -MJSON::PP -e '
        local $/; my @out;
        for my $e (@{ decode_json(<STDIN>) }) {
            my $where = $e->{depth} > 0 ? "backing" : $e->{zero} ? "zero" : "data";
            my $end = $e->{start} + $e->{length};
            if (@out && $out[-1][1] == $e->{start} && $out[-1][2] eq $where) {
                $out[-1][1] = $end;
            } else {
                push @out, [$e->{start}, $end, $where];
            }
        }
        print "@$_\n" for @out;'
}

expected_map=$(
    cat <<EOF
0 $((MiB + C)) backing
$((MiB + C)) $((MiB + 4 * C)) data
$((MiB + 4 * C)) $ZERO_AT backing
$ZERO_AT $((ZERO_AT + ZERO_LEN)) zero
$((ZERO_AT + ZERO_LEN)) $((10 * MiB + 2 * C)) backing
$((10 * MiB + 2 * C)) $((10 * MiB + 3 * C)) data
$((10 * MiB + 3 * C)) $((16 * MiB - C)) backing
$((16 * MiB - C)) $((16 * MiB)) data
EOF
)

# Header, L1, refcount table, refcount block, the L2 tables (one maps 512 MiB
# at 64 KiB clusters, 2 MiB at 4 KiB: the changes lie in 4 of those) and the
# changed data clusters: 5 of 64 KiB, 80 of 4 KiB. The zeroed range costs L2
# entries only.
declare -A FILE_SIZE=(
    [delta.qcow2]=$(((4 + 1) * C + 5 * C))
    [delta4k.qcow2]=$(((4 + 4) * 4096 + 80 * 4096))
)

for view in delta.qcow2 delta4k.qcow2; do
    f=$MNT/d/$view
    log "checking $view"
    assert_eq "$B raw" "$(backing_info "$f")" "$view: qemu-img info backing file and format"

    run_rc qemu-img check -f qcow2 "$f"
    [[ $RC -eq 0 ]] || fail "$view: qemu-img check exited $RC: $(cat "$T/run.out" "$T/run.err")"
    assert_file_contains "$T/run.out" "^No errors were found on the image\.$" "$view: qemu-img check"

    run_rc qemu-img compare -f qcow2 -F raw "$f" "$N"
    [[ $RC -eq 0 ]] || fail "$view: qemu-img compare with N exited $RC: $(cat "$T/run.out" "$T/run.err")"
    assert_eq "Images are identical." "$(cat "$T/run.out")" "$view: qemu-img compare with N"
    assert_lines 0 "$T/run.err" "$view: qemu-img compare warnings"

    run_rc qemu-img compare -f qcow2 -F raw "$f" "$B"
    assert_eq 1 "$RC" "$view: qemu-img compare with B (must differ)"

    assert_eq "$expected_map" "$(map_summary "$f")" "$view: qemu-img map"
    assert_eq "${FILE_SIZE[$view]}" "$(stat -c %s "$f")" "$view: file size"
done
stop_daemon

# 2 MiB clusters: the first one holds changed data and unchanged bytes, which
# a backed image cannot show; the asked-for view stops the daemon.
run_daemon_fg --mount "$T/mnt2" --source "d=$D" --views none \
    --view "d/big.qcow2=qcow2,cluster-size=2M,backing-file=$B,backing-format=raw"
expect_error_line 2 "the 2 MiB cluster at 0x0 of $D is partly unchanged (a hole) and partly data" \
    "2 MiB clusters over 64 KiB changes"

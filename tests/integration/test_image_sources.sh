#!/bin/bash
# Foreign image files as sources (V2V): qcow2 with a backing chain, VMDK,
# VHD (dynamic and fixed), VHDX and VDI images given to --source are probed
# by their magic and read through a qemu-nbd the daemon runs itself. Every
# view of each compares identical with `qemu-img convert -O raw` of the
# image, and the backing chain is flattened lazily: clusters that no layer
# allocates stay holes in the dynamic views.
#
# Also: FORMAT:PATH names the format; a block device is raw whatever its
# first sector looks like (a loop device over a qcow2 file shows the file's
# bytes); an image qemu cannot open fails at start-up with qemu-nbd's own
# message, naming the image; no qemu-nbd outlives the daemon.
source "$(dirname "$0")/lib.sh"
need_root
need_cmd qemu-img qemu-io qemu-nbd losetup

random=$(fixture random)
MiB=$((1 << 20))

# A chain: base.qcow2 (64 MiB, 8 MiB of 0xaa at 1 MiB) <- mid.qcow2 (the random
# fixture's first 16 MiB at 20 MiB, as written data) <- top.qcow2 (0x55 over
# 2-4 MiB, zeros written at 30 MiB, a 4 KiB write at an odd offset).
qemu-img create -q -f qcow2 "$T/base.qcow2" 64M
qemu-io -f qcow2 -c "write -P 0xaa 1M 8M" "$T/base.qcow2" >/dev/null
qemu-img create -q -f qcow2 -b "$T/base.qcow2" -F qcow2 "$T/mid.qcow2"
head -c $((16 * MiB)) "$random" >"$T/chunk"
qemu-io -f qcow2 -c "write -s $T/chunk 20M 16M" "$T/mid.qcow2" >/dev/null
qemu-img create -q -f qcow2 -b "$T/mid.qcow2" -F qcow2 "$T/top.qcow2"
qemu-io -f qcow2 -c "write -P 0x55 2M 2M" -c "write -z 30M 1M" -c "write -P 0x11 50000k 4k" \
    "$T/top.qcow2" >/dev/null

qemu-img convert -O vmdk "$random" "$T/r.vmdk"
qemu-img convert -O vpc "$random" "$T/r.vhd"
qemu-img convert -O vpc -o subformat=fixed,force_size=on "$random" "$T/rfixed.vhd"
qemu-img convert -O vhdx "$T/top.qcow2" "$T/top.vhdx"
qemu-img convert -O vdi "$random" "$T/r.vdi"
cp --sparse=always "$random" "$T/plain.img"

start_daemon "$T/mnt" \
    --source top="$T/top.qcow2" --source vmdk="$T/r.vmdk" --source vhd="$T/r.vhd" \
    --source vhdfixed="$T/rfixed.vhd" --source vhdx="$T/top.vhdx" --source vdi="$T/r.vdi" \
    --source named=raw:"$T/plain.img"

assert_file_has_text "$DAEMON_LOG" "source 'top': $T/top.qcow2 (qcow2 image) (64 MiB)" "the qcow2 source's name"
declare -A IMG=([top]=$T/top.qcow2 [vmdk]=$T/r.vmdk [vhd]=$T/r.vhd [vhdfixed]=$T/rfixed.vhd
    [vhdx]=$T/top.vhdx [vdi]=$T/r.vdi [named]=$T/plain.img)
declare -A FMT=([top]=qcow2 [vmdk]=vmdk [vhd]=vpc [vhdfixed]=vpc [vhdx]=vhdx [vdi]=vdi [named]=raw)
for name in "${!IMG[@]}"; do
    qemu-img convert -f "${FMT[$name]}" -O raw "${IMG[$name]}" "$T/$name.raw"
    log "$name: $(stat -c %s "$T/$name.raw") bytes"
    assert_eq "$(stat -c %s "$T/$name.raw")" "$(stat -c %s "$T/mnt/$name/disk.raw")" "$name: size of disk.raw"
    cmp "$T/$name.raw" "$T/mnt/$name/disk.raw" || fail "$name: disk.raw differs from qemu-img convert -O raw"
    assert_views_identical "$T/$name.raw" "$T/mnt/$name"
done

# The chain's holes: below 1 MiB, 9-20 MiB, and from 36 MiB to the 64 KiB
# cluster that holds the 4 KiB write at 50000 KiB (51183616), no layer wrote
# anything. A qcow2 view with 64 KiB clusters holds just the
# written clusters (1-9 MiB, 20-36 MiB, the odd 4 KiB; the zeroed MiB at
# 30 MiB is a hole in top, data in mid below it: zero clusters count as
# holes in our view) and its metadata, under 1 MiB for 64 MiB.
size=$(stat -c %s "$T/mnt/top/disk.qcow2")
written=$(((8 + 16 - 1) * MiB + 64 * 1024))
assert_le "$size" $((written + MiB)) "top/disk.qcow2 size vs the chain's written data"
assert_le $(((8 + 15) * MiB)) "$size" "top/disk.qcow2 holds the written data"
qemu-img map --output=json -f qcow2 "$T/mnt/top/disk.qcow2" >"$T/map.json"
perl -MJSON::PP -e '
    local $/; my $m = decode_json(<STDIN>);
    for my $e (@$m) { next unless $e->{data};
        my ($a, $b) = ($e->{start}, $e->{start} + $e->{length});
        for my $h ([0, 1 << 20], [9 << 20, 20 << 20], [36 << 20, 51183616]) {
            die "data at $a..$b overlaps the hole $h->[0]..$h->[1]\n" if $a < $h->[1] && $b > $h->[0];
        }
    }' <"$T/map.json" || fail "top/disk.qcow2 stores data where no layer of the chain wrote any"
assert_eq 1 "$(pgrep -c -P "$DAEMON_PID" qemu-nbd | tr -d ' ' | awk '{print ($1 == 6)}')" \
    "one qemu-nbd per image source (6)"
stop_daemon
assert_eq 0 "$(pgrep -c -f "p2vfs-qemu-nbd-" || true)" "qemu-nbd processes left after the daemon stopped"

# A block device is raw, whatever it holds: a loop device over top.qcow2
# shows the qcow2 file's bytes, not the disk inside it.
attach_loop -r "$T/top.qcow2"
start_daemon "$T/mnt" --views raw --source loop="$LOOP_DEV"
cmp "$T/top.qcow2" <(head -c "$(stat -c %s "$T/mnt/loop/disk.raw")" "$T/mnt/loop/disk.raw") ||
    fail "$LOOP_DEV over a qcow2 file was not shown raw"
stop_daemon

# An image qemu cannot open: qemu-nbd's reason, naming the image.
run_daemon_fg --mount "$T/mnt" --source bad=qcow2:"$T/plain.img"
expect_startup_error 3 "source 'bad': $T/plain.img: qemu-nbd could not serve it" "a raw file named as qcow2"
assert_file_has_text "$T/run.err" "Image is not in qcow2 format" "qemu-nbd's reason"
printf 'QFI\xfb\0\0\0\x03garbage' | dd of="$T/broken.qcow2" bs=1M seek=0 conv=notrunc status=none
truncate -s 1M "$T/broken.qcow2"
run_daemon_fg --mount "$T/mnt" --source broken="$T/broken.qcow2"
expect_startup_error 3 "source 'broken': $T/broken.qcow2: qemu-nbd could not serve it" "a corrupt qcow2 header"
# A chain whose backing file is gone.
qemu-img create -q -f qcow2 -b "$T/gone.qcow2" -F qcow2 -o size=64M "$T/orphan.qcow2" 2>/dev/null ||
    qemu-img create -q -f qcow2 -u -b "$T/gone.qcow2" -F qcow2 "$T/orphan.qcow2" 64M
run_daemon_fg --mount "$T/mnt" --source orphan="$T/orphan.qcow2"
expect_startup_error 3 "source 'orphan': $T/orphan.qcow2: qemu-nbd could not serve it" "a missing backing file"
assert_file_has_text "$T/run.err" "gone.qcow2" "the missing backing file named"
assert_eq 0 "$(pgrep -c -f "p2vfs-qemu-nbd-" || true)" "qemu-nbd processes left after failed starts"

#!/bin/bash
# VHD holds at most 2040 GiB. A 2041 GiB source gets no disk.vhd and no
# disk-fixed.vhd — each left out of its folder with a warning that gives the
# reason ("exceeds the format's 2040 GiB limit") — while the other views
# are there, and disk.raw and disk.vmdk are correct. A source of exactly 2040 GiB keeps both
# VHDs, and qemu opens them at full size.
source "$(dirname "$0")/lib.sh"
need_root
need_cmd qemu-img

GiB=$((1 << 30))
MiB=$((1 << 20))
over=$T/over.img
at=$T/at-limit.img
truncate -s $((2041 * GiB)) "$over"
truncate -s $((2040 * GiB)) "$at"
# Some data at both ends of the big disk, so reads there mean something.
head -c $MiB /dev/urandom | dd of="$over" conv=notrunc status=none
head -c $MiB /dev/urandom | dd of="$over" bs=1M seek=$((2041 * 1024 - 1)) conv=notrunc status=none
assert_eq $((2041 * GiB)) "$(stat -c %s "$over")" "size of the 2041 GiB source"

start_daemon "$T/mnt" --source over="$over" --source at="$at"

listing=$(list_views "$T/mnt/over")
others=()
for view in "${VIEWS[@]}"; do
    [[ $view == *.vhd ]] || others+=("$view")
done
assert_eq "$(sorted_listing "${others[@]}")" "$listing" "files of the 2041 GiB source"
[[ ! -e $T/mnt/over/disk.vhd && ! -e $T/mnt/over/disk-fixed.vhd ]] ||
    fail "a VHD view of the 2041 GiB source exists"
for view in disk.vhd disk-fixed.vhd; do
    grep -F "$view" "$DAEMON_LOG" | grep -F "'over'" >"$T/why.txt" || true
    assert_lines 1 "$T/why.txt" "log lines about the missing over/$view"
    assert_file_has_text "$T/why.txt" "exceeds the format's 2040 GiB limit" "log line about over/$view"
    assert_file_contains "$T/why.txt" "[Ww]arn" "level of the log line about over/$view"
done

# The other views of the big disk work.
assert_eq $((2041 * GiB)) "$(stat -c %s "$T/mnt/over/disk.raw")" "size of over/disk.raw"
assert_eq $((2041 * GiB)) "$(qemu_virtual_size vmdk "$T/mnt/over/disk.vmdk")" "over/disk.vmdk virtual-size"
head -c $MiB "$over" >"$T/src-first"
tail -c $MiB "$over" >"$T/src-last"
for view in disk.raw disk.vmdk; do
    fmt=$(qemu_format "$view")
    qemu_extract "$fmt" "$T/mnt/over/$view" 0 $MiB "$T/first"
    cmp "$T/src-first" "$T/first" || fail "over/$view: the first MiB differs from the source"
    qemu_extract "$fmt" "$T/mnt/over/$view" $((2041 * GiB - MiB)) $MiB "$T/last"
    cmp "$T/src-last" "$T/last" || fail "over/$view: the last MiB differs from the source"
done

# At the limit, both VHDs exist and qemu sees the whole disk.
listing=$(list_views "$T/mnt/at")
assert_eq "$(sorted_listing "${VIEWS[@]}")" "$listing" "files of the 2040 GiB source"
for view in disk.vhd disk-fixed.vhd; do
    assert_eq $((2040 * GiB)) "$(qemu_virtual_size vpc "$T/mnt/at/$view")" "at/$view virtual-size"
done
assert_file_lacks "$DAEMON_LOG" "'at'.*exceeds" "daemon log about the 2040 GiB source"
stop_daemon

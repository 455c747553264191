#!/bin/bash
# --direct reads the sources with O_DIRECT, which only takes aligned offsets,
# lengths and buffers. The views must hold the same bytes anyway, including
# the unaligned tail of a source whose size is not a multiple of 512 (odd)
# and a source smaller than a page-multiple read (tiny).
source "$(dirname "$0")/lib.sh"
need_root
need_cmd qemu-img

declare -A SRC=()
SRC[odd]=$(fixture odd)
SRC[tiny]=$(fixture tiny)
SRC[random]=$(fixture random)

start_daemon "$T/mnt" --direct --source odd="${SRC[odd]}" --source tiny="${SRC[tiny]}" \
    --source random="${SRC[random]}"

for name in odd tiny random; do
    src=${SRC[$name]}
    cmp "$src" "$T/mnt/$name/disk.raw" || fail "$name/disk.raw differs from the source"
    # Unaligned small reads through the raw view: the last 777 bytes, and
    # 1000 bytes starting 3 bytes into the file.
    cmp <(tail -c 777 "$src") <(tail -c 777 "$T/mnt/$name/disk.raw") ||
        fail "$name/disk.raw: the last 777 bytes differ"
    cmp <(dd if="$src" bs=1 skip=3 count=1000 status=none) \
        <(dd if="$T/mnt/$name/disk.raw" bs=1 skip=3 count=1000 status=none) ||
        fail "$name/disk.raw: bytes 3..1002 differ"
    for view in disk.vhd disk-fixed.vhd disk.vmdk; do
        run_rc qemu-img compare -f raw -F "$(qemu_format "$view")" "$src" "$T/mnt/$name/$view"
        [[ $RC -eq 0 ]] || fail "$name/$view: qemu-img compare exited $RC: $(cat "$T/run.out" "$T/run.err")"
    done
done
daemon_alive || fail "the daemon died"
stop_daemon

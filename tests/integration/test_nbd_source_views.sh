#!/bin/bash
# NBD sources: every view of a disk served by a real NBD server holds the
# server's bytes (qemu-img compare), and dynamic views of a sparse export stay
# sparse (allocation comes from block status).
#
# Servers, each on its own unix socket:
#  - nbdkit's file plugin over the sparse-ext4 fixture (multi-conn: the
#    daemon opens several connections);
#  - nbdkit's sparse-random plugin (a 1 GiB disk, 5% data in 64 KiB runs),
#    compared with a copy nbdcopy pulled from the same server;
#  - nbdkit's memory plugin, filled with the odd fixture by nbdcopy (a size
#    that is not a multiple of 512);
#  - qemu-nbd serving the random fixture as raw, with --shared=1 (no
#    multi-conn: one connection);
#  - nbdkit behind the blocksize-policy filter with a 4 KiB minimum block
#    size and errors for anything unaligned, read at unaligned offsets with
#    the cache off, so every read the daemon sends must be aligned.
source "$(dirname "$0")/lib.sh"
need_root
need_cmd nbdkit nbdcopy nbdinfo qemu-img qemu-nbd

sparse=$(fixture sparse-ext4)
random=$(fixture random)
odd=$(fixture odd)

start_nbdkit "$T/file.sock" -r file "$sparse"
start_nbdkit "$T/sr.sock" -r sparse-random size=1G seed=4242 percent=5 runlength=65536
start_nbdkit "$T/mem.sock" memory size="$(stat -c %s "$odd")"
nbdcopy "$odd" "$(nbd_unix_uri "$T/mem.sock")"
bg_tracked qemu-nbd -f raw --read-only --persistent --shared=1 --socket="$T/qemu.sock" "$random"
wait_for 10 test -S "$T/qemu.sock" || fail "qemu-nbd did not create $T/qemu.sock"

nbdcopy "$(nbd_unix_uri "$T/sr.sock")" "$T/sparse-random.img"

start_daemon "$T/mnt" --log-level debug \
    --source file="$(nbd_unix_uri "$T/file.sock")" \
    --source sr="$(nbd_unix_uri "$T/sr.sock")" \
    --source mem="$(nbd_unix_uri "$T/mem.sock")" \
    --source qemu="$(nbd_unix_uri "$T/qemu.sock")"

assert_file_has_text "$DAEMON_LOG" "socket=$T/file.sock: 4294967296 bytes" "file plugin export"
assert_file_contains "$DAEMON_LOG" "socket=$T/file.sock: .*multi-conn true, 4 connection\(s\)" \
    "connections to a multi-conn server"
assert_file_contains "$DAEMON_LOG" "socket=$T/qemu.sock: .*multi-conn false, 1 connection\(s\)" \
    "connections to a server without multi-conn"

declare -A REF=([file]=$sparse [sr]=$T/sparse-random.img [mem]=$odd [qemu]=$random)
for name in file sr mem qemu; do
    log "comparing the views of $name with ${REF[$name]}"
    assert_eq "$(stat -c %s "${REF[$name]}")" "$(stat -c %s "$T/mnt/$name/disk.raw")" "$name: size of disk.raw"
    cmp "${REF[$name]}" "$T/mnt/$name/disk.raw" || fail "$name: disk.raw differs from ${REF[$name]}"
    assert_views_identical "${REF[$name]}" "$T/mnt/$name"
done

# Sparse: the dynamic views of the 4 GiB file export hold what the file holds
# (same bound as for a local source: allocated + 10% + 16 MiB; VHDX is left
# out, its 32 MiB blocks are a coarser grid), and those of the 1 GiB
# sparse-random disk what its server's block status calls data.
MiB=$((1 << 20))
allocated=$(du --block-size=1 "$sparse" | cut -f1)
for view in disk.vhd disk.vmdk disk.qcow2 disk.vdi; do
    size=$(stat -c %s "$T/mnt/file/$view")
    assert_le "$size" $((allocated + allocated / 10 + 16 * MiB)) "file/$view size vs allocated source"
done
# The bytes of the G-sized grains that hold data as the server's block
# status says it (nbdinfo --map: offset, length, type; type 0 is data).
grains_with_data() { # URI G
    nbdinfo --map "$1" | awk -v g="$2" '$3 == 0 {
        first = int($1 / g); last = int(($1 + $2 - 1) / g)
        if (first <= prev) first = prev + 1
        if (last >= first) n += last - first + 1
        if (last > prev) prev = last
    } BEGIN { prev = -1 } END { print n * g }'
}
sr_uri=$(nbd_unix_uri "$T/sr.sock")
for spec in disk.vmdk:65536 disk.qcow2:65536 disk.vhd:$((2 * MiB)); do
    view=${spec%%:*} grain=${spec#*:}
    data=$(grains_with_data "$sr_uri" "$grain")
    size=$(stat -c %s "$T/mnt/sr/$view")
    log "sr/$view: $size bytes; the export has $data bytes in $grain-byte blocks holding data"
    assert_le "$size" $((data + data / 100 + 2 * MiB)) "sr/$view size vs blocks holding data"
    assert_le "$data" "$size" "sr/$view holds every block with data"
done
stop_daemon

# A server that insists on aligned 4 KiB blocks: reads the views make at
# unaligned source offsets, with the cache off, still succeed and match.
start_nbdkit "$T/bs.sock" -r --filter=blocksize-policy file "$random" \
    blocksize-minimum=4096 blocksize-preferred=65536 blocksize-maximum=1M blocksize-error-policy=error
start_daemon "$T/mnt2" --cache-size 0 --source bs="$(nbd_unix_uri "$T/bs.sock")"
# The dynamic VHD's blocks start after a 512-byte bitmap, VDI and qcow2 data
# follow their headers: page-aligned reads of those views are reads of the
# source at offsets that are not multiples of 4 KiB.
assert_views_identical "$random" "$T/mnt2/bs"
assert_file_lacks "$DAEMON_LOG" "error" "daemon log with an aligned-only server"
stop_daemon

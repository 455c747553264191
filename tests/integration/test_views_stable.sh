#!/bin/bash
# A view's bytes are a pure function of the source and the options: two
# daemon runs over the same sources give byte-identical VHD and VMDK files
# (same UUIDs, timestamps, CIDs, layout), whatever the order of the sources
# on the command line and whatever happened to the source's page cache in
# between. Raw views are the source itself and are covered by
# test_views_compare; for fixed VHDs the generated part is the footer.
#
# The page cache matters: mkfs leaves unwritten (preallocated, reading as
# zero) extents in the image file — the ext4 journal — and SEEK_DATA reports
# an unwritten extent as a hole, unless its pages are in the page cache, then
# as data. So run 1 starts with the sources' caches dropped, and before run 2
# the unwritten extents are read, as any reader of the source (qemu-img
# compare, a backup) would. Both runs must still agree.
source "$(dirname "$0")/lib.sh"
need_root
need_cmd filefrag

names=(sparse random tiny odd)
declare -A SRC=()
SRC[sparse]=$(fixture sparse-ext4)
SRC[random]=$(fixture random)
SRC[tiny]=$(fixture tiny)
SRC[odd]=$(fixture odd)

# digest_views MNT OUT: one line per generated part, "name/file size sha256".
digest_views() {
    local mnt=$1 out=$2 name f
    : >"$out"
    for name in "${names[@]}"; do
        for f in disk.vhd disk.vhdx disk.vmdk disk-esx.vmdk disk-stream.vmdk disk.qcow2 disk.vdi; do
            printf '%s/%s %s %s\n' "$name" "$f" "$(stat -c %s "$mnt/$name/$f")" \
                "$(sha256sum <"$mnt/$name/$f" | cut -d' ' -f1)" >>"$out"
        done
        f=disk-fixed.vhd
        printf '%s/%s-footer %s %s\n' "$name" "$f" "$(stat -c %s "$mnt/$name/$f")" \
            "$(tail -c 512 "$mnt/$name/$f" | sha256sum | cut -d' ' -f1)" >>"$out"
    done
}

# read_unwritten FILE: reads FILE's unwritten extents (filefrag), bringing
# them into the page cache. Prints how many bytes that was.
read_unwritten() {
    local file=$1 bs total=0 start end
    bs=$(filefrag -v "$file" | sed -n 's/.* blocks\? of \([0-9]*\) bytes.*/\1/p')
    while read -r start end; do
        dd if="$file" of=/dev/null bs="$bs" skip="$start" count=$((end - start + 1)) status=none
        total=$((total + (end - start + 1) * bs))
    done < <(filefrag -v "$file" | perl -ne 'print "$1 $2\n" if /^\s*\d+:\s*(\d+)\.\.\s*(\d+):.*unwritten/')
    echo "$total"
}

for name in "${names[@]}"; do
    # Drop the source's clean pages (POSIX_FADV_DONTNEED on the whole file).
    dd if="${SRC[$name]}" iflag=nocache count=0 status=none
done

args=()
for name in "${names[@]}"; do
    args+=(--source "$name=${SRC[$name]}")
done
start_daemon "$T/mnt1" "${args[@]}"
digest_views "$T/mnt1" "$T/run1.txt"
stop_daemon "$T/mnt1"

for name in "${names[@]}"; do
    log "$name: read $(read_unwritten "${SRC[$name]}") bytes of unwritten extents"
done

# Second run: another mount point, the sources in reverse order.
args=()
for ((i = ${#names[@]} - 1; i >= 0; i--)); do
    args+=(--source "${names[i]}=${SRC[${names[i]}]}")
done
start_daemon "$T/mnt2" "${args[@]}"
digest_views "$T/mnt2" "$T/run2.txt"
stop_daemon "$T/mnt2"

assert_lines 32 "$T/run1.txt" "digests of run 1" # 4 sources x (7 files + 1 footer)
if ! diff -u "$T/run1.txt" "$T/run2.txt" >&2; then
    fail "views differ between two daemon runs over the same sources"
fi

#!/bin/bash
# A view's bytes are a pure function of the source and the options: two
# daemon runs over the same sources give byte-identical VHD and VMDK files
# (same UUIDs, timestamps, CIDs, layout), whatever the order of the sources
# on the command line. Raw views are the source itself and are covered by
# test_views_compare; for fixed VHDs the generated part is the footer.
source "$(dirname "$0")/lib.sh"
need_root

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
        for f in disk.vhd disk.vmdk; do
            printf '%s/%s %s %s\n' "$name" "$f" "$(stat -c %s "$mnt/$name/$f")" \
                "$(sha256sum <"$mnt/$name/$f" | cut -d' ' -f1)" >>"$out"
        done
        f=disk-fixed.vhd
        printf '%s/%s-footer %s %s\n' "$name" "$f" "$(stat -c %s "$mnt/$name/$f")" \
            "$(tail -c 512 "$mnt/$name/$f" | sha256sum | cut -d' ' -f1)" >>"$out"
    done
}

args=()
for name in "${names[@]}"; do
    args+=(--source "$name=${SRC[$name]}")
done
start_daemon "$T/mnt1" "${args[@]}"
digest_views "$T/mnt1" "$T/run1.txt"
stop_daemon "$T/mnt1"

# Second run: another mount point, the sources in reverse order.
args=()
for ((i = ${#names[@]} - 1; i >= 0; i--)); do
    args+=(--source "${names[i]}=${SRC[${names[i]}]}")
done
start_daemon "$T/mnt2" "${args[@]}"
digest_views "$T/mnt2" "$T/run2.txt"
stop_daemon "$T/mnt2"

assert_lines 12 "$T/run1.txt" "digests of run 1"
if ! diff -u "$T/run1.txt" "$T/run2.txt" >&2; then
    fail "views differ between two daemon runs over the same sources"
fi

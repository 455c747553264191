#!/usr/bin/env bash
# Many small sources with random extent maps (data, written zeros,
# preallocated and hole runs at random offsets and lengths, some straddling
# block, grain and cluster boundaries): every view file of every format in
# the mount compares identical to its source, and qemu-img check is clean
# where qemu supports it. The seed is printed; P2VFS_SEED=N repeats a run.
source "$(dirname "$0")/lib.sh"
need_root
need_cmd qemu-img python3

seed=${P2VFS_SEED:-$(date +%s)}
count=${P2VFS_RANDOM_SOURCES:-24}
log "seed $seed, $count sources (repeat with P2VFS_SEED=$seed)"
python3 "$LIB_DIR/make_random_sources.py" "$seed" "$count" "$T/src" >"$T/sizes"

args=()
while read -r name _; do
    args+=(--source "$name=$T/src/$name.img")
done <"$T/sizes"
start_daemon "$T/mnt" "${args[@]}"

checked=0
while read -r name size; do
    for view in "$T/mnt/$name"/*; do
        file=$(basename "$view")
        [[ $file != info.json && $file != report.txt ]] || continue # inspection's, not views
        fmt=$(qemu_format "$file")
        out=$(qemu-img compare -f raw -F "$fmt" "$T/src/$name.img" "$view" 2>&1) ||
            fail "seed $seed: $name ($size bytes): $file differs: $out"
        [[ $out == *"Images are identical." ]] ||
            fail "seed $seed: $name: $file: unexpected compare output: $out"
        if qemu_checkable "$fmt"; then
            out=$(qemu-img check -f "$fmt" "$view" 2>&1) ||
                fail "seed $seed: $name ($size bytes): qemu-img check $file: $out"
        fi
        checked=$((checked + 1))
    done
done <"$T/sizes"
assert_le $((count * 4)) "$checked" "views checked"
log "$checked view files identical to their sources"
stop_daemon

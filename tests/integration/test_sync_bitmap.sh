#!/usr/bin/env bash
# A sync job with dirty-bitmap change detection: the source is a qcow2 with a
# persistent bitmap, served writable by qemu-nbd with the bitmap as the meta
# context qemu:dirty-bitmap:b0 (qemu 7.2's qemu-nbd takes -B on a writable
# export: the bitmap is enabled and records every write made through it).
# Written through NBD between syncs, the target reads after each sync as the
# source did; the job counts as changed exactly the 1 MiB blocks whose
# content changed (a region written again with the bytes it held, or zeros
# written into a hole, is dirty but not changed), and reads only blocks the
# bitmap marks (every one dirtied since the bitmap was made: the job never
# clears it), far less than the disk. A target written by hand is refused,
# also when the job is only resumed; a bitmap the server stops offering
# fails the next sync, and one it never offered fails the job before the
# initial copy makes generation 1, naming it.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/dbus_lib.sh"
need_root
need_cmd qemu-img qemu-io qemu-nbd python3 truncate dd

MiB=$((1024 * 1024))
SIZE=$((256 * MiB))
BLOCK=$MiB
seed=${P2VFS_SYNC_SEED:-$(($(date +%s) % 100000))}
RANDOM=$seed
log "seed $seed"

# The source: random data in [0, 48M) and [96M, 128M), holes elsewhere; the
# bitmap made after that, so it starts clean.
truncate -s "$SIZE" "$T/fill.raw"
dd if=/dev/urandom of="$T/fill.raw" bs=1M count=48 iflag=fullblock conv=notrunc status=none
dd if=/dev/urandom of="$T/fill.raw" bs=1M seek=96 count=32 iflag=fullblock conv=notrunc status=none
src=$T/src.qcow2
qemu-img convert -q -f raw -O qcow2 "$T/fill.raw" "$src"
rm -f "$T/fill.raw"
qemu-img bitmap --add "$src" b0

sock=$T/src.sock
uri=$(nbd_unix_uri "$sock")
QEMU_NBD_PID=
# --shared: the daemon's source (up to 4 connections), the job's reader (as
# many), its bitmap query, and the test's qemu-io and qemu-img.
serve_source() { # BITMAP
    rm -f "$sock"
    bg_tracked qemu-nbd -f qcow2 -B "$1" --shared=16 --persistent -k "$sock" "$src"
    QEMU_NBD_PID=$BG_PID
    wait_for 10 test -S "$sock" || fail "qemu-nbd -B $1 did not create $sock"
}
serve_source b0

start_bus
mnt=$T/mnt
start_bus_daemon "$mnt" --state-dir "$T/state" --views raw
ctl add pc "$uri" >/dev/null
mkdir -p "$T/out" "$T/copies"

# ---------------------------------------------------------------- helpers

declare -A CHANGED=() DIRTIED=() # this round's changed blocks; all blocks ever written
declare -a IO=()                 # qemu-io commands of the round
declare -A PATTERN_AT=()         # offset -> pattern written there last

block_range() { # OFFSET: the blocks a 4 KiB write at OFFSET touches
    local b
    for ((b = $1 / BLOCK; b <= ($1 + 4095) / BLOCK; b++)); do echo "$b"; done
}

# write_pattern OFFSET PATTERN: 4 KiB of byte PATTERN (1-255) at OFFSET.
# Changes the content unless the region holds that pattern already.
write_pattern() {
    local b
    IO+=(-c "write -P $2 $1 4k")
    for b in $(block_range "$1"); do
        DIRTIED[$b]=1
        [[ ${PATTERN_AT[$1]:-} == "$2" ]] || CHANGED[$b]=1
    done
    PATTERN_AT[$1]=$2
}

# write_zeros_in_hole OFFSET: write-zeroes into a hole: dirty, unchanged.
write_zeros_in_hole() {
    local b
    IO+=(-c "write -z $1 4k")
    for b in $(block_range "$1"); do DIRTIED[$b]=1; done
}

flush_writes() {
    ((${#IO[@]})) || return 0
    qemu-io -f raw "$uri" "${IO[@]}" >"$T/qemu-io.out" 2>&1 ||
        fail "qemu-io through NBD failed: $(cat "$T/qemu-io.out")"
    IO=()
}

random_offset() { # 4 KiB-aligned, anywhere in the disk
    echo $(((((RANDOM << 15) | RANDOM) % (SIZE / 4096)) * 4096))
}

snapshot() { # OUT: the source's content now, through NBD
    rm -f "$1"
    qemu-img convert -f raw -O raw "$uri" "$1"
}

changed_blocks() { # OLD NEW: the blocks in which two raw files differ
    python3 - "$1" "$2" "$BLOCK" <<'PY'
import sys
a, b, bs = open(sys.argv[1], "rb"), open(sys.argv[2], "rb"), int(sys.argv[3])
n, out = 0, []
while True:
    x, y = a.read(bs), b.read(bs)
    if not x and not y:
        break
    if x != y:
        out.append(n)
    n += 1
print(" ".join(map(str, out)))
PY
}

keys_of() { # NAME of an associative array: its keys, ascending, on one line
    local -n arr=$1
    printf '%s\n' "${!arr[@]}" | sed '/^$/d' | sort -n | tr '\n' ' ' | sed 's/ $//'
}

assert_state() { # ID STATE
    local s
    s=$(job_field "$1" state)
    [[ $s == "$2" ]] || fail "job $1: state '$s', expected '$2' (error: $(job_field "$1" error))"
}

wait_state() { # ID SECONDS: until the job is not running; prints the state
    local n s
    for ((n = 0; n < $2 * 10; n++)); do
        s=$(job_field "$1" state)
        [[ $s != running ]] && break
        sleep 0.1
    done
    echo "$s"
}

wait_phase() { # ID PHASE SECONDS
    local n p
    for ((n = 0; n < $3 * 10; n++)); do
        p=$(job_field "$1" phase)
        [[ $p == "$2" ]] && return 0
        sleep 0.1
    done
    fail "job $1: phase '$p' after $3 s, expected '$2' (state $(job_field "$1" state), error: $(job_field "$1" error))"
}

assert_target_is() { # FILE RAW
    run_rc qemu-img compare -f raw -F qcow2 "$2" "$1"
    [[ $RC -eq 0 ]] || fail "$1 differs from $2: $(cat "$T/run.out" "$T/run.err")"
}

# ---------------------------------------------------------------- generation 1
dest=$T/out/pc.qcow2
run_rc ctl sync start pc "$dest" --format qcow2 --detection dirty-bitmap --bitmap b0 --wait
[[ $RC -eq 0 ]] || fail "sync start exited $RC: $(cat "$T/run.out" "$T/run.err")"
id=$(cat "$T/run.out")
assert_eq 1 "$(job_field "$id" generation)" "generation after the initial copy"
assert_eq dirty-bitmap "$(job_field "$id" detection)" "detection"
snapshot "$T/copies/prev.raw"
assert_target_is "$dest.part" "$T/copies/prev.raw"
# The initial copy reads what the source's allocation says holds data.
assert_eq $((80 * MiB)) "$(job_field "$id" read_bytes)" "read_bytes of the initial copy"

# ---------------------------------------------------------------- rounds
pattern=0
next_pattern() { pattern=$((pattern % 254 + 1)); }
round_writes() {
    case $1 in
    1)
        next_pattern; write_pattern $((3 * MiB)) $pattern # three in block 3
        next_pattern; write_pattern $((3 * MiB + 256 * 1024)) $pattern
        next_pattern; write_pattern $((3 * MiB + 1020 * 1024)) $pattern
        next_pattern; write_pattern $((200 * MiB + 4096)) $pattern # in a hole
        next_pattern; write_pattern $((97 * MiB - 2048)) $pattern  # across blocks 96 and 97
        write_zeros_in_hole $((220 * MiB))
        ;;
    2)
        # What round 1 wrote at 3 MiB + 256 KiB, again: dirty, not changed.
        write_pattern $((3 * MiB + 256 * 1024)) "${PATTERN_AT[$((3 * MiB + 256 * 1024))]}"
        next_pattern; write_pattern $((200 * MiB + 8192)) $pattern
        next_pattern; write_pattern $((SIZE - 4096)) $pattern
        ;;
    3)
        write_pattern $((200 * MiB + 8192)) "${PATTERN_AT[$((200 * MiB + 8192))]}"
        write_zeros_in_hole $((230 * MiB + 4096))
        ;;
    esac
    local i
    for ((i = 0; i < 3 + 3 * $1; i++)); do
        next_pattern
        write_pattern "$(random_offset)" $pattern
    done
    flush_writes
}

for round in 1 2 3; do
    CHANGED=()
    round_writes "$round"
    snapshot "$T/copies/now.raw"
    assert_eq "$(keys_of CHANGED)" "$(changed_blocks "$T/copies/prev.raw" "$T/copies/now.raw")" \
        "round $round: blocks that differ (the test's own plan)"
    gen0=$(job_field "$id" generation)
    run_rc ctl sync now "$id" --wait
    [[ $RC -eq 0 ]] || fail "sync now exited $RC: $(cat "$T/run.out" "$T/run.err")"
    assert_eq $((gen0 + 1)) "$(job_field "$id" generation)" "generation after round $round"
    assert_state "$id" running
    assert_target_is "$dest.part" "$T/copies/now.raw"
    changed=$(job_field "$id" changed_bytes)
    written=$(job_field "$id" written_bytes)
    read=$(job_field "$id" read_bytes)
    ever=$((${#DIRTIED[@]} * BLOCK))
    log "round $round: changed [$(keys_of CHANGED)], dirtied so far [$(keys_of DIRTIED)]:" \
        "changed_bytes $changed, written_bytes $written, read_bytes $read (bound $ever)"
    assert_eq dirty-bitmap "$(job_field "$id" detection)" "detection of round $round"
    assert_eq $((${#CHANGED[@]} * BLOCK)) "$changed" "changed_bytes of round $round"
    assert_le "$written" "$changed" "written_bytes <= changed_bytes"
    assert_le "$changed" "$read" "read_bytes >= changed_bytes"
    assert_le "$read" "$ever" "read_bytes <= the blocks dirtied since the bitmap was made"
    assert_lt $((read * 8)) "$SIZE" "read_bytes is far less than the disk"
    mv "$T/copies/now.raw" "$T/copies/prev.raw"
done
run_rc qemu-img check -f qcow2 "$dest.part"
[[ $RC -eq 0 ]] || fail "qemu-img check: $(cat "$T/run.out")"

# ---------------------------------------------------------------- a target written by hand
cp --sparse=always "$dest.part" "$T/copies/target-good.qcow2"
qemu-io -f qcow2 -c 'write -P 7 0 64k' "$dest.part" >/dev/null
cp --sparse=always "$dest.part" "$T/copies/target-tampered.qcow2"
CHANGED=()
next_pattern
write_pattern $((150 * MiB)) $pattern
flush_writes
snapshot "$T/copies/now.raw"
gen=$(job_field "$id" generation)
run_rc ctl sync now "$id" --wait
[[ $RC -eq 1 ]] || fail "sync now onto a modified target: exit status $RC, expected 1"
assert_state "$id" failed
error=$(job_field "$id" error)
log "sync onto the modified target: $error"
[[ $error == *"$dest.part"*modified* ]] || fail "the error does not name the modified target: $error"
cmp "$T/copies/target-tampered.qcow2" "$dest.part" || fail "$dest.part was written by the refused sync"

# Resumed as it is, the job must not sync onto the target: the bitmap marks
# only the source's writes, so a sync would leave block 0 as the hand wrote
# it. Whether the resume retries the sync or waits for the next request, a
# sync is refused again, and the target is not written.
ctl resume "$id" >/dev/null
for ((n = 0; n < 300; n++)); do
    s=$(job_field "$id" state)
    p=$(job_field "$id" phase)
    [[ $s == failed || ($s == running && $p == waiting) ]] && break
    sleep 0.1
done
g=$(job_field "$id" generation)
if ((g != gen)); then
    run_rc qemu-img compare -f raw -F qcow2 "$T/copies/now.raw" "$dest.part"
    fail "resumed without restoring the target, the job made generation $g (qemu-img compare with the source: $(cat "$T/run.out"))"
fi
if [[ $s == running ]]; then
    run_rc ctl sync now "$id" --wait
    [[ $RC -eq 1 ]] || fail "sync now onto the still modified target: exit status $RC, expected 1"
fi
assert_state "$id" failed
[[ $(job_field "$id" error) == *"$dest.part"*modified* ]] ||
    fail "resumed: failed, but not for the modified target: $(job_field "$id" error)"
assert_eq "$gen" "$(job_field "$id" generation)" "generation after the resumed job's refusal"
cmp "$T/copies/target-tampered.qcow2" "$dest.part" || fail "$dest.part was written after the resume"

# Restored, it goes on.
cp "$T/copies/target-good.qcow2" "$dest.part"
ctl resume "$id" >/dev/null
for ((n = 0; n < 300; n++)); do
    [[ $(job_field "$id" phase) == waiting || $(job_field "$id" generation) -gt $gen ]] && break
    sleep 0.1
done
if (($(job_field "$id" generation) == gen)); then
    run_rc ctl sync now "$id" --wait
    [[ $RC -eq 0 ]] || fail "sync now after restoring the target exited $RC: $(cat "$T/run.out" "$T/run.err")"
fi
wait_phase "$id" waiting 30
assert_eq $((gen + 1)) "$(job_field "$id" generation)" "generation after the restored target's sync"
assert_target_is "$dest.part" "$T/copies/now.raw"
mv "$T/copies/now.raw" "$T/copies/prev.raw"

# ---------------------------------------------------------------- the bitmap gone
# The server restarted with another bitmap (b0 stays in the image, but is no
# longer offered): the next sync fails, naming b0.
stop_pid "$QEMU_NBD_PID" TERM
qemu-img bitmap --add "$src" b1
serve_source b1
run_rc ctl sync now "$id" --wait
[[ $RC -eq 1 ]] || fail "sync now without the bitmap: exit status $RC, expected 1"
assert_state "$id" failed
error=$(job_field "$id" error)
log "sync with the bitmap gone: $error"
[[ $error == *b0* ]] || fail "the error does not name the bitmap b0: $error"
assert_target_is "$dest.part" "$T/copies/prev.raw"

# A job naming a bitmap the server never had fails before it makes a
# generation: without it, no later sync could know what changed meanwhile.
run_rc ctl sync start pc "$T/out/pc2.qcow2" --format qcow2 --detection dirty-bitmap --bitmap nosuch --wait
id2=$(head -n 1 "$T/run.out")
if [[ $RC -eq 0 ]]; then
    fail "sync start --bitmap nosuch succeeded: generation $(job_field "$id2" generation) made without the bitmap; the first sync must fail, naming it"
fi
[[ $id2 =~ ^[0-9]+$ ]] || fail "sync start --bitmap nosuch exited $RC without a job: $(cat "$T/run.out" "$T/run.err")"
assert_state "$id2" failed
error=$(job_field "$id2" error)
log "a job with a bitmap the server does not have: $error"
[[ $error == *nosuch* ]] || fail "the error does not name the bitmap: $error"
assert_eq 0 "$(job_field "$id2" generation)" "generation of the job without its bitmap"

stop_daemon "$mnt"
log "ok"

#!/usr/bin/env bash
# A sync job with hash change detection keeps a qcow2 target in step with a
# local raw source (random data in parts, holes elsewhere) that keeps being
# written: after every `sync now` the target reads as the source did, the job
# counts as changed exactly the 1 MiB blocks whose content changed (a block
# rewritten with the bytes it already held, or zeros written into a hole,
# is not one), it writes no more than that, and the target file itself
# changes by no more than that plus qcow2's table updates. vhdx and vmdk
# targets follow as well. A target written by hand fails the next sync,
# naming it, and is not written further; restored, the job goes on. A
# target moved while the job is paused is followed after `sync retarget`. A
# schedule syncs by itself.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/dbus_lib.sh"
need_root
need_cmd qemu-img qemu-io python3 dd truncate

MiB=$((1024 * 1024))
SIZE=$((256 * MiB))
BLOCK=$MiB
# The written regions are chosen at random as well as by hand; the seed is
# printed, and P2VFS_SYNC_SEED repeats a run.
seed=${P2VFS_SYNC_SEED:-$(($(date +%s) % 100000))}
RANDOM=$seed
log "seed $seed"

src=$T/src.raw
truncate -s "$SIZE" "$src"
# Random data in [0, 40M), [64.5M, 100M) (block 64 half data, half hole) and
# [150M, 151M); holes elsewhere, [200M, 256M) among them.
dd if=/dev/urandom of="$src" bs=1M count=40 iflag=fullblock conv=notrunc status=none
dd if=/dev/urandom of="$src" bs=512K seek=129 count=71 iflag=fullblock conv=notrunc status=none
dd if=/dev/urandom of="$src" bs=1M seek=150 count=1 iflag=fullblock conv=notrunc status=none

start_bus
mnt=$T/mnt
start_bus_daemon "$mnt" --state-dir "$T/state" --views raw
ctl add pc "$src" >/dev/null
mkdir -p "$T/out" "$T/moved" "$T/copies"

# ---------------------------------------------------------------- helpers

# The distinct blocks of this round's writes whose content changes.
declare -A CHANGED=()

# write_random OFFSET: 4 KiB of new random bytes at OFFSET (a byte offset).
write_random() {
    dd if=/dev/urandom of="$src" bs=4096 count=1 seek="$1" oflag=seek_bytes conv=notrunc status=none
    local b
    for ((b = $1 / BLOCK; b <= ($1 + 4095) / BLOCK; b++)); do CHANGED[$b]=1; done
}

# write_same OFFSET: the 4 KiB at OFFSET written again with the bytes they
# hold: the file is written, its content does not change.
write_same() {
    dd if="$src" of="$src" bs=4096 count=1 skip="$1" seek="$1" iflag=skip_bytes oflag=seek_bytes \
        conv=notrunc status=none
}

# write_zeros OFFSET: 4 KiB of zeros at OFFSET, inside a hole: allocated now,
# still reading as zeros.
write_zeros() {
    dd if=/dev/zero of="$src" bs=4096 count=1 seek="$1" oflag=seek_bytes conv=notrunc status=none
}

# A random 4 KiB-aligned offset in the disk.
random_offset() {
    echo $(((((RANDOM << 15) | RANDOM) % (SIZE / 4096)) * 4096))
}

# changed_blocks OLD NEW: the numbers of the BLOCK-sized blocks in which the
# two raw files differ (the test's own check of what it planned).
changed_blocks() {
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

# file_bytes_changed OLD NEW: the bytes of file NEW that differ from file OLD
# (what `cmp -l OLD NEW | wc -l` counts) plus those NEW has beyond OLD's end.
file_bytes_changed() {
    python3 - "$1" "$2" <<'PY'
import os, sys
a, b = open(sys.argv[1], "rb"), open(sys.argv[2], "rb")
total, chunk = 0, 1 << 20
while True:
    x, y = a.read(chunk), b.read(chunk)
    if not y:
        break
    n = min(len(x), len(y))
    if x[:n] != y[:n]:
        d = (int.from_bytes(x[:n], "little") ^ int.from_bytes(y[:n], "little")).to_bytes(n, "little")
        total += n - d.count(0)
    total += len(y) - n
print(total)
PY
}

# nonzero_blocks RAW: the bytes of the BLOCK-sized blocks of RAW holding
# anything but zeros.
nonzero_blocks() {
    python3 - "$1" "$BLOCK" <<'PY'
import sys
f, bs, n = open(sys.argv[1], "rb"), int(sys.argv[2]), 0
zero = bytes(bs)
while True:
    x = f.read(bs)
    if not x:
        break
    if x != zero[:len(x)]:
        n += len(x)
print(n)
PY
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

# resumed_job_settles ID GEN TARGET: after `resume` of a job whose sync was
# refused: until it waits for the next request, or has synced (a resume may
# retry the refused sync), or failed again.
resumed_job_settles() {
    local n s p g
    for ((n = 0; n < 300; n++)); do
        s=$(job_field "$1" state)
        p=$(job_field "$1" phase)
        g=$(job_field "$1" generation)
        [[ $s == failed || ($s == running && $p == waiting) ]] && return 0
        sleep 0.1
    done
    fail "job $1 resumed: state $s, phase '$p', generation $g after 30 s"
}

sorted_keys() { # the keys of CHANGED, ascending, on one line
    printf '%s\n' "${!CHANGED[@]}" | sort -n | tr '\n' ' ' | sed 's/ $//'
}

# assert_target_is FORMAT FILE RAW: the target reads as the raw file RAW.
assert_target_is() {
    run_rc qemu-img compare -f raw -F "$1" "$3" "$2"
    [[ $RC -eq 0 ]] || fail "$2 ($1) differs from $3: $(cat "$T/run.out" "$T/run.err")"
}

assert_check_clean() { # FORMAT FILE
    run_rc qemu-img check -f "$1" "$2"
    [[ $RC -eq 0 ]] || fail "qemu-img check $2 exited $RC: $(cat "$T/run.out" "$T/run.err")"
}

# The job's state must be STATE; its error is shown otherwise.
assert_state() { # ID STATE
    local s
    s=$(job_field "$1" state)
    [[ $s == "$2" ]] || fail "job $1: state '$s', expected '$2' (error: $(job_field "$1" error))"
}

# sync_round ID FORMAT DEST_PART COPY: sync now --wait, then the target's
# content, changed_bytes, written_bytes and (qcow2) the bytes of the file.
QCOW2_METADATA_BOUND=$((256 * 1024))
sync_round() {
    local id=$1 fmt=$2 part=$3 copy=$4 before_file=$T/target-before gen0 gen changed written read diff
    local expected=$((${#CHANGED[@]} * BLOCK))
    cp --sparse=always "$part" "$before_file"
    gen0=$(job_field "$id" generation)
    run_rc ctl sync now "$id" --wait
    [[ $RC -eq 0 ]] || fail "sync now $id exited $RC: $(cat "$T/run.out" "$T/run.err")"
    gen=$(job_field "$id" generation)
    assert_eq $((gen0 + 1)) "$gen" "job $id: generation after sync now"
    assert_state "$id" running
    assert_target_is "$fmt" "$part" "$copy"
    changed=$(job_field "$id" changed_bytes)
    written=$(job_field "$id" written_bytes)
    read=$(job_field "$id" read_bytes)
    assert_eq hash "$(job_field "$id" detection)" "job $id: detection"
    diff=$(file_bytes_changed "$before_file" "$part")
    log "job $id ($fmt) generation $gen: ${#CHANGED[@]} block(s) changed [$(sorted_keys)]:" \
        "changed_bytes $changed (expected $expected), written_bytes $written, read_bytes $read," \
        "target file bytes changed $diff"
    assert_eq "$expected" "$changed" "job $id: changed_bytes (${#CHANGED[@]} blocks of 1 MiB)"
    assert_le "$written" "$changed" "job $id: written_bytes <= changed_bytes"
    ((expected == 0 || written > 0)) || fail "job $id: nothing written though $expected bytes changed"
    # Hash detection reads every block the source's allocation says holds
    # data: at least those with bytes other than zeros, at most those with
    # extents (FIEMAP's count bounds SEEK_DATA's from above).
    assert_le "$(nonzero_blocks "$copy")" "$read" "job $id: read_bytes >= blocks holding non-zero bytes"
    assert_le "$read" "$(extent_blocks_bytes "$src" "$BLOCK")" "job $id: read_bytes <= blocks with extents"
    if [[ $fmt == qcow2 ]]; then
        # A qcow2 of 64 KiB clusters: the data of the changed blocks, in
        # place or in new clusters at the end, plus the tables: an 8-byte L2
        # entry and a 2-byte refcount per new cluster, all within the one L2
        # table (it maps 512 MiB) and the one refcount block (it counts 2 GiB
        # of clusters) of a 256 MiB disk, each a 64 KiB cluster; at most a
        # new L2 table and refcount block more: 4 clusters, 256 KiB.
        assert_le "$diff" $((changed + QCOW2_METADATA_BOUND)) \
            "job $id: bytes of $part changed by the sync (changed_bytes + 256 KiB of qcow2 tables)"
    fi
    rm -f "$before_file"
}

# ---------------------------------------------------------------- generation 1
dest=$T/out/pc.qcow2
run_rc ctl sync start pc "$dest" --format qcow2 --wait
[[ $RC -eq 0 ]] || fail "sync start exited $RC: $(cat "$T/run.out" "$T/run.err")"
id=$(cat "$T/run.out")
[[ $id =~ ^[0-9]+$ ]] || fail "sync start printed '$id', not a job ID"
[[ -f $dest.part ]] || fail "no $dest.part after the initial copy"
[[ ! -e $dest ]] || fail "$dest exists before the cutover"
assert_eq 1 "$(job_field "$id" generation)" "generation after the initial copy"
assert_state "$id" running
assert_eq "$dest.part" "$(job_field "$id" target)" "target"
assert_eq False "$(job_field "$id" bootable)" "bootable before the cutover"
assert_target_is qcow2 "$dest.part" "$src"
assert_check_clean qcow2 "$dest.part"
log "generation 1: read_bytes $(job_field "$id" read_bytes), written_bytes $(job_field "$id" written_bytes)"
# The initial copy writes the source's data (its random parts: 40 + 35.5 + 1
# MiB; the half-hole block 64 counts whole) and no block of zeros.
assert_eq $(((40 + 36 + 1) * MiB)) "$(job_field "$id" written_bytes)" "written_bytes of the initial copy"
cp --sparse=always "$src" "$T/copies/prev.raw"

# ---------------------------------------------------------------- three rounds
round_writes() {
    case $1 in
    1)
        write_random $((5 * MiB))               # three writes in block 5
        write_random $((5 * MiB + 300 * 1024))
        write_random $((5 * MiB + 1020 * 1024)) # its last 4 KiB
        write_random $((210 * MiB + 8192))      # in the hole
        write_random $((10 * MiB - 2048))       # across blocks 9 and 10
        write_random $((70 * MiB + 4096))
        write_same $((20 * MiB + 65536))        # same bytes: no change
        write_zeros $((230 * MiB))              # zeros into a hole: no change
        ;;
    2)
        write_random $((5 * MiB + 512 * 1024)) # block 5 again
        write_random $((210 * MiB + 4096))     # the block filled in round 1
        write_random $((SIZE - 4096))          # the disk's last 4 KiB
        write_random $((64 * MiB))             # the hole half of block 64
        write_same $((70 * MiB + 4096))        # what round 1 wrote, again
        write_same $((150 * MiB))
        ;;
    3)
        write_same 0
        write_zeros $((199 * MiB + 4096))
        ;;
    esac
    # And writes anywhere.
    local i
    for ((i = 0; i < 4 + 4 * $1; i++)); do write_random "$(random_offset)"; done
}

for round in 1 2 3; do
    CHANGED=()
    round_writes "$round"
    cp --sparse=always "$src" "$T/copies/now.raw"
    planned=$(sorted_keys)
    assert_eq "$planned" "$(changed_blocks "$T/copies/prev.raw" "$T/copies/now.raw")" \
        "round $round: blocks that differ from the last round (the test's own plan)"
    sync_round "$id" qcow2 "$dest.part" "$T/copies/now.raw"
    mv "$T/copies/now.raw" "$T/copies/prev.raw"
done
assert_check_clean qcow2 "$dest.part"

# A sync with nothing changed: nothing changed, nothing written.
CHANGED=()
sync_round "$id" qcow2 "$dest.part" "$T/copies/prev.raw"
assert_eq 0 "$(job_field "$id" written_bytes)" "written_bytes of a sync of an unchanged source"

# ---------------------------------------------------------------- vhdx and vmdk targets
declare -A other_id=()
for fmt in vhdx vmdk; do
    run_rc ctl sync start pc "$T/out/pc.$fmt" --format "$fmt" --wait
    [[ $RC -eq 0 ]] || fail "sync start --format $fmt exited $RC: $(cat "$T/run.out" "$T/run.err")"
    other_id[$fmt]=$(cat "$T/run.out")
    assert_eq 1 "$(job_field "${other_id[$fmt]}" generation)" "$fmt job: generation"
    assert_target_is "$fmt" "$T/out/pc.$fmt.part" "$src"
    assert_check_clean "$fmt" "$T/out/pc.$fmt.part"
done
CHANGED=()
round_writes 2
cp --sparse=always "$src" "$T/copies/now.raw"
assert_eq "$(sorted_keys)" "$(changed_blocks "$T/copies/prev.raw" "$T/copies/now.raw")" \
    "formats round: blocks that differ (the test's own plan)"
for fmt in vhdx vmdk; do
    sync_round "${other_id[$fmt]}" "$fmt" "$T/out/pc.$fmt.part" "$T/copies/now.raw"
    assert_check_clean "$fmt" "$T/out/pc.$fmt.part"
done
sync_round "$id" qcow2 "$dest.part" "$T/copies/now.raw"
mv "$T/copies/now.raw" "$T/copies/prev.raw"

# ---------------------------------------------------------------- a target written by hand
cp --sparse=always "$dest.part" "$T/copies/target-good.qcow2"
qemu-io -f qcow2 -c 'write -P 7 0 64k' "$dest.part" >/dev/null
cp --sparse=always "$dest.part" "$T/copies/target-tampered.qcow2"
CHANGED=()
write_random $((30 * MiB)) # something for the sync to write
gen=$(job_field "$id" generation)
run_rc ctl sync now "$id" --wait
[[ $RC -eq 1 ]] || fail "sync now onto a modified target: exit status $RC, expected 1: $(cat "$T/run.out" "$T/run.err")"
assert_state "$id" failed
error=$(job_field "$id" error)
log "sync onto the modified target: $error"
[[ $error == *"$dest.part"* ]] || fail "the error does not name the target $dest.part: $error"
[[ $error == *modified* ]] || fail "the error does not say the target was modified: $error"
[[ $error == *"block 0 "* ]] || fail "the error does not name block 0, the one written by hand: $error"
assert_eq "$gen" "$(job_field "$id" generation)" "generation after the refused sync"
# Not written further: the file is as the hand left it.
cmp "$T/copies/target-tampered.qcow2" "$dest.part" ||
    fail "$dest.part was written by the refused sync"
assert_file_contains "$DAEMON_LOG" "sync job $id: .*was modified since sync $gen"

# Restored (a new ctime: read back and found as recorded), the job goes on.
cp "$T/copies/target-good.qcow2" "$dest.part"
ctl resume "$id" >/dev/null
resumed_job_settles "$id" "$gen" "$dest.part"
cp --sparse=always "$src" "$T/copies/now.raw"
if (($(job_field "$id" generation) == gen)); then
    run_rc ctl sync now "$id" --wait
    [[ $RC -eq 0 ]] || fail "sync now after restoring the target exited $RC: $(cat "$T/run.out" "$T/run.err")"
fi
assert_eq $((gen + 1)) "$(job_field "$id" generation)" "generation after the restored target's sync"
assert_state "$id" running
assert_target_is qcow2 "$dest.part" "$T/copies/now.raw"
assert_file_contains "$DAEMON_LOG" "sync job $id: $dest.part reads as generation $gen: continuing"
mv "$T/copies/now.raw" "$T/copies/prev.raw"

# ---------------------------------------------------------------- the target moved
ctl pause "$id" >/dev/null
assert_state "$id" paused
mv "$dest.part" "$T/moved/pc.qcow2.part"
run_rc ctl sync retarget "$id" "$T/moved/pc.qcow2"
[[ $RC -eq 0 ]] || fail "sync retarget exited $RC: $(cat "$T/run.out" "$T/run.err")"
assert_eq "$T/moved/pc.qcow2.part" "$(job_field "$id" target)" "target after retarget"
ctl resume "$id" >/dev/null
CHANGED=()
write_random $((100 * MiB + 8192))
write_random $((180 * MiB))
cp --sparse=always "$src" "$T/copies/now.raw"
sync_round "$id" qcow2 "$T/moved/pc.qcow2.part" "$T/copies/now.raw"
[[ ! -e $dest.part && ! -e $dest ]] || fail "a target came back at the old place"
assert_eq "$T/moved/pc.qcow2.part" "$(job_field "$id" target)" "target after the sync"
# The moved file (a new ctime) was read back and found as recorded.
assert_file_contains "$DAEMON_LOG" "sync job $id: $T/moved/pc.qcow2.part reads as generation"
mv "$T/copies/now.raw" "$T/copies/prev.raw"

# ---------------------------------------------------------------- the schedule
gen=$(job_field "$id" generation)
ctl sync schedule "$id" --every 0.5 >/dev/null
now=$(date +%s)
assert_eq sync "$(job_field "$id" next_event)" "next_event with --every 0.5"
t=$(job_field "$id" next_event_time)
# 30 s after the last sync ended (a few seconds ago).
((t > now && t <= now + 30)) || fail "next_event_time $t is not within 30 s after now ($now)"
CHANGED=()
write_random $((120 * MiB))
ctl sync schedule "$id" --every 0.05 >/dev/null
wait_job_field "$id" generation $((gen + 1)) 20
now=$(date +%s)
assert_eq sync "$(job_field "$id" next_event)" "next_event after a scheduled sync"
t=$(job_field "$id" next_event_time)
((t >= now - 1 && t <= now + 3)) || fail "next_event_time $t is not 3 s after the last sync (now $now)"
# And again, without a write.
wait_job_field "$id" generation $((gen + 2)) 20
ctl sync schedule "$id" >/dev/null
assert_eq "" "$(job_field "$id" next_event)" "next_event with no schedule"
assert_eq 0 "$(job_field "$id" next_event_time)" "next_event_time with no schedule"
# A scheduled sync that was under way when the schedule was dropped ends
# before the target is read.
wait_phase "$id" waiting 30
assert_target_is qcow2 "$T/moved/pc.qcow2.part" "$src"
assert_check_clean qcow2 "$T/moved/pc.qcow2.part"

stop_daemon "$mnt"
log "ok"

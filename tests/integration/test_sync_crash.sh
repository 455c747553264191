#!/usr/bin/env bash
# p2vfsd killed with SIGKILL while a sync job works, and started again with
# the same state directory: the job goes on by itself and ends as if nothing
# had happened.
#   a. in the middle of the initial copy: generation 1 is made, the blocks
#      recorded done before the kill are not read from the source again;
#   b. in the middle of an incremental sync after scattered writes;
#   c. right after a sync ended: the next sync finds the target as recorded
#      (no read-back, never "modified");
#   d. while the cutover's quiesce command runs: after the restart the
#      command runs again, and the cutover completes;
#   e. in the cutover's final sync: likewise.
# After a cutover DEST exists, DEST.part does not, the job is done and
# bootable, and the target holds the source's bytes (no --profile: a data
# disk without an OS gets no fixups; test_sync_cutover.sh does them).
# The source is served by nbdkit's file plugin behind its rate filter, so a
# sync takes long enough to be killed in the middle; it is written directly
# in the file between syncs.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/dbus_lib.sh"
need_root
need_cmd qemu-img nbdkit python3 dd truncate pgrep
nbdkit --dump-plugin file >/dev/null 2>&1 || skip "nbdkit has no file plugin"
nbdkit --filter=rate null --dump-plugin >/dev/null 2>&1 || skip "nbdkit has no rate filter"

# The daemon's qemu-nbd of a target keeps its socket in the job's directory
# (a killed daemon's is replaced at the restart); nothing goes to TMPDIR.
export TMPDIR=$T/tmp
mkdir -p "$TMPDIR"

MiB=$((1024 * 1024))
seed=${P2VFS_SYNC_SEED:-$(($(date +%s) % 100000))}
RANDOM=$seed
log "seed $seed"

# Source A: 1 GiB, random data but for the last 64 MiB.
src=$T/a.raw
truncate -s 1G "$src"
dd if=/dev/urandom of="$src" bs=4M count=240 iflag=fullblock conv=notrunc status=none
# Source B: 128 MiB of random data.
src_b=$T/b.raw
dd if=/dev/urandom of="$src_b" bs=4M count=32 iflag=fullblock status=none

# set_rate FILE BITS: nbdkit's rate filter reads the limit from FILE.
set_rate() {
    echo "$2" >"$1.new"
    mv -f "$1.new" "$1"
    sleep 1.2 # the filter looks at the file about once a second
}
FAST=100G
SLOW_A=800M # 100 MB/s: a full read of A takes 10 s
SLOW_B=200M # 25 MB/s: a full read of B takes 5 s
rate_a=$T/rate.a
rate_b=$T/rate.b
echo "$FAST" >"$rate_a"
echo "$FAST" >"$rate_b"
sock_a=$T/a.sock
sock_b=$T/b.sock
start_nbdkit "$sock_a" --filter=rate file "$src" rate="$FAST" rate-file="$rate_a" burstiness=0.5
start_nbdkit "$sock_b" --filter=rate file "$src_b" rate="$FAST" rate-file="$rate_b" burstiness=0.5

start_bus
mnt=$T/mnt
daemon_args=(--state-dir "$T/state" --views raw)
start_bus_daemon "$mnt" "${daemon_args[@]}"
ctl add a "$(nbd_unix_uri "$sock_a")" >/dev/null
ctl add b "$(nbd_unix_uri "$sock_b")" >/dev/null
mkdir -p "$T/out" "$T/copies"

# ---------------------------------------------------------------- helpers

# record ID: the job's sync.json as one line of python-readable facts:
# "pass generation cutover done-blocks".
record() {
    local f
    f=$(find "$T/state" -path "*/$1/sync.json" | head -n 1)
    [[ -n $f ]] || { echo "none 0 none 0"; return; }
    python3 - "$f" <<'PY' 2>/dev/null || echo "none 0 none 0"
import json, sys
r = json.load(open(sys.argv[1]))
print(str(r["pass"]).lower(), r["generation"], r["cutover"] or "-", sum(c for _, c in r["done"]))
PY
}

no_target_server() { ! pgrep -f -- "^qemu-nbd .*$T/out/" >/dev/null; }

# SIGKILL, as a crash would. The target's qemu-nbd must go with the daemon.
crash() {
    local what=$1
    kill_daemon_hard "$mnt"
    force_unmount "$mnt"
    wait_for 10 no_target_server ||
        fail "$what: a qemu-nbd of the target outlived the daemon: $(pgrep -af -- "^qemu-nbd .*$T/out/")"
}

# The daemon again, on the same state directory.
restart() {
    log "$1: starting again"
    start_bus_daemon "$mnt" "${daemon_args[@]}"
}

# kill_when ID WHAT CONDITION: polls until CONDITION (bash, with the job's
# progress in $bdone, $total, $phase, $gen and the record's in $rpass, $rgen,
# $rcut, $rdone) holds, then crashes and restarts the daemon. Fails if the
# job ends the step first (the moment was missed).
kill_when() {
    local id=$1 what=$2 cond=$3 n json
    for ((n = 0; n < 600; n++)); do
        json=$(ctl --json job "$id")
        read -r bdone total phase gen state < <(python3 -c '
import json, sys
j = json.load(sys.stdin)
print(j["bytes_done"], j["bytes_total"], j["phase"] or "-", j["generation"], j["state"])' <<<"$json")
        # shellcheck disable=SC2034 # read by the condition
        read -r rpass rgen rcut rdone < <(record "$id")
        [[ $state == running ]] || fail "$what: the job is $state before the kill ($(job_field "$id" error))"
        if eval "$cond"; then
            crash "$what"
            # What the daemon left on disk, now that it cannot change.
            KILLED_RECORD=$(record "$id")
            log "$what: killed at phase $phase, $bdone of $total bytes; record: pass, generation, cutover, blocks done: $KILLED_RECORD"
            restart "$what"
            return 0
        fi
        sleep 0.05
    done
    fail "$what: the moment to kill did not come in 30 s (phase $phase, $bdone of $total bytes, generation $gen)"
}

wait_state() { # ID STATE SECONDS
    local n s
    for ((n = 0; n < $3 * 10; n++)); do
        s=$(job_field "$1" state)
        [[ $s == "$2" ]] && return 0
        [[ $s == failed || $s == cancelled ]] && break
        sleep 0.1
    done
    fail "job $1: state '$s', expected '$2' (error: $(job_field "$1" error))"
}

assert_target_is() { # FORMAT FILE RAW
    run_rc qemu-img compare -f raw -F "$1" "$3" "$2"
    [[ $RC -eq 0 ]] || fail "$2 differs from $3: $(cat "$T/run.out" "$T/run.err")"
}

assert_check_clean() { # FILE
    run_rc qemu-img check -f qcow2 "$1"
    [[ $RC -eq 0 ]] || fail "qemu-img check $1 exited $RC: $(cat "$T/run.out" "$T/run.err")"
}

scattered_writes() { # FILE COUNT SIZE: random 4 KiB writes; sets CHANGED
    local file=$1 count=$2 size=$3 i off
    CHANGED=()
    for ((i = 0; i < count; i++)); do
        off=$(((((RANDOM << 15) | RANDOM) % (size / 4096)) * 4096))
        dd if=/dev/urandom of="$file" bs=4096 count=1 seek="$off" oflag=seek_bytes conv=notrunc status=none
        CHANGED[$((off / MiB))]=1
    done
}
declare -A CHANGED=()

# ---------------------------------------------------------------- a. the initial copy
dest=$T/out/a.qcow2
marker=$T/quiesce.log
set_rate "$rate_a" "$SLOW_A"
id=$(ctl sync start a "$dest" --format qcow2 --parallel 1 \
    --quiesce-command "echo start >>$marker; sleep 4; echo end >>$marker" \
    --unquiesce-command "echo unquiesce >>$marker")
[[ $id =~ ^[0-9]+$ ]] || fail "sync start printed '$id'"
# Killed with a quarter or more done and some blocks recorded done.
# shellcheck disable=SC2016 # the conditions are evaluated by kill_when
kill_when "$id" "a. initial copy" '((rdone > 0 && bdone * 4 >= total && gen == 0))'
read -r _ kgen _ kdone <<<"$KILLED_RECORD"
assert_eq 0 "$kgen" "a. generation recorded at the kill"
assert_lt "$kdone" 1024 "a. blocks recorded done at the kill"
[[ -f $dest.part ]] || fail "a. no $dest.part after the kill"
set_rate "$rate_a" "$FAST"
wait_job_field "$id" generation 1 60
assert_file_contains "$DAEMON_LOG" "sync job $id: sync 1 \(hash\), resumed after $kdone blocks"
read_after=$(job_field "$id" read_bytes)
log "a. after the restart: read_bytes $read_after; $kdone blocks were done before the kill"
# The blocks recorded done are not read again (the last 64 MiB are holes,
# never read).
assert_le "$read_after" $(((960 - kdone) * MiB)) "a. read_bytes after the restart"
assert_target_is qcow2 "$dest.part" "$src"
assert_check_clean "$dest.part"
[[ ! -e $dest ]] || fail "a. $dest exists before the cutover"

# ---------------------------------------------------------------- b. an incremental sync
scattered_writes "$src" 300 $((1024 * MiB))
cp --sparse=always "$src" "$T/copies/b.raw"
expected=$((${#CHANGED[@]} * MiB))
set_rate "$rate_a" "$SLOW_A"
ctl sync now "$id" >/dev/null
# shellcheck disable=SC2016
kill_when "$id" "b. incremental sync" '[[ $rpass == true ]] && ((rdone > 0 && bdone * 4 >= total && gen == 1))'
set_rate "$rate_a" "$FAST"
wait_job_field "$id" generation 2 60
changed=$(job_field "$id" changed_bytes)
log "b. after the restart: changed_bytes $changed (of $expected changed in all), written_bytes $(job_field "$id" written_bytes)"
assert_le "$changed" "$expected" "b. changed_bytes after the restart"
assert_target_is qcow2 "$dest.part" "$T/copies/b.raw"
assert_check_clean "$dest.part"

# ---------------------------------------------------------------- c. right after a sync
scattered_writes "$src" 20 $((1024 * MiB))
ctl sync now "$id" >/dev/null
wait_job_field "$id" generation 3 60
crash "c. right after sync 3"
restart "c. right after sync 3"
scattered_writes "$src" 20 $((1024 * MiB))
cp --sparse=always "$src" "$T/copies/c.raw"
run_rc ctl sync now "$id" --wait
[[ $RC -eq 0 ]] || fail "c. sync now after the restart exited $RC: $(cat "$T/run.out" "$T/run.err")"
assert_eq 4 "$(job_field "$id" generation)" "c. generation"
assert_eq $((${#CHANGED[@]} * MiB)) "$(job_field "$id" changed_bytes)" "c. changed_bytes"
assert_file_lacks "$DAEMON_LOG" "changed since generation|was modified"
assert_target_is qcow2 "$dest.part" "$T/copies/c.raw"

# ---------------------------------------------------------------- d. the quiesce command
ctl sync cutover "$id" >/dev/null
# shellcheck disable=SC2016
kill_when "$id" "d. quiesce command" '[[ $(grep -c start "$marker" 2>/dev/null) == 1 ]]'
wait_state "$id" "done" 90
log "d. quiesce log: $(tr '\n' ' ' <"$marker")"
assert_eq 2 "$(grep -c '^start$' "$marker")" "d. quiesce command runs (once before the kill, once after)"
assert_eq 1 "$(grep -c '^unquiesce$' "$marker")" "d. unquiesce command runs"
assert_eq True "$(job_field "$id" bootable)" "d. bootable"
assert_eq "$dest" "$(job_field "$id" target)" "d. target"
[[ -f $dest ]] || fail "d. no $dest after the cutover"
[[ ! -e $dest.part ]] || fail "d. $dest.part is left after the cutover"
assert_eq 5 "$(job_field "$id" generation)" "d. generation (the final sync)"
assert_target_is qcow2 "$dest" "$src"
assert_check_clean "$dest"

# ---------------------------------------------------------------- e. the final sync
dest_b=$T/out/b.qcow2
marker_b=$T/quiesce-b.log
run_rc ctl sync start b "$dest_b" --format qcow2 --parallel 1 \
    --quiesce-command "echo quiesce >>$marker_b" --unquiesce-command "echo unquiesce >>$marker_b" --wait
[[ $RC -eq 0 ]] || fail "e. sync start exited $RC: $(cat "$T/run.out" "$T/run.err")"
id_b=$(cat "$T/run.out")
scattered_writes "$src_b" 30 $((128 * MiB))
set_rate "$rate_b" "$SLOW_B"
ctl sync cutover "$id_b" >/dev/null
# (bytes_done < total: as a pass begins, the last one's figures show for a
# moment.)
# shellcheck disable=SC2016
kill_when "$id_b" "e. final sync" '[[ $rcut == final-sync && $rpass == true && $phase == syncing ]] && ((bdone * 5 >= total && bdone < total))'
set_rate "$rate_b" "$FAST"
wait_state "$id_b" "done" 60
assert_eq "quiesce quiesce unquiesce " "$(tr '\n' ' ' <"$marker_b")" "e. quiesce log"
assert_eq True "$(job_field "$id_b" bootable)" "e. bootable"
[[ -f $dest_b && ! -e $dest_b.part ]] || fail "e. after the cutover: $(ls "$T/out")"
assert_target_is qcow2 "$dest_b" "$src_b"
assert_check_clean "$dest_b"

# Both stay done across a restart.
stop_daemon "$mnt"
start_bus_daemon "$mnt" "${daemon_args[@]}"
assert_eq "done" "$(job_field "$id" state)" "job $id after a restart"
assert_eq "done" "$(job_field "$id_b" state)" "job $id_b after a restart"
stop_daemon "$mnt"
leftovers=$(find "$TMPDIR" "$T/state/jobs" -name 'p2vfs-target-*' -o -name 'qemu-nbd' -type d)
[[ -z $leftovers ]] || fail "qemu-nbd socket directories left after the jobs ended: $leftovers"
log "ok"

#!/usr/bin/env bash
# p2vfsd killed with SIGKILL in the middle of a materialization and started
# again: the job resumes from its checkpoint, the blocks done before the kill
# are not read from the source again (counted by nbdkit's log filter in
# front of the source: the raw view maps onto the source one to one), and
# the copy ends identical.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/dbus_lib.sh"
need_root
need_cmd qemu-img
need_cmd nbdkit
need_cmd python3
nbdkit --dump-plugin file >/dev/null 2>&1 || skip "nbdkit has no file plugin"
nbdkit --filter=log null --dump-plugin >/dev/null 2>&1 || skip "nbdkit has no log filter"

MiB=$((1024 * 1024))
src=$T/src.img
head -c $((48 * MiB)) /dev/urandom >"$src"
sock=$T/src.sock
bg_tracked nbdkit --foreground --readonly --unix "$sock" --filter=log \
    file "$src" logfile="$T/nbd.log"
wait_for 10 test -S "$sock" || fail "nbdkit did not start"

start_bus
mnt=$T/mnt
# No read cache: every byte the job copies is a read of the source.
daemon_args=(--state-dir "$T/state" --views raw --cache-size 0)
start_bus_daemon "$mnt" "${daemon_args[@]}"
ctl add pc1 "nbd+unix:///?socket=$sock" >/dev/null
mkdir "$T/out"
dest=$T/out/pc1.raw
# 4 MiB/s: twelve seconds, time to kill it in the middle.
ctl materialize pc1 disk.raw "$dest" --bwlimit 4M --block-size 1M >/dev/null
wait_job_field 1 bytes_checkpointed $((16 * MiB)) 30
kill -KILL "$DAEMON_PID"
wait "$DAEMON_PID" 2>/dev/null || true
_REAPED[$DAEMON_PID]=1
force_unmount "$mnt"
[[ -f $dest.part ]] || fail "no $dest.part after the kill"
[[ ! -e $dest ]] || fail "$dest exists before the copy is complete"

# Reads of the source from here on.
reads_before=$(wc -l <"$T/nbd.log")
start_bus_daemon "$mnt" "${daemon_args[@]}"
run_rc ctl wait 1
assert_eq 0 "$RC" "p2vctl wait after the restart ($(cat "$T/run.out" "$T/run.err"))"
resumed=$(job_field 1 bytes_resumed)
copied=$(job_field 1 bytes_copied)
total=$(job_field 1 bytes_total)
log "resumed $resumed of $total bytes, copied $copied after the restart"
assert_le $((16 * MiB)) "$resumed" "bytes resumed from the checkpoint"
assert_eq "$total" $((resumed + copied)) "resumed + copied = total"
# The job reads whole 1 MiB blocks; the guest inspection of the restored
# source reads a few sectors (partition table, superblocks), apart.
tail -n +$((reads_before + 1)) "$T/nbd.log" | python3 -c '
import re, sys
counts = [int(m.group(1), 0) for m in re.finditer(r" Read .*?count=(0x[0-9a-f]+)", sys.stdin.read())]
print(sum(c for c in counts if c == 1 << 20), sum(c for c in counts if c != 1 << 20))' >"$T/reads"
read -r read_after read_other <"$T/reads"
log "source bytes read after the restart: $read_after by the job, $read_other by inspection"
# The raw view maps onto the source one to one: exactly the bytes not
# resumed are read again, each once.
assert_eq $((48 * MiB - resumed)) "$read_after" "source bytes read after the restart"
assert_lt "$read_other" $((1 * MiB)) "source bytes read by inspection"
cmp "$dest" "$src" || fail "the copy differs from the source"
qemu-img compare -q -f raw -F raw "$src" "$dest" || fail "qemu-img compare: the copy differs from the source"
[[ ! -e $dest.part ]] || fail "$dest.part left behind"
stop_daemon "$mnt"

#!/usr/bin/env bash
# Pause, resume and cancel through p2vctl: a paused job stops moving and
# then completes identical; a cancelled job leaves neither the destination
# nor its .part file, and `p2vctl wait` says cancelled (exit 6). SIGTERM
# checkpoints a running job, which the next start resumes.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/dbus_lib.sh"
need_root
need_cmd python3
need_cmd script

MiB=$((1024 * 1024))
src=$T/src.img
head -c $((24 * MiB)) /dev/urandom >"$src"
start_bus
mnt=$T/mnt
start_bus_daemon "$mnt" --state-dir "$T/state" --views raw
ctl add pc1 "$src" >/dev/null
mkdir "$T/out"

# The signals of job 1, for the PropertiesChanged check below.
need_cmd dbus-monitor
dbus-monitor --address "$BUS_ADDRESS" "type='signal',path='/org/p2vfs1/jobs/1'" \
    "type='signal',member='InterfacesAdded'" >"$T/signals.txt" 2>/dev/null &
push_cleanup _kill_pid $!
sleep 0.5

# Pause and resume: 4 MiB/s gives six seconds to act in.
ctl materialize pc1 disk.raw "$T/out/a.raw" --bwlimit 4M --block-size 1M >/dev/null
wait_job_field 1 bytes_done $((4 * MiB)) 20
ctl pause 1 >"$T/pause.out"
assert_file_contains "$T/pause.out" '^1 +paused ' "p2vctl pause"
assert_eq paused "$(job_field 1 state)" "state after pause"
done1=$(job_field 1 bytes_done)
sleep 1.5
assert_eq "$done1" "$(job_field 1 bytes_done)" "bytes done while paused"
run_rc ctl pause 1
assert_eq 1 "$RC" "pausing a paused job"
assert_file_has_text "$T/run.err" "org.p2vfs.Error.InvalidState" "pausing a paused job"
ctl resume 1 >/dev/null
run_rc ctl wait 1
assert_eq 0 "$RC" "wait for the resumed job"
cmp "$src" "$T/out/a.raw" || fail "the paused and resumed copy differs"
# The job announced itself and told its moves: InterfacesAdded, then
# PropertiesChanged with State running, paused, running again and done.
sleep 0.5
grep -A1 'member=InterfacesAdded' "$T/signals.txt" | grep -q 'object path "/org/p2vfs1/jobs/1"' ||
    fail "no InterfacesAdded for job 1"
states=$(grep -A3 '"State"' "$T/signals.txt" | sed -n 's/.*string "\(running\|paused\|done\)".*/\1/p' | uniq | tr '\n' ' ')
assert_eq "running paused running done " "$states" "State in job 1's PropertiesChanged signals"
changes=$(grep -c 'member=PropertiesChanged' "$T/signals.txt")
assert_le 6 "$changes" "PropertiesChanged signals of job 1 (progress at least every second)"

# Cancel: nothing is left that looks like a copy.
ctl materialize pc1 disk.raw "$T/out/b.raw" --bwlimit 4M --block-size 1M >/dev/null
wait_job_field 2 bytes_checkpointed $((2 * MiB)) 20
[[ -f $T/out/b.raw.part ]] || fail "no .part while the job runs"
ctl cancel 2 >/dev/null
run_rc ctl wait 2
assert_eq 6 "$RC" "p2vctl wait on a cancelled job"
assert_file_has_text "$T/run.out" "job 2: cancelled" "p2vctl wait on a cancelled job"
assert_eq "a.raw " "$(list_dir "$T/out")" "the destination directory after the cancel"
run_rc ctl resume 2
assert_eq 1 "$RC" "resuming a cancelled job"
assert_file_has_text "$T/run.err" "org.p2vfs.Error.InvalidState" "resuming a cancelled job"

# A paused job can be cancelled too, and an ended job forgotten.
ctl materialize pc1 disk.raw "$T/out/c.raw" --bwlimit 4M --block-size 1M >/dev/null
wait_job_field 3 bytes_done $((1 * MiB)) 20
ctl pause 3 >/dev/null
ctl cancel 3 >/dev/null
assert_eq cancelled "$(job_field 3 state)" "state of the paused then cancelled job"
assert_eq "a.raw " "$(list_dir "$T/out")" "the destination directory after the second cancel"
ctl forget 2
run_rc ctl job 2
assert_eq 5 "$RC" "p2vctl job on a forgotten job"
assert_eq "1 3 " "$(ctl --json jobs | python3 -c 'import json,sys; print(" ".join(j["id"] for j in json.load(sys.stdin)), end=" ")')" "jobs left"
[[ ! -e $T/state/jobs/2 ]] || fail "the forgotten job's state directory is still there"

# On a terminal, --wait draws a progress bar on stderr (script(1) gives
# p2vctl a pseudo-terminal). (The short verification phase may fall between
# two redraws, so only the copying bar is certain to show.)
script -qec "$P2VCTL --bus $BUS_ADDRESS materialize pc1 disk.raw $T/out/e.raw --bwlimit 8M --block-size 1M --wait" \
    /dev/null >"$T/tty.out" </dev/null
assert_file_contains "$T/tty.out" 'copying +\[#+\.*\] +[0-9.]+% .*/s ETA' "progress bar on a terminal"
assert_file_has_text "$T/tty.out" "job 4: done: $T/out/e.raw (24 MiB, 24 MiB of data written, verified)" "final line on a terminal"
rm "$T/out/e.raw"

# SIGTERM in the middle of a job: the daemon checkpoints it, exits 0 and
# unmounts (stop_daemon asserts both); started again, the job goes on from
# where it stopped and ends identical.
ctl materialize pc1 disk.raw "$T/out/d.raw" --bwlimit 4M --block-size 1M >/dev/null
wait_job_field 5 bytes_done $((6 * MiB)) 20
stop_daemon "$mnt"
assert_file_has_text "$DAEMON_LOG" "job 5: stopped with a checkpoint" "the daemon's log at SIGTERM"
start_bus_daemon "$mnt" --state-dir "$T/state" --views raw
run_rc ctl wait 5
assert_eq 0 "$RC" "wait for the job resumed after SIGTERM ($(cat "$T/run.out" "$T/run.err"))"
resumed=$(job_field 5 bytes_resumed)
assert_le $((6 * MiB)) "$resumed" "bytes resumed after SIGTERM"
assert_eq $((24 * MiB)) $((resumed + $(job_field 5 bytes_copied))) "resumed + copied after SIGTERM"
cmp "$src" "$T/out/d.raw" || fail "the copy resumed after SIGTERM differs"
stop_daemon "$mnt"

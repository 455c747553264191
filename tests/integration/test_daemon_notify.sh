#!/usr/bin/env bash
# Type=notify: p2vfsd sends READY=1 on $NOTIFY_SOCKET once it is mounted and
# owns its D-Bus name (so a caller that waits for the service finds both),
# and STOPPING=1 when SIGTERM stops it. The socket is a datagram socket of
# the test's own, read by a small Python listener.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/dbus_lib.sh"
need_root
need_cmd python3

start_bus
sock=$T/notify.sock
python3 - "$sock" "$T/notify.txt" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a", buffering=1) as out:
    while True:
        msg = s.recv(4096).decode()
        out.write(msg.replace("\n", " ").strip() + "\n")
        if "STOPPING=1" in msg:
            break
PY
listener=$!
push_cleanup _kill_pid "$listener"
wait_for 10 test -S "$sock" || fail "the notify listener did not start"

mnt=$T/mnt
mkdir -p "$mnt"
NOTIFY_SOCKET=$sock "$P2VFSD" --mount "$mnt" --bus "$BUS_ADDRESS" --state-dir "$T/state" 2>"$T/daemon.log" &
pid=$!
push_cleanup _cleanup_daemon "$pid" "$mnt"
wait_for 20 grep -q READY=1 "$T/notify.txt" || fail "no READY=1 within 20 s: $(cat "$T/daemon.log")"
# At READY=1 both are there already.
is_fuse_mount "$mnt" || fail "READY=1 came before the mount"
ctl formats >/dev/null || fail "READY=1 came before the D-Bus name answered"
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
_REAPED[$pid]=1
assert_eq 0 "$rc" "exit status after SIGTERM"
wait "$listener" || fail "the listener did not see STOPPING=1"
assert_eq "READY=1
STOPPING=1" "$(cat "$T/notify.txt")" "notifications, in order"
is_mounted "$mnt" && fail "still mounted after SIGTERM"

# The bus goes away under a daemon with sources: it cannot be controlled any
# more, so it stops as on SIGTERM (exit 0, unmounted), without a crash.
src=$T/pc1.img
truncate -s 8M "$src"
start_bus_daemon "$mnt" --state-dir "$T/state"
ctl add pc1 "$src" >/dev/null
ctl materialize pc1 disk.raw "$T/copy.raw" --wait >/dev/null
bus_pid=$(pgrep -f "dbus-daemon --config-file=$T/bus/bus.conf") || fail "no dbus-daemon found"
kill -TERM "$bus_pid"
wait_for 20 bash -c "! kill -0 $DAEMON_PID 2>/dev/null" || fail "p2vfsd still runs 20 s after its bus went away"
rc=0
wait "$DAEMON_PID" || rc=$?
_REAPED[$DAEMON_PID]=1
assert_eq 0 "$rc" "exit status after the bus went away"
assert_file_has_text "$DAEMON_LOG" "D-Bus connection lost" "the daemon's log"
assert_file_lacks "$DAEMON_LOG" "terminate called|Aborted|AddressSanitizer" "the daemon's log"
is_mounted "$mnt" && fail "still mounted after the bus went away"
true

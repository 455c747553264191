#!/usr/bin/env bash
# Hostile and broken calls each get a named org.p2vfs.Error.* and the daemon
# keeps running: bad names, huge strings, invalid URIs, unknown formats and
# options, options of the wrong type, callers without permission (not in
# the control group; in it, but naming a file or a directory they could
# not use themselves).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/dbus_lib.sh"
need_root
need_cmd setpriv
need_cmd qemu-img
/usr/bin/python3 -c 'import dbus.bus' 2>/dev/null || skip "python3-dbus is not installed (for /usr/bin/python3)"
id nobody >/dev/null 2>&1 || skip "no user 'nobody'"
id daemon >/dev/null 2>&1 || skip "no user 'daemon'"
[[ $(id -gn nobody) == nogroup ]] || skip "nobody's group is not nogroup"
# The unprivileged callers run p2vctl from the build tree.
setpriv --reuid=nobody --regid=nogroup --clear-groups test -x "$P2VCTL" ||
    skip "user nobody cannot run $P2VCTL"

src=$T/pc1.img
truncate -s 16M "$src"
chmod 644 "$src"
start_bus
mnt=$T/mnt
# Members of nogroup (the user nobody) may call methods; 'daemon' may not.
start_bus_daemon "$mnt" --state-dir "$T/state" --views raw --control-group nogroup
ctl add pc1 "$src" >/dev/null

# expect_error STATUS ERROR-NAME TEXT CMD...: CMD fails with exit STATUS and
# a message naming ERROR-NAME and TEXT.
expect_error() {
    local status=$1 name=$2 text=$3
    shift 3
    run_rc "$@"
    [[ $RC -eq $status ]] || {
        cat "$T/run.err" >&2
        fail "$*: exit status $RC, expected $status"
    }
    assert_file_has_text "$T/run.err" "$name" "$*"
    assert_file_has_text "$T/run.err" "$text" "$*"
    daemon_alive "$mnt" || fail "the daemon died after: $*"
}

E=org.p2vfs.Error
expect_error 1 $E.InvalidArgument "use only A-Z a-z 0-9" ctl add a/b "$src"
expect_error 1 $E.InvalidArgument "not starting with a dot" ctl add .. "$src"
expect_error 1 $E.InvalidArgument "not starting with a dot" ctl add .hidden "$src"
expect_error 1 $E.InvalidArgument "use only A-Z a-z 0-9" ctl add "pc1@pristine" "$src"
expect_error 1 $E.InvalidArgument "is too long" ctl add "$(head -c 100000 /dev/zero | tr '\0' a)" "$src"
expect_error 1 $E.InvalidArgument "bytes long; the limit is 4096" ctl add big "/$(head -c 70000 /dev/zero | tr '\0' a)"
expect_error 1 $E.InvalidArgument "must be an absolute path" ctl add rel pc1.img
expect_error 1 $E.InvalidArgument "must not contain '..'" ctl add dots "$T/../x.img"
expect_error 1 $E.InvalidArgument "not a source this build knows" ctl add web "http://example.com/disk.img"
expect_error 1 $E.SourceFailed "source 'bad'" ctl add bad "nbd://[::1"
expect_error 1 $E.SourceFailed "source 'missing'" ctl add missing "$T/no-such.img"
expect_error 1 $E.AlreadyExists "exists already" ctl add pc1 "$src"
expect_error 1 $E.UnknownFormat "unknown format 'vhdz'" ctl add pc2 "$src" --views raw,vhdz
expect_error 1 $E.UnknownFormat "unknown format 'qcow3'" ctl expose pc1 qcow3
expect_error 1 $E.InvalidArgument "not a plain file name" ctl expose pc1 vhd --file ../evil.vhd
expect_error 1 $E.InvalidArgument "unknown option" ctl expose pc1 vmdk -o nosuch=1
expect_error 1 $E.AlreadyExists "has a file named 'disk.raw'" ctl expose pc1 raw
expect_error 5 $E.NotFound "no source named 'nosuch'" ctl remove nosuch
expect_error 5 $E.NotFound "has no view file 'disk.vhd'" ctl materialize pc1 disk.vhd "$T/x.vhd"
expect_error 1 $E.InvalidArgument "not a plain file name" ctl materialize pc1 ../../etc/passwd "$T/x.raw"
expect_error 1 $E.AlreadyExists "exists already" ctl materialize pc1 disk.raw "$src"
expect_error 1 $E.InvalidArgument "not a path or an NBD URI" ctl materialize pc1 disk.raw "ftp://host/x"
# An object that does not exist is the bus library's answer.
expect_error 5 org.freedesktop.DBus.Error.UnknownObject "/org/p2vfs1/jobs/99" ctl pause 99

# Raw calls (python3-dbus): options of the wrong type, unknown options, a
# relative path, a bad block size. raw_materialize DEST OPTIONS-PYTHON.
raw_materialize() {
    /usr/bin/python3 - "$BUS_ADDRESS" "$1" "$2" <<'PY'
import sys, dbus
bus = dbus.bus.BusConnection(sys.argv[1])
src = dbus.Interface(bus.get_object("org.p2vfs1", "/org/p2vfs1/sources/pc1"), "org.p2vfs1.Source")
try:
    src.Materialize("disk.raw", sys.argv[2], dbus.Dictionary(eval(sys.argv[3]), signature="sv"))
except dbus.exceptions.DBusException as e:
    print(f"{e.get_dbus_message()} ({e.get_dbus_name()})", file=sys.stderr)
    sys.exit(1)
PY
}
expect_error 1 $E.InvalidArgument "option 'parallel' must be of D-Bus type u, not s" \
    raw_materialize "$T/y.raw" '{"parallel": "four"}'
expect_error 1 $E.InvalidArgument "unknown option 'speed'" \
    raw_materialize "$T/y.raw" '{"speed": dbus.UInt64(5)}'
expect_error 1 $E.InvalidArgument "parallel must be from 1 to 64" \
    raw_materialize "$T/y.raw" '{"parallel": dbus.UInt32(1000)}'
expect_error 1 $E.InvalidArgument "must be an absolute path" raw_materialize y.raw '{}'
expect_error 1 $E.InvalidArgument "block size must be a power of two" \
    raw_materialize "$T/y.raw" '{"block-size": dbus.UInt64(3000)}'
[[ ! -e $T/y.raw && ! -e $T/y.raw.part ]] || fail "a refused call left a file"
# Fixups with options of the wrong type or unknown, and a profile no one offers.
raw_fixups() {
    /usr/bin/python3 - "$BUS_ADDRESS" "$1" "$2" <<'PY'
import sys, dbus
bus = dbus.bus.BusConnection(sys.argv[1])
src = dbus.Interface(bus.get_object("org.p2vfs1", "/org/p2vfs1/sources/pc1"), "org.p2vfs1.Source")
try:
    src.PlanFixups(sys.argv[2], dbus.Dictionary(eval(sys.argv[3]), signature="sv"))
except dbus.exceptions.DBusException as e:
    print(f"{e.get_dbus_message()} ({e.get_dbus_name()})", file=sys.stderr)
    sys.exit(1)
PY
}
expect_error 1 $E.InvalidArgument "option 'cpus' must be of D-Bus type u, not s" raw_fixups kvm '{"cpus": "two"}'
expect_error 1 $E.InvalidArgument "unknown option 'kernel'" raw_fixups kvm '{"kernel": "x"}'
expect_error 1 $E.InvalidArgument "option 'vendor-agents' must be of D-Bus type as" raw_fixups kvm '{"vendor-agents": "a"}'
expect_error 1 $E.InvalidArgument "unknown target profile" raw_fixups "$(printf 'x%.0s' {1..5000})" '{}'
expect_error 1 $E.InvalidArgument "option 'drivers' must be of D-Bus type s" raw_fixups kvm '{"drivers": 7}'
expect_error 1 $E.InvalidArgument "driver directory '../etc': must be an absolute path" raw_fixups kvm '{"drivers": "../etc"}'
expect_error 1 $E.InvalidArgument "driver directory /nonexistent/virtio is not a directory" \
    raw_fixups kvm '{"drivers": "/nonexistent/virtio"}'
# Sync jobs: options of the wrong type, unknown or out of range, a relative
# destination, and the job methods on a job of another kind.
# raw_call PATH METHOD ARGS-PYTHON [WORD]: a call with python3-dbus (the
# types from the introspection, or as ARGS gives them; ARGS may use WORD).
raw_call() {
    /usr/bin/python3 - "$BUS_ADDRESS" "$1" "$2" "$3" "${4:-}" <<'PY'
import sys, dbus
bus = dbus.bus.BusConnection(sys.argv[1])
path = sys.argv[2]
interface = "org.p2vfs1.Source" if "/sources/" in path else "org.p2vfs1.Job"
obj = dbus.Interface(bus.get_object("org.p2vfs1", path), interface)
word = sys.argv[5]
try:
    getattr(obj, sys.argv[3])(*eval(sys.argv[4]))
except dbus.exceptions.DBusException as e:
    print(f"{e.get_dbus_message()} ({e.get_dbus_name()})", file=sys.stderr)
    sys.exit(1)
PY
}
# raw_sync DEST OPTIONS-PYTHON: StartSync of pc1 to DEST in qcow2.
raw_sync() {
    raw_call /org/p2vfs1/sources/pc1 StartSync "(word, 'qcow2', dbus.Dictionary($2, signature='sv'))" "$1"
}
expect_error 1 $E.InvalidArgument "option 'parallel' must be of D-Bus type u, not s" \
    raw_sync "$T/s.qcow2" '{"parallel": "four"}'
expect_error 1 $E.InvalidArgument "option 'interval-minutes' must be of D-Bus type d, not u" \
    raw_sync "$T/s.qcow2" '{"interval-minutes": dbus.UInt32(5)}'
expect_error 1 $E.InvalidArgument "option 'cutover-at' must be of D-Bus type x, not s" \
    raw_sync "$T/s.qcow2" '{"cutover-at": "tomorrow"}'
expect_error 1 $E.InvalidArgument "option 'quiesce-signal' must be of D-Bus type b, not i" \
    raw_sync "$T/s.qcow2" '{"quiesce-signal": 1}'
expect_error 1 $E.InvalidArgument "option 'block-size' must be of D-Bus type t, not d" \
    raw_sync "$T/s.qcow2" '{"block-size": 1.5}'
expect_error 1 $E.InvalidArgument "option 'vendor-agents' must be of D-Bus type as" \
    raw_sync "$T/s.qcow2" '{"profile": "kvm", "vendor-agents": "hp-health"}'
expect_error 1 $E.InvalidArgument "unknown option 'speed'" raw_sync "$T/s.qcow2" '{"speed": dbus.UInt64(5)}'
expect_error 1 $E.InvalidArgument "option 'detection' must be auto, hash, dirty-bitmap or reflink, not 'magic'" \
    raw_sync "$T/s.qcow2" '{"detection": "magic"}'
expect_error 1 $E.InvalidArgument "option 'interval-minutes' must be from 0 to 525600 minutes" \
    raw_sync "$T/s.qcow2" '{"interval-minutes": -1.0}'
expect_error 1 $E.InvalidArgument "option 'interval-minutes' must be from 0 to 525600 minutes" \
    raw_sync "$T/s.qcow2" '{"interval-minutes": float("nan")}'
expect_error 1 $E.InvalidArgument "option 'interval-minutes' must be from 0 to 525600 minutes" \
    raw_sync "$T/s.qcow2" '{"interval-minutes": 1e300}'
expect_error 1 $E.InvalidArgument "option 'cutover-at' must be Unix seconds from 0 (none)" \
    raw_sync "$T/s.qcow2" '{"cutover-at": dbus.Int64(-5)}'
expect_error 1 $E.InvalidArgument "option 'cutover-at' must be Unix seconds from 0 (none)" \
    raw_sync "$T/s.qcow2" '{"cutover-at": dbus.Int64(2**62)}'
expect_error 1 $E.InvalidArgument "option 'quiesce-timeout' must be over 0 and at most 86400 seconds" \
    raw_sync "$T/s.qcow2" '{"quiesce-timeout": float("inf")}'
expect_error 1 $E.InvalidArgument "option 'parallel' must be from 1 to 16, not 1000" \
    raw_sync "$T/s.qcow2" '{"parallel": dbus.UInt32(1000)}'
expect_error 1 $E.InvalidArgument "option 'quiesce-command' is 70000 bytes long; the limit is 4096" \
    raw_sync "$T/s.qcow2" '{"quiesce-command": "x" * 70000}'
expect_error 1 $E.InvalidArgument "option 'reflink-dir' 'copies': must be an absolute path" \
    raw_sync "$T/s.qcow2" '{"detection": "reflink", "reflink-dir": "copies"}'
expect_error 1 $E.InvalidArgument "option 'cpus' needs option 'profile'" \
    raw_sync "$T/s.qcow2" '{"cpus": dbus.UInt32(4)}'
expect_error 1 $E.InvalidArgument "option 'profile' is 5000 bytes long; the limit is 4096" \
    raw_sync "$T/s.qcow2" '{"profile": "x" * 5000}'
expect_error 1 $E.InvalidArgument "unknown target profile 'xen'" raw_sync "$T/s.qcow2" '{"profile": "xen"}'
expect_error 1 $E.InvalidArgument "must be an absolute path" raw_sync s.qcow2 '{}'
expect_error 1 $E.InvalidArgument "destination is 70001 bytes long; the limit is 4096" \
    raw_sync "/$(head -c 70000 /dev/zero | tr '\0' a)" '{}'
expect_error 1 $E.InvalidArgument "option 'detection' must be auto, hash, dirty-bitmap or reflink" \
    ctl sync start pc1 "$T/s.qcow2" --detection magic
[[ ! -e $T/s.qcow2 && ! -e $T/s.qcow2.part ]] || fail "a refused StartSync left a file"
# p2vctl refuses what it cannot send.
for bad in "--every -5" "--every soon" "--cutover-at yesterday" "--cutover-at 2026-02-30T10:00:00Z" \
    "--parallel 17" "--memory 4096"; do
    # shellcheck disable=SC2086 # one option and its value
    run_rc ctl sync start pc1 "$T/s.qcow2" $bad
    assert_eq 2 "$RC" "p2vctl sync start $bad"
done
run_rc ctl sync schedule 1 --cutover-at 12:00
assert_eq 2 "$RC" "p2vctl sync schedule --cutover-at 12:00"
# The sync job methods on a materialization: InvalidArgument, nothing changed.
mid=$(ctl --json materialize pc1 disk.raw "$T/m.raw" --wait |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
expect_error 1 $E.InvalidArgument "job $mid is a materialize job, not a sync job" ctl sync now "$mid"
expect_error 1 $E.InvalidArgument "job $mid is a materialize job, not a sync job" ctl sync cutover "$mid"
expect_error 1 $E.InvalidArgument "job $mid is a materialize job, not a sync job" ctl sync retarget "$mid" "$T/elsewhere.raw"
expect_error 1 $E.InvalidArgument "job $mid is a materialize job, not a sync job" ctl sync schedule "$mid" --every 5
expect_error 1 $E.InvalidArgument "job $mid is a materialize job, not a sync job" ctl sync ack "$mid"
expect_error 1 $E.InvalidArgument "must be an absolute path" raw_call "/org/p2vfs1/jobs/$mid" Retarget '("m.raw",)'
expect_error 1 $E.InvalidArgument "interval_minutes must be from 0 to 525600 minutes" \
    raw_call "/org/p2vfs1/jobs/$mid" SetSchedule '(dbus.Double(-1), dbus.Int64(0))'
expect_error 1 $E.InvalidArgument "cutover_at must be Unix seconds from 0 (none)" \
    raw_call "/org/p2vfs1/jobs/$mid" SetSchedule '(dbus.Double(0), dbus.Int64(-1))'
expect_error 1 $E.InvalidArgument "message is 70000 bytes long; the limit is 4096" \
    raw_call "/org/p2vfs1/jobs/$mid" AckQuiesce '(False, "x" * 70000)'
assert_eq "done" "$(job_field "$mid" state)" "the materialization after sync calls"
assert_eq "$T/m.raw" "$(job_field "$mid" destination)" "its destination after sync calls"
[[ -e $T/m.raw && ! -e $T/elsewhere.raw ]] || fail "a refused Retarget moved the copy"

# A disk without an OS: the plan says why it cannot be applied.
run_rc ctl fixups plan pc1
assert_eq 1 "$RC" "plan for a disk without an OS"
assert_file_has_text "$T/run.out" "REFUSED: no Linux system was found on the disk"
expect_error 1 $E.InvalidState "fixups for kvm refused: no Linux system was found" ctl fixups apply pc1

# Callers without permission. 'daemon' is not in the control group: it may
# read, not change.
expect_error 4 $E.AccessDenied "may not add sources" ctl_as daemon add pc3 "$src"
expect_error 4 $E.AccessDenied "may not remove sources" ctl_as daemon remove pc1
expect_error 4 $E.AccessDenied "may not start jobs" ctl_as daemon materialize pc1 disk.raw /tmp/x.raw
expect_error 4 $E.AccessDenied "may not" ctl_as daemon sync start pc1 /tmp/x.qcow2
expect_error 4 $E.AccessDenied "may not" ctl_as daemon sync now "$mid"
expect_error 4 $E.AccessDenied "may not" ctl_as daemon sync cutover "$mid"
expect_error 4 $E.AccessDenied "may not" ctl_as daemon sync retarget "$mid" /tmp/x.raw
expect_error 4 $E.AccessDenied "may not" ctl_as daemon sync schedule "$mid" --every 5
expect_error 4 $E.AccessDenied "may not" ctl_as daemon sync ack "$mid" --fail no
ctl_as daemon list >"$T/list.out" || fail "an unprivileged caller cannot list"
# Guest inspection: reading it is for everyone (it is info.json), asking for
# a new one and fixups are not.
ctl_as daemon --json inspect pc1 >"$T/inspect.out" || fail "an unprivileged caller cannot read the inspection"
cmp "$T/inspect.out" "$mnt/pc1/info.json" || fail "Inspect differs from info.json"
expect_error 4 $E.AccessDenied "may not inspect again" ctl_as daemon inspect pc1 --refresh
expect_error 4 $E.AccessDenied "may not plan fixups" ctl_as daemon fixups plan pc1
expect_error 4 $E.AccessDenied "may not apply fixups" ctl_as daemon fixups apply pc1
expect_error 4 $E.AccessDenied "may not discard fixups" ctl_as daemon fixups discard pc1
assert_file_has_text "$T/list.out" "pc1" "list as daemon"
# nobody is in the group, but may name only what it could use itself.
secret=$T/secret.img
truncate -s 1M "$secret"
chmod 600 "$secret"
expect_error 4 $E.AccessDenied "cannot read $secret" ctl_as nobody add sec "$secret"
# Images read through qemu-nbd (and their backing files) and snapshots are
# opened by path by another process: only root may add them.
qemu-img create -q -f qcow2 "$T/img.qcow2" 16M
chmod 644 "$T/img.qcow2"
expect_error 4 $E.AccessDenied "callers other than root may add raw files and block devices" \
    ctl_as nobody add img "$T/img.qcow2"
expect_error 4 $E.AccessDenied "images read through qemu-nbd and snapshots are for root" \
    ctl_as nobody add img "qcow2:$T/img.qcow2"
expect_error 4 $E.AccessDenied "images read through qemu-nbd and snapshots are for root" \
    ctl_as nobody add snap "snapshot:$src"
mkdir -m 700 "$T/rootonly"
expect_error 4 $E.AccessDenied "cannot create files in $T/rootonly" \
    ctl_as nobody materialize pc1 disk.raw "$T/rootonly/x.raw"
expect_error 4 $E.AccessDenied "cannot create files in $T/rootonly" \
    ctl_as nobody sync start pc1 "$T/rootonly/x.qcow2"
[[ ! -e $T/rootonly/x.qcow2.part ]] || fail "a refused StartSync left $T/rootonly/x.qcow2.part"
mkdir -m 777 "$T/shared"
# The daemon runs quiesce commands and makes reflink copies as root: a
# member of the group may not have it do what it could not do itself.
expect_error 4 $E.AccessDenied "may not give quiesce commands" \
    ctl_as nobody sync start pc1 "$T/shared/q.qcow2" --quiesce-command "id >$T/rootonly/owned"
expect_error 4 $E.AccessDenied "cannot create files in $T/rootonly" \
    ctl_as nobody sync start pc1 "$T/shared/r.qcow2" --detection reflink --reflink-dir "$T/rootonly"
# ... nor have it read a directory of drivers into a guest.
expect_error 4 $E.AccessDenied "may not give a driver directory" \
    ctl_as nobody fixups plan pc1 --drivers "$T/rootonly"
expect_error 4 $E.AccessDenied "may not give a driver directory" \
    ctl_as nobody sync start pc1 "$T/shared/d.qcow2" --profile kvm --drivers "$T/rootonly"
left=$(find "$T/shared" "$T/rootonly" -mindepth 1)
[[ -z $left ]] || fail "a refused StartSync left files: $left"
ctl_as nobody add pub "$src" >/dev/null || fail "nobody cannot add a file it can read"
run_rc ctl_as nobody materialize pub disk.raw "$T/shared/pub.raw" --wait
assert_eq 0 "$RC" "nobody materializes into a directory it may write ($(cat "$T/run.err"))"
cmp "$src" "$T/shared/pub.raw" || fail "nobody's copy differs"
assert_eq "nobody:nogroup" "$(stat -c %U:%G "$T/shared/pub.raw")" "owner of nobody's copy"

# Still serving, with exactly the two sources added.
assert_eq "pc1 pub " "$(list_dir "$mnt")" "folders after the hostile calls"
stop_daemon "$mnt"

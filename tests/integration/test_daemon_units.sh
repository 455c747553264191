#!/bin/bash
# The daemon's service files (systemd/p2vfsd.service.in as CMake configures
# it, systemd/org.p2vfs1.service, dbus/org.p2vfs1.conf, systemd/p2vfs.tmpfiles,
# systemd/p2vfs.sysusers), each checked by the program that reads it:
#  - `systemd-analyze verify` accepts the configured unit (its ExecStart
#    pointed at the built p2vfsd) without a word, and finds the fault in
#    broken copies; the unit names the configured sbindir, uses none of the
#    settings that would put it in a mount namespace of its own (its FUSE
#    mount would be invisible to the host), mounts and keeps state where
#    tmpfiles makes them, and its offline security exposure stays at 4.7 or
#    below; its ExecStopPost= detaches a dead p2vfsd mount and nothing else;
#  - the bus policy, included by a private dbus-daemon with the system bus's
#    defaults, loads without a word (a broken copy fails the start); on that
#    bus only root may own org.p2vfs1; root and members of group p2vfs reach
#    every method; anyone else reaches Introspect, Peer, Properties.Get and
#    GetAll and GetManagedObjects, receives the daemon's signals, and is
#    refused everything else, calls without an interface included; the
#    activation file is one the bus takes, for the unit's bus name;
#  - sysusers makes group p2vfs in an empty root; tmpfiles makes
#    /var/lib/p2vfs 0750 root:p2vfs and /run/p2vfs there, and runs again
#    over a live p2vfsd mount without error (a fixed mode would fail);
#  - `cmake --install --component systemd` puts each file where systemd and
#    dbus-daemon look.
# Nothing is asked of the machine's own systemd or bus, and /etc stays as it
# was: group p2vfs exists only in this test's root and in private mount
# namespaces (a copy of /etc/group bound over it).
source "$(dirname "$0")/lib.sh"
need_root
need_cmd systemd-analyze systemd-sysusers systemd-tmpfiles dbus-daemon dbus-send cmake unshare setpriv

source_dir=${P2VFS_SOURCE_DIR:-$(cd "$LIB_DIR/../.." && pwd)}
[[ -n ${P2VFS_BUILD_DIR:-} ]] || fail "P2VFS_BUILD_DIR is not set (the build directory with the configured unit)"
build_dir=$P2VFS_BUILD_DIR
unit=$build_dir/systemd/p2vfsd.service
activation=$source_dir/systemd/org.p2vfs1.service
policy=$source_dir/dbus/org.p2vfs1.conf
tmpfiles=$source_dir/systemd/p2vfs.tmpfiles
sysusers=$source_dir/systemd/p2vfs.sysusers
for f in "$unit" "$activation" "$policy" "$tmpfiles" "$sysusers"; do
    [[ -f $f ]] || fail "$f is missing"
done

# The fake daemon on the private bus and a listener for its signals need
# dbus-python and GLib (python3-dbus, python3-gi), which the pyenv python3
# first in PATH may lack.
PY=
for p in python3 /usr/bin/python3; do
    if "$p" -c 'import dbus, dbus.mainloop.glib; from gi.repository import GLib' 2>/dev/null; then
        PY=$(command -v "$p")
        break
    fi
done
[[ -n $PY ]] || skip "python3 with the dbus and gi modules is not installed (python3-dbus, python3-gi)"

cache_var() { # NAME: its value in the build's CMakeCache.txt
    sed -n "s/^$1:[A-Z]*=//p" "$build_dir/CMakeCache.txt"
}
# unit_value FILE KEY: the last value of KEY= (no continuation lines here).
unit_value() {
    sed -n "s/^$2=//p" "$1" | tail -n 1
}

etc_sums=$(md5sum /etc/passwd /etc/group /etc/shadow /etc/gshadow 2>/dev/null)
chmod 0711 "$T"

# ---------------------------------------------------------------- the unit

prefix=$(cache_var CMAKE_INSTALL_PREFIX)
sbindir=$(cache_var CMAKE_INSTALL_SBINDIR)
[[ $sbindir == /* ]] || sbindir=$prefix/$sbindir
[[ -n $prefix ]] || fail "no CMAKE_INSTALL_PREFIX in $build_dir/CMakeCache.txt"
assert_file_lacks "$unit" "@[A-Za-z_]+@" "configured unit"
read -r -a exec_start <<<"$(unit_value "$unit" ExecStart)"
assert_eq "$sbindir/p2vfsd" "${exec_start[0]}" "ExecStart= program of the configured unit"

# verify_clean FILE: `systemd-analyze verify` exits 0 and prints nothing.
verify_clean() {
    run_rc systemd-analyze verify --man=no --recursive-errors=no "$1"
    [[ $RC -eq 0 ]] || fail "systemd-analyze verify $(basename "$1") exited $RC: $(cat "$T/run.out" "$T/run.err")"
    assert_lines 0 "$T/run.out" "systemd-analyze verify: stdout"
    assert_lines 0 "$T/run.err" "systemd-analyze verify: stderr"
}
# verify_finds FILE REGEX WHAT: verify exits non-zero with a message about
# FILE matching REGEX.
verify_finds() {
    local name
    name=$(basename "$1")
    run_rc systemd-analyze verify --man=no --recursive-errors=no "$1"
    cat "$T/run.out" "$T/run.err" >"$T/verify.log"
    assert_ne 0 "$RC" "$3: systemd-analyze verify exit status"
    assert_file_contains "$T/verify.log" "$name.*$2" "$3: systemd-analyze verify"
}

# verify checks that ExecStart's program exists: the copy runs the built one.
p2vfsd_path=$(realpath "$P2VFSD")
mkdir "$T/unit" "$T/typo" "$T/noexec"
sed "s|^ExecStart=[^ ]*|ExecStart=$p2vfsd_path|" "$unit" >"$T/unit/p2vfsd.service"
! cmp -s "$unit" "$T/unit/p2vfsd.service" || fail "could not point ExecStart= at $p2vfsd_path"
verify_clean "$T/unit/p2vfsd.service"
sed 's/^ProtectClock=/ProtectClck=/' "$T/unit/p2vfsd.service" >"$T/typo/p2vfsd.service"
verify_finds "$T/typo/p2vfsd.service" "Unknown key.*ProtectClck" "a misspelt key"
sed "s|^ExecStart=[^ ]*|ExecStart=$T/p2vfsd-missing|" "$unit" >"$T/noexec/p2vfsd.service"
verify_finds "$T/noexec/p2vfsd.service" "p2vfsd-missing" "a program that does not exist"

run_rc systemd-analyze security --offline=yes --threshold=47 "$T/unit/p2vfsd.service"
exposure=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' "$T/run.out")
[[ $RC -eq 0 && -n $exposure ]] ||
    fail "systemd-analyze security: exit $RC, exposure '$exposure' (more than 4.7?): $(tail -n 3 "$T/run.out" "$T/run.err")"
log "security exposure of p2vfsd.service: $exposure"

# Each of these makes systemd run the service in a mount namespace of its
# own whose mounts do not propagate to the host (systemd.exec(5),
# PrivateMounts=; DynamicUser= implies ProtectSystem= and PrivateTmp=):
# the FUSE mount would be there for the daemon alone.
namespacing='ProtectSystem|ProtectHome|ReadWritePaths|ReadOnlyPaths|InaccessiblePaths|ReadWriteDirectories|ReadOnlyDirectories|InaccessibleDirectories|ExecPaths|NoExecPaths|BindPaths|BindReadOnlyPaths|TemporaryFileSystem|PrivateTmp|PrivateDevices|PrivateMounts|PrivateIPC|IPCNamespacePath|PrivateNetwork|NetworkNamespacePath|ProtectKernelTunables|ProtectKernelModules|ProtectKernelLogs|ProtectControlGroups|ProtectProc|ProcSubset|MountFlags|MountAPIVFS|RootDirectory|RootImage|MountImages|ExtensionImages|ExtensionDirectories|LogNamespace|DynamicUser'
assert_file_lacks "$unit" "^($namespacing)=" "p2vfsd.service: a setting that hides the FUSE mount from the host"

# Where it mounts and keeps state is where tmpfiles makes directories.
arg_of() { # OPTION: its value in ExecStart=
    local i
    for ((i = 1; i < ${#exec_start[@]}; i++)); do
        [[ ${exec_start[i]} != "$1" ]] || {
            echo "${exec_start[i + 1]}"
            return
        }
    done
}
mount_dir=$(arg_of --mount)
state_dir=$(arg_of --state-dir)
assert_eq "$(printf '%s\n' "$mount_dir" "$state_dir" | sort | tr '\n' ' ')" \
    "$(awk '$1 == "d" { print $2 }' "$tmpfiles" | sort | tr '\n' ' ')" \
    "ExecStart=: --mount and --state-dir against the directories of p2vfs.tmpfiles"

# ExecStopPost= on a dead mount (a daemon killed), on none, on a mount that
# is not p2vfsd's. Its command, /run/p2vfs replaced by this test's mount
# point, as systemd would run it (the leading "-": a failure is ignored).
stop_post=$(unit_value "$unit" ExecStopPost)
[[ $stop_post == -/* ]] || fail "ExecStopPost=$stop_post: expected a command with a leading '-'"
dead=$T/dead/mnt
mapfile -d '' stop_argv < <("$PY" -c '
import shlex, sys
sys.stdout.write("".join(w.replace(sys.argv[2], sys.argv[3]) + "\0" for w in shlex.split(sys.argv[1][1:])))' \
    "$stop_post" "$mount_dir" "$dead")
truncate -s 8M "$T/disk.img"
start_daemon "$dead" --source x="$T/disk.img"
kill_daemon_hard
is_mounted "$dead" || fail "no dead mount at $dead after kill -9 (cannot test ExecStopPost=)"
run_rc "${stop_argv[@]}"
assert_eq 0 "$RC" "ExecStopPost= over a dead p2vfsd mount: exit status"
! is_mounted "$dead" || fail "ExecStopPost= left the dead mount at $dead"
run_rc "${stop_argv[@]}"
assert_eq 1 "$RC" "ExecStopPost= with nothing mounted: exit status"
assert_lines 0 "$T/run.err" "ExecStopPost= with nothing mounted: stderr"
mount_tracked -t tmpfs tmpfs "$dead"
run_rc "${stop_argv[@]}"
assert_eq 1 "$RC" "ExecStopPost= over a tmpfs: exit status"
assert_eq tmpfs "$(mount_type "$dead")" "ExecStopPost= over a tmpfs: what is mounted after it"
umount "$dead"

# ---------------------------------------------------------------- the bus

# The activation file: named after its bus name, which is the unit's, and
# naming the unit.
bus_name=$(unit_value "$activation" Name)
assert_eq "$(basename "$activation" .service)" "$bus_name" "org.p2vfs1.service: Name= against the file name"
assert_eq "$(unit_value "$unit" BusName)" "$bus_name" "p2vfsd.service: BusName= against the activation file"
assert_eq "$(basename "$unit")" "$(unit_value "$activation" SystemdService)" "org.p2vfs1.service: SystemdService="
assert_eq root "$(unit_value "$activation" User)" "org.p2vfs1.service: User="

# Group p2vfs as the bus sees it: a copy of /etc/group with the group (a
# free number, or the machine's own if it has one), user daemon a member,
# bound over /etc/group in the bus's private mount namespace.
member=daemon outsider=nobody bus_user=sys
for u in $member $outsider $bus_user; do
    id "$u" >/dev/null 2>&1 || skip "user $u is missing"
done
gid=$(getent group p2vfs | cut -d: -f3 || true)
if [[ -z $gid ]]; then
    gid=$(awk -F: '{ used[$3] = 1 } END { for (g = 60999; g > 60000; g--) if (!(g in used)) { print g; exit } }' /etc/group)
    cp /etc/group "$T/group"
    echo "p2vfs:x:$gid:$member" >>"$T/group"
else
    awk -F: -v OFS=: -v m="$member" '$1 == "p2vfs" { $4 = ($4 == "" ? m : $4 "," m) } { print }' /etc/group >"$T/group"
fi
chmod 0644 "$T/group"
# shellcheck disable=SC2034 # used through namerefs (bus_call)
as_root=()
as_member=(setpriv --reuid="$(id -u $member)" --regid="$(id -g $member)" --groups="$gid")
as_outsider=(setpriv --reuid="$(id -u $outsider)" --regid="$(id -g $outsider)" --clear-groups)

# bus_config FILE SOCKET POLICY: the default policy of the system bus
# (/usr/share/dbus-1/system.conf), then POLICY included.
bus_config() {
    cat >"$1" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path=$2</listen>
  <auth>EXTERNAL</auth>
  <servicedir>$T/services</servicedir>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
  <include>$3</include>
</busconfig>
EOF
}
mkdir -m 0755 "$T/services" "$T/policy"
install -m 0644 "$activation" "$T/services/"
install -m 0644 "$policy" "$T/policy/org.p2vfs1.conf"
mkdir -m 0700 "$T/bus"
chown "$bus_user:" "$T/bus"
chmod 0711 "$T/bus"
bus_config "$T/bus.conf" "$T/bus/socket" "$T/policy/org.p2vfs1.conf"

# A broken copy must stop the bus at start, naming the fault.
sed '0,/send_destination="org.p2vfs1"/s//send_destinaton="org.p2vfs1"/' "$policy" >"$T/policy/broken.conf"
bus_config "$T/broken.conf" "$T/bus/broken" "$T/policy/broken.conf"
run_rc timeout 10 setpriv --reuid="$(id -u $bus_user)" --regid="$(id -g $bus_user)" --clear-groups \
    dbus-daemon --config-file="$T/broken.conf" --nofork --nopidfile --print-address=1
[[ $RC -ne 0 && $RC -ne 124 ]] || fail "dbus-daemon with a misspelt attribute in the policy: exit status $RC"
assert_file_has_text "$T/run.err" "send_destinaton" "dbus-daemon with a misspelt attribute in the policy"

# The bus, as an unprivileged user (as root it would try to raise its file
# limit and say so), in a mount namespace that has group p2vfs.
# shellcheck disable=SC2016 # the inner shell expands them
bg_tracked unshare --mount --propagation private -- sh -c \
    'mount --bind "$1" /etc/group && shift && exec "$@"' sh "$T/group" \
    setpriv --reuid="$(id -u $bus_user)" --regid="$(id -g $bus_user)" --clear-groups \
    dbus-daemon --config-file="$T/bus.conf" --nofork --nopidfile --print-address=1 >"$T/bus.address"
bus_log=${_LOGS[-1]}
wait_for 10 test -s "$T/bus.address" || fail "the private dbus-daemon did not start: $(cat "$bus_log")"
bus=unix:path=$T/bus/socket
assert_lines 0 "$bus_log" "dbus-daemon with org.p2vfs1.conf: stderr"

# bus_call WHO PATH INTERFACE.MEMBER [ARGS...]: dbus-send as root, member
# or outsider; exit status in RC, stderr in $T/run.err.
bus_call() {
    local who=$1 path=$2 method=$3
    local -n run_as=as_$who
    shift 3
    run_rc "${run_as[@]}" dbus-send --bus="$bus" --print-reply --reply-timeout=5000 \
        --dest=org.p2vfs1 "$path" "$method" "$@"
}
expect_reached() { # WHO PATH METHOD [ARGS...]
    bus_call "$@"
    [[ $RC -eq 0 ]] || fail "$1 calling $3: expected a reply, got exit $RC: $(cat "$T/run.err")"
}
expect_refused() { # WHO PATH METHOD [ARGS...]
    bus_call "$@"
    [[ $RC -ne 0 ]] || fail "$1 calling $3: expected AccessDenied, got a reply"
    assert_file_contains "$T/run.err" "^Error org\.freedesktop\.DBus\.Error\.AccessDenied: " "$1 calling $3"
}

# Owning the name: before anyone does, so that a refusal is the policy's.
for who in member outsider; do
    declare -n run_as=as_$who
    run_rc "${run_as[@]}" dbus-send --bus="$bus" --print-reply --dest=org.freedesktop.DBus \
        /org/freedesktop/DBus org.freedesktop.DBus.RequestName string:org.p2vfs1 uint32:4
    assert_file_contains "$T/run.err" "AccessDenied.*not allowed to own the service \"org\.p2vfs1\"" \
        "$who asking for the name org.p2vfs1"
    unset -n run_as
done

# The daemon's stand-in, as root: owns org.p2vfs1, answers every call with
# an empty reply and logs it ("INTERFACE MEMBER", "-" for no interface);
# after GetAll it emits PropertiesChanged from that object. Peer calls are
# answered by libdbus itself and not logged.
#   serve ADDRESS                  prints "owner" once it has the name
#   listen ADDRESS                 calls GetAll, prints the signal that comes
#   no-interface ADDRESS MEMBER    a call without an interface: "reply" or the error name
# shellcheck disable=SC2016 # Python source
BUS_PY='
import sys, dbus, dbus.lowlevel as ll
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib
DBusGMainLoop(set_as_default=True)
mode, address = sys.argv[1:3]
bus = dbus.bus.BusConnection(address)
loop = GLib.MainLoop()
if mode == "serve":
    if bus.request_name("org.p2vfs1", dbus.bus.NAME_FLAG_DO_NOT_QUEUE) != dbus.bus.REQUEST_NAME_REPLY_PRIMARY_OWNER:
        sys.exit("could not own org.p2vfs1")
    print("owner", flush=True)
    def on_message(conn, msg):
        if msg.get_type() != ll.MESSAGE_TYPE_METHOD_CALL:
            return ll.HANDLER_RESULT_NOT_YET_HANDLED
        print(msg.get_interface() or "-", msg.get_member(), flush=True)
        conn.send_message(ll.MethodReturnMessage(msg))
        if msg.get_member() == "GetAll":
            sig = ll.SignalMessage(msg.get_path(), "org.freedesktop.DBus.Properties", "PropertiesChanged")
            sig.append("org.p2vfs1.Manager", dbus.Dictionary({}, signature="sv"), dbus.Array([], signature="s"))
            conn.send_message(sig)
        return ll.HANDLER_RESULT_HANDLED
    bus.add_message_filter(on_message)
    loop.run()
elif mode == "listen":
    bus.add_match_string("type=\x27signal\x27,sender=\x27org.p2vfs1\x27")
    got = []
    def on_signal(conn, msg):
        if msg.get_type() == ll.MESSAGE_TYPE_SIGNAL and msg.get_interface() != "org.freedesktop.DBus":
            print("signal", msg.get_interface(), msg.get_member(), msg.get_path(), flush=True)
            got.append(msg)
            loop.quit()
        return ll.HANDLER_RESULT_NOT_YET_HANDLED
    bus.add_message_filter(on_signal)
    call = ll.MethodCallMessage("org.p2vfs1", "/org/p2vfs1/Manager", "org.freedesktop.DBus.Properties", "GetAll")
    call.append("org.p2vfs1.Manager")
    bus.send_message_with_reply_and_block(call, 5.0)
    GLib.timeout_add_seconds(5, loop.quit)
    loop.run()
    if not got:
        sys.exit("no signal within 5 s")
elif mode == "no-interface":
    call = ll.MethodCallMessage("org.p2vfs1", "/org/p2vfs1/Manager", None, sys.argv[3])
    try:
        bus.send_message_with_reply_and_block(call, 5.0)
        print("reply")
    except dbus.exceptions.DBusException as e:
        print(e.get_dbus_name())
'
"$PY" -c "$BUS_PY" serve "$bus" >"$T/served.log" 2>"$T/serve.err" &
serve_pid=$!
push_cleanup _kill_pid "$serve_pid"
wait_for 10 grep -qsx owner "$T/served.log" || fail "the stand-in daemon did not get org.p2vfs1: $(cat "$T/serve.err")"

expected=()
# Root and members: every interface of the daemon, and Properties.Set.
for who in root member; do
    expect_reached "$who" /org/p2vfs1/Manager org.p2vfs1.Manager.AddSource string:pc1 string:/dev/sda
    expect_reached "$who" /org/p2vfs1/sources/pc1 org.p2vfs1.Source.Materialize string:vmdk string:/srv/vms/pc1.vmdk
    expect_reached "$who" /org/p2vfs1/jobs/1 org.p2vfs1.Job.Cancel
    expect_reached "$who" /org/p2vfs1/Manager org.freedesktop.DBus.Properties.Set \
        string:org.p2vfs1.Manager string:Version variant:string:x
    expected+=("org.p2vfs1.Manager AddSource" "org.p2vfs1.Source Materialize" "org.p2vfs1.Job Cancel"
        "org.freedesktop.DBus.Properties Set")
done
run_rc "${as_member[@]}" "$PY" -c "$BUS_PY" no-interface "$bus" ListSources
assert_eq reply "$(cat "$T/run.out")" "member calling ListSources without an interface"
expected+=("- ListSources")

# Everyone else: reading, nothing more.
expect_reached outsider /org/p2vfs1 org.freedesktop.DBus.Introspectable.Introspect
expect_reached outsider /org/p2vfs1/Manager org.freedesktop.DBus.Peer.Ping
expect_reached outsider /org/p2vfs1/Manager org.freedesktop.DBus.Properties.Get \
    string:org.p2vfs1.Manager string:Version
expect_reached outsider /org/p2vfs1/Manager org.freedesktop.DBus.Properties.GetAll string:org.p2vfs1.Manager
expect_reached outsider /org/p2vfs1 org.freedesktop.DBus.ObjectManager.GetManagedObjects
expect_reached outsider /org/p2vfs1/Manager org.p2vfs1.Manager.ListSources
expect_reached outsider /org/p2vfs1/Manager org.p2vfs1.Manager.ListJobs
expect_reached outsider /org/p2vfs1/Manager org.p2vfs1.Manager.ListFormats
expected+=("org.freedesktop.DBus.Introspectable Introspect" "org.freedesktop.DBus.Properties Get"
    "org.freedesktop.DBus.Properties GetAll" "org.freedesktop.DBus.ObjectManager GetManagedObjects"
    "org.p2vfs1.Manager ListSources" "org.p2vfs1.Manager ListJobs" "org.p2vfs1.Manager ListFormats")
expect_refused outsider /org/p2vfs1/Manager org.p2vfs1.Manager.AddSource string:pc1 string:/etc/shadow
expect_refused outsider /org/p2vfs1/Manager org.p2vfs1.Manager.RemoveSource string:pc1
expect_refused outsider /org/p2vfs1/sources/pc1 org.p2vfs1.Source.Materialize string:vmdk string:/tmp/x.vmdk
expect_refused outsider /org/p2vfs1/jobs/1 org.p2vfs1.Job.Cancel
expect_refused outsider /org/p2vfs1/Manager org.freedesktop.DBus.Properties.Set \
    string:org.p2vfs1.Manager string:Version variant:string:x
run_rc "${as_outsider[@]}" "$PY" -c "$BUS_PY" no-interface "$bus" ListSources
assert_eq org.freedesktop.DBus.Error.AccessDenied "$(cat "$T/run.out")" "outsider calling ListSources without an interface"

# Signals reach everyone.
run_rc "${as_outsider[@]}" "$PY" -c "$BUS_PY" listen "$bus"
[[ $RC -eq 0 ]] || fail "outsider listening for the daemon's signals: exit $RC: $(cat "$T/run.err")"
assert_eq "signal org.freedesktop.DBus.Properties PropertiesChanged /org/p2vfs1/Manager" \
    "$(cat "$T/run.out")" "outsider listening for the daemon's signals"
expected+=("org.freedesktop.DBus.Properties GetAll")

# Exactly the calls let through reached the daemon, in order.
assert_eq "$(printf '%s\n' owner "${expected[@]}")" "$(cat "$T/served.log")" "calls that reached the daemon"

# The bus took the activation file.
run_rc dbus-send --bus="$bus" --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
    org.freedesktop.DBus.ListActivatableNames
assert_file_has_text "$T/run.out" "string \"$bus_name\"" "ListActivatableNames of the private bus"
# The bus logs each refusal: exactly the outsider's six calls.
assert_eq "org.p2vfs1.Manager AddSource
org.p2vfs1.Manager RemoveSource
org.p2vfs1.Source Materialize
org.p2vfs1.Job Cancel
org.freedesktop.DBus.Properties Set
(unset) ListSources" \
    "$(sed -n 's/.*Rejected send message, .* sender=[^ ]* (uid='"$(id -u $outsider)"' .* interface="\([^"]*\)" member="\([^"]*\)" .*/\1 \2/p' "$bus_log")" \
    "refusals logged by dbus-daemon"
assert_eq 6 "$(wc -l <"$bus_log")" "lines dbus-daemon logged"

# ---------------------------------------------------------------- sysusers, tmpfiles

root=$T/root
mkdir -p "$root/etc"
run_rc systemd-sysusers --root="$root" "$sysusers"
assert_eq 0 "$RC" "systemd-sysusers --root: exit status"
sys_gid=$(sed -n 's/^p2vfs:x:\([0-9]*\):$/\1/p' "$root/etc/group")
[[ -n $sys_gid ]] || fail "systemd-sysusers made no group p2vfs: $(cat "$root/etc/group")"
assert_lines 1 "$root/etc/group" "the root's /etc/group"
assert_lt "$sys_gid" 1000 "gid of p2vfs (a system group)"
assert_eq "Creating group 'p2vfs' with GID $sys_gid." "$(cat "$T/run.err")" "systemd-sysusers: stderr"
run_rc systemd-sysusers --root="$root" "$sysusers"
assert_eq "0:" "$RC:$(cat "$T/run.out" "$T/run.err")" "systemd-sysusers a second time"

# tmpfiles resolves group names on the machine, not in --root: the root's
# /etc/group over /etc/group, in a namespace of its own.
tmpfiles_in_root() { # CONFIG
    # shellcheck disable=SC2016 # the inner shell expands them
    run_rc unshare --mount --propagation private -- sh -c \
        'mount --bind "$1/etc/group" /etc/group && exec systemd-tmpfiles --create --root="$1" "$2"' \
        sh "$root" "$1"
}
tmpfiles_in_root "$tmpfiles"
assert_eq "0:" "$RC:$(cat "$T/run.out" "$T/run.err")" "systemd-tmpfiles --create"
assert_eq "750 0 $sys_gid" "$(stat -c '%a %u %g' "$root$state_dir")" "$state_dir: mode, owner, group"
assert_eq "755 0 0" "$(stat -c '%a %u %g' "$root$mount_dir")" "$mount_dir: mode, owner, group"

# Run again while p2vfsd is mounted there (a package upgrade does): the
# mount's root is read-only, so a fixed mode would fail; "-" leaves it.
start_daemon "$root$mount_dir" --source x="$T/disk.img"
tmpfiles_in_root "$tmpfiles"
assert_eq "0:" "$RC:$(cat "$T/run.out" "$T/run.err")" "systemd-tmpfiles --create over a live mount"
daemon_alive || fail "the mount at $root$mount_dir is gone after systemd-tmpfiles --create"
sed "s|^d $mount_dir .*|d $mount_dir 0755 root root -|" "$tmpfiles" >"$T/fixed-mode.tmpfiles"
! cmp -s "$tmpfiles" "$T/fixed-mode.tmpfiles" || fail "could not give $mount_dir a fixed mode"
tmpfiles_in_root "$T/fixed-mode.tmpfiles"
assert_ne 0 "$RC" "systemd-tmpfiles --create with a fixed mode over a live mount: exit status"
assert_file_has_text "$T/run.err" "Read-only file system" "systemd-tmpfiles --create with a fixed mode over a live mount"
stop_daemon

# ---------------------------------------------------------------- install

dest=$T/inst
run_rc env DESTDIR="$dest" cmake --install "$build_dir" --component systemd
[[ $RC -eq 0 ]] || fail "cmake --install --component systemd: exit $RC: $(cat "$T/run.err")"
unitdir=$(cache_var P2VFS_SYSTEMD_UNITDIR)
[[ $unitdir == /* ]] || unitdir=$prefix/$unitdir
# GNUInstallDirs caches DATADIR empty when it follows DATAROOTDIR.
datadir=$(cache_var CMAKE_INSTALL_DATADIR)
[[ -n $datadir ]] || datadir=$(cache_var CMAKE_INSTALL_DATAROOTDIR)
[[ $datadir == /* ]] || datadir=$prefix/$datadir
installed_as() { # SOURCE-FILE INSTALLED-PATH
    [[ -f $dest$2 ]] || fail "$2 was not installed: $(cd "$dest" && find . -type f | sort | tr '\n' ' ')"
    cmp "$1" "$dest$2" || fail "$2 differs from $1"
}
installed_as "$unit" "$unitdir/p2vfsd.service"
installed_as "$source_dir/systemd/p2vfs-nbd-agent@.service" "$unitdir/p2vfs-nbd-agent@.service"
installed_as "$activation" "$datadir/dbus-1/system-services/org.p2vfs1.service"
installed_as "$policy" "$datadir/dbus-1/system.d/org.p2vfs1.conf"
installed_as "$tmpfiles" "$prefix/lib/tmpfiles.d/p2vfs.conf"
installed_as "$sysusers" "$prefix/lib/sysusers.d/p2vfs.conf"
assert_eq 6 "$(find "$dest" -type f | wc -l)" "files installed by component systemd"
if [[ $prefix == /usr || $prefix == /usr/local ]]; then
    systemd-analyze unit-paths | grep -qx "$unitdir" ||
        fail "$unitdir is not among the directories systemd reads units from"
fi

assert_eq "$etc_sums" "$(md5sum /etc/passwd /etc/group /etc/shadow /etc/gshadow 2>/dev/null)" \
    "the machine's user and group files"

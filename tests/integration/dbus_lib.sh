# shellcheck shell=bash
# Helpers for tests of the D-Bus control plane, sourced after lib.sh:
#
#   source "$(dirname "$0")/lib.sh"
#   source "$(dirname "$0")/dbus_lib.sh"
#
# start_bus starts a private dbus-daemon on a socket in the scratch
# directory (never the machine's system bus); start_bus_daemon runs p2vfsd
# on it and waits until it answers; ctl runs p2vctl against it.
#
# Environment: P2VCTL, the p2vctl binary (required).

[[ -n ${P2VCTL:-} && -x ${P2VCTL:-} ]] || fail "P2VCTL is not set to the p2vctl binary"
need_cmd dbus-daemon

BUS_ADDRESS=

# start_bus: a private bus every local user may connect to (the daemon's own
# checks decide who may do what). Sets BUS_ADDRESS; stopped at exit.
start_bus() {
    local dir=$T/bus
    mkdir -p "$dir"
    # Other users (the tests' unprivileged callers) reach the socket.
    chmod 711 "$T"
    chmod 755 "$dir"
    cat >"$dir/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>p2vfs-test</type>
  <listen>unix:path=$dir/socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
CONF
    bg_tracked dbus-daemon --config-file="$dir/bus.conf" --nofork --nopidfile
    wait_for 10 test -S "$dir/socket" || fail "dbus-daemon did not create $dir/socket"
    chmod 777 "$dir/socket"
    BUS_ADDRESS="unix:path=$dir/socket"
}

# ctl ARGS...: p2vctl on the private bus.
ctl() { "$P2VCTL" --bus "$BUS_ADDRESS" "$@"; }

# ctl_as USER ARGS...: p2vctl as another user (uid, gid and groups of USER).
ctl_as() {
    local user=$1
    shift
    setpriv --reuid="$(id -u "$user")" --regid="$(id -g "$user")" --init-groups \
        "$P2VCTL" --bus "$BUS_ADDRESS" "$@"
}

# start_bus_daemon MNT ARGS...: p2vfsd with --bus on the private bus; waits
# until its name answers.
start_bus_daemon() {
    local mnt=$1
    shift
    start_daemon "$mnt" --bus "$BUS_ADDRESS" "$@"
    wait_for 20 ctl formats >/dev/null 2>&1 || fail "p2vfsd does not answer on $BUS_ADDRESS"
}

# job_field ID FIELD: one field of `p2vctl --json job ID`.
job_field() {
    ctl --json job "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"
}

# wait_job_field ID FIELD MIN SECONDS: until FIELD (a number) >= MIN.
wait_job_field() {
    local id=$1 field=$2 min=$3 secs=$4 n v
    for ((n = 0; n < secs * 10; n++)); do
        v=$(job_field "$id" "$field")
        ((v >= min)) && return 0
        sleep 0.1
    done
    fail "job $id: $field stayed below $min for $secs s (last: $v)"
}

#!/bin/bash
# The source-side agent of a remote P2V, systemd/p2vfs-nbd-agent@.service:
#  - `systemd-analyze verify` accepts the unit instantiated for /dev/sda and
#    finds the fault in broken copies of it (an unknown key, a missing
#    program, a bad signal name); its offline security exposure stays at
#    2.0 or below;
#  - its ExecStart, expanded as systemd would (specifiers, Environment=, the
#    per-disk EnvironmentFile=, the key from LoadCredential=) for an image
#    file standing in for the disk (root:disk, mode 0660) and run as the
#    unit's user would be (unprivileged, in the unit's SupplementaryGroups,
#    no capabilities), exports the image read-only, with multi-conn, over
#    TLS only: p2vfsd holding the same key sees a disk.raw equal to the image
#    and a disk.vmdk that qemu-img finds identical; a wrong key and plain NBD
#    fail at start-up;
#  - the unit's KillSignal ends the server at once while a client is
#    attached, with a status the unit counts as success.
# Nothing is asked of the machine's own systemd.
source "$(dirname "$0")/lib.sh"
need_root
need_cmd systemd-analyze systemd-escape nbdkit nbdinfo qemu-img openssl python3 setpriv perl

source_dir=${P2VFS_SOURCE_DIR:-$(cd "$LIB_DIR/../.." && pwd)}
template=$source_dir/systemd/p2vfs-nbd-agent@.service
[[ -f $template ]] || fail "$template is missing"

# ---------------------------------------------------------------- verify

# verify_clean FILE: runs `systemd-analyze verify` on FILE alone; fails
# unless it exits 0 and says nothing about FILE. (Messages about other
# units on this machine are not this unit's problem.)
verify_clean() {
    local name
    name=$(basename "$1")
    run_rc systemd-analyze verify --man=no --recursive-errors=no "$1"
    cat "$T/run.out" "$T/run.err" >"$T/verify.log"
    [[ $RC -eq 0 ]] || fail "systemd-analyze verify $name exited $RC: $(cat "$T/verify.log")"
    assert_file_lacks "$T/verify.log" "$name" "systemd-analyze verify $name"
}

# verify_finds FILE REGEX WHAT: `systemd-analyze verify` must find the
# problem in FILE: a message about FILE matching REGEX (systemd 252 also
# exits 1, but some problems only give a warning).
verify_finds() {
    local name
    name=$(basename "$1")
    run_rc systemd-analyze verify --man=no --recursive-errors=no "$1"
    cat "$T/run.out" "$T/run.err" >"$T/verify.log"
    assert_file_contains "$T/verify.log" "$name.*$2" "$3: systemd-analyze verify"
}

# broken_copy DIR SED-EXPR: the template under the name of its dev-sda
# instance in DIR, edited by SED-EXPR (which must change it).
broken_copy() {
    mkdir -p "$1"
    sed -e "$2" "$template" >"$1/p2vfs-nbd-agent@dev-sda.service"
    ! cmp -s "$template" "$1/p2vfs-nbd-agent@dev-sda.service" || fail "broken_copy: '$2' changed nothing"
    echo "$1/p2vfs-nbd-agent@dev-sda.service"
}

mkdir "$T/units"
unit_sda=$T/units/p2vfs-nbd-agent@dev-sda.service
cp "$template" "$unit_sda"
verify_clean "$unit_sda"

verify_finds "$(broken_copy "$T/typo" 's/^ProtectSystem=/ProtectSystm=/')" \
    "Unknown key.*ProtectSystm" "a misspelt key"
verify_finds "$(broken_copy "$T/noexec" 's|^ExecStart=/usr/bin/nbdkit |ExecStart=/usr/bin/nbdkit-missing |')" \
    "nbdkit-missing" "a program that does not exist"
verify_finds "$(broken_copy "$T/badsig" 's/^KillSignal=.*/KillSignal=SIGKLL/')" \
    "SIGKLL" "an unknown signal"

run_rc systemd-analyze security --offline=yes --threshold=20 "$unit_sda"
exposure=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' "$T/run.out")
[[ $RC -eq 0 && -n $exposure ]] ||
    fail "systemd-analyze security: exit $RC, exposure '$exposure' (more than 2.0?): $(tail -n 3 "$T/run.out" "$T/run.err")"
log "security exposure of the unit: $exposure"

# ---------------------------------------------------------------- expand

# What systemd does to the unit file before it runs ExecStart, for the parts
# this unit uses: line continuations, comments, empty assignments that reset
# a list, the specifiers %i %I %f %d %n %% (in ExecStart= word by word,
# after splitting), Environment= (quoted words) overridden by
# EnvironmentFile= (a leading "-": optional), then "${VAR}" inside a word
# and "$VAR" as a word of its own (split at whitespace). Anything else
# (quotes or escapes in ExecStart=, another specifier, an unset variable)
# stops the test rather than being guessed at.
#   python3 -c "$UNIT_PY" FILE ROOT argv          ExecStart, NUL-terminated words
#   python3 -c "$UNIT_PY" FILE ROOT values KEY    the values of KEY, one a line
# ROOT is prefixed to the EnvironmentFile= paths. Specifiers come from
# SPEC_i, SPEC_I, SPEC_f, SPEC_d, SPEC_n in the environment.
# shellcheck disable=SC2016 # Python source
UNIT_PY='
import os, re, shlex, sys

unit, root, mode = sys.argv[1:4]
spec = {c: os.environ["SPEC_" + c] for c in "iIfdn"}
spec["%"] = "%"

def die(msg):
    sys.exit("%s: %s" % (unit, msg))

def specifiers(s):
    def one(m):
        if m.group(1) not in spec:
            die("specifier %%%s is not handled here" % m.group(1))
        return spec[m.group(1)]
    return re.sub(r"%(.)", one, s)

settings = {}
logical = ""
for raw in open(unit).read().split("\n"):
    line = raw.strip()
    if line[:1] in ("#", ";"):
        continue
    if line.endswith("\\"):
        logical += line[:-1] + " "
        continue
    line, logical = logical + line, ""
    if not line or line.startswith("["):
        continue
    key, sep, value = line.partition("=")
    if not sep:
        die("not an assignment: " + line)
    key, value = key.strip(), value.strip()
    if value == "":
        settings[key] = []
    elif key.startswith("Exec"):
        # Split into words first, then specifiers in each word: a value
        # with spaces or backslashes (%d of an instance holding "\x2d")
        # stays one word, verbatim.
        if re.search(r"[\"\x27\\]", value) or value[:1] in "-@:+!":
            die("quotes, escapes and prefixes in %s= are not handled here" % key)
        settings.setdefault(key, []).append([specifiers(w) for w in value.split()])
    else:
        settings.setdefault(key, []).append(specifiers(value))

def values(key):
    return settings.get(key, [])

if mode == "values":
    for v in values(sys.argv[4]):
        print(v)
    sys.exit(0)

env = {}
for v in values("Environment"):
    for word in shlex.split(v):
        k, sep, val = word.partition("=")
        if not sep:
            die("Environment=: not an assignment: " + word)
        env[k] = val
for v in values("EnvironmentFile"):
    optional = v.startswith("-")
    path = root + v.lstrip("-")
    if not os.path.exists(path):
        if optional:
            continue
        die("EnvironmentFile %s is missing" % path)
    for line in open(path):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        k, sep, val = line.partition("=")
        if not sep:
            die("%s: not an assignment: %s" % (path, line))
        env[k.strip()] = " ".join(shlex.split(val))

cmds = values("ExecStart")
if len(cmds) != 1:
    die("expected one ExecStart=, found %d" % len(cmds))

def var(name):
    if name not in env:
        die("$%s is not set by Environment= or EnvironmentFile=" % name)
    return env[name]

argv = []
for word in cmds[0]:
    m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
    if m:
        argv += var(m.group(1)).split()
        continue
    word = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: var(m.group(1)), word)
    if "$" in word:
        die("a variable reference not handled here: " + word)
    argv.append(word)
sys.stdout.write("".join(a + "\0" for a in argv))
'

# unit_values UNIT-FILE KEY: the values of KEY, specifiers expanded.
unit_values() {
    python3 -c "$UNIT_PY" "$1" "$T/root" values "$2"
}

# ---------------------------------------------------------------- run

# The disk: the fixture, owned the way udev leaves a disk node (root:disk,
# 0660), so that only --readonly keeps the agent from writing. The unit's
# user must get to it.
src=$(fixture random)
img=$T/disk.img
cp "$src" "$img"
chgrp disk "$img"
chmod 0660 "$img"
chmod 0711 "$T"

instance=$(systemd-escape --path "$img")
unit_name="p2vfs-nbd-agent@$instance.service"
export SPEC_i=$instance SPEC_n=$unit_name
SPEC_I=$(systemd-escape --unescape "$instance")
SPEC_f=$(systemd-escape --unescape --path "$instance")
SPEC_d=$T/run/credentials/$unit_name
export SPEC_I SPEC_f SPEC_d
assert_eq "$img" "$SPEC_f" "%f of instance $instance"
cp "$template" "$T/units/$unit_name"
unit=$T/units/$unit_name

# The unit's user, as systemd would set it up.
assert_eq yes "$(unit_values "$unit" DynamicUser)" "DynamicUser="
groups=$(unit_values "$unit" SupplementaryGroups | tr -s ' \n' ',,')
groups=${groups%,}
[[ -n $groups ]] || fail "the unit names no SupplementaryGroups= to read the disk with"
run_as=(setpriv --reuid=65534 --regid=65534 --groups="$groups"
    --inh-caps=-all --bounding-set=-all --no-new-privs --)

# /etc/p2vfs of this test, and the per-disk settings an administrator
# would write.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$T/root/etc/p2vfs"
(
    umask 077
    printf 'alice:%s\n' "$(openssl rand -hex 32)" >"$T/root/etc/p2vfs/nbd-agent.psk"
    printf 'alice:%s\n' "$(openssl rand -hex 32)" >"$T/wrong.psk"
)
cat >"$T/root/etc/p2vfs/nbd-agent-$instance.conf" <<EOF
# loopback only, on a port of its own
NBD_PORT=$port
NBD_OPTIONS=--ipaddr=127.0.0.1
EOF

# Without a settings file: every address, port 10809.
mapfile -d '' argv < <(python3 -c "$UNIT_PY" "$unit" "$T/no-root" argv)
[[ " ${argv[*]} " == *" --port=10809 "* ]] || fail "no settings file: expected --port=10809 in: ${argv[*]}"
[[ " ${argv[*]} " != *" --ipaddr"* && " ${argv[*]} " != *" -i "* ]] ||
    fail "no settings file: expected every address, got: ${argv[*]}"

# LoadCredential=ID:PATH: a copy of PATH as %d/ID, for the unit's user only.
mkdir -p "$SPEC_d"
while IFS= read -r cred; do
    [[ $cred == *:/* ]] || fail "LoadCredential=$cred: expected ID:/PATH"
    cp "$T/root${cred#*:}" "$SPEC_d/${cred%%:*}"
done < <(unit_values "$unit" LoadCredential)
[[ -n $(find "$SPEC_d" -type f) ]] || fail "the unit loads no key (LoadCredential=)"
chown -R 65534:65534 "$SPEC_d"
chmod 0400 "$SPEC_d"/*
chmod 0500 "$SPEC_d"

mapfile -d '' argv < <(python3 -c "$UNIT_PY" "$unit" "$T/root" argv)
((${#argv[@]})) || fail "no ExecStart= command line"
log "ExecStart: ${argv[*]}"
bg_tracked "${run_as[@]}" "${argv[@]}"
agent_pid=$BG_PID
wait_for 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null ||
    fail "the agent is not listening on 127.0.0.1:$port"
# NBD_OPTIONS from the settings file: on 127.0.0.1 alone, not every address.
if bash -c "exec 3<>/dev/tcp/127.0.0.2/$port" 2>/dev/null; then
    fail "the agent answers on 127.0.0.2:$port: NBD_OPTIONS=--ipaddr=127.0.0.1 was not applied"
fi

# The key as copied to the conversion host.
cp "$T/root/etc/p2vfs/nbd-agent.psk" "$T/client.psk"
uri="nbds://alice@127.0.0.1:$port/?tls-psk-file=$T/client.psk"

nbdinfo --json "$uri" >"$T/nbdinfo.json" || fail "nbdinfo $uri failed"
export_flag() { # KEY: a field of the export in nbdinfo's JSON
    perl -MJSON::PP -e '
        local $/; my $j = decode_json(<STDIN>);
        my $v = $ARGV[0] eq "TLS" ? $j->{TLS} : $j->{exports}[0]{$ARGV[0]};
        print JSON::PP::is_bool($v) ? ($v ? "true" : "false") : $v, "\n";' "$1" <"$T/nbdinfo.json"
}
assert_eq true "$(export_flag TLS)" "nbdinfo: TLS"
assert_eq true "$(export_flag is_read_only)" "nbdinfo: is_read_only"
assert_eq true "$(export_flag can_multi_conn)" "nbdinfo: can_multi_conn"
assert_eq "$(stat -c %s "$src")" "$(export_flag export-size)" "nbdinfo: export-size"

start_daemon "$T/mnt" --source pc1="$uri"
cmp "$src" "$T/mnt/pc1/disk.raw" || fail "disk.raw from the agent differs from the disk"
run_rc qemu-img compare -f raw -F vmdk "$src" "$T/mnt/pc1/disk.vmdk"
assert_eq "Images are identical." "$(cat "$T/run.out")" "disk.vmdk from the agent: qemu-img compare"

mkdir "$T/mnt2"
bad_uri="nbds://alice@127.0.0.1:$port/?tls-psk-file=$T/wrong.psk"
run_daemon_fg --mount "$T/mnt2" --source pc1="$bad_uri"
expect_startup_error 3 "NBD server $bad_uri: " "a wrong PSK"
assert_file_has_text "$T/run.err" "pre-shared key" "a wrong PSK: the hint"

plain_uri="nbd://127.0.0.1:$port/"
run_daemon_fg --mount "$T/mnt2" --source pc1="$plain_uri"
expect_startup_error 3 "NBD server $plain_uri: " "plain NBD to the agent"
assert_file_has_text "$T/run.err" "requires TLS" "plain NBD to the agent"

# ---------------------------------------------------------------- stop

# systemctl stop sends KillSignal (default SIGTERM) and, after
# TimeoutStopSec, SIGKILL with the unit marked failed. The server must go
# at once, p2vfsd still attached, with a status the unit counts as clean.
sig=$(unit_values "$unit" KillSignal | tail -n 1)
sig=${sig:-SIGTERM}
ended() { # PID: exited (a zombie until waited for) or gone
    local stat
    stat=$(ps -o stat= -p "$1") || return 0
    [[ $stat == Z* ]]
}
# (Bash reports a job killed by a signal on stderr when it reaps it; that
# notice goes to a file rather than into the test's output.)
exec 4>&2 2>"$T/stop.err"
kill -s "${sig#SIG}" "$agent_pid"
gone=0 rc=0
wait_for 5 ended "$agent_pid" && gone=1
if ((gone)); then
    wait "$agent_pid" || rc=$?
    _REAPED[$agent_pid]=1
fi
exec 2>&4 4>&-
((gone)) || fail "the agent still runs 5 s after $sig with a client attached"
success="$(unit_values "$unit" SuccessExitStatus | tr '\n' ' ')"
if ((rc > 128)); then
    status=SIG$(kill -l $((rc - 128)))
    clean=" SIGHUP SIGINT SIGTERM SIGPIPE $success "
else
    status=$rc
    clean=" 0 $success "
fi
[[ $clean == *" $status "* ]] ||
    fail "after $sig the agent ended with $status, which the unit counts as a failure (clean: $clean)"

stop_daemon
cmp "$src" "$img" || fail "the disk was written to"

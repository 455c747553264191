#!/usr/bin/env bash
# The synchronized cutover of a real system: the Debian 12 fixture
# (debian_image.sh; it names its disks by an HP Smart Array path and does
# not boot on virtual hardware as it is), grown by 64 MiB of unpartitioned
# space that the test writes to between syncs without touching the guest's
# file systems. A sync job with the kvm profile keeps a qcow2 target in
# step; `sync cutover` runs the quiesce command, a final sync (that takes the
# last writes), the unquiesce command, the fixups, and renames DEST.part to
# DEST. Then the job is done and bootable, the target passes qemu-img check,
# differs from the source only inside the root file system, holds there
# exactly the files of the job's fixups plan (read back with debugfs; e2fsck
# finds the file system clean), and boots on virtio under qemu (TCG) with
# its root on /dev/vda1.
# Quiesce by signal, on a small data disk: the job asks with
# QuiesceRequested(true) and (false) and waits for `sync ack`; an ack with
# --fail fails the job with its message, and the job resumed asks again.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/dbus_lib.sh"
source "$(dirname "$0")/debian_image.sh"
source "$(dirname "$0")/qemu_boot.sh"
need_root
need_cmd qemu-img qemu-system-x86_64 python3 debugfs e2fsck busctl dbus-monitor dd truncate cmp

MiB=$((1024 * 1024))
seed=${P2VFS_SYNC_SEED:-$(($(date +%s) % 100000))}
RANDOM=$seed
log "seed $seed"

src=$T/pc.img
debian_image "$src" || fail "cannot make the Debian 12 image (see above)"
truncate -s +64M "$src"
SIZE=$((DEBIAN12_IMAGE_SIZE + 64 * MiB))
assert_eq "$SIZE" "$(stat -c %s "$src")" "source size"
TAIL=$DEBIAN12_IMAGE_SIZE # the unpartitioned space: [TAIL, SIZE)

start_bus
mnt=$T/mnt
start_bus_daemon "$mnt" --state-dir "$T/state" --views raw
ctl add pc "$src" >/dev/null
mkdir -p "$T/out"

# ---------------------------------------------------------------- helpers

declare -A CHANGED=()
tail_writes() { # COUNT: random 4 KiB writes in the unpartitioned tail
    local i off
    CHANGED=()
    for ((i = 0; i < $1; i++)); do
        off=$((TAIL + (((RANDOM << 15) | RANDOM) % (64 * MiB / 4096)) * 4096))
        dd if=/dev/urandom of="$src" bs=4096 count=1 seek="$off" oflag=seek_bytes conv=notrunc status=none
        CHANGED[$((off / MiB))]=1
    done
}

assert_state() { # ID STATE
    local s
    s=$(job_field "$1" state)
    [[ $s == "$2" ]] || fail "job $1: state '$s', expected '$2' (error: $(job_field "$1" error))"
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

wait_state() { # ID STATE SECONDS
    local n s
    for ((n = 0; n < $3 * 10; n++)); do
        s=$(job_field "$1" state)
        [[ $s == "$2" ]] && return 0
        sleep 0.1
    done
    fail "job $1: state '$s' after $3 s, expected '$2' (error: $(job_field "$1" error))"
}

# The fixups plan the job applied at its cutover (JSON): the job's
# fixups_plan field when p2vctl shows it, else the D-Bus property.
fixups_plan() { # ID
    ctl --json job "$1" >"$T/job.json"
    if python3 -c 'import json,sys; sys.exit(0 if "fixups_plan" in json.load(open(sys.argv[1])) else 1)' "$T/job.json"; then
        python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["fixups_plan"])' "$T/job.json"
    else
        busctl --address="$BUS_ADDRESS" --json=short get-property org.p2vfs1 "/org/p2vfs1/jobs/$1" \
            org.p2vfs1.Job FixupsPlan | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"])'
    fi
}

# ---------------------------------------------------------------- syncs
dest=$T/out/pc.qcow2
qlog=$T/quiesce.log
# shellcheck disable=SC2016 # expanded by the job's /bin/sh
run_rc ctl sync start pc "$dest" --format qcow2 --profile kvm --memory 1024 --cpus 1 \
    --quiesce-command 'echo "$P2VFS_STEP $P2VFS_JOB $P2VFS_TARGET" >>'"$qlog" \
    --unquiesce-command 'echo "$P2VFS_STEP $P2VFS_JOB $P2VFS_TARGET" >>'"$qlog" --wait
[[ $RC -eq 0 ]] || fail "sync start exited $RC: $(cat "$T/run.out" "$T/run.err")"
id=$(cat "$T/run.out")
assert_eq 1 "$(job_field "$id" generation)" "generation after the initial copy"
run_rc qemu-img compare -f raw -F qcow2 "$src" "$dest.part"
[[ $RC -eq 0 ]] || fail "generation 1 differs from the source: $(cat "$T/run.out")"
[[ ! -e $qlog ]] || fail "the quiesce command ran before the cutover"

tail_writes 12
run_rc ctl sync now "$id" --wait
[[ $RC -eq 0 ]] || fail "sync now exited $RC: $(cat "$T/run.out" "$T/run.err")"
assert_eq 2 "$(job_field "$id" generation)" "generation after sync now"
assert_eq $((${#CHANGED[@]} * MiB)) "$(job_field "$id" changed_bytes)" "changed_bytes of sync 2"
run_rc qemu-img compare -f raw -F qcow2 "$src" "$dest.part"
[[ $RC -eq 0 ]] || fail "generation 2 differs from the source: $(cat "$T/run.out")"

# ---------------------------------------------------------------- the cutover
tail_writes 12
cp --sparse=always "$src" "$T/source-final.img"
run_rc ctl sync cutover "$id" --wait
[[ $RC -eq 0 ]] || fail "sync cutover exited $RC: $(cat "$T/run.out" "$T/run.err")"
assert_state "$id" "done"
assert_eq True "$(job_field "$id" bootable)" "bootable"
assert_eq "" "$(job_field "$id" phase)" "phase when done"
assert_eq 3 "$(job_field "$id" generation)" "generation (the final sync)"
assert_eq $((${#CHANGED[@]} * MiB)) "$(job_field "$id" changed_bytes)" "changed_bytes of the final sync"
assert_eq "$dest" "$(job_field "$id" target)" "target after the cutover"
assert_eq "" "$(job_field "$id" next_event)" "next_event when done"
[[ -f $dest ]] || fail "no $dest after the cutover"
[[ ! -e $dest.part ]] || fail "$dest.part is left after the cutover"
printf 'quiesce %s %s\nunquiesce %s %s\n' "$id" "$dest.part" "$id" "$dest.part" >"$T/quiesce.expected"
cmp "$T/quiesce.expected" "$qlog" || fail "quiesce log: $(cat "$qlog")"
run_rc qemu-img check -f qcow2 "$dest"
[[ $RC -eq 0 ]] || fail "qemu-img check $dest exited $RC: $(cat "$T/run.out")"
# The machine around the disk, beside it: a libvirt domain naming the target.
domain=$T/out/pc.xml
[[ -f $domain ]] || fail "no libvirt domain $domain after the cutover: $(ls "$T/out")"
assert_file_has_text "$domain" "<source file='$dest'/>"
assert_file_has_text "$domain" "<target dev='vda' bus='virtio'/>"
if command -v virt-xml-validate >/dev/null; then
    virt-xml-validate "$domain" domain >"$T/validate.out" 2>&1 ||
        fail "virt-xml-validate $domain: $(cat "$T/validate.out")"
else
    echo "$(basename "$0"): virt-xml-validate not installed: the domain's schema is not checked"
fi
run_rc ctl sync now "$id"
assert_eq 1 "$RC" "sync now after the cutover (refused)"
assert_file_has_text "$T/run.err" "cut over"

# (i) The target is not the source: the fixups are in it.
run_rc qemu-img compare -f raw -F qcow2 "$T/source-final.img" "$dest"
assert_eq 1 "$RC" "qemu-img compare of the target with the source (1: they differ)"
# (ii) Outside the root file system it is the source, byte for byte: the
# MBR and GRUB's core image, the swap partition, the written tail.
qemu-img convert -f qcow2 -O raw "$dest" "$T/target.raw"
assert_eq "$SIZE" "$(stat -c %s "$T/target.raw")" "size of the target's disk"
cmp -n "$DEBIAN12_P1_OFFSET" "$T/source-final.img" "$T/target.raw" ||
    fail "the target differs from the source before partition 1"
cmp -i "$DEBIAN12_P2_OFFSET:$DEBIAN12_P2_OFFSET" "$T/source-final.img" "$T/target.raw" ||
    fail "the target differs from the source from partition 2 on"
rm -f "$T/source-final.img"

# (iii) Inside it: the plan's files, as the plan says.
fixups_plan "$id" >"$T/plan.json"
dd if="$T/target.raw" of="$T/root.img" bs=1M iflag=skip_bytes,count_bytes skip="$DEBIAN12_P1_OFFSET" \
    count="$DEBIAN12_P1_SIZE" conv=sparse status=none
rm -f "$T/target.raw"
edits=$(python3 - "$T/plan.json" "$T/root.img" <<'PY'
import json, re, subprocess, sys
plan = json.load(open(sys.argv[1]))
img = sys.argv[2]
assert plan["profile"] == "kvm" and plan["controller"] == "virtio-blk", plan
assert plan["refusals"] == [], plan["refusals"]
names = [s["name"] for s in plan["steps"]]
assert names == ["choose-controller", "fstab-by-uuid", "bootloader-by-uuid", "resume-by-uuid",
                 "remove-persistent-net-rules", "disable-vendor-agents", "initramfs-drivers",
                 "firstboot-initramfs"], names

def debugfs(request):
    r = subprocess.run(["debugfs", "-R", request, img], capture_output=True)
    return r.stdout, r.stderr.decode(errors="replace")

checked = 0
for step in plan["steps"]:
    for e in step["edits"]:
        path, after = e["path"], e["after"]
        out, err = debugfs("stat " + path)
        if after is None:
            assert "File not found" in err, (step["name"], path, "still there", err)
        elif e["kind"] == "symlink":
            m = re.search(rb'Fast link dest: "(.*)"', out)
            target = m.group(1).decode() if m else debugfs("cat " + path)[0].decode()
            assert target == after, (step["name"], path, target, after)
        else:
            data, err = debugfs("cat " + path)
            assert data == after.encode(), (step["name"], path, data[:200], after[:200])
        checked += 1
assert checked >= 6, checked
print(checked)
PY
) || fail "the target's root file system does not hold the plan's files (see above)"
log "the target's root file system holds the $edits edits of the fixups plan"
e2fsck -fn "$T/root.img" >"$T/e2fsck.log" 2>&1 || {
    cat "$T/e2fsck.log" >&2
    fail "e2fsck finds the target's root file system damaged"
}
rm -f "$T/root.img"

# (iv) It boots.
rc=0
QEMU_BOOT_BUS=virtio qemu_boot "$dest" qcow2 "$T/console.log" 300 || rc=$?
if [[ $rc -ne 0 ]]; then
    tail -n 30 "$T/console.log" >&2
    fail "the cut-over target did not boot (rc $rc: ${QEMU_BOOT_FAILURE:-})"
fi
log "booted in ${QEMU_BOOT_SECONDS}s: $QEMU_BOOT_MARKER"
assert_file_contains "$T/console.log" "P2VFS-BOOT-MARKER root=/dev/vda1 "

# ---------------------------------------------------------------- quiesce by signal
small=$T/small.raw
dd if=/dev/urandom of="$small" bs=1M count=64 iflag=fullblock status=none
ctl add small "$small" >/dev/null
# The job's signals, as a source-side tool would hear them.
: >"$T/monitor.out"
dbus-monitor --address "$BUS_ADDRESS" --monitor \
    "type='signal',interface='org.p2vfs1.Job',member='QuiesceRequested'" >"$T/monitor.out" 2>&1 &
monitor_pid=$!
push_cleanup _kill_pid "$monitor_pid"
wait_for 10 grep -q NameAcquired "$T/monitor.out" || sleep 1

run_rc ctl sync start small "$T/out/small.raw" --format raw --quiesce-signal --quiesce-timeout 60 --wait
[[ $RC -eq 0 ]] || fail "sync start --quiesce-signal exited $RC: $(cat "$T/run.out" "$T/run.err")"
sid=$(cat "$T/run.out")
ctl sync cutover "$sid" >/dev/null
wait_phase "$sid" quiescing 30
run_rc ctl sync now "$sid"
assert_eq 1 "$RC" "sync now while cutting over (refused)"
ctl sync ack "$sid" >/dev/null
wait_phase "$sid" unquiescing 30
ctl sync ack "$sid" >/dev/null
wait_state "$sid" "done" 30
assert_eq True "$(job_field "$sid" bootable)" "signal job: bootable"
cmp "$small" "$T/out/small.raw" || fail "the raw target of the signal job differs from its source"
[[ ! -e $T/out/small.raw.part ]] || fail "small.raw.part left behind"
run_rc ctl sync ack "$sid"
assert_eq 1 "$RC" "an ack nobody asked for (refused)"
# The signals: true, then false, from that job's object.
sleep 0.5
grep -A1 "path=/org/p2vfs1/jobs/$sid; interface=org.p2vfs1.Job; member=QuiesceRequested" "$T/monitor.out" |
    grep -o 'boolean [a-z]*' | tr '\n' ' ' >"$T/signals"
assert_eq "boolean true boolean false " "$(cat "$T/signals")" "QuiesceRequested signals of job $sid"

# An ack that says no fails the job with its message; resumed, it asks again.
run_rc ctl sync start small "$T/out/small2.raw" --format raw --quiesce-signal --quiesce-timeout 60 --wait
[[ $RC -eq 0 ]] || fail "sync start (second) exited $RC: $(cat "$T/run.out" "$T/run.err")"
fid=$(cat "$T/run.out")
ctl sync cutover "$fid" >/dev/null
wait_phase "$fid" quiescing 30
ctl sync ack "$fid" --fail "cannot stop the database" >/dev/null
wait_state "$fid" failed 30
error=$(job_field "$fid" error)
log "a failed quiesce: $error"
[[ $error == *"cannot stop the database"* ]] || fail "the error does not carry the tool's message: $error"
[[ -f $T/out/small2.raw.part && ! -e $T/out/small2.raw ]] || fail "after the failed quiesce: $(ls "$T/out")"
ctl resume "$fid" >/dev/null
wait_phase "$fid" quiescing 30
ctl sync ack "$fid" >/dev/null
wait_phase "$fid" unquiescing 30
ctl sync ack "$fid" >/dev/null
wait_state "$fid" "done" 30
cmp "$small" "$T/out/small2.raw" || fail "small2.raw differs from its source"

stop_daemon "$mnt"
log "ok"

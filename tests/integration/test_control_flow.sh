#!/usr/bin/env bash
# The whole flow through p2vctl on a private bus: add a source, list it,
# expose a VHDX, materialize it with --wait (then a stream-optimized VMDK,
# and to an NBD export). The copy is byte-identical to
# the mount's VHDX file, compares identical to the source with qemu-img, is
# sparse on disk, and the daemon brings source, view and job back after a
# restart.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/dbus_lib.sh"
need_root
need_cmd qemu-img
need_cmd python3
need_cmd nbdkit

MiB=$((1024 * 1024))
src=$T/pc1.img
truncate -s $((256 * MiB)) "$src"
# Data in a few places, holes elsewhere: 24 MiB of data in 256 MiB.
for at in 0 17 100 200 254; do
    dd if=/dev/urandom of="$src" bs=1M seek=$at count=$((at == 100 ? 16 : 2)) conv=notrunc status=none
done
data_kib=$(du -k "$src" | cut -f1)

start_bus
mnt=$T/mnt
start_bus_daemon "$mnt" --state-dir "$T/state" --views raw

ctl add pc1 "$src" >"$T/add.out"
assert_file_has_text "$T/add.out" "added pc1 (256 MiB)" "p2vctl add"
ctl --json list >"$T/list.json"
python3 - "$T/list.json" "$src" "$mnt" <<'PY'
import json, sys
lst = json.load(open(sys.argv[1]))
assert len(lst) == 1, lst
s = lst[0]
assert s["name"] == "pc1" and s["uri"] == sys.argv[2], s
assert s["size"] == 256 << 20, s
assert s["allocated"] == 24 << 20, s["allocated"]
assert s["overlay"] == "none" and s["persistent"] is True, s
assert s["views"] == [{"file": "disk.raw", "format": "raw", "path": sys.argv[3] + "/pc1/disk.raw"}], s["views"]
PY
cmp "$src" "$mnt/pc1/disk.raw" || fail "disk.raw differs from the source"

path=$(ctl expose pc1 vhdx)
assert_eq "$mnt/pc1/disk.vhdx" "$path" "p2vctl expose prints the view's path"
[[ -f $mnt/pc1/disk.vhdx ]] || fail "disk.vhdx is not in the mount"
assert_eq "disk.raw disk.vhdx " "$(list_views "$mnt/pc1")" "files of pc1"

mkdir "$T/out"
run_rc ctl materialize pc1 disk.vhdx "$T/out/pc1.vhdx" --parallel 3 --wait
assert_eq 0 "$RC" "p2vctl materialize --wait exit status ($(cat "$T/run.err"))"
assert_file_has_text "$T/run.out" "job 1: done" "p2vctl materialize --wait"
assert_eq "pc1.vhdx " "$(list_dir "$T/out")" "the destination directory holds the copy only"
cmp "$T/out/pc1.vhdx" "$mnt/pc1/disk.vhdx" || fail "the copy differs from the mount's disk.vhdx"
qemu-img compare -q -f raw -F vhdx "$src" "$T/out/pc1.vhdx" || fail "qemu-img compare: copy differs from the source"
qemu-img check -q -f vhdx "$T/out/pc1.vhdx" || fail "qemu-img check of the copy"
copy_kib=$(du -k "$T/out/pc1.vhdx" | cut -f1)
# Sparse: the data plus VHDX metadata (headers, BAT: a few MiB at most).
assert_le "$copy_kib" $((data_kib + 8 * 1024)) "KiB on disk of the copy (data: $data_kib KiB)"
log "copy: $copy_kib KiB on disk for $data_kib KiB of data in 256 MiB"

ctl --json jobs >"$T/jobs.json"
python3 - "$T/jobs.json" "$T/out/pc1.vhdx" <<'PY'
import json, sys
jobs = json.load(open(sys.argv[1]))
assert len(jobs) == 1, jobs
j = jobs[0]
assert j["id"] == "1" and j["state"] == "done" and j["error"] == "", j
assert j["source"] == "pc1" and j["view"] == "disk.vhdx" and j["destination"] == sys.argv[2], j
assert j["bytes_done"] == j["bytes_total"] == j["bytes_verified"] > 0, j
assert j["bytes_resumed"] == 0, j
PY

# A view whose bytes are computed (stream-optimized VMDK: the job prepares
# it first) and an NBD destination (an nbdkit memory export).
ctl expose pc1 vmdk-stream >/dev/null
run_rc ctl materialize pc1 disk-stream.vmdk "$T/out/pc1-stream.vmdk" --wait
assert_eq 0 "$RC" "materialize the stream-optimized VMDK ($(cat "$T/run.err"))"
cmp "$T/out/pc1-stream.vmdk" "$mnt/pc1/disk-stream.vmdk" || fail "the stream VMDK copy differs from the mount's"
qemu-img compare -q -f raw -F vmdk "$src" "$T/out/pc1-stream.vmdk" || fail "qemu-img compare: stream VMDK copy"
bg_tracked nbdkit --foreground --unix "$T/dest.sock" memory 256M
wait_for 10 test -S "$T/dest.sock" || fail "nbdkit (destination) did not start"
run_rc ctl materialize pc1 disk.raw "nbd+unix:///?socket=$T/dest.sock" --wait
assert_eq 0 "$RC" "materialize to an NBD export ($(cat "$T/run.err"))"
qemu-img compare -q -f raw -F raw "$src" "nbd+unix:///?socket=$T/dest.sock" ||
    fail "qemu-img compare: the NBD export differs from the source"

# A restart brings the source, its exposed view and the job back.
stop_daemon "$mnt"
start_bus_daemon "$mnt" --state-dir "$T/state" --views raw
assert_eq "disk-stream.vmdk disk.raw disk.vhdx " "$(list_views "$mnt/pc1")" "files of pc1 after a restart"
cmp "$T/out/pc1.vhdx" "$mnt/pc1/disk.vhdx" || fail "disk.vhdx changed across the restart"
assert_eq done "$(job_field 1 state)" "job 1 after the restart"

# Removing the source takes its folder out of the mount.
ctl remove pc1
assert_eq "" "$(list_dir "$mnt")" "the mount after removing pc1"
assert_eq "[]" "$(ctl --json list | tr -d ' \n')" "sources after removing pc1"
stop_daemon "$mnt"

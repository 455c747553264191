#!/bin/bash
# Overlay layers, driven by p2vfsd and p2vfs-overlay: writes into the fixups
# layer under the user layer, a checkpoint, a rollback to it, discards, and
# qcow2 exports backed by the pristine source. After each step every view
# compares identical to a reference copy that got the same writes, and the
# source's checksum never changes.
source "$(dirname "$0")/lib.sh"
need_root
need_cmd qemu-img python3 sha256sum
TOOL=${P2VFS_OVERLAY_TOOL:-}
[[ -n $TOOL && -x $TOOL ]] || skip "p2vfs-overlay is not built (P2VFS_OVERLAY_TOOL='$TOOL')"

SRC=$T/src.img
ST=$T/state
MNT=$T/mnt
# 24 MiB: random data in the first 12 MiB, a hole after it.
python3 - "$SRC" <<'PY'
import random, sys
r = random.Random(5)
with open(sys.argv[1], "wb") as f:
    f.write(r.randbytes(12 << 20))
    f.truncate(24 << 20)
PY
SUM=$(sha256sum <"$SRC")
check_source() { assert_eq "$SUM" "$(sha256sum <"$SRC")" "sha256 of the source after $1"; }

# put FILE... : writes, into every FILE, LENGTH bytes made from SEED at OFFSET
# (the arguments before the files: OFFSET LENGTH SEED).
put() {
    python3 - "$@" <<'PY'
import os, random, sys
off, length, seed = (int(x) for x in sys.argv[1:4])
data = random.Random(seed).randbytes(length)
for path in sys.argv[4:]:
    fd = os.open(path, os.O_WRONLY)
    os.pwrite(fd, data, off)
    os.fsync(fd)
    os.close(fd)
PY
}

# views_are REF: every view of pc compares identical to REF, pc@pristine to the source.
views_are() {
    assert_views_identical "$1" "$MNT/pc"
    assert_views_identical "$SRC" "$MNT/pc@pristine"
}

# 1. Fixups: written through disk.raw with --writable pc:fixups.
cp "$SRC" "$T/ref_fix.img"
start_daemon "$MNT" --source "pc=$SRC" --writable pc:fixups --state-dir "$ST"
assert_file_has_text "$DAEMON_LOG" "disk.raw writes to fixups"
put $((1 << 20)) 100000 1 "$MNT/pc/disk.raw" "$T/ref_fix.img"
put $((20 << 20)) 5000 2 "$MNT/pc/disk.raw" "$T/ref_fix.img"
views_are "$T/ref_fix.img"
stop_daemon
check_source "writing fixups"

# 2. The user layer above: a write overlapping a fixup wins over it.
cp "$T/ref_fix.img" "$T/ref_u1.img"
start_daemon "$MNT" --source "pc=$SRC" --writable pc --state-dir "$ST"
put $((1 << 20 | 50000)) 100000 3 "$MNT/pc/disk.raw" "$T/ref_u1.img"
put $((30 << 19)) 70000 4 "$MNT/pc/disk.raw" "$T/ref_u1.img"
views_are "$T/ref_u1.img"
# While the daemon has the overlay, the tool keeps its hands off.
run_rc "$TOOL" --state-dir "$ST" checkpoint pc one
expect_startup_error 1 "is in use by another process (pid $DAEMON_PID)" p2vfs-overlay
stop_daemon

# 3. A checkpoint, then more writes.
run_rc "$TOOL" --state-dir "$ST" checkpoint pc one
assert_eq 0 "$RC" "checkpoint: $(cat "$T/run.err")"
cp "$T/ref_u1.img" "$T/ref_u2.img"
start_daemon "$MNT" --source "pc=$SRC" --writable pc --state-dir "$ST"
put $((5 << 20)) 300000 5 "$MNT/pc/disk.raw" "$T/ref_u2.img"
put $((23 << 20)) 4096 6 "$MNT/pc/disk.raw" "$T/ref_u2.img"
views_are "$T/ref_u2.img"
stop_daemon
run_rc "$TOOL" --state-dir "$ST" list pc
assert_eq 0 "$RC" "list"
assert_file_contains "$T/run.out" "^pc  source $SRC, 24 MiB, 64 KiB chunks$"
assert_file_contains "$T/run.out" "^  layer fixups  3 chunk\(s\), 192 KiB changed"
# user: 1M+50000..+100000 (chunks 16-18), 15M..+70000 (240-241), 5M..+300000
# (80-84), 23M..+4096 (368)
assert_file_contains "$T/run.out" "^  layer user    11 chunk\(s\), 704 KiB changed"
assert_file_contains "$T/run.out" "^    checkpoint one  [0-9]{4}-[0-9]{2}-[0-9]{2}T"

# 4. Exports: the changes as qcow2 files backed by the source.
for layer in user fixups; do
    ref=$T/ref_u2.img
    [[ $layer == fixups ]] && ref=$T/ref_fix.img
    run_rc "$TOOL" --state-dir "$ST" export pc "$T/$layer.qcow2" --layer "$layer"
    assert_eq 0 "$RC" "export --layer $layer: $(cat "$T/run.err")"
    run_rc qemu-img compare -f qcow2 -F raw "$T/$layer.qcow2" "$ref"
    assert_eq "0 Images are identical." "$RC $(cat "$T/run.out")" "export of $layer vs its reference"
    run_rc qemu-img check "$T/$layer.qcow2"
    assert_eq 0 "$RC" "qemu-img check of the $layer export: $(cat "$T/run.out")"
    assert_eq "$(realpath "$SRC")" "$(qemu_info qcow2 "$T/$layer.qcow2" backing-filename)" \
        "backing file of the $layer export"
    [[ ! -e $T/$layer.qcow2.part ]] || fail "a .part file was left beside the export"
done
# The delta is small: the user export holds 12 changed chunks (the user
# layer's eleven and the fixups' chunk 320; their 16-17 are among the
# user's) and its metadata (header, L1, refcounts, one L2 table), not the disk.
assert_le "$(stat -c %s "$T/user.qcow2")" $((12 * 65536 + 6 * 65536)) "size of the user export"
check_source "the exports"

# 5. Rollback to the checkpoint: the writes after it are gone.
run_rc "$TOOL" --state-dir "$ST" rollback pc two
expect_startup_error 2 "layer 'user' has no checkpoint named 'two' (it has: one)" p2vfs-overlay
run_rc "$TOOL" --state-dir "$ST" rollback pc one
assert_eq 0 "$RC" "rollback: $(cat "$T/run.err")"
start_daemon "$MNT" --source "pc=$SRC" --state-dir "$ST"
assert_file_has_text "$DAEMON_LOG" "read-only; the source itself in pc@pristine"
views_are "$T/ref_u1.img"
stop_daemon

# 6. Discards: the user layer, then everything.
run_rc "$TOOL" --state-dir "$ST" discard pc
assert_eq 0 "$RC" "discard: $(cat "$T/run.err")"
start_daemon "$MNT" --source "pc=$SRC" --state-dir "$ST"
views_are "$T/ref_fix.img"
stop_daemon
run_rc "$TOOL" --state-dir "$ST" discard pc --all
assert_eq 0 "$RC" "discard --all: $(cat "$T/run.err")"
start_daemon "$MNT" --source "pc=$SRC" --state-dir "$ST"
views_are "$SRC"
stop_daemon
check_source "rollback and discards"

# 7. The overlay belongs to its disk: another source under the same name is refused.
truncate -s 20M "$T/other.img"
run_daemon_fg --mount "$MNT" --source "pc=$T/other.img" --state-dir "$ST"
expect_error_line 3 "was made over another disk"
log "ok"

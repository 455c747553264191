#!/bin/bash
# disk-stream.vmdk in the mount (a view prepared on first open):
#  - before anything opened it, it shows size 0;
#  - opened by two readers at once, it is compressed once, and both read a
#    file qemu-img compare finds identical to the source and check clean;
#  - afterwards it has its final size, and holds exactly the bytes
#    tests/tools/write_view writes for the same source (and a second daemon
#    serves the same bytes again).
source "$(dirname "$0")/lib.sh"
need_root
need_cmd qemu-img cmp

WRITE_VIEW=${P2VFS_WRITE_VIEW:-$(dirname "$P2VFSD")/../tests/write_view}
[[ -x $WRITE_VIEW ]] || fail "write_view not found at $WRITE_VIEW (build the 'write_view' target, or set P2VFS_WRITE_VIEW)"

# 64 MiB of random bytes: compressing takes long enough for the two opens to overlap.
src=$(fixture random)
mkdir -p "$T/expected"
"$WRITE_VIEW" vmdk-stream "$src" "$T/expected" "cachedir=$T/cache-w" 2>/dev/null ||
    fail "write_view vmdk-stream $src failed"
expected=$T/expected/disk-stream.vmdk

start_daemon "$T/mnt" --source rnd="$src" --option "vmdk-stream.cachedir=$T/cache"
f=$T/mnt/rnd/disk-stream.vmdk
assert_eq 0 "$(stat -c %s "$f")" "size of disk-stream.vmdk before its first open"

qemu-img compare -f raw -F vmdk "$src" "$f" >"$T/compare1.out" 2>&1 &
pid1=$!
qemu-img compare -f raw -F vmdk "$src" "$f" >"$T/compare2.out" 2>&1 &
pid2=$!
rc1=0 rc2=0
wait "$pid1" || rc1=$?
wait "$pid2" || rc2=$?
assert_eq 0 "$rc1" "first concurrent qemu-img compare: $(cat "$T/compare1.out")"
assert_eq 0 "$rc2" "second concurrent qemu-img compare: $(cat "$T/compare2.out")"
assert_file_has_text "$T/compare1.out" "Images are identical." "first compare"
assert_file_has_text "$T/compare2.out" "Images are identical." "second compare"
assert_eq 1 "$(grep -c "disk-stream.vmdk of 'rnd': preparing" "$DAEMON_LOG")" \
    "number of preparations logged"

run_rc qemu-img check -f vmdk "$f"
[[ $RC -eq 0 ]] || fail "qemu-img check exited $RC: $(cat "$T/run.out" "$T/run.err")"
assert_eq "$(stat -c %s "$expected")" "$(stat -c %s "$f")" "size of disk-stream.vmdk once prepared"
cmp "$expected" "$f" || fail "the mount and write_view give different disk-stream.vmdk"
stop_daemon

start_daemon "$T/mnt" --source rnd="$src" --option "vmdk-stream.cachedir=$T/cache"
cmp "$expected" "$f" || fail "a second daemon serves a different disk-stream.vmdk"
stop_daemon
assert_eq "" "$(list_dir "$T/cache")" "files left in the cache directory"
exit 0

#!/bin/bash
# Writes through a writable disk.raw (--writable) land in the overlay, never
# the source, and every view shows them, before and after restarts:
#
#  - A source of 48 MiB, random data in parts, holes elsewhere. About 200
#    writes from a fixed seed (1 byte to 300 KiB, unaligned, some all zeros,
#    some across 64 KiB chunk boundaries, some ending exactly at the end of
#    the disk) go with `dd conv=notrunc` both to MNT/pc/disk.raw and to a
#    sparse copy of the source. A write crossing the end of the disk is cut
#    there (dd reports the bytes it wrote, then "No space left on device");
#    one at or past the end writes nothing and fails the same way. pwrite(2)
#    returns exactly the bytes up to the end, or ENOSPC.
#  - disk.raw then equals the copy byte for byte. After a clean stop
#    (SIGTERM), a start without --writable (the overlay opened read-only)
#    and one with it, every view compares identical with the copy
#    (`qemu-img compare`), `qemu-img check` is clean where qemu has checks,
#    pc@pristine shows the original source, and the source's sha256 never
#    changes.
#  - Refused, the content unchanged: an open with O_TRUNC (dd without
#    conv=notrunc, EPERM), a change of size (truncate -s, EPERM; the same
#    size passes), a write to another view (EROFS), and, without --writable,
#    any write to disk.raw (EROFS, mode 0444).
#  - A view held open across a write keeps what it showed: a write into a
#    hole of the source grows the dynamic VHD, a fresh open sees the larger
#    file holding the new bytes, the held descriptor still reads the old
#    file (a complete, consistent VHD of the old content); fstat of it
#    reports the newest layout's size (a stat does not say which open asks).
source "$(dirname "$0")/lib.sh"
need_root
need_cmd qemu-img python3 sha256sum dd truncate cmp

KiB=1024
MiB=$((1 << 20))
size=$((48 * MiB))
SEED=${P2VFS_SEED:-20261124}
log "seed $SEED (P2VFS_SEED=... to change it)"

sha() { sha256sum <"$1" | cut -d' ' -f1; }

# The source: random data at 0-6 MiB, 10-13.5 MiB, 30-37 MiB and the last
# 300 KiB; holes elsewhere (24-26 MiB stays a hole for the held-open check).
src=$T/pc.img
truncate -s "$size" "$src"
put_random() { # FILE OFFSET LENGTH
    head -c "$3" /dev/urandom | dd of="$1" bs=64K seek="$2" oflag=seek_bytes conv=notrunc status=none
}
put_random "$src" 0 $((6 * MiB))
put_random "$src" $((10 * MiB)) $((3 * MiB + MiB / 2))
put_random "$src" $((30 * MiB)) $((7 * MiB))
put_random "$src" $((size - 300 * KiB)) $((300 * KiB))
src_sha=$(sha "$src")
copy=$T/copy.img
cp --sparse=always "$src" "$copy"
# Bytes the writes take their data from.
head -c $((2 * MiB)) /dev/urandom >"$T/pool"

# The plan: one write a line, "KIND OFFSET LENGTH SKIP"; SKIP is where in the
# pool its bytes start, or "zero". KIND: in (inside the disk), cross (crosses
# the end: cut there), past (at or past the end: nothing written).
python3 - "$SEED" "$size" $((2 * MiB)) >"$T/plan" <<'EOF'
import random, sys
seed, size, pool = (int(a) for a in sys.argv[1:])
rng = random.Random(seed)
chunk = 64 * 1024
reserved = (24 << 20, 26 << 20)  # the held-open check writes here

def length():
    r = rng.random()
    if r < 0.3:
        return rng.randint(1, 4096)
    if r < 0.7:
        return rng.randint(4097, 64 * 1024)
    return rng.randint(64 * 1024 + 1, 300 * 1024)

def skip(n):
    return "zero" if rng.random() < 0.12 else str(rng.randint(0, pool - n))

plan = []
while len(plan) < 190:
    n = length()
    r = rng.random()
    if r < 0.35:  # across a chunk boundary
        boundary = rng.randrange(1, size // chunk) * chunk
        off = boundary - rng.randint(1, min(n, boundary) - 1) if n > 1 else boundary - 1
    elif r < 0.45:  # ending exactly at the end of the disk
        off = size - n
    elif r < 0.55:  # chunk-aligned start
        off = rng.randrange(0, size // chunk) * chunk
    else:
        off = rng.randrange(0, size - n + 1)
    off = max(0, min(off, size - n))
    if off < reserved[1] and off + n > reserved[0]:
        continue
    plan.append(("in", off, n, skip(n)))
for _ in range(6):
    n = rng.randint(2, 300 * 1024)
    plan.insert(rng.randrange(len(plan)), ("cross", size - rng.randint(1, n - 1), n, skip(n)))
for off in (size, size + 1, size + rng.randint(2, 1 << 20), size + (1 << 30)):
    n = rng.randint(1, 300 * 1024)
    plan.insert(rng.randrange(len(plan)), ("past", off, n, skip(n)))
for kind, off, n, s in plan:
    print(kind, off, n, s)
EOF
log "$(wc -l <"$T/plan") writes planned: $(grep -c '^in ' "$T/plan") inside, $(grep -c zero "$T/plan") of zeros, $(grep -c '^cross ' "$T/plan") crossing the end, $(grep -c '^past ' "$T/plan") past it"

# write_with_dd FILE OFFSET LENGTH SKIP [CONV]: LENGTH bytes at OFFSET in one
# write(2); status in RC, dd's messages in $T/run.err.
write_with_dd() {
    local input=$T/pool skip=$4
    if [[ $skip == zero ]]; then
        input=/dev/zero
        skip=0
    fi
    run_rc dd if="$input" of="$1" bs="$3" count=1 iflag=skip_bytes skip="$skip" \
        oflag=seek_bytes seek="$2" conv=notrunc${5:+,$5}
}

# check_views DIR REF: every view in DIR holds the bytes of REF, as qemu
# reads its format; `qemu-img check` is clean for formats that have checks.
check_views() {
    local dir=$1 ref=$2 view fmt
    cmp "$dir/disk.raw" "$ref" || fail "$dir/disk.raw differs from $ref"
    for view in "${VIEWS[@]}"; do
        fmt=$(qemu_format "$view")
        run_rc qemu-img compare -f "$fmt" "$dir/$view" -F raw "$ref"
        [[ $RC -eq 0 ]] || fail "$dir/$view: qemu-img compare with $ref exited $RC: $(cat "$T/run.out" "$T/run.err")"
        assert_eq "Images are identical." "$(cat "$T/run.out")" "$dir/$view: qemu-img compare with $ref"
        if qemu_checkable "$fmt"; then
            run_rc qemu-img check -f "$fmt" "$dir/$view"
            [[ $RC -eq 0 ]] || fail "$dir/$view: qemu-img check exited $RC: $(cat "$T/run.out" "$T/run.err")"
            assert_file_contains "$T/run.out" "^No errors were found on the image\.$" "$dir/$view: qemu-img check"
        fi
    done
}

# check_pristine: pc@pristine shows the source as it was made.
check_pristine() {
    cmp "$MNT/pc@pristine/disk.raw" "$src" || fail "pc@pristine/disk.raw differs from the original source"
    for view in disk.raw disk.vhd disk.qcow2; do
        run_rc qemu-img compare -f "$(qemu_format "$view")" "$MNT/pc@pristine/$view" -F raw "$src"
        assert_eq "Images are identical." "$(cat "$T/run.out")" "pc@pristine/$view: qemu-img compare with the original source"
    done
}

assert_source_unchanged() { # WHEN
    assert_eq "$src_sha" "$(sha "$src")" "sha256 of the source $1"
}

MNT=$T/mnt
STATE=$T/state
raw=$MNT/pc/disk.raw

# ---------------------------------------------------------------- writable

start_daemon "$MNT" --source pc="$src" --writable pc --state-dir "$STATE"
assert_file_contains "$DAEMON_LOG" "overlay of 'pc': made in $STATE/overlays/pc " "the overlay is made"
assert_eq 644 "$(stat -c %a "$raw")" "mode of the writable disk.raw"
assert_eq "$size" "$(stat -c %s "$raw")" "size of disk.raw"

# Refusals, before any write: the content stays the source's.
run_rc dd if="$T/pool" of="$raw" bs=4096 count=1 status=none
assert_eq 1 "$RC" "dd without conv=notrunc: exit status"
assert_file_has_text "$T/run.err" "failed to open '$raw': Operation not permitted" "dd without conv=notrunc"
assert_file_has_text "$DAEMON_LOG" "disk.raw of 'pc': refused an open with O_TRUNC" "log of the refused O_TRUNC"
run_rc truncate -s $((size / 2)) "$raw"
assert_eq 1 "$RC" "truncate -s of disk.raw: exit status"
assert_file_has_text "$T/run.err" "Operation not permitted" "truncate -s of disk.raw"
assert_file_has_text "$DAEMON_LOG" "disk.raw of 'pc': refused a change of size to $((size / 2))" "log of the refused truncation"
run_rc truncate -s $((size + MiB)) "$raw"
assert_eq 1 "$RC" "truncate -s to grow disk.raw: exit status"
run_rc truncate -s "$size" "$raw"
assert_eq 0 "$RC" "truncate -s to the size disk.raw has: exit status ($(cat "$T/run.err"))"
for view in disk.vhd disk.qcow2 disk-esx-flat.vmdk; do
    run_rc dd if="$T/pool" of="$MNT/pc/$view" bs=512 count=1 conv=notrunc status=none
    assert_eq 1 "$RC" "dd to $view: exit status"
    assert_file_has_text "$T/run.err" "Read-only file system" "dd to $view"
done
run_rc dd if="$T/pool" of="$MNT/pc@pristine/disk.raw" bs=512 count=1 conv=notrunc status=none
assert_file_has_text "$T/run.err" "Read-only file system" "dd to pc@pristine/disk.raw"
assert_eq "$size" "$(stat -c %s "$raw")" "size of disk.raw after the refusals"
cmp "$raw" "$src" || fail "disk.raw changed after refused writes"

# The writes, the same to disk.raw and to the copy; every 16th with fsync.
n=0
while read -r kind off len skip; do
    n=$((n + 1))
    conv=
    ((n % 16)) || conv=fsync
    write_with_dd "$raw" "$off" "$len" "$skip" "$conv"
    case $kind in
    in)
        [[ $RC -eq 0 ]] || fail "write $n ($len bytes at $off): dd exited $RC: $(cat "$T/run.err")"
        write_with_dd "$copy" "$off" "$len" "$skip"
        ;;
    cross)
        cut=$((size - off))
        assert_eq 1 "$RC" "write $n ($len bytes at $off, across the end): dd exit status"
        assert_file_has_text "$T/run.err" "error writing '$raw': No space left on device" "write $n across the end"
        assert_file_contains "$T/run.err" "^$cut bytes .* copied" "write $n across the end: bytes written"
        write_with_dd "$copy" "$off" "$cut" "$skip"
        ;;
    past)
        assert_eq 1 "$RC" "write $n ($len bytes at $off, past the end): dd exit status"
        assert_file_has_text "$T/run.err" "error writing '$raw': No space left on device" "write $n past the end"
        assert_file_contains "$T/run.err" "^0 bytes copied" "write $n past the end: bytes written"
        ;;
    esac
done <"$T/plan"
assert_eq "$size" "$(stat -c %s "$copy")" "size of the copy after the writes"
cmp -s "$copy" "$src" && fail "the writes left the copy as the source (nothing to check)"

# pwrite(2) itself: cut at the end, ENOSPC at and past it.
python3 - "$raw" "$size" >"$T/pwrite.out" <<'EOF'
import errno, os, sys
path, size = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_RDWR)
tail = os.pread(fd, 4096, size - 4096)
print("across", os.pwrite(fd, tail[-100:] + b"\x5a" * 900, size - 100))
for off in (size, size + 4096):
    try:
        print("at", off - size, os.pwrite(fd, b"\x5a", off))
    except OSError as e:
        print("at", off - size, errno.errorcode[e.errno])
print("tail unchanged", os.pread(fd, 4096, size - 4096) == tail)
print("size", os.fstat(fd).st_size)
os.close(fd)
EOF
assert_eq "across 100
at 0 ENOSPC
at 4096 ENOSPC
tail unchanged True
size $size" "$(cat "$T/pwrite.out")" "pwrite(2) across, at and past the end"

cmp "$raw" "$copy" || fail "disk.raw differs from the copy with the same writes"
log "comparing every view with the copy (writable, before a restart)"
check_views "$MNT/pc" "$copy"
check_pristine
assert_source_unchanged "after the writes"
stop_daemon
assert_source_unchanged "after the first daemon"

# ---------------------------------------------------------------- read-only

start_daemon "$MNT" --source pc="$src" --state-dir "$STATE"
assert_file_contains "$DAEMON_LOG" "source 'pc': overlay $STATE/overlays/pc \(.*\), read-only" "the overlay opened read-only"
assert_eq 444 "$(stat -c %a "$raw")" "mode of disk.raw without --writable"
run_rc dd if="$T/pool" of="$raw" bs=4096 count=1 conv=notrunc status=none
assert_eq 1 "$RC" "dd to disk.raw without --writable: exit status"
assert_file_has_text "$T/run.err" "Read-only file system" "dd to disk.raw without --writable"
run_rc python3 -c 'import os, sys; os.open(sys.argv[1], os.O_RDWR)' "$raw"
assert_file_has_text "$T/run.err" "[Errno 30] Read-only file system" "open(O_RDWR) of disk.raw without --writable"
log "comparing every view with the copy (read-only overlay)"
check_views "$MNT/pc" "$copy"
check_pristine
stop_daemon
assert_source_unchanged "after the read-only daemon"

# ---------------------------------------------------------------- writable again

start_daemon "$MNT" --source pc="$src" --writable pc --state-dir "$STATE"
log "comparing every view with the copy (writable again)"
check_views "$MNT/pc" "$copy"
check_pristine

# A write while disk.vhd is held open, into 24-26 MiB: a hole of the source
# that no write touched, so the dynamic VHD gains a block.
cmp -s <(head -c $((2 * MiB)) /dev/zero) <(dd if="$copy" bs=1M skip=24 count=2 status=none) ||
    fail "24-26 MiB of the copy is not a hole (the held-open check needs one)"
cp --sparse=always "$copy" "$T/copy.before"
hole_off=$((24 * MiB + 12345))
hole_len=$((100 * KiB + 7))
dd if="$T/pool" of="$copy" bs="$hole_len" count=1 iflag=skip_bytes skip=4321 \
    oflag=seek_bytes seek="$hole_off" conv=notrunc status=none
python3 - "$MNT/pc/disk.vhd" "$raw" "$T/pool" "$hole_off" "$hole_len" "$T" >"$T/held.out" <<'EOF'
import os, sys
vhd, raw, pool, tmp = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[6]
off, length = int(sys.argv[4]), int(sys.argv[5])

def read_all(fd):
    out, at = bytearray(), 0
    while True:
        b = os.pread(fd, 1 << 20, at)
        if not b:
            return bytes(out)
        out += b
        at += len(b)

held = os.open(vhd, os.O_RDONLY)
old = read_all(held)
with open(f"{tmp}/held-before.vhd", "wb") as f:
    f.write(old)
print("old", len(old), os.fstat(held).st_size)

with open(pool, "rb") as f:
    f.seek(4321)
    data = f.read(length)
w = os.open(raw, os.O_RDWR)
print("wrote", os.pwrite(w, data, off))
os.fsync(w)
os.close(w)

print("held-fstat-after-write", os.fstat(held).st_size)
after = read_all(held)
print("held-read-after-write", len(after), after == old)

fresh = os.open(vhd, os.O_RDONLY)
new = read_all(fresh)
print("fresh", len(new), os.fstat(fresh).st_size)
with open(f"{tmp}/fresh.vhd", "wb") as f:
    f.write(new)
# The held descriptor again, now that a fresh open has read the new file.
again = read_all(held)
print("held-fstat-after-fresh", os.fstat(held).st_size)
print("held-read-after-fresh", len(again), again == old)
os.close(fresh)
os.close(held)
EOF
sed "s/^/$TEST_NAME: disk.vhd held open: /" "$T/held.out" >&2
old_size=$(sed -n 's/^old \([0-9]*\) .*/\1/p' "$T/held.out")
assert_eq "old $old_size $old_size" "$(grep '^old ' "$T/held.out")" "disk.vhd held open: bytes read and fstat size"
assert_eq "wrote $hole_len" "$(grep '^wrote ' "$T/held.out")" "the write into the hole"
assert_eq "held-read-after-write $old_size True" "$(grep '^held-read-after-write ' "$T/held.out")" \
    "disk.vhd held open: reads after the write (the old file, whole)"
new_size=$(stat -c %s "$MNT/pc/disk.vhd")
# A dynamic VHD block: its 512-byte sector bitmap and 2 MiB of data.
assert_eq $((old_size + 512 + 2 * MiB)) "$new_size" "stat -c %s of disk.vhd after the write (one more block)"
assert_eq "fresh $new_size $new_size" "$(grep '^fresh ' "$T/held.out")" "disk.vhd opened after the write: bytes read and fstat size"
run_rc qemu-img compare -f vpc "$T/held-before.vhd" -F raw "$T/copy.before"
assert_eq "Images are identical." "$(cat "$T/run.out")" "disk.vhd held open: a consistent VHD of the content before the write"
run_rc qemu-img compare -f vpc "$T/fresh.vhd" -F raw "$copy"
assert_eq "Images are identical." "$(cat "$T/run.out")" "disk.vhd opened after the write: the new content"
run_rc qemu-img compare -f vpc "$MNT/pc/disk.vhd" -F raw "$copy"
assert_eq "Images are identical." "$(cat "$T/run.out")" "disk.vhd opened again: the new content"
cmp "$raw" "$copy" || fail "disk.raw differs from the copy after the write into the hole"
check_pristine
stop_daemon
assert_source_unchanged "at the end"

# The held descriptor once a fresh open has read the new file: it still
# reads the file it opened, whole (its reads bypass the kernel's page cache,
# which is per inode and would hand it the fresh open's pages). fstat(2)
# reports the size of the newest layout: the kernel does not tell the
# daemon which open a stat comes from. So a reader that learns the size at
# open, as qemu-img does, reads a consistent file.
assert_eq "held-read-after-fresh $old_size True" "$(grep '^held-read-after-fresh ' "$T/held.out")" \
    "disk.vhd held open: reads after a fresh open has read the new file (the old file, whole)"
assert_eq "held-fstat-after-write $new_size" "$(grep '^held-fstat-after-write ' "$T/held.out")" \
    "disk.vhd held open: fstat size after the write (the newest layout's)"
assert_eq "held-fstat-after-fresh $new_size" "$(grep '^held-fstat-after-fresh ' "$T/held.out")" \
    "disk.vhd held open: fstat size after a fresh open (the newest layout's)"
exit 0

#!/bin/bash
# The overlay survives the daemon being killed (SIGKILL) in the middle of a
# stream of writes through disk.raw, over and over:
#
#  - Each round, a writer opens disk.raw O_RDWR and writes (random offsets
#    and sizes from 1 byte to 192 KiB, unaligned, across 64 KiB chunk
#    boundaries, into the short last chunk, some all zeros; each write's
#    bytes derived from its round and sequence number), calling fsync(2)
#    every k writes (k changes from round to round; in some rounds never)
#    and noting, once fsync has returned, how many writes it covers. The
#    daemon is killed at a random moment; the writer's next call fails
#    (ENOTCONN) and it stops, noting how many writes it started and how many
#    returned.
#  - The dead mount is removed and the daemon started again over the same
#    overlay. Then, reading the whole disk through disk.raw never fails, and
#    every 64 KiB chunk holds exactly the content the chunk had after some
#    prefix of the writes that touched it (never torn, no bytes that no
#    write put there), a prefix that includes every write covered by a
#    completed fsync, and (SIGKILL leaves the page cache, so every log record
#    whose pwrite returned is on file) every write that returned.
#  - The restarted daemon logs no error; in at least one round it says it
#    "replayed N record(s)"; the count of such rounds is printed.
#  - At the end every view compares identical with the final content,
#    pc@pristine still shows the source, and the source's sha256 never changed.
#
# The overlay is kept for all rounds: the crash rules must hold over a log
# that grows, has records punched out and has been recovered many times, not
# only over a fresh one. Each round's expected content is built on the
# content verified after the previous round, so a failure points at the
# round that caused it.
source "$(dirname "$0")/lib.sh"
need_root
need_cmd qemu-img python3 sha256sum dd truncate cmp

MiB=$((1 << 20))
# Not a multiple of the chunk size: the last chunk is short.
size=$((32 * MiB + 20000))
SEED=${P2VFS_SEED:-4242}
ROUNDS=${P2VFS_CRASH_ROUNDS:-16}
log "seed $SEED, $ROUNDS rounds (P2VFS_SEED, P2VFS_CRASH_ROUNDS to change them)"

sha() { sha256sum <"$1" | cut -d' ' -f1; }

src=$T/pc.img
truncate -s "$size" "$src"
head -c $((8 * MiB)) /dev/urandom | dd of="$src" bs=64K conv=notrunc status=none
head -c $((4 * MiB)) /dev/urandom | dd of="$src" bs=64K seek=$((20 * MiB)) oflag=seek_bytes conv=notrunc status=none
head -c 100000 /dev/urandom | dd of="$src" bs=64K seek=$((size - 100000)) oflag=seek_bytes conv=notrunc status=none
src_sha=$(sha "$src")

# The writes of a round, shared by the writer and the checker.
cat >"$T/crash_writes.py" <<'EOF'
import random

CHUNK = 64 * 1024

def plan(seed, rnd, size):
    """(offset, length, zero) of the writes of round rnd, endless."""
    rng = random.Random(f"plan/{seed}/{rnd}")
    while True:
        r = rng.random()
        n = rng.randint(1, 4096) if r < 0.4 else rng.randint(4097, CHUNK) if r < 0.75 \
            else rng.randint(CHUNK + 1, 192 * 1024)
        r = rng.random()
        if r < 0.3:  # across a chunk boundary
            b = rng.randrange(1, size // CHUNK + 1) * CHUNK
            off = b - rng.randint(1, max(1, n - 1))
        elif r < 0.4:  # whole chunks
            n = CHUNK * rng.randint(1, 3)
            off = rng.randrange(0, size // CHUNK - 3) * CHUNK
        elif r < 0.5:  # up to the end, into the short last chunk
            off = size - n - rng.randint(0, 3000)
        else:
            off = rng.randrange(0, size - n)
        off = max(0, min(off, size - n))
        yield off, n, rng.random() < 0.08

def data(seed, rnd, i, n, zero):
    """The bytes of write i of round rnd."""
    return bytes(n) if zero else random.Random(f"data/{seed}/{rnd}/{i}").randbytes(n)
EOF

# writer.py DISK SEED ROUND SIZE K ACKED STATUS: writes until an error; after
# every fsync (each K writes; K=0: never) appends the writes it covers to
# ACKED; at the end STATUS holds "STARTED COMPLETED WHAT".
cat >"$T/writer.py" <<'EOF'
import errno, os, sys
sys.path.insert(0, os.path.dirname(sys.argv[0]))
from crash_writes import plan, data

disk, seed, rnd, size, k, acked_path, status_path = sys.argv[1:]
seed, rnd, size, k = int(seed), int(rnd), int(size), int(k)

def done(started, completed, what):
    with open(status_path, "w") as f:
        f.write(f"{started} {completed} {what}\n")
    sys.exit(0)

acked = open(acked_path, "a")
try:
    fd = os.open(disk, os.O_RDWR)
except OSError as e:
    done(0, 0, f"open:{errno.errorcode.get(e.errno, e.errno)}")
for i, (off, n, zero) in enumerate(plan(seed, rnd, size)):
    buf = data(seed, rnd, i, n, zero)
    try:
        wrote = os.pwrite(fd, buf, off)
    except OSError as e:
        done(i + 1, i, f"write:{errno.errorcode.get(e.errno, e.errno)}")
    if wrote != n:
        done(i + 1, i, f"write:short:{wrote}/{n}")
    if k and (i + 1) % k == 0:
        try:
            os.fsync(fd)
        except OSError as e:
            done(i + 1, i + 1, f"fsync:{errno.errorcode.get(e.errno, e.errno)}")
        acked.write(f"{i + 1}\n")
        acked.flush()
    if i + 1 >= 200000:
        done(i + 1, i + 1, "finished")
EOF

# checker.py DISK BASE NEW SEED ROUND STATUS ACKED: checks DISK (read through
# the mount) against the writes of the round over BASE (the content before
# it); writes what DISK holds to NEW; prints a summary line.
#
# What DISK must hold: BASE with every write that returned applied, in order,
# then a prefix of the write in flight when the daemon died (the kernel
# sends a write as several requests, in order, and each request lands chunk
# by chunk). A write that returned is never lost: SIGKILL keeps the page
# cache, so its log record is on file and replay finds it; the crash rules
# promise less (the writes covered by a completed fsync), and a mismatch
# says which of the two was broken.
cat >"$T/checker.py" <<'EOF'
import os, sys
sys.path.insert(0, os.path.dirname(sys.argv[0]))
from crash_writes import CHUNK, plan, data

disk_path, base_path, new_path, seed, rnd, status_path, acked_path = sys.argv[1:]
seed, rnd = int(seed), int(rnd)
started, completed, what = open(status_path).read().split()
started, completed = int(started), int(completed)
lines = open(acked_path).read().split()
acked = int(lines[-1]) if lines else 0
assert acked <= completed <= started <= completed + 1, (acked, completed, started)

def fail(msg):
    print(f"round {rnd}: {msg}", file=sys.stderr)
    sys.exit(1)

base = open(base_path, "rb").read()
size = len(base)
fd = os.open(disk_path, os.O_RDONLY)
disk, at = bytearray(), 0
while at < size:
    try:
        b = os.pread(fd, 1 << 20, at)
    except OSError as e:
        fail(f"reading disk.raw at {at:#x} failed: {e.strerror}")
    if not b:
        fail(f"disk.raw ends at {at}, expected {size} bytes")
    disk += b
    at += len(b)
if os.pread(fd, 1, size):
    fail(f"disk.raw is longer than {size} bytes")
os.close(fd)

gen = plan(seed, rnd, size)
writes = [next(gen) for _ in range(started)]
expected = bytearray(base)
for i in range(completed):
    off, n, zero = writes[i]
    expected[off:off + n] = data(seed, rnd, i, n, zero)
# The write in flight: the longest prefix of it that DISK holds; the rest
# must be as before it.
flight = ""
if started > completed:
    off, n, zero = writes[completed]
    d = data(seed, rnd, completed, n, zero)
    p = 0
    while p < n and disk[off + p] == d[p]:
        p += 1
    expected[off:off + p] = d[:p]
    flight = f", {p} of {n} bytes of the write in flight"

if disk != expected:
    # Say what the differing bytes are; in the first chunks that differ,
    # whether a write covered by fsync lost any byte it should still own.
    bad = [c for c in range(0, size, CHUNK) if disk[c:c + CHUNK] != expected[c:c + CHUNK]]
    promised = first = None
    for c in bad[:64]:
        end = min(size, c + CHUNK)
        owner = [None] * (end - c)  # the last write that returned, per byte
        for i in range(completed):
            off, n, zero = writes[i]
            s, e = max(off, c), min(off + n, end)
            if s < e:
                owner[s - c:e - c] = [i] * (e - s)
        for x in range(c, end):
            if disk[x] != expected[x]:
                first = x if first is None else first
                w = owner[x - c]
                if w is not None and w < acked:
                    promised = x
                    break
        if promised is not None:
            break
    x = promised if promised is not None else first
    w = max((i for i in range(completed) if writes[i][0] <= x < writes[i][0] + writes[i][1]),
            default=None)
    got = "no write's byte (foreign)"
    if base[x] == disk[x]:
        got = "the byte before the round"
    for i in reversed(range(started)):
        off, n, zero = writes[i]
        if off <= x < off + n and data(seed, rnd, i, n, zero)[x - off] == disk[x]:
            got = f"write {i}'s byte"
            break
    if promised is not None:
        kind = "a write covered by a completed fsync was lost (the crash rules promise it)"
    elif w is not None:
        kind = ("a write that had returned was lost (not covered by fsync, but its log record "
                "was written before the kill)")
    else:
        kind = "bytes that no write put there"
    fail(f"{kind}: {len(bad)} chunk(s) differ, the first {[c // CHUNK for c in bad[:8]]}; "
         f"byte {x:#x} is {disk[x]:#04x} ({got}), expected {expected[x]:#04x} "
         f"({'write %d' % w if w is not None else 'as before the round'}); {started} write(s) "
         f"started, {completed} returned, {acked} covered by fsync{flight}")

with open(new_path, "wb") as f:
    f.write(disk)
print(f"{started} write(s) started ({what}), {completed} returned, {acked} covered by fsync{flight}")
EOF

MNT=$T/mnt
STATE=$T/state
daemon_args=(--source pc="$src" --writable pc --state-dir "$STATE")
cp --sparse=always "$src" "$T/base.img"

start_daemon "$MNT" "${daemon_args[@]}"
# rand N: RAND = a number in [0, N), from a fixed sequence.
rng_state=$SEED
rand() {
    rng_state=$(((rng_state * 1103515245 + 12345) % 2147483648))
    RAND=$(((rng_state >> 8) % $1))
}
syncs=(1 3 8 32 0)
replay_rounds=0
for ((round = 1; round <= ROUNDS; round++)); do
    rand ${#syncs[@]}
    k=${syncs[RAND]}
    rand 1500
    delay_ms=$((50 + RAND))
    rm -f "$T/acked" "$T/status"
    : >"$T/acked"
    bg_tracked python3 "$T/writer.py" "$MNT/pc/disk.raw" "$SEED" "$round" "$size" "$k" "$T/acked" "$T/status"
    writer=$BG_PID
    sleep "$((delay_ms / 1000)).$(printf %03d $((delay_ms % 1000)))"
    kill_daemon_hard
    wait_for 20 eval '! kill -0 '"$writer"' 2>/dev/null' || fail "round $round: the writer did not stop after the daemon was killed"
    wait "$writer" || fail "round $round: the writer exited with status $?"
    _REAPED[$writer]=1
    [[ -s $T/status ]] || fail "round $round: the writer left no status"
    # The killed daemon's requests end with ENOTCONN, or ECONNABORTED for a
    # request in flight as it died (the writer's open of disk.raw too, when
    # the kill comes that early); the one whose reply was being written as
    # the process died can end with EIO (the kernel could not copy the reply
    # in). The daemon itself must not have answered any request with an
    # error.
    case $(cut -d' ' -f3 "$T/status") in
    write:ENOTCONN | fsync:ENOTCONN | open:ENOTCONN | write:ECONNABORTED | fsync:ECONNABORTED | open:ECONNABORTED | write:short:*) ;;
    write:EIO | fsync:EIO) log "round $round: the request in flight when the daemon died ended with EIO" ;;
    *) fail "round $round: the writer stopped with '$(cat "$T/status")', expected ENOTCONN from the killed daemon" ;;
    esac
    assert_file_lacks "$DAEMON_LOG" "p2vfsd: (error|critical):" "round $round: the killed daemon's log"

    force_unmount "$MNT"
    is_mounted "$MNT" && fail "round $round: the dead mount at $MNT cannot be removed"
    start_daemon "$MNT" "${daemon_args[@]}"
    replayed=$(sed -n "s|.*overlay segment $STATE/overlays/pc/user.*: replayed \([0-9]*\) record(s).*|\1|p" "$DAEMON_LOG")
    [[ -n $replayed ]] && replay_rounds=$((replay_rounds + 1))
    torn=
    grep -q "dropping the last" "$DAEMON_LOG" && torn=", a torn end of the log dropped"

    run_rc python3 "$T/checker.py" "$MNT/pc/disk.raw" "$T/base.img" "$T/next.img" "$SEED" "$round" "$T/status" "$T/acked"
    [[ $RC -eq 0 ]] || fail "$(cat "$T/run.err") (fsync every $k, killed after ${delay_ms} ms; writer: $(cat "$T/status"); P2VFS_KEEP=1 keeps the overlay)"
    log "round $round: fsync every $k, killed after ${delay_ms} ms: $(cat "$T/run.out"); replayed ${replayed:-0} record(s)$torn"
    assert_file_lacks "$DAEMON_LOG" "error|damaged" "round $round: log of the restarted daemon"
    mv "$T/next.img" "$T/base.img"
    cmp "$MNT/pc@pristine/disk.raw" "$src" || fail "round $round: pc@pristine/disk.raw differs from the source"
    assert_eq "$src_sha" "$(sha "$src")" "round $round: sha256 of the source"
done

log "$replay_rounds of $ROUNDS round(s) replayed records written since the last sync"
assert_lt 0 "$replay_rounds" "rounds whose restart replayed records"
cmp -s "$T/base.img" "$src" && fail "the rounds left the disk as the source (nothing was checked)"
log "comparing every view with the content after the last round"
assert_views_identical "$T/base.img" "$MNT/pc"
stop_daemon
assert_eq "$src_sha" "$(sha "$src")" "sha256 of the source at the end"
exit 0

#!/bin/bash
# Any range of a view file reads the same bytes as that range of one
# sequential read of the whole file. For every file in the folders of the
# odd and random sources (whatever formats the table has: the files present
# are iterated), reads at random offsets and lengths are compared with the
# sequential copy:
#  - reads across the boundaries a layout has: every SEEK_DATA/SEEK_HOLE
#    transition of the file (header -> padding -> table -> data), the first
#    sectors, powers of two and their neighbours, multiples of the usual
#    block and grain sizes (64 KiB, 1 MiB, 2 MiB, 2 MiB + 512);
#  - reads that reach or start at the end of the file (short reads), and
#    past it (nothing);
#  - reads anywhere, 1 byte to 4 MiB long.
# Each read is done twice: buffered, on a fresh descriptor (the page cache
# of a FUSE file is dropped at open, so the kernel asks the daemon for the
# pages), and with O_DIRECT into a page-aligned buffer, so the daemon gets
# the exact offset and length (up to 1 MiB per request), which reach the
# views' segment and run boundaries and the splice path unaligned.
#
# The random choices come from a fixed seed, printed first; set
# P2VFS_RANDOM_SEED to another to explore, or to a printed one to reproduce.
source "$(dirname "$0")/lib.sh"
need_root
need_cmd python3 timeout

SEED=${P2VFS_RANDOM_SEED:-1968}
READS=${P2VFS_RANDOM_READS:-120}
printf 'seed: %s (P2VFS_RANDOM_SEED=%s reproduces this run), %s reads per file and mode\n' \
    "$SEED" "$SEED" "$READS"

cat >"$T/random_reads.py" <<'EOF'
import mmap
import os
import random
import sys

path, copy, progress = sys.argv[1], sys.argv[2], sys.argv[5]
seed, count = int(sys.argv[3]), int(sys.argv[4])
MiB = 1 << 20
with open(copy, "rb") as f:
    whole = f.read()
size = len(whole)
rng = random.Random(f"{seed}:{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}")


def transitions():
    # Where data and holes meet, as the view reports them (lseek on FUSE).
    out, fd, off = set(), os.open(path, os.O_RDONLY), 0
    try:
        while off < size:
            try:
                d = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                break
            h = os.lseek(fd, d, os.SEEK_HOLE)
            out.update((d, h))
            off = h
    finally:
        os.close(fd)
    return out


bounds = {0, size} | transitions()
bounds |= {512 * i for i in range(1, 17)}
for j in range(9, 64):
    if 1 << j > size:
        break
    bounds |= {(1 << j) - 512, 1 << j, (1 << j) + 512}
for unit in (64 << 10, MiB, 2 * MiB, 2 * MiB + 512):
    for _ in range(8):
        k = rng.randrange(max(1, size // unit) + 1)
        bounds |= {k * unit + c for c in (0, 512, 1536, 2048, 2560)}
bounds = sorted(b for b in bounds if 0 <= b <= size)


def span():
    # Mostly short, sometimes a block or several.
    return rng.choice([0, 1, 511, 512, 4095, 4096, rng.randrange(1, 8192),
                       rng.randrange(1, MiB), rng.randrange(1, 3 * MiB)])


reads = []
for b in rng.sample(bounds, min(len(bounds), count // 2)):
    before, after = min(span(), b), span()
    reads.append((b - before, before + after or 1))
for _ in range(count // 8):  # at and past the end of the file
    off = size - rng.randrange(0, min(size, 3 * MiB) + 1)
    reads.append((off, (size - off) + rng.randrange(1, 2 * MiB)))
reads += [(size, 4096), (size + 512, 512)]
while len(reads) < count:
    reads.append((rng.randrange(size), int(2 ** rng.uniform(0, 22))))


def buffered(off, n):
    with open(path, "rb", buffering=0) as f:
        f.seek(off)
        out = b""
        while len(out) < n:
            chunk = f.read(n - len(out))
            if not chunk:
                break
            out += chunk
        return out


def direct(off, n):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        buf = mmap.mmap(-1, max(n, 1))  # page-aligned, as O_DIRECT wants
        got = 0
        while got < n:
            k = os.preadv(fd, [memoryview(buf)[got:n]], off + got)
            if k == 0:
                break
            got += k
        return bytes(buf[:got])
    finally:
        os.close(fd)


failures = 0
for mode, read in (("buffered", buffered), ("O_DIRECT", direct)):
    for off, n in reads:
        with open(progress, "w") as note:  # names the read that hangs, if one does
            note.write(f"{mode} read of {n} bytes at offset {off} ({hex(off)})")
        got, want = read(off, n), whole[off:off + n]
        if got != want:
            failures += 1
            if len(got) != len(want):
                why = f"{len(got)} bytes instead of {len(want)}"
            else:
                i = next(i for i in range(len(got)) if got[i] != want[i])
                why = (f"differ: byte {i + 1} (file offset {off + i}) is 0x{got[i]:02x}, "
                       f"the sequential read has 0x{want[i]:02x}")
            print(f"{path}: {mode} read of {n} bytes at offset {off} ({hex(off)}): {why}")
            if failures >= 10:
                sys.exit(1)
print(f"{path}: {2 * len(reads)} reads over {len(bounds)} boundaries, {failures} wrong")
sys.exit(1 if failures else 0)
EOF

declare -A SRC=()
SRC[odd]=$(fixture odd)
SRC[random]=$(fixture random)
# Both read paths: copies (the default) and splices (--splice).
for mode in --no-splice --splice; do
    start_daemon "$T/mnt$mode" "$mode" --source odd="${SRC[odd]}" --source random="${SRC[random]}"
    log "read path: $mode"
    for name in odd random; do
        files=()
        while IFS= read -r f; do files+=("$f"); done < <(find "$T/mnt$mode/$name" -maxdepth 1 -type f | LC_ALL=C sort)
        [[ ${#files[@]} -ge 2 ]] || fail "$name: expected the view files of every format, found ${#files[@]}"
        for f in "${files[@]}"; do
            what="$name/$(basename "$f") ($mode)"
            cat "$f" >"$T/seq"
            assert_eq "$(stat -c %s "$f")" "$(stat -c %s "$T/seq")" "$what: bytes of one sequential read"
            # A read that never returns fails the test instead of hanging it.
            RC=0
            timeout -s KILL 300 python3 "$T/random_reads.py" "$f" "$T/seq" "$SEED" "$READS" \
                "$T/current_read" >"$T/reads.out" 2>&1 || RC=$?
            cat "$T/reads.out"
            [[ $RC -ne 137 ]] ||
                fail "$what: $(cat "$T/current_read") did not return within 300 s (seed $SEED)"
            [[ $RC -eq 0 ]] || fail "$what: random reads differ from the sequential read (seed $SEED)"
        done
    done
    stop_daemon
done

#!/usr/bin/env python3
"""Writes sparse disk images with random extent maps, for the randomized view test.

make_random_sources.py SEED COUNT DIR

Each image is a random size (some whole sectors, some not) made of runs of
four kinds at random offsets and lengths: data (random bytes), written zeros
(allocated, all zero), preallocated ranges (fallocate: unwritten extents) and
holes. Some short data runs are placed across the block sizes the formats use
(4 KiB .. 32 MiB) so that runs straddle block, grain and cluster boundaries.
The same SEED always gives the same images.
"""
import os
import random
import sys

BOUNDARIES = [4096, 65536, 1 << 20, 2 << 20, 32 << 20]


def make(path, rng):
    size = rng.choice([
        rng.randrange(1, 4096),
        rng.randrange(1, 64) * 65536,
        rng.randrange(1, 48 << 20),
        rng.randrange(1, 96) * (1 << 20),
    ])
    fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
    try:
        os.ftruncate(fd, size)
        pos = 0
        while pos < size:
            kind = rng.choice(["data", "data", "zero", "prealloc", "hole", "hole"])
            length = min(size - pos, rng.choice([rng.randrange(1, 4096),
                                                 rng.randrange(1, 1 << 20),
                                                 rng.randrange(1, 6 << 20)]))
            if kind == "data":
                os.pwrite(fd, rng.randbytes(length), pos)
            elif kind == "zero":
                os.pwrite(fd, bytes(length), pos)
            elif kind == "prealloc":
                try:
                    os.posix_fallocate(fd, pos, length)
                except OSError:
                    pass
            pos += length
        for _ in range(rng.randrange(0, 6)):
            b = rng.choice(BOUNDARIES)
            if b >= size:
                continue
            at = rng.randrange(1, size // b + 1) * b - rng.randrange(1, 512)
            length = min(size - at, rng.randrange(2, 2048))
            if at >= 0 and length > 0:
                os.pwrite(fd, rng.randbytes(length), at)
    finally:
        os.close(fd)
    return size


def main():
    seed, count, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    rng = random.Random(seed)
    os.makedirs(out, exist_ok=True)
    for i in range(count):
        size = make(os.path.join(out, f"r{i:02d}.img"), rng)
        print(f"r{i:02d} {size}")


if __name__ == "__main__":
    main()

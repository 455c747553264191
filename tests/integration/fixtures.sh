#!/bin/bash
# Builds one test fixture (a source disk image) into a directory.
#
#   bash fixtures.sh NAME DESTDIR
#
# DESTDIR receives disk.img and, for file-system fixtures, tree/ (the files
# the file system was populated from, for comparison). DESTDIR must not exist
# or be empty. lib.sh calls this through `fixture NAME`, which builds into a
# temporary directory and renames it into the cache, so a killed build never
# leaves a half-made fixture behind.
#
# Data is deterministic: it comes from AES-CTR keystreams keyed by a name, and
# mkfs uses a fixed UUID, hash seed and clock. Two builds of the same recipe
# give the same image, except for the inode change times in sparse-ext4
# (mkfs -d copies them from the tree, and a ctime cannot be set).
#
# The cache key is a hash of this file: changing any recipe rebuilds.
#
# Fixtures:
#   sparse-ext4  4 GiB sparse image, MBR, one Linux partition from 1 MiB to the
#                end, ext4 holding ~150 MiB: 300 small text files in nested
#                directories and a dozen 1-20 MiB files of random bytes.
#   random       64 MiB of random bytes, fully allocated.
#   tiny         4096 bytes, none of them zero.
#   odd          10 MiB + 12345 bytes (not a multiple of 512), sparse, with
#                data runs at unaligned offsets, one of them ending at EOF.
#   huge         1 TiB sparse, 8 KiB of data at the start and at the end.
set -euo pipefail

usage() {
    echo "usage: $0 {sparse-ext4|random|tiny|odd|huge} DESTDIR" >&2
    exit 2
}

# gen_bytes KEY COUNT: COUNT deterministic pseudo-random bytes on stdout.
# AES-128-CTR over zeros with a key derived from KEY runs at several GB/s.
gen_bytes() {
    local key count
    key=$(printf '%s' "$1" | sha256sum | cut -c1-32)
    count=$2
    head -c "$count" /dev/zero |
        openssl enc -aes-128-ctr -nosalt -K "$key" -iv 00000000000000000000000000000000
}

# put_bytes FILE OFFSET COUNT KEY: overwrite COUNT bytes at OFFSET in place.
put_bytes() {
    local file=$1 offset=$2 count=$3 key=$4
    gen_bytes "$key" "$count" |
        dd of="$file" bs=1M seek="$offset" oflag=seek_bytes conv=notrunc status=none
}

# The fixed clock for file times and mkfs.
readonly FIXED_TIME=1700000000

build_tree() {
    local tree=$1 d s f i n
    mkdir -p "$tree"
    # 300 small text files: 10 top dirs x 3 subdirs x 10 files, sizes vary.
    for d in $(seq -w 0 9); do
        for s in a b c; do
            mkdir -p "$tree/dir$d/sub$s"
            for f in $(seq -w 0 9); do
                n=$((10#$d * 37 + 10#$f * 11 + ${#s}))
                {
                    printf 'file dir%s/sub%s/text%s.txt\n' "$d" "$s" "$f"
                    for ((i = 0; i < n; i++)); do
                        printf 'line %04d of dir%s/sub%s/text%s: the quick brown fox %d\n' \
                            "$i" "$d" "$s" "$f" "$((i * 7919 % 10007))"
                    done
                } >"$tree/dir$d/sub$s/text$f.txt"
            done
        done
    done
    # Larger files of random content, 1-20 MiB, 148 MiB in all, one of them
    # not a multiple of the 4 KiB block size.
    mkdir -p "$tree/blobs/deeper/deepest"
    local sizes=(20 20 20 18 16 13 11 9 7 5 3 2 1) idx=0
    for n in "${sizes[@]}"; do
        gen_bytes "blob$idx" $((n << 20)) >"$tree/blobs/blob$idx.bin"
        idx=$((idx + 1))
    done
    gen_bytes "odd-blob" $(((1 << 20) + 777)) >"$tree/blobs/deeper/deepest/odd.bin"
    # A few shapes file systems care about.
    : >"$tree/empty-file"
    mkdir -p "$tree/empty-dir"
    ln -s ../blobs/blob12.bin "$tree/dir0/link-to-blob"
    printf 'name with spaces\n' >"$tree/dir1/a file with spaces.txt"
    find "$tree" -exec touch -h -d "@$FIXED_TIME" {} +
}

build_sparse_ext4() {
    local dest=$1 img=$1/disk.img
    local size=$((4 << 30)) part_start=$((1 << 20))
    build_tree "$dest/tree"
    truncate -s "$size" "$img"
    # One Linux partition from sector 2048 (1 MiB) to the end of the disk.
    printf 'label: dos\nlabel-id: 0x7032766d\nstart=2048, type=83\n' |
        sfdisk --quiet --no-reread --no-tell-kernel "$img"
    local blocks=$(((size - part_start) / 4096))
    E2FSPROGS_FAKE_TIME=$FIXED_TIME mkfs.ext4 -q -F -b 4096 \
        -U 6d3a1f8e-2c4b-4e1d-9a7f-3b5c8d2e1f00 \
        -E "offset=$part_start,hash_seed=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0,root_owner=0:0" \
        -d "$dest/tree" "$img" "$blocks"
    # mkfs must not have grown the image past the partition table's end.
    [[ $(stat -c %s "$img") -eq $size ]] || {
        echo "fixtures.sh: mkfs changed the size of $img" >&2
        exit 1
    }
}

build_random() {
    gen_bytes random $((64 << 20)) >"$1/disk.img"
}

build_tiny() {
    # 4096 bytes with no zero byte: a keystream with its zero bytes made 0xff.
    gen_bytes tiny 4096 | tr '\000' '\377' >"$1/disk.img"
}

build_odd() {
    local img=$1/disk.img size=$(((10 << 20) + 12345))
    truncate -s "$size" "$img"
    put_bytes "$img" 0 1000 odd-a                        # the first sector, partly
    put_bytes "$img" 1234567 5000 odd-b                  # unaligned, inside one grain
    put_bytes "$img" $(((3 << 20) + 1)) 70000 odd-c      # crosses a 64 KiB grain boundary
    put_bytes "$img" $(((8 << 20) - 100)) 300 odd-d      # crosses a 2 MiB block boundary
    put_bytes "$img" $((size - 777)) 777 odd-e           # the last bytes of the file
    [[ $(stat -c %s "$img") -eq $size ]]
}

build_huge() {
    local img=$1/disk.img size=$((1 << 40))
    truncate -s "$size" "$img"
    put_bytes "$img" 0 8192 huge-head
    put_bytes "$img" $((size - 8192)) 8192 huge-tail
    [[ $(stat -c %s "$img") -eq $size ]]
}

main() {
    [[ $# -eq 2 ]] || usage
    local name=$1 dest=$2
    if [[ -e $dest ]] && [[ -n $(ls -A "$dest") ]]; then
        echo "fixtures.sh: $dest exists and is not empty" >&2
        exit 2
    fi
    for cmd in openssl sha256sum truncate dd; do
        command -v "$cmd" >/dev/null || { echo "fixtures.sh: $cmd not found" >&2; exit 1; }
    done
    mkdir -p "$dest"
    case $name in
    sparse-ext4)
        for cmd in sfdisk mkfs.ext4; do
            command -v "$cmd" >/dev/null || { echo "fixtures.sh: $cmd not found" >&2; exit 1; }
        done
        build_sparse_ext4 "$dest"
        ;;
    random) build_random "$dest" ;;
    tiny) build_tiny "$dest" ;;
    odd) build_odd "$dest" ;;
    huge) build_huge "$dest" ;;
    *) usage ;;
    esac
}

main "$@"

// Fuzz target for guest inspection's parsers: the input is a whole disk; its
// partition table is read with 512- and 4096-byte sectors, and every
// partition and the whole disk are probed for a file system.
//
// Running it (Clang with libFuzzer):
//   cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++
//   ninja -C build-fuzz guest_parsers_fuzz
//   mkdir -p /tmp/guest-corpus
//   build-fuzz/tests/fuzz/guest_parsers_fuzz -max_len=262144 -timeout=10 NEW SEEDS
// with NEW = /tmp/guest-corpus, where libFuzzer keeps the inputs it finds,
// and SEEDS = tests/fuzz/corpus/guest_parsers, the checked-in seeds.
// A crash leaves crash-<sha1> in the current directory: run the binary on
// that file alone to reproduce, and add it to the corpus once fixed.
// Without libFuzzer, guest_parsers_replay (replay_main.cpp, ctest
// fuzz.guest_parsers) runs the same function over the corpus and seeded
// mutations of it.
//
// What counts as a bug: any read outside the disk, any exception other than
// p2vfs::Error from the table reader, any exception from a probe (the disk
// here is always readable), and results that break the documented promises
// (a partition reaching past the disk, partitions out of number order, a
// file system without error whose size exceeds its volume).
#include "block/block_device.h"
#include "common/crc32c.h"
#include "common/endian.h"
#include "common/error.h"
#include "guest/filesystems.h"
#include "guest/partitions.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <zlib.h>

namespace {

using p2vfs::guest::PartitionTable;

[[noreturn]] void broken(const char* what) {
    std::fprintf(stderr, "guest_parsers_fuzz: %s\n", what);
    std::abort();
}

// The input as a disk that refuses to be read outside itself.
class InputDisk : public p2vfs::BlockDevice {
public:
    InputDisk(const uint8_t* data, size_t size) : data_(data), size_(size) {}
    std::string name() const override { return "fuzz input"; }
    std::string identity() const override { return "fuzz"; }
    uint64_t size() const override { return size_; }
    void read(void* buf, size_t length, uint64_t offset) override {
        if (offset > size_ || length > size_ - offset)
            broken("read outside the disk");
        std::memcpy(buf, data_ + offset, length);
    }
    std::vector<p2vfs::Extent> extents(uint64_t offset, uint64_t length) override {
        return {{offset, length, p2vfs::ExtentType::Data}};
    }

private:
    const uint8_t* data_;
    size_t size_;
};

void probe(InputDisk& disk, uint64_t offset, uint64_t length) {
    const auto info = p2vfs::guest::probe_filesystem(disk, offset, length);
    if (!info)
        return;
    if (info->type.empty())
        broken("a file system without a type");
    const uint64_t volume = offset >= disk.size() ? 0 : std::min(length, disk.size() - offset);
    // btrfs reports the size of all its devices together.
    if (info->error.empty() && info->type != "btrfs" && info->size > volume)
        broken("a file system larger than its volume without an error");
}

void check(const PartitionTable& t, uint64_t disk_size) {
    if (t.scheme != "none" && t.scheme != "mbr" && t.scheme != "gpt")
        broken("unknown scheme");
    for (size_t i = 0; i < t.partitions.size(); ++i) {
        const auto& p = t.partitions[i];
        if (p.length != 0 && (p.offset > disk_size || p.length > disk_size - p.offset))
            broken("a partition reaches past the end of the disk");
        if (i > 0 && t.partitions[i - 1].number >= p.number)
            broken("partitions out of number order");
    }
}

void run(const uint8_t* data, size_t size) {
    InputDisk disk(data, size);
    for (const uint32_t sector_size : {512u, 4096u}) {
        PartitionTable t;
        try {
            t = p2vfs::guest::read_partition_table(disk, sector_size);
        } catch (const p2vfs::Error&) {
            continue;
        }
        check(t, size);
        for (const auto& p : t.partitions)
            if (!p.extended)
                probe(disk, p.offset, p.length);
    }
    probe(disk, 0, size);
}

uint32_t crc32_of(const unsigned char* p, uint64_t n) {
    return static_cast<uint32_t>(::crc32(0L, p, static_cast<uInt>(n)));
}

// Gives a GPT header at `lba` (and its entry array, where the input holds
// it) correct CRCs. Returns whether anything changed.
bool fix_gpt_header(std::vector<unsigned char>& d, uint64_t lba, uint32_t sector_size) {
    if (lba > d.size() / sector_size || d.size() / sector_size - lba < 1)
        return false;
    unsigned char* h = &d[lba * sector_size];
    if (std::memcmp(h, "EFI PART", 8) != 0)
        return false;
    const uint32_t header_size = p2vfs::load_le<uint32_t>(h + 12);
    if (header_size < 92 || header_size > sector_size)
        return false;
    const uint64_t entries_lba = p2vfs::load_le<uint64_t>(h + 72);
    const uint64_t entries_bytes =
        uint64_t{p2vfs::load_le<uint32_t>(h + 80)} * p2vfs::load_le<uint32_t>(h + 84);
    if (entries_lba < d.size() / sector_size &&
        entries_bytes <= d.size() - entries_lba * sector_size)
        p2vfs::store_le<uint32_t>(h + 88, crc32_of(&d[entries_lba * sector_size], entries_bytes));
    const uint32_t before = p2vfs::load_le<uint32_t>(h + 16);
    p2vfs::store_le<uint32_t>(h + 16, 0);
    p2vfs::store_le<uint32_t>(h + 16, crc32_of(h, header_size));
    return p2vfs::load_le<uint32_t>(h + 16) != before;
}

// The btrfs superblock's CRC-32C, likewise.
bool fix_btrfs(std::vector<unsigned char>& d) {
    const size_t sb = 64 << 10, size = 4096;
    if (d.size() < sb + size || std::memcmp(&d[sb + 0x40], "_BHRfS_M", 8) != 0)
        return false;
    const uint32_t crc = p2vfs::crc32c(&d[sb + 32], size - 32);
    if (p2vfs::load_le<uint32_t>(&d[sb]) == crc)
        return false;
    p2vfs::store_le<uint32_t>(&d[sb], crc);
    return true;
}

// The LVM2 label's CRC (zlib's polynomial from 0xf597a6cf, no inversions).
bool fix_lvm(std::vector<unsigned char>& d) {
    bool changed = false;
    for (size_t at = 0; at + 512 <= d.size() && at < 4 * 512; at += 512) {
        if (std::memcmp(&d[at], "LABELONE", 8) != 0)
            continue;
        const uint32_t crc = ~static_cast<uint32_t>(::crc32(~0xf597a6cfu, &d[at + 20], 512 - 20));
        changed |= p2vfs::load_le<uint32_t>(&d[at + 16]) != crc;
        p2vfs::store_le<uint32_t>(&d[at + 16], crc);
    }
    return changed;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    run(data, size);
    // Random bytes almost never carry a right CRC, so what lies behind one
    // (GPT entries, btrfs and LVM fields) would stay out of reach; a second
    // pass gets the same disk with its checksums made right.
    std::vector<unsigned char> fixed(data, data + size);
    bool changed = fix_btrfs(fixed);
    changed |= fix_lvm(fixed);
    for (const uint32_t sector_size : {512u, 4096u}) {
        const uint64_t sectors = fixed.size() / sector_size;
        changed |= fix_gpt_header(fixed, 1, sector_size);
        if (sectors > 0)
            changed |= fix_gpt_header(fixed, sectors - 1, sector_size);
    }
    if (changed)
        run(fixed.data(), fixed.size());
    return 0;
}

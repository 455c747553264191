// The replay's side of guest_parsers_fuzz.cpp: small, mostly valid disks
// and volumes with the signatures the parsers look for planted in them, and
// the fields of sectors the partition tables and boot sectors keep.
#include "common/crc32c.h"
#include "replay.h"

#include <array>
#include <zlib.h>

namespace p2vfs::fuzz {

namespace {

uint32_t zcrc(const unsigned char* p, size_t n) {
    return static_cast<uint32_t>(::crc32(0L, p, static_cast<uInt>(n)));
}

void mbr_entry(Bytes& d, size_t sector_at, unsigned slot, uint8_t type, uint32_t start,
               uint32_t count) {
    const size_t e = sector_at + 0x1be + 16 * slot;
    d[e + 4] = type;
    put_le<uint32_t>(d, e + 8, start);
    put_le<uint32_t>(d, e + 12, count);
    d[sector_at + 510] = 0x55;
    d[sector_at + 511] = 0xaa;
}

// A GPT on `sectors` sectors with a 4-entry array (one sector at 512 bytes).
Bytes gpt_disk(uint32_t ss, uint64_t sectors) {
    Bytes d(ss * sectors);
    mbr_entry(d, 0, 0, 0xee, 1, static_cast<uint32_t>(sectors - 1));
    const uint32_t entries = 4, entry_size = 128;
    const uint64_t array_sectors = (entries * entry_size + ss - 1) / ss;
    const uint64_t last = sectors - 1;
    const uint64_t first_usable = 2 + array_sectors, last_usable = last - 1 - array_sectors;
    const auto entry = [&](uint64_t array_lba, unsigned i, const char* type_last_byte,
                           uint64_t first, uint64_t end) {
        const size_t at = array_lba * ss + i * entry_size;
        for (size_t b = 0; b < 16; ++b)
            d[at + b] = static_cast<unsigned char>(0x11 * (b + 1));
        d[at + 15] = static_cast<unsigned char>(type_last_byte[0]);
        d[at + 16] = static_cast<unsigned char>(i + 1);
        put_le<uint64_t>(d, at + 32, first);
        put_le<uint64_t>(d, at + 40, end);
        put_le<uint16_t>(d, at + 56, 'p');
    };
    for (const uint64_t array_lba : {uint64_t{2}, last - array_sectors}) {
        entry(array_lba, 0, "a", first_usable, first_usable + 3);
        entry(array_lba, 1, "b", first_usable + 4, last_usable);
    }
    for (const auto& [lba, alternate, array_lba] :
         {std::array<uint64_t, 3>{1, last, 2}, {last, 1, last - array_sectors}}) {
        const size_t h = lba * ss;
        put_text(d, h, "EFI PART");
        put_le<uint32_t>(d, h + 8, 0x00010000);
        put_le<uint32_t>(d, h + 12, 92);
        put_le<uint64_t>(d, h + 24, lba);
        put_le<uint64_t>(d, h + 32, alternate);
        put_le<uint64_t>(d, h + 40, first_usable);
        put_le<uint64_t>(d, h + 48, last_usable);
        for (size_t b = 0; b < 16; ++b)
            d[h + 56 + b] = static_cast<unsigned char>(0xa0 + b);
        put_le<uint64_t>(d, h + 72, array_lba);
        put_le<uint32_t>(d, h + 80, entries);
        put_le<uint32_t>(d, h + 84, entry_size);
        put_le<uint32_t>(d, h + 88, zcrc(&d[array_lba * ss], entries * entry_size));
        put_le<uint32_t>(d, h + 16, zcrc(&d[h], 92));
    }
    return d;
}

Bytes mbr_chain_disk() {
    Bytes d(64 * 512);
    mbr_entry(d, 0, 0, 0x83, 2, 4);
    mbr_entry(d, 0, 1, 0x05, 8, 56);
    // EBRs at 8, 20, 40: a logical partition each, linked relative to 8.
    mbr_entry(d, 8 * 512, 0, 0x83, 2, 6);
    mbr_entry(d, 8 * 512, 1, 0x05, 12, 20);
    mbr_entry(d, 20 * 512, 0, 0x8e, 2, 10);
    mbr_entry(d, 20 * 512, 1, 0x05, 32, 24);
    mbr_entry(d, 40 * 512, 0, 0xfd, 1, 20);
    return d;
}

Bytes ext_volume() {
    Bytes d(8192);
    const size_t sb = 1024;
    put_le<uint32_t>(d, sb + 0x04, 8);      // blocks
    put_le<uint32_t>(d, sb + 0x14, 1);      // first data block
    put_le<uint32_t>(d, sb + 0x18, 0);      // 1 KiB blocks
    put_le<uint16_t>(d, sb + 0x38, 0xef53); // magic
    put_le<uint32_t>(d, sb + 0x4c, 1);
    put_le<uint32_t>(d, sb + 0x5c, 0x4);   // has_journal
    put_le<uint32_t>(d, sb + 0x60, 0x2c6); // filetype, recover, extents, 64bit, flex_bg
    put_text(d, sb + 0x78, "planted");
    return d;
}

Bytes xfs_volume() {
    Bytes d(8192);
    put_text(d, 0, "XFSB");
    put_be<uint32_t>(d, 4, 4096);
    put_be<uint64_t>(d, 8, 2);
    put_be<uint32_t>(d, 88, 1);
    put_be<uint16_t>(d, 100, 0xb4a5);
    put_be<uint16_t>(d, 102, 512);
    put_text(d, 108, "planted");
    return d;
}

Bytes btrfs_volume() {
    Bytes d((64 << 10) + 4096);
    const size_t sb = 64 << 10;
    put_le<uint64_t>(d, sb + 0x30, sb);
    put_text(d, sb + 0x40, "_BHRfS_M");
    put_le<uint64_t>(d, sb + 0x70, d.size());
    put_le<uint64_t>(d, sb + 0x88, 1);
    put_le<uint32_t>(d, sb + 0x90, 4096);
    put_le<uint32_t>(d, sb + 0x94, 16384);
    put_le<uint64_t>(d, sb + 0xc9 + 8, d.size());
    put_text(d, sb + 0x12b, "planted");
    put_le<uint32_t>(d, sb, p2vfs::crc32c(&d[sb + 32], 4096 - 32));
    return d;
}

Bytes boot_sector(const char* oem) {
    Bytes d(512);
    d[0] = 0xeb;
    d[1] = 0x52;
    d[2] = 0x90;
    put_text(d, 3, oem);
    d[510] = 0x55;
    d[511] = 0xaa;
    return d;
}

Bytes ntfs_volume() {
    Bytes d = boot_sector("NTFS    ");
    d.resize(16384);
    put_le<uint16_t>(d, 0x0b, 512);
    d[0x0d] = 8;
    put_le<uint64_t>(d, 0x28, 31);
    put_le<uint64_t>(d, 0x30, 1);
    put_le<uint64_t>(d, 0x38, 2);
    put_le<uint64_t>(d, 0x48, 0x0123456789abcdefULL);
    return d;
}

Bytes fat_volume(bool fat32) {
    Bytes d = boot_sector("mkfs.fat");
    d.resize(fat32 ? 40960 : 16384);
    put_le<uint16_t>(d, 0x0b, 512);
    d[0x0d] = 1;
    put_le<uint16_t>(d, 0x0e, fat32 ? 8 : 1);
    d[0x10] = 2;
    put_le<uint16_t>(d, 0x11, fat32 ? 0 : 16);
    put_le<uint16_t>(d, 0x13, static_cast<uint16_t>(d.size() / 512));
    d[0x15] = 0xf8;
    put_le<uint16_t>(d, 0x16, fat32 ? 0 : 1);
    const size_t ext = fat32 ? 0x40 : 0x24;
    if (fat32)
        put_le<uint32_t>(d, 0x24, 1);
    d[ext + 2] = 0x29;
    put_le<uint32_t>(d, ext + 3, 0x1234abcd);
    put_text(d, ext + 7, "PLANTED    ");
    put_text(d, fat32 ? 0x52 : 0x36, fat32 ? "FAT32   " : "FAT12   ");
    return d;
}

Bytes swap_volume(const char* signature) {
    Bytes d(4 * 4096);
    put_le<uint32_t>(d, 1024, 1);
    put_le<uint32_t>(d, 1028, 3);
    for (size_t b = 0; b < 16; ++b)
        d[1036 + b] = static_cast<unsigned char>(b * 17);
    put_text(d, 1052, "planted");
    put_text(d, 4096 - 10, signature);
    return d;
}

Bytes lvm_volume() {
    Bytes d(4096);
    const size_t at = 512;
    put_text(d, at, "LABELONE");
    put_le<uint64_t>(d, at + 8, 1);
    put_le<uint32_t>(d, at + 20, 32);
    put_text(d, at + 24, "LVM2 001");
    put_text(d, at + 32, "aBcDeF123456789abcDEFGhijkLMNOPq");
    put_le<uint64_t>(d, at + 64, d.size());
    // LVM's CRC: the zlib polynomial from 0xf597a6cf without inversions.
    const uint32_t crc =
        ~static_cast<uint32_t>(::crc32(~0xf597a6cfu, &d[at + 20], static_cast<uInt>(512 - 20)));
    put_le<uint32_t>(d, at + 16, crc);
    return d;
}

std::vector<Input> planted_inputs() {
    return {
        {"planted:gpt-512", gpt_disk(512, 48)},
        {"planted:gpt-4096", gpt_disk(4096, 12)},
        {"planted:mbr-chain", mbr_chain_disk()},
        {"planted:ext", ext_volume()},
        {"planted:xfs", xfs_volume()},
        {"planted:btrfs", btrfs_volume()},
        {"planted:ntfs", ntfs_volume()},
        {"planted:bitlocker", boot_sector("-FVE-FS-")},
        {"planted:fat12", fat_volume(false)},
        {"planted:fat32", fat_volume(true)},
        {"planted:swap", swap_volume("SWAPSPACE2")},
        {"planted:swap-hibernated", swap_volume("S1SUSPEND")},
        {"planted:lvm", lvm_volume()},
    };
}

} // namespace

ReplayTarget replay_target() {
    ReplayTarget t;
    t.planted = planted_inputs();
    t.unit = 512;
    // MBR and boot sector fields; 0x38, ext's magic in a superblock sector.
    t.fields = {0, 3, 0x0b, 0x1be, 0x1c6, 0x1ca, 0x1fe, 0x38};
    t.signatures = {
        {512, "EFI PART"},         {4096, "EFI PART"},
        {510, "\x55\xaa"},         {0x1c2, "\xee"},
        {0x1c2, "\x05"},           {512, "LABELONE"},
        {1024 + 0x38, "\x53\xef"}, {0, "XFSB"},
        {3, "NTFS    "},           {0x52, "FAT32   "},
        {4096 - 10, "SWAPSPACE2"}, {(64 << 10) + 0x40, "_BHRfS_M"},
    };
    return t;
}

} // namespace p2vfs::fuzz

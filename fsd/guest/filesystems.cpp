// File system probes by superblock, after util-linux's libblkid
// (libblkid/src/superblocks/*.c): the same signatures, the same names, the
// same text for UUIDs and serials, so the report matches what `blkid` says
// on the guest. Layouts: ext2/3/4 from e2fsprogs lib/ext2fs/ext2_fs.h; xfs
// from xfs_format.h (struct xfs_dsb, big-endian); btrfs from
// kernel-shared/ctree.h (struct btrfs_super_block); NTFS and FAT from the
// BIOS parameter block as Microsoft's FAT specification ("Microsoft
// Extensible Firmware Initiative FAT32 File System Specification", 2000)
// lays it out; swap from include/linux/swap.h (union swap_header); LVM2
// from lib/format_text/layout.h (label_header, pv_header).
//
// Order: signatures that cannot occur by chance come first; FAT, recognised
// by a jump instruction and a plausible parameter block, comes last, since
// NTFS and BitLocker volumes carry the same jump and a BPB of their own.
#include "guest/filesystems.h"

#include "common/crc32c.h"
#include "common/endian.h"
#include "common/error.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <zlib.h>

namespace p2vfs::guest {
namespace {

using Bytes = std::vector<unsigned char>;

// The part of the disk a probe may look at.
class Volume {
public:
    Volume(BlockDevice& disk, uint64_t offset, uint64_t length) : disk_(disk), offset_(offset) {
        length_ = offset >= disk.size() ? 0 : std::min(length, disk.size() - offset);
    }

    uint64_t length() const { return length_; }
    bool has(uint64_t at, uint64_t n) const { return at <= length_ && n <= length_ - at; }
    // Disk offset of a volume offset, for messages.
    uint64_t disk_offset(uint64_t at) const { return offset_ + at; }

    // The bytes at [at, at+n) of the volume; nullopt when they are not in it.
    std::optional<Bytes> read(uint64_t at, size_t n) const {
        if (!has(at, n))
            return std::nullopt;
        Bytes b(n);
        disk_.read(b.data(), n, offset_ + at);
        return b;
    }

private:
    BlockDevice& disk_;
    uint64_t offset_;
    uint64_t length_;
};

bool matches(const Bytes& b, size_t at, const char* text) {
    const size_t n = std::strlen(text);
    return at + n <= b.size() && std::memcmp(&b[at], text, n) == 0;
}

uint16_t le16(const Bytes& b, size_t at) {
    return load_le<uint16_t>(&b[at]);
}
uint32_t le32(const Bytes& b, size_t at) {
    return load_le<uint32_t>(&b[at]);
}
uint64_t le64(const Bytes& b, size_t at) {
    return load_le<uint64_t>(&b[at]);
}
uint16_t be16(const Bytes& b, size_t at) {
    return load_be<uint16_t>(&b[at]);
}
uint32_t be32(const Bytes& b, size_t at) {
    return load_be<uint32_t>(&b[at]);
}
uint64_t be64(const Bytes& b, size_t at) {
    return load_be<uint64_t>(&b[at]);
}

bool power_of_two(uint64_t v) {
    return v != 0 && (v & (v - 1)) == 0;
}

// "0fc63daf-8483-4772-8e79-3d69d8477de4": bytes in order, as libuuid prints them.
std::string uuid_text(const Bytes& b, size_t at) {
    char buf[40];
    const unsigned char* u = &b[at];
    std::snprintf(buf, sizeof buf,
                  "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0],
                  u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13],
                  u[14], u[15]);
    return buf;
}

bool all_zero(const Bytes& b, size_t at, size_t n) {
    for (size_t i = 0; i < n; ++i)
        if (b[at + i] != 0)
            return false;
    return true;
}

// A fixed-size text field: up to the first NUL, trailing spaces dropped.
std::string text_field(const Bytes& b, size_t at, size_t n) {
    std::string s(reinterpret_cast<const char*>(&b[at]), n);
    s.resize(std::strlen(s.c_str()));
    while (!s.empty() && s.back() == ' ')
        s.pop_back();
    return s;
}

// Builds `error` messages that name the structure, the field, its value and
// where it lies on the disk.
class Complaint {
public:
    Complaint(FileSystemInfo& info, std::string structure, uint64_t disk_offset)
        : info_(info), structure_(std::move(structure)), base_(disk_offset) {}

    // Records the first complaint only: later ones often follow from it.
    void operator()(const std::string& field, uint64_t value, uint64_t field_offset,
                    const std::string& why) {
        if (!info_.error.empty())
            return;
        info_.error = structure_ + " at " + hex(base_) + ": " + field + " " +
                      std::to_string(value) + " at " + hex(base_ + field_offset) + " " + why;
    }
    void plain(const std::string& what) {
        if (info_.error.empty())
            info_.error = structure_ + " at " + hex(base_) + ": " + what;
    }

private:
    FileSystemInfo& info_;
    std::string structure_;
    uint64_t base_;
};

// The size a file system claims, against the volume it was found in.
void check_size(Complaint& complain, const std::string& field, uint64_t count,
                uint64_t field_offset, uint64_t unit, const Volume& v, FileSystemInfo& info) {
    if (count == 0) {
        complain(field, count, field_offset, "is zero");
        return;
    }
    if (count > UINT64_MAX / unit) {
        complain(field, count, field_offset,
                 "overflows 64 bits with units of " + std::to_string(unit) + " bytes");
        return;
    }
    info.size = count * unit;
    if (info.size > v.length())
        complain(field, count, field_offset,
                 "(" + hex(info.size) + " bytes) exceeds the volume (" + hex(v.length()) +
                     " bytes)");
}

// --- LVM2 physical volume ---------------------------------------------
// The label is in one of the first four 512-byte sectors.

constexpr size_t lvm_sector = 512;
constexpr uint32_t lvm_initial_crc = 0xf597a6cf;

// LVM's calc_crc is the zlib polynomial with another start and no final
// inversion; zlib inverts on the way in and out, hence the ~.
uint32_t lvm_crc(const unsigned char* data, size_t n) {
    return ~static_cast<uint32_t>(
        ::crc32(~lvm_initial_crc & 0xffffffffu, data, static_cast<uInt>(n)));
}

std::optional<FileSystemInfo> probe_lvm2(const Volume& v) {
    const auto head = v.read(0, 4 * lvm_sector);
    if (!head)
        return std::nullopt;
    for (size_t sector = 0; sector < 4; ++sector) {
        const size_t at = sector * lvm_sector;
        if (!matches(*head, at, "LABELONE") || !matches(*head, at + 24, "LVM2 001"))
            continue;
        FileSystemInfo info;
        info.type = "LVM2_member";
        info.version = "LVM2 001";
        Complaint complain(info, "LVM2 label", v.disk_offset(at));
        const Bytes& b = *head;
        if (le64(b, at + 8) != sector)
            complain("sector number", le64(b, at + 8), 8,
                     "is not the sector the label lies in (" + std::to_string(sector) + ")");
        const uint32_t crc = lvm_crc(&b[at + 20], lvm_sector - 20);
        if (crc != le32(b, at + 16))
            complain("CRC", le32(b, at + 16), 16, "does not match the label (" + hex(crc) + ")");
        const uint32_t pv_offset = le32(b, at + 20);
        // pv_header: a 32-character id and the device size, then disk areas.
        if (pv_offset < 32 || pv_offset > lvm_sector - 40) {
            complain("PV header offset", pv_offset, 20, "is outside the 512-byte label sector");
            return info;
        }
        const size_t pv = at + pv_offset;
        const char* id = reinterpret_cast<const char*>(&b[pv]);
        // Printed as LVM prints it: 6-4-4-4-4-4-6.
        static constexpr std::array<size_t, 7> groups{6, 4, 4, 4, 4, 4, 6};
        size_t pos = 0;
        for (size_t g = 0; g < groups.size(); ++g) {
            if (g != 0)
                info.uuid += '-';
            info.uuid.append(id + pos, groups[g]);
            pos += groups[g];
        }
        for (char c : info.uuid)
            // LVM makes ids from letters, digits, '!' and '#' (lib/uuid/uuid.c).
            if (c != '-' && c != '!' && c != '#' && !std::isalnum(static_cast<unsigned char>(c))) {
                complain.plain("PV id at " + hex(v.disk_offset(pv)) +
                               " holds characters LVM does not put in ids");
                info.uuid.clear();
                break;
            }
        info.block_size = lvm_sector;
        // 0 means "not recorded" in LVM's format; then the size is unknown.
        const uint64_t device_size = le64(b, pv + 32);
        if (device_size != 0) {
            info.size = device_size;
            if (device_size > v.length())
                complain("device size", device_size, pv_offset + 32,
                         "exceeds the volume (" + hex(v.length()) + " bytes)");
        }
        return info;
    }
    return std::nullopt;
}

// --- BitLocker ----------------------------------------------------------

std::optional<FileSystemInfo> probe_bitlocker(const Bytes& boot) {
    if (!matches(boot, 3, "-FVE-FS-"))
        return std::nullopt;
    FileSystemInfo info;
    info.type = "BitLocker";
    return info;
}

// --- NTFS ---------------------------------------------------------------

// Windows formats clusters of up to 2 MiB.
constexpr uint64_t ntfs_max_cluster = 2ULL << 20;

std::optional<FileSystemInfo> probe_ntfs(const Volume& v, const Bytes& boot) {
    if (!matches(boot, 3, "NTFS    "))
        return std::nullopt;
    FileSystemInfo info;
    info.type = "ntfs";
    Complaint complain(info, "NTFS boot sector", v.disk_offset(0));
    char serial[24];
    std::snprintf(serial, sizeof serial, "%016llX",
                  static_cast<unsigned long long>(le64(boot, 0x48)));
    info.uuid = serial;
    // The label is an attribute of the $Volume file in the MFT, not in the
    // boot sector; reading it would mean walking MFT records.
    const uint16_t bytes_per_sector = le16(boot, 0x0b);
    if (!power_of_two(bytes_per_sector) || bytes_per_sector < 256 || bytes_per_sector > 4096) {
        complain("bytes per sector", bytes_per_sector, 0x0b,
                 "is not a power of two from 256 to 4096");
        return info;
    }
    // Above 128 the byte is a negative power of two: 0xf4 (-12) is 2^12
    // sectors per cluster, how clusters over 64 KiB are written.
    const uint8_t spc_byte = boot[0x0d];
    uint64_t sectors_per_cluster = spc_byte;
    if (spc_byte > 128) {
        if (spc_byte < 240) {
            complain("sectors per cluster byte", spc_byte, 0x0d,
                     "is neither a power of two up to 128 nor a shift from 240 to 255");
            return info;
        }
        sectors_per_cluster = uint64_t{1} << (256 - spc_byte);
    } else if (!power_of_two(spc_byte)) {
        complain("sectors per cluster", spc_byte, 0x0d, "is not a power of two");
        return info;
    }
    info.block_size = sectors_per_cluster * bytes_per_sector;
    if (info.block_size > ntfs_max_cluster) {
        complain("sectors per cluster byte", spc_byte, 0x0d,
                 "gives clusters of " + human_size(info.block_size) + ", over " +
                     human_size(ntfs_max_cluster));
        return info;
    }
    const uint64_t total_sectors = le64(boot, 0x28);
    check_size(complain, "total sectors", total_sectors, 0x28, bytes_per_sector, v, info);
    if (!info.error.empty())
        return info;
    const uint64_t clusters = info.size / info.block_size;
    const uint64_t mft = le64(boot, 0x30);
    if (mft >= clusters)
        complain("$MFT cluster", mft, 0x30,
                 "lies past the end of the volume (" + std::to_string(clusters) + " clusters)");
    const uint64_t mft_mirror = le64(boot, 0x38);
    if (mft_mirror >= clusters)
        complain("$MFTMirr cluster", mft_mirror, 0x38,
                 "lies past the end of the volume (" + std::to_string(clusters) + " clusters)");
    return info;
}

// --- xfs ----------------------------------------------------------------

std::optional<FileSystemInfo> probe_xfs(const Volume& v, const Bytes& sb) {
    if (!matches(sb, 0, "XFSB"))
        return std::nullopt;
    FileSystemInfo info;
    info.type = "xfs";
    Complaint complain(info, "xfs superblock", v.disk_offset(0));
    info.uuid = uuid_text(sb, 32);
    info.label = text_field(sb, 108, 12);
    const uint16_t versionnum = be16(sb, 100);
    info.version = (versionnum & 0xf) == 5 ? "V5" : "V4";
    const uint32_t block_size = be32(sb, 4);
    if (!power_of_two(block_size) || block_size < 512 || block_size > 65536) {
        complain("block size", block_size, 4, "is not a power of two from 512 to 65536");
        return info;
    }
    info.block_size = block_size;
    const uint16_t sector_size = be16(sb, 102);
    if (!power_of_two(sector_size) || sector_size < 512 || sector_size > block_size) {
        complain("sector size", sector_size, 102,
                 "is not a power of two from 512 to the block size");
        return info;
    }
    const uint32_t ag_count = be32(sb, 88);
    if (ag_count == 0) {
        complain("allocation group count", ag_count, 88, "is zero");
        return info;
    }
    check_size(complain, "data block count", be64(sb, 8), 8, block_size, v, info);
    return info;
}

// --- ext2/3/4 -----------------------------------------------------------

constexpr uint64_t ext_superblock = 1024;
constexpr uint32_t ext_compat_has_journal = 0x4;
constexpr uint32_t ext_incompat_recover = 0x4;
constexpr uint32_t ext_incompat_journal_dev = 0x8;
constexpr uint32_t ext_incompat_64bit = 0x80;
// What ext2 and ext3 drivers understand; anything beyond makes it ext4,
// the rule libblkid's ext.c follows.
constexpr uint32_t ext2_incompat_supported = 0x02 | 0x10;        // filetype, meta_bg
constexpr uint32_t ext3_incompat_supported = 0x02 | 0x04 | 0x10; // + recover
constexpr uint32_t ext23_ro_compat_supported =
    0x1 | 0x2 | 0x4; // sparse_super, large_file, btree_dir
constexpr uint16_t ext_state_errors = 0x2;
constexpr uint32_t ext_max_log_block_size = 6; // 64 KiB blocks

std::optional<FileSystemInfo> probe_ext(const Volume& v) {
    const auto read = v.read(ext_superblock, 1024);
    if (!read || le16(*read, 0x38) != 0xef53)
        return std::nullopt;
    const Bytes& sb = *read;
    FileSystemInfo info;
    const uint32_t compat = le32(sb, 0x5c);
    const uint32_t incompat = le32(sb, 0x60);
    const uint32_t ro_compat = le32(sb, 0x64);
    if (incompat & ext_incompat_journal_dev)
        info.type = "jbd"; // an external journal
    else if ((incompat & ~ext3_incompat_supported) || (ro_compat & ~ext23_ro_compat_supported))
        info.type = "ext4";
    else if (compat & ext_compat_has_journal)
        info.type = "ext3";
    else if (incompat & ~ext2_incompat_supported)
        info.type = "ext4";
    else
        info.type = "ext2";
    info.version = std::to_string(le32(sb, 0x4c)) + "." + std::to_string(le16(sb, 0x3e));
    Complaint complain(info, info.type + " superblock", v.disk_offset(ext_superblock));
    info.uuid = uuid_text(sb, 0x68);
    info.label = text_field(sb, 0x78, 16);
    if (incompat & ext_incompat_recover)
        info.flags.push_back("needs_recovery");
    if (le16(sb, 0x3a) & ext_state_errors)
        info.flags.push_back("errors");
    const uint32_t log_block_size = le32(sb, 0x18);
    if (log_block_size > ext_max_log_block_size) {
        complain("log block size", log_block_size, 0x18,
                 "is absurd (blocks of 2^" + std::to_string(uint64_t{log_block_size} + 10) +
                     " bytes; at most " + std::to_string(ext_max_log_block_size) +
                     ", 64 KiB blocks, exist)");
        return info;
    }
    info.block_size = uint64_t{1024} << log_block_size;
    uint64_t blocks = le32(sb, 0x04);
    if (incompat & ext_incompat_64bit)
        blocks |= uint64_t{le32(sb, 0x150)} << 32;
    check_size(complain, "block count", blocks, 0x04, info.block_size, v, info);
    const uint32_t first_data_block = le32(sb, 0x14);
    if (info.error.empty() && first_data_block >= blocks)
        complain("first data block", first_data_block, 0x14,
                 "is not below the block count " + std::to_string(blocks));
    return info;
}

// --- btrfs --------------------------------------------------------------

constexpr uint64_t btrfs_superblock = 64 << 10;
constexpr size_t btrfs_superblock_size = 4096;
constexpr size_t btrfs_csum_size = 32;
constexpr uint16_t btrfs_csum_crc32c = 0;

std::optional<FileSystemInfo> probe_btrfs(const Volume& v) {
    const auto read = v.read(btrfs_superblock, btrfs_superblock_size);
    if (!read || !matches(*read, 0x40, "_BHRfS_M"))
        return std::nullopt;
    const Bytes& sb = *read;
    FileSystemInfo info;
    info.type = "btrfs";
    Complaint complain(info, "btrfs superblock", v.disk_offset(btrfs_superblock));
    info.uuid = uuid_text(sb, 0x20);
    info.label = text_field(sb, 0x12b, 256);
    if (le16(sb, 0xc4) == btrfs_csum_crc32c) {
        const uint32_t crc = crc32c(&sb[btrfs_csum_size], sb.size() - btrfs_csum_size);
        if (crc != le32(sb, 0))
            complain("checksum", le32(sb, 0), 0,
                     "does not match the superblock (" + hex(crc) + ")");
    }
    if (le64(sb, 0x30) != btrfs_superblock)
        complain("own offset", le64(sb, 0x30), 0x30,
                 "is not where the superblock lies (" + hex(btrfs_superblock) + ")");
    const uint32_t sector_size = le32(sb, 0x90);
    if (!power_of_two(sector_size) || sector_size < 4096 || sector_size > 65536) {
        complain("sector size", sector_size, 0x90, "is not a power of two from 4096 to 65536");
        return info;
    }
    info.block_size = sector_size;
    const uint32_t node_size = le32(sb, 0x94);
    if (!power_of_two(node_size) || node_size < sector_size || node_size > 65536)
        complain("node size", node_size, 0x94,
                 "is not a power of two from the sector size to 65536");
    const uint64_t devices = le64(sb, 0x88);
    if (devices > 1)
        info.flags.push_back("multi-device (" + std::to_string(devices) + " devices)");
    // total_bytes spans every device of the file system; this device's own
    // size is in its dev_item (at 0xc9), and only that must fit the volume.
    const uint64_t total = le64(sb, 0x70);
    if (total == 0)
        complain("total bytes", total, 0x70, "is zero");
    info.size = total;
    const uint64_t device_bytes = le64(sb, 0xc9 + 8);
    if (device_bytes > v.length())
        complain("device size", device_bytes, 0xc9 + 8,
                 "exceeds the volume (" + hex(v.length()) + " bytes)");
    return info;
}

// --- Linux swap ---------------------------------------------------------

std::optional<FileSystemInfo> probe_swap(const Volume& v) {
    for (const uint64_t page : {4096, 8192, 16384, 65536}) {
        const auto read = v.read(0, page);
        if (!read)
            return std::nullopt;
        const Bytes& b = *read;
        const size_t sig = page - 10;
        const bool v1 = matches(b, sig, "SWAPSPACE2");
        const bool v0 = matches(b, sig, "SWAP-SPACE");
        const bool hibernated = matches(b, sig, "S1SUSPEND") || matches(b, sig, "S2SUSPEND") ||
                                matches(b, sig, "ULSUSPEND") || matches(b, sig, "LINHIB0001");
        if (!v1 && !v0 && !hibernated)
            continue;
        FileSystemInfo info;
        info.type = "swap";
        info.block_size = page;
        if (v0) {
            // Version 0 has no header: the first page is a bitmap.
            info.version = "swap v0";
            return info;
        }
        Complaint complain(info, "swap header", v.disk_offset(0));
        if (hibernated)
            info.flags.push_back("hibernation image");
        // Little-endian on the machines this migrates from; a big-endian
        // header reads as version 0x01000000.
        const uint32_t version = le32(b, 1024);
        if (version != 1) {
            complain("version", version, 1024, "is not 1");
            return info;
        }
        info.version = "swap v1";
        info.uuid = uuid_text(b, 1036);
        if (all_zero(b, 1036, 16))
            info.uuid.clear();
        info.label = text_field(b, 1052, 16);
        const uint32_t last_page = le32(b, 1028);
        check_size(complain, "last page", uint64_t{last_page} + 1, 1028, page, v, info);
        return info;
    }
    return std::nullopt;
}

// --- FAT ----------------------------------------------------------------

std::optional<FileSystemInfo> probe_fat(const Volume& v, const Bytes& boot) {
    const bool jump = boot[0] == 0xe9 || (boot[0] == 0xeb && boot[2] == 0x90);
    if (!jump)
        return std::nullopt;
    // The type text is only a hint, but with it the sector surely was meant
    // to be FAT, and bad values are worth a complaint; without it, a boot
    // sector that merely starts with a jump (GRUB's does) is not FAT.
    const bool named = matches(boot, 0x36, "FAT12   ") || matches(boot, 0x36, "FAT16   ") ||
                       matches(boot, 0x36, "FAT     ") || matches(boot, 0x52, "FAT32   ");
    const bool signed55aa = boot[510] == 0x55 && boot[511] == 0xaa;
    if (!named && !signed55aa)
        return std::nullopt;
    FileSystemInfo info;
    info.type = "vfat";
    Complaint complain(info, "FAT boot sector", v.disk_offset(0));
    const uint16_t bytes_per_sector = le16(boot, 0x0b);
    const uint8_t sectors_per_cluster = boot[0x0d];
    const uint16_t reserved = le16(boot, 0x0e);
    const uint8_t fats = boot[0x10];
    const uint16_t root_entries = le16(boot, 0x11);
    const uint16_t total16 = le16(boot, 0x13);
    const uint8_t media = boot[0x15];
    const uint16_t fat16_size = le16(boot, 0x16);
    const uint32_t total32 = le32(boot, 0x20);
    if (!power_of_two(bytes_per_sector) || bytes_per_sector < 512 || bytes_per_sector > 4096)
        complain("bytes per sector", bytes_per_sector, 0x0b,
                 "is not a power of two from 512 to 4096");
    else if (!power_of_two(sectors_per_cluster))
        complain("sectors per cluster", sectors_per_cluster, 0x0d, "is not a power of two");
    else if (reserved == 0)
        complain("reserved sector count", reserved, 0x0e, "is zero");
    else if (fats == 0)
        complain("FAT count", fats, 0x10, "is zero");
    else if (media != 0xf0 && media < 0xf8)
        complain("media descriptor", media, 0x15, "is not 0xf0 or 0xf8..0xff");
    if (!info.error.empty())
        return named ? std::optional(info) : std::nullopt;
    const bool fat32 = fat16_size == 0;
    const size_t ext = fat32 ? 0x40 : 0x24; // extended BPB: drive number onwards
    const uint64_t fat_size = fat32 ? le32(boot, 0x24) : fat16_size;
    const uint64_t total = total16 != 0 ? total16 : total32;
    info.block_size = uint64_t{bytes_per_sector} * sectors_per_cluster;
    if (fat32 && root_entries != 0)
        complain("root directory entries", root_entries, 0x11, "is not 0 as FAT32 requires");
    else if (fat_size == 0)
        complain("sectors per FAT", fat_size, 0x24, "is zero");
    else
        check_size(complain, total16 != 0 ? "total sectors (16-bit)" : "total sectors (32-bit)",
                   total, total16 != 0 ? 0x13 : 0x20, bytes_per_sector, v, info);
    if (!info.error.empty())
        return named ? std::optional(info) : std::nullopt;
    // FAT12 or FAT16 by the count of clusters (specification, "FAT Type
    // Determination"), as every driver decides it.
    const uint64_t root_sectors =
        (uint64_t{root_entries} * 32 + bytes_per_sector - 1) / bytes_per_sector;
    const uint64_t meta = reserved + fats * fat_size + root_sectors;
    if (meta >= total) {
        complain("total sectors", total, total16 != 0 ? 0x13 : 0x20,
                 "leaves no room for data after " + std::to_string(meta) +
                     " sectors of reserved area, FATs and root directory");
        return named ? std::optional(info) : std::nullopt;
    }
    const uint64_t clusters = (total - meta) / sectors_per_cluster;
    info.version = fat32 ? "FAT32" : clusters < 4085 ? "FAT12" : "FAT16";
    // The serial and label exist when the extended boot signature says so.
    const uint8_t signature = boot[ext + 2];
    if (signature == 0x29 || signature == 0x28) {
        char serial[16];
        std::snprintf(serial, sizeof serial, "%02X%02X-%02X%02X", boot[ext + 6], boot[ext + 5],
                      boot[ext + 4], boot[ext + 3]);
        info.uuid = serial;
    }
    if (signature == 0x29) {
        info.label = text_field(boot, ext + 7, 11);
        if (info.label == "NO NAME")
            info.label.clear();
    }
    return info;
}

} // namespace

std::optional<FileSystemInfo> probe_filesystem(BlockDevice& disk, uint64_t offset,
                                               uint64_t length) {
    const Volume v(disk, offset, length);
    if (auto lvm = probe_lvm2(v))
        return lvm;
    const auto boot = v.read(0, 512);
    if (boot) {
        if (auto info = probe_bitlocker(*boot))
            return info;
        if (auto info = probe_ntfs(v, *boot))
            return info;
        if (auto info = probe_xfs(v, *boot))
            return info;
    }
    if (auto info = probe_ext(v))
        return info;
    if (auto info = probe_btrfs(v))
        return info;
    if (auto info = probe_swap(v))
        return info;
    if (boot)
        if (auto info = probe_fat(v, *boot))
            return info;
    return std::nullopt;
}

} // namespace p2vfs::guest

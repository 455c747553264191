// Partition tables as Linux reads them.
//
// MBR: four 16-byte entries at 0x1be of sector 0, signature 0x55 0xaa at
// 0x1fe. Extended partitions (types 0x05, 0x0f, 0x85) hold a chain of
// extended boot records (EBRs), read as block/partitions/msdos.c does: in
// each EBR the data entries are logical partitions whose start is relative
// to that EBR, and the first extended entry links to the next EBR relative
// to the start of the extended partition. Logical partitions are numbered
// from 5 in chain order, across all extended partitions.
//
// GPT: UEFI Specification 2.10, section 5.3 "GUID Partition Table (GPT) Disk
// Layout": a header at LBA 1 and a backup at its AlternateLBA (normally the
// last sector), each with a CRC32 of itself and of its partition entry
// array. The CRC is zlib's (reflected 0xEDB88320, pre- and post-inverted).
#include "guest/partitions.h"

#include "common/endian.h"
#include "common/utf.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <optional>
#include <set>
#include <zlib.h>

namespace p2vfs::guest {
namespace {

using Bytes = std::vector<unsigned char>;

constexpr size_t mbr_disk_id_offset = 0x1b8;
constexpr size_t mbr_table_offset = 0x1be;
constexpr size_t mbr_signature_offset = 0x1fe;
constexpr size_t mbr_entry_size = 16;

// Linux gives up after 100 EBRs without a data partition; a cap on all
// records and on logical partitions bounds the work a hostile chain costs.
constexpr unsigned max_ebrs = 128;
constexpr unsigned max_logical = 128;

constexpr size_t gpt_header_min_size = 92;
// The specification allows any 128 * 2^n entry size and any count; real
// tables have 128 entries of 128 bytes. The limits keep a corrupt header
// from making us read gigabytes.
constexpr uint32_t gpt_max_entry_size = 4096;
constexpr uint32_t gpt_max_entries = 16384;
constexpr uint64_t gpt_max_array_bytes = 4ULL << 20;
constexpr uint64_t gpt_attr_legacy_bios_bootable = 1ULL << 2;

struct GptTypeName {
    const char* guid;
    const char* name;
};
constexpr std::array gpt_type_names{
    GptTypeName{"0fc63daf-8483-4772-8e79-3d69d8477de4", "Linux filesystem"},
    GptTypeName{"4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "Linux root (x86-64)"},
    GptTypeName{"933ac7e1-2eb4-4f13-b844-0e14e2aef915", "Linux home"},
    GptTypeName{"bc13c2ff-59e6-4262-a352-b275fd6f7172", "Linux extended boot"},
    GptTypeName{"0657fd6d-a4ab-43c4-84e5-0933c84b4f4f", "Linux swap"},
    GptTypeName{"e6d6d379-f507-44c2-a23c-238f2a3df928", "Linux LVM"},
    GptTypeName{"a19d880f-05fc-4d3b-a006-743f0f84911e", "Linux RAID"},
    GptTypeName{"c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "EFI System"},
    GptTypeName{"21686148-6449-6e6f-744e-656564454649", "BIOS boot"},
    GptTypeName{"ebd0a0a2-b9e5-4433-87c0-68b6b72699c7", "Microsoft basic data"},
    GptTypeName{"e3c9e316-0b5c-4db8-817d-f92df00215ae", "Microsoft reserved"},
    GptTypeName{"de94bba4-06d1-4d40-a16a-bfd50179d6ac", "Windows recovery"},
    GptTypeName{"5808c8aa-7e8f-42e0-85d2-e1e90434cfb3", "Windows LDM metadata"},
    GptTypeName{"af9b60a0-1431-4f62-bc68-3311714a69ad", "Windows LDM data"},
};

struct MbrTypeName {
    uint8_t type;
    const char* name;
};
constexpr std::array mbr_type_names{
    MbrTypeName{0x01, "FAT12"},
    MbrTypeName{0x04, "FAT16 <32M"},
    MbrTypeName{0x05, "extended"},
    MbrTypeName{0x06, "FAT16"},
    MbrTypeName{0x07, "NTFS/exFAT"},
    MbrTypeName{0x0b, "FAT32"},
    MbrTypeName{0x0c, "FAT32 (LBA)"},
    MbrTypeName{0x0e, "FAT16 (LBA)"},
    MbrTypeName{0x0f, "extended (LBA)"},
    MbrTypeName{0x27, "Windows recovery"},
    MbrTypeName{0x42, "Windows dynamic disk (LDM)"},
    MbrTypeName{0x82, "Linux swap"},
    MbrTypeName{0x83, "Linux"},
    MbrTypeName{0x85, "Linux extended"},
    MbrTypeName{0x8e, "Linux LVM"},
    MbrTypeName{0xee, "GPT protective"},
    MbrTypeName{0xef, "EFI System"},
    MbrTypeName{0xfd, "Linux RAID"},
};

bool is_extended(uint8_t type) {
    return type == 0x05 || type == 0x0f || type == 0x85;
}

uint64_t saturating_mul(uint64_t a, uint64_t b) {
    return b != 0 && a > UINT64_MAX / b ? UINT64_MAX : a * b;
}

uint64_t saturating_add(uint64_t a, uint64_t b) {
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

std::string mbr_type_text(uint8_t type) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "0x%02x", type);
    return buf;
}

uint32_t zlib_crc32(const unsigned char* data, size_t length) {
    return static_cast<uint32_t>(::crc32(0L, data, static_cast<uInt>(length)));
}

// Reads whole sectors, and only those the disk holds in full.
class Sectors {
public:
    Sectors(BlockDevice& disk, uint32_t sector_size)
        : disk_(disk), size_(sector_size), count_(disk.size() / sector_size) {}

    uint32_t size() const { return size_; }
    uint64_t count() const { return count_; }
    uint64_t disk_bytes() const { return disk_.size(); }
    bool has(uint64_t lba, uint64_t n) const { return lba < count_ && n <= count_ - lba; }

    Bytes read(uint64_t lba, uint64_t n) const {
        if (!has(lba, n))
            throw InspectError(disk_.name() + ": read of " + std::to_string(n) +
                               " sectors at LBA " + std::to_string(lba) +
                               " would pass the end of the disk (" + std::to_string(count_) +
                               " sectors)");
        Bytes b(n * size_);
        disk_.read(b.data(), b.size(), lba * size_);
        return b;
    }

    // "LBA 2048-4095 (0x100000-0x1fffff)"
    std::string range(uint64_t first, uint64_t n) const {
        const uint64_t last = n == 0 ? first : saturating_add(first, n - 1);
        return "LBA " + std::to_string(first) + "-" + std::to_string(last) + " (" +
               hex(saturating_mul(first, size_)) + "-" +
               hex(saturating_add(saturating_mul(last, size_), size_ - 1)) + ")";
    }

    std::string disk_text() const {
        return hex(disk_.size()) + " bytes, " + std::to_string(count_) + " sectors of " +
               std::to_string(size_);
    }

private:
    BlockDevice& disk_;
    uint32_t size_;
    uint64_t count_;
};

// Sets offset and length from a sector range, keeping the partition but
// cutting it to the disk when the table says it reaches past the end.
void place(Partition& p, uint64_t first, uint64_t n, const Sectors& s, PartitionTable& t) {
    p.offset = saturating_mul(first, s.size());
    p.length = saturating_mul(n, s.size());
    const uint64_t disk = s.disk_bytes();
    if (p.offset <= disk && p.length <= disk - p.offset)
        return;
    const uint64_t kept = p.offset >= disk ? 0 : disk - p.offset;
    t.problems.push_back("partition " + std::to_string(p.number) + " at " + s.range(first, n) +
                         " extends past the end of the disk (" + s.disk_text() +
                         "); kept with its length cut to " + hex(kept));
    p.length = kept;
}

struct MbrEntry {
    uint8_t status;
    uint8_t type;
    uint32_t start;
    uint32_t count;
};

MbrEntry mbr_entry(const Bytes& sector, unsigned slot) {
    const unsigned char* e = &sector[mbr_table_offset + slot * mbr_entry_size];
    return {e[0], e[4], load_le<uint32_t>(e + 8), load_le<uint32_t>(e + 12)};
}

bool has_mbr_signature(const Bytes& sector) {
    return sector[mbr_signature_offset] == 0x55 && sector[mbr_signature_offset + 1] == 0xaa;
}

bool empty(const MbrEntry& e) {
    return e.type == 0 || e.count == 0;
}

Partition mbr_partition(unsigned number, const MbrEntry& e) {
    Partition p;
    p.number = number;
    p.type = mbr_type_text(e.type);
    for (const auto& known : mbr_type_names)
        if (known.type == e.type)
            p.type_name = known.name;
    p.bootable = e.status == 0x80;
    p.extended = is_extended(e.type);
    return p;
}

// A file system's boot sector also ends in 0x55 0xaa; one written over the
// whole disk must not be read as a table of (garbage or empty) partitions.
bool looks_like_volume_boot_record(const Bytes& s0) {
    for (unsigned slot = 0; slot < 4; ++slot) {
        const uint8_t status = mbr_entry(s0, slot).status;
        // Linux's msdos.c: a boot indicator other than 0 or 0x80 is no table.
        if (status != 0 && status != 0x80)
            return true;
    }
    bool all_empty = true;
    for (unsigned slot = 0; slot < 4; ++slot)
        all_empty = all_empty && empty(mbr_entry(s0, slot));
    if (!all_empty)
        return false;
    const auto at = [&](size_t off, const char* text) {
        return std::memcmp(&s0[off], text, std::strlen(text)) == 0;
    };
    return at(3, "NTFS    ") || at(3, "EXFAT   ") || at(3, "-FVE-FS-") || at(0x36, "FAT1") ||
           at(0x52, "FAT32   ");
}

// The chain of EBRs inside one extended partition.
void read_logical_partitions(const Sectors& s, unsigned container, uint64_t ext_first,
                             uint64_t ext_count, unsigned& next_number, PartitionTable& t) {
    const uint64_t ext_end = ext_first + ext_count;
    const std::string where = "extended partition " + std::to_string(container);
    std::set<uint64_t> visited;
    uint64_t ebr = ext_first;
    for (;;) {
        if (visited.size() == max_ebrs) {
            t.problems.push_back("the chain of extended boot records in " + where +
                                 " is longer than " + std::to_string(max_ebrs) +
                                 " records; the rest (from LBA " + std::to_string(ebr) +
                                 ") are ignored");
            return;
        }
        visited.insert(ebr);
        if (!s.has(ebr, 1)) {
            t.problems.push_back("extended boot record at LBA " + std::to_string(ebr) + " (" +
                                 hex(saturating_mul(ebr, s.size())) + ") in " + where +
                                 " lies past the end of the disk (" + s.disk_text() + ")");
            return;
        }
        const Bytes record = s.read(ebr, 1);
        if (!has_mbr_signature(record)) {
            // An extended partition without logical partitions has a blank
            // first EBR; a blank record further down the chain is damage.
            if (ebr != ext_first)
                t.problems.push_back("extended boot record at LBA " + std::to_string(ebr) + " (" +
                                     hex(ebr * s.size()) + ") in " + where +
                                     " has no 0x55aa signature; the chain ends there");
            return;
        }
        const MbrEntry* link = nullptr;
        MbrEntry entries[4];
        for (unsigned slot = 0; slot < 4; ++slot) {
            entries[slot] = mbr_entry(record, slot);
            const MbrEntry& e = entries[slot];
            if (empty(e))
                continue;
            if (is_extended(e.type)) {
                if (link == nullptr)
                    link = &entries[slot];
                continue;
            }
            const uint64_t first = ebr + e.start;
            // msdos.c: entries 3 and 4 of an EBR sometimes hold garbage, so
            // they count only when they lie inside the extended partition.
            if (slot >= 2 && (first + e.count > ext_end))
                continue;
            if (next_number - 5 == max_logical) {
                t.problems.push_back("more than " + std::to_string(max_logical) +
                                     " logical partitions; those from the extended boot record "
                                     "at LBA " +
                                     std::to_string(ebr) + " on are ignored");
                return;
            }
            Partition p = mbr_partition(next_number++, e);
            p.logical = true;
            p.extended = false;
            if (first + e.count > ext_end)
                t.problems.push_back("logical partition " + std::to_string(p.number) + " at " +
                                     s.range(first, e.count) + " reaches past the end of " + where +
                                     " (" + s.range(ext_first, ext_count) + ")");
            place(p, first, e.count, s, t);
            t.partitions.push_back(std::move(p));
        }
        if (link == nullptr)
            return;
        const uint64_t next = ext_first + link->start;
        if (next >= ext_end) {
            t.problems.push_back("extended boot record at LBA " + std::to_string(ebr) +
                                 " links to LBA " + std::to_string(next) + ", outside " + where +
                                 " (" + s.range(ext_first, ext_count) + "); the chain ends there");
            return;
        }
        if (visited.count(next) != 0) {
            t.problems.push_back("loop in the chain of extended boot records of " + where +
                                 ": the record at LBA " + std::to_string(ebr) +
                                 " links back to LBA " + std::to_string(next) +
                                 "; the chain ends there");
            return;
        }
        ebr = next;
    }
}

void read_mbr(const Sectors& s, const Bytes& s0, PartitionTable& t) {
    t.scheme = "mbr";
    char id[16];
    std::snprintf(id, sizeof id, "0x%08x", load_le<uint32_t>(&s0[mbr_disk_id_offset]));
    t.disk_id = id;
    MbrEntry entries[4];
    for (unsigned slot = 0; slot < 4; ++slot) {
        entries[slot] = mbr_entry(s0, slot);
        if (empty(entries[slot]))
            continue;
        Partition p = mbr_partition(slot + 1, entries[slot]);
        place(p, entries[slot].start, entries[slot].count, s, t);
        t.partitions.push_back(std::move(p));
    }
    unsigned next_number = 5;
    for (unsigned slot = 0; slot < 4; ++slot) {
        const MbrEntry& e = entries[slot];
        if (empty(e) || !is_extended(e.type))
            continue;
        read_logical_partitions(s, slot + 1, e.start, e.count, next_number, t);
    }
}

// --- GPT ---------------------------------------------------------------

struct GptHeader {
    uint64_t lba = 0;
    uint64_t alternate_lba = 0;
    uint64_t first_usable = 0;
    uint64_t last_usable = 0;
    unsigned char disk_guid[16] = {};
    uint64_t entries_lba = 0;
    uint32_t entry_count = 0;
    uint32_t entry_size = 0;
    uint32_t entries_crc = 0;
    Bytes entries;
};

struct GptRead {
    std::optional<GptHeader> header;
    std::string fault; // why there is no header
    bool signature = false;
    uint64_t claimed_alternate = 0; // AlternateLBA as read, even from a corrupt header
};

GptRead read_gpt_header(const Sectors& s, uint64_t lba) {
    GptRead r;
    if (!s.has(lba, 1)) {
        r.fault =
            "LBA " + std::to_string(lba) + " lies past the end of the disk (" + s.disk_text() + ")";
        return r;
    }
    const Bytes b = s.read(lba, 1);
    if (std::memcmp(b.data(), "EFI PART", 8) != 0) {
        r.fault = "no \"EFI PART\" signature at " + hex(lba * s.size());
        return r;
    }
    r.signature = true;
    r.claimed_alternate = load_le<uint64_t>(&b[32]);
    const uint32_t header_size = load_le<uint32_t>(&b[12]);
    if (header_size < gpt_header_min_size || header_size > s.size()) {
        r.fault = "header size " + std::to_string(header_size) + " is outside " +
                  std::to_string(gpt_header_min_size) + ".." + std::to_string(s.size());
        return r;
    }
    const uint32_t stored_crc = load_le<uint32_t>(&b[16]);
    Bytes copy(b.begin(), b.begin() + header_size);
    std::memset(&copy[16], 0, 4);
    const uint32_t crc = zlib_crc32(copy.data(), copy.size());
    if (crc != stored_crc) {
        r.fault =
            "header CRC32 " + hex(stored_crc) + " does not match its contents (" + hex(crc) + ")";
        return r;
    }
    GptHeader h;
    h.lba = lba;
    const uint64_t my_lba = load_le<uint64_t>(&b[24]);
    h.alternate_lba = r.claimed_alternate;
    h.first_usable = load_le<uint64_t>(&b[40]);
    h.last_usable = load_le<uint64_t>(&b[48]);
    std::memcpy(h.disk_guid, &b[56], 16);
    h.entries_lba = load_le<uint64_t>(&b[72]);
    h.entry_count = load_le<uint32_t>(&b[80]);
    h.entry_size = load_le<uint32_t>(&b[84]);
    h.entries_crc = load_le<uint32_t>(&b[88]);
    if (my_lba != lba) {
        r.fault = "the header says it lies at LBA " + std::to_string(my_lba);
        return r;
    }
    if (h.entry_size < 128 || h.entry_size % 8 != 0 || h.entry_size > gpt_max_entry_size) {
        r.fault = "partition entry size " + std::to_string(h.entry_size) +
                  " is not a multiple of 8 from 128 to " + std::to_string(gpt_max_entry_size);
        return r;
    }
    const uint64_t array_bytes = uint64_t{h.entry_count} * h.entry_size;
    if (h.entry_count > gpt_max_entries || array_bytes > gpt_max_array_bytes) {
        r.fault = "partition entry array of " + std::to_string(h.entry_count) + " entries of " +
                  std::to_string(h.entry_size) + " bytes is over the limit (" +
                  std::to_string(gpt_max_entries) + " entries, " + human_size(gpt_max_array_bytes) +
                  ")";
        return r;
    }
    if (h.first_usable > h.last_usable) {
        r.fault = "first usable LBA " + std::to_string(h.first_usable) +
                  " is after the last usable LBA " + std::to_string(h.last_usable);
        return r;
    }
    const uint64_t array_sectors = (array_bytes + s.size() - 1) / s.size();
    if (h.entries_lba <= lba && lba - h.entries_lba < array_sectors) {
        r.fault = "partition entry array at LBA " + std::to_string(h.entries_lba) +
                  " overlaps the header";
        return r;
    }
    if (h.entries_lba == 0 || !s.has(h.entries_lba, array_sectors)) {
        r.fault = "partition entry array at LBA " + std::to_string(h.entries_lba) + " (" +
                  std::to_string(array_bytes) + " bytes at " +
                  hex(saturating_mul(h.entries_lba, s.size())) + ") is not within the disk (" +
                  s.disk_text() + ")";
        return r;
    }
    h.entries = s.read(h.entries_lba, array_sectors);
    h.entries.resize(array_bytes);
    const uint32_t array_crc = zlib_crc32(h.entries.data(), h.entries.size());
    if (array_crc != h.entries_crc) {
        r.fault = "partition entry array CRC32 " + hex(h.entries_crc) +
                  " does not match the array at LBA " + std::to_string(h.entries_lba) + " (" +
                  hex(array_crc) + ")";
        return r;
    }
    r.header = std::move(h);
    return r;
}

// A GPT made for the other sector size puts its header at 0x200 or 0x1000;
// naming that turns "no signature" into the actual mistake.
std::string other_sector_size_hint(BlockDevice& disk, uint32_t sector_size) {
    const uint32_t other = sector_size == 512 ? 4096 : 512;
    if (disk.size() < other + 8)
        return "";
    char sig[8];
    disk.read(sig, sizeof sig, other);
    if (std::memcmp(sig, "EFI PART", 8) != 0)
        return "";
    return " (a GPT header lies at " + hex(other) + ": the disk may have " + std::to_string(other) +
           "-byte sectors)";
}

void compare_gpt_headers(const GptHeader& a, const GptHeader& b, PartitionTable& t) {
    const std::string where = " (primary at LBA " + std::to_string(a.lba) + ", backup at LBA " +
                              std::to_string(b.lba) + ")";
    if (std::memcmp(a.disk_guid, b.disk_guid, 16) != 0)
        t.problems.push_back("GPT primary and backup headers disagree on the disk GUID: " +
                             guid_text(a.disk_guid) + " vs " + guid_text(b.disk_guid) + where);
    if (a.entry_count != b.entry_count || a.entry_size != b.entry_size ||
        a.entries_crc != b.entries_crc)
        t.problems.push_back("GPT primary and backup partition entry arrays differ: " +
                             std::to_string(a.entry_count) + " entries of " +
                             std::to_string(a.entry_size) + " bytes, CRC32 " + hex(a.entries_crc) +
                             " vs " + std::to_string(b.entry_count) + " entries of " +
                             std::to_string(b.entry_size) + " bytes, CRC32 " + hex(b.entries_crc) +
                             where + "; the primary is used");
    if (a.first_usable != b.first_usable || a.last_usable != b.last_usable)
        t.problems.push_back("GPT primary and backup headers disagree on the usable area: LBA " +
                             std::to_string(a.first_usable) + "-" + std::to_string(a.last_usable) +
                             " vs LBA " + std::to_string(b.first_usable) + "-" +
                             std::to_string(b.last_usable) + where);
}

void read_gpt_entries(const Sectors& s, const GptHeader& h, PartitionTable& t) {
    t.disk_id = guid_text(h.disk_guid);
    for (uint32_t i = 0; i < h.entry_count; ++i) {
        const unsigned char* e = &h.entries[uint64_t{i} * h.entry_size];
        static const unsigned char unused[16] = {};
        if (std::memcmp(e, unused, 16) == 0)
            continue;
        Partition p;
        p.number = i + 1;
        p.type = guid_text(e);
        for (const auto& known : gpt_type_names)
            if (p.type == known.guid)
                p.type_name = known.name;
        p.guid = guid_text(e + 16);
        const uint64_t first = load_le<uint64_t>(e + 32);
        const uint64_t last = load_le<uint64_t>(e + 40);
        p.bootable = (load_le<uint64_t>(e + 48) & gpt_attr_legacy_bios_bootable) != 0;
        p.label = utf16le_to_utf8(e + 56, 72); // 36 UTF-16 units
        if (last < first) {
            t.problems.push_back("GPT entry " + std::to_string(p.number) + ": last LBA " +
                                 std::to_string(last) + " is before its first LBA " +
                                 std::to_string(first) + "; the entry is ignored");
            continue;
        }
        const uint64_t n = last - first == UINT64_MAX ? UINT64_MAX : last - first + 1;
        if (first < h.first_usable || last > h.last_usable)
            t.problems.push_back("partition " + std::to_string(p.number) + " at " +
                                 s.range(first, n) + " lies outside the GPT's usable area (LBA " +
                                 std::to_string(h.first_usable) + "-" +
                                 std::to_string(h.last_usable) + ")");
        place(p, first, n, s, t);
        t.partitions.push_back(std::move(p));
    }
}

void read_gpt(BlockDevice& disk, const Sectors& s, PartitionTable& t) {
    t.scheme = "gpt";
    if (!s.has(1, 1))
        throw InspectError("GPT: the disk (" + s.disk_text() +
                           ") ends before the header at LBA 1 (" + hex(s.size()) + ")");
    const uint64_t last = s.count() - 1;
    GptRead primary = read_gpt_header(s, 1);
    GptRead backup;
    if (primary.header) {
        t.gpt_header_used = "primary";
        t.gpt_backup_lba = primary.header->alternate_lba;
        if (t.gpt_backup_lba <= 1)
            backup.fault = "the primary header names LBA " + std::to_string(t.gpt_backup_lba) +
                           " as the backup's place";
        else
            backup = read_gpt_header(s, t.gpt_backup_lba);
        if (backup.header) {
            if (t.gpt_backup_lba != last)
                t.problems.push_back("GPT backup header is at LBA " +
                                     std::to_string(t.gpt_backup_lba) +
                                     ", not at the end of the disk (LBA " + std::to_string(last) +
                                     "): the disk grew since the table was written");
            compare_gpt_headers(*primary.header, *backup.header, t);
        } else {
            std::string why = "GPT backup header at LBA " + std::to_string(t.gpt_backup_lba) +
                              " is missing or corrupt (" + backup.fault + ")";
            if (t.gpt_backup_lba > last)
                why += ": the disk is smaller than when the table was written";
            else if (t.gpt_backup_lba < last)
                why += "; it is not at the end of the disk (LBA " + std::to_string(last) + ")";
            t.problems.push_back(why + "; the primary is used");
        }
        read_gpt_entries(s, *primary.header, t);
        return;
    }
    // The primary is unusable: the backup is where the specification puts it
    // (the last sector) or, when the disk grew, where the corrupt primary
    // says; either candidate must prove itself with its own CRCs and MyLBA.
    t.gpt_backup_lba = last;
    backup = read_gpt_header(s, last);
    if (!backup.header && primary.signature && primary.claimed_alternate != last &&
        primary.claimed_alternate > 1 && s.has(primary.claimed_alternate, 1)) {
        GptRead elsewhere = read_gpt_header(s, primary.claimed_alternate);
        if (elsewhere.header) {
            t.gpt_backup_lba = primary.claimed_alternate;
            backup = std::move(elsewhere);
        }
    }
    if (!backup.header)
        throw InspectError("GPT: the primary header at LBA 1 is unusable (" + primary.fault +
                           ") and the backup at LBA " + std::to_string(t.gpt_backup_lba) +
                           " is unusable too (" + backup.fault + ")" +
                           other_sector_size_hint(disk, s.size()));
    t.gpt_header_used = "backup";
    t.problems.push_back("GPT primary header at LBA 1 is corrupt (" + primary.fault +
                         "); using the backup at LBA " + std::to_string(t.gpt_backup_lba));
    read_gpt_entries(s, *backup.header, t);
}

// Overlapping volumes are either damage or a hand-made table; in both cases
// writing to one corrupts the other, so the report says so.
void check_overlaps(const Sectors& s, PartitionTable& t) {
    std::vector<const Partition*> top, logical;
    for (const auto& p : t.partitions) {
        if (p.length == 0)
            continue;
        (p.logical ? logical : top).push_back(&p);
    }
    for (auto* list : {&top, &logical}) {
        std::sort(list->begin(), list->end(),
                  [](const Partition* a, const Partition* b) { return a->offset < b->offset; });
        for (size_t i = 1; i < list->size(); ++i) {
            const Partition& a = *(*list)[i - 1];
            const Partition& b = *(*list)[i];
            if (b.offset < a.offset + a.length)
                t.problems.push_back("partitions " + std::to_string(a.number) + " and " +
                                     std::to_string(b.number) + " overlap from " + hex(b.offset) +
                                     " (LBA " + std::to_string(b.offset / s.size()) + ")");
        }
    }
}

} // namespace

std::string guid_text(const unsigned char* b) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%08x-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                  load_le<uint32_t>(b), load_le<uint16_t>(b + 4), load_le<uint16_t>(b + 6), b[8],
                  b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
    return buf;
}

PartitionTable read_partition_table(BlockDevice& disk, uint32_t sector_size) {
    if (sector_size < 512 || sector_size > 4096 || (sector_size & (sector_size - 1)) != 0)
        throw InvalidArgument(disk.name() + ": sector size " + std::to_string(sector_size) +
                              " is not 512, 1024, 2048 or 4096");
    PartitionTable t;
    t.sector_size = sector_size;
    t.scheme = "none";
    const Sectors s(disk, sector_size);
    if (s.count() == 0) {
        t.problems.push_back("the disk (" + hex(disk.size()) +
                             " bytes) is smaller than one sector of " +
                             std::to_string(sector_size) + " bytes; it holds no partition table");
        return t;
    }
    const Bytes s0 = s.read(0, 1);
    if (!has_mbr_signature(s0)) {
        if (s.has(1, 1) && std::memcmp(s.read(1, 1).data(), "EFI PART", 8) == 0)
            t.problems.push_back("sector 0 has no 0x55aa signature but LBA 1 holds a GPT header: "
                                 "the protective MBR was wiped, so the GPT is not read");
        return t;
    }
    if (looks_like_volume_boot_record(s0))
        return t;
    bool protective = false;
    for (unsigned slot = 0; slot < 4; ++slot)
        protective = protective || mbr_entry(s0, slot).type == 0xee;
    if (protective)
        read_gpt(disk, s, t);
    else
        read_mbr(s, s0, t);
    std::stable_sort(t.partitions.begin(), t.partitions.end(),
                     [](const Partition& a, const Partition& b) { return a.number < b.number; });
    check_overlaps(s, t);
    return t;
}

} // namespace p2vfs::guest

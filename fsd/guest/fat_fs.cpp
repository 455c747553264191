// FAT12/16/32, read-only, after Microsoft's specification ("Microsoft
// Extensible Firmware Initiative FAT32 File System Specification", 2000;
// the headings quoted below are its own), which UEFI adopts for the EFI
// System partition.
//
// A volume is, in sectors: the reserved area (boot sector first), the FATs,
// on FAT12/16 a fixed root directory, then the data area of clusters,
// numbered from 2. The FAT holds one entry per cluster: the number of the
// next cluster of its file, or a mark for end-of-chain, bad or free. A
// directory is a file of 32-byte entries; a file's entry gives its first
// cluster and size, the FAT the rest of its chain.
#include "guest/fat_fs.h"

#include "common/endian.h"
#include "common/error.h"
#include "common/utf.h"

#include <algorithm>
#include <bit>
#include <string_view>
#include <unordered_set>

namespace p2vfs::guest {

struct FatVolume::Node {
    bool directory = false;
    uint32_t cluster = 0; // first cluster; 0 with `root` on FAT12/16
    uint32_t size = 0;
    bool root = false;
};

namespace {

// "FAT Directory Structure": at most 65536 entries of 32 bytes in a directory.
constexpr uint64_t max_directory_bytes = 65536 * 32;

uint16_t le16_at(const unsigned char* p, size_t at) {
    return load_le<uint16_t>(p + at);
}
uint32_t le32_at(const unsigned char* p, size_t at) {
    return load_le<uint32_t>(p + at);
}

// "FAT Data Structure": entries from this value up end a chain, the one
// below marks a bad cluster. Cluster numbers stop short of both.
uint32_t end_of_chain(int bits) {
    return bits == 12 ? 0xff8 : bits == 16 ? 0xfff8 : 0x0ffffff8;
}

char fold(char c) {
    return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c;
}

bool same_name(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                              [](char x, char y) { return fold(x) == fold(y); });
}

// A long name (UTF-16, up to its 0x0000 terminator) as UTF-8; a lone
// surrogate becomes U+FFFD.
std::string utf8(const std::u16string& name) {
    std::string bytes;
    for (const char16_t c : name) {
        bytes += static_cast<char>(c & 0xff);
        bytes += static_cast<char>(c >> 8);
    }
    return utf16le_to_utf8(bytes);
}

// "FAT Directory Structure": the 8.3 name is 11 bytes, base and extension
// padded with spaces, the dot implied. A first byte 0x05 stands for 0xE5 (a
// lead byte in Shift-JIS), since 0xE5 marks a deleted entry. The lower-case
// flags Windows NT keeps at offset 0x0C do not matter to a match that
// ignores case.
std::string short_name(const unsigned char* e) {
    std::string base(reinterpret_cast<const char*>(e), 8);
    std::string ext(reinterpret_cast<const char*>(e + 8), 3);
    if (base[0] == '\x05')
        base[0] = '\xe5';
    base.erase(base.find_last_not_of(' ') + 1);
    ext.erase(ext.find_last_not_of(' ') + 1);
    return ext.empty() ? base : base + "." + ext;
}

// "FAT Long Directory Entries": each long-name entry carries this checksum
// of the 8.3 name it belongs to, so a long name left behind by a system that
// does not know long names (which renamed or deleted its short entry) is not
// believed.
uint8_t short_name_checksum(const unsigned char* e) {
    uint8_t sum = 0;
    for (int i = 0; i < 11; ++i)
        sum = static_cast<uint8_t>(((sum & 1) << 7) + (sum >> 1) + e[i]);
    return sum;
}

} // namespace

// ---- the boot sector ---------------------------------------------------------

FatVolume::FatVolume(DevicePtr disk, uint64_t offset, uint64_t length, std::string where)
    : disk_(std::move(disk)), offset_(offset), length_(length), where_(std::move(where)) {
    const uint64_t disk_size = disk_->size();
    if (offset_ > disk_size || length_ > disk_size - offset_)
        throw Error(where_ + ": range " + hex(offset_) + "+" + hex(length_) +
                    " lies past the end of " + disk_->name() + " (" + hex(disk_size) + " bytes)");
    if (length_ < 512)
        throw Error(where_ + ": " + std::to_string(length_) +
                    " bytes, too small for a FAT file system");
    unsigned char b[512];
    read(b, sizeof b, 0);
    const std::string bad = where_ + ": FAT boot sector: ";
    // "Boot Sector and BPB": x86 code starts the sector, jumping over the BPB.
    if (!(b[0] == 0xe9 || (b[0] == 0xeb && b[2] == 0x90)))
        throw Error(where_ + ": not a FAT file system (its boot sector does not start with a "
                             "jump instruction)");

    // The BIOS parameter block, its fields common to all three types...
    const uint16_t bytes_per_sector = le16_at(b, 0x0b);
    const uint8_t sectors_per_cluster = b[0x0d];
    const uint16_t reserved = le16_at(b, 0x0e); // sectors before the first FAT
    const uint8_t fats = b[0x10];
    const uint16_t root_entries = le16_at(b, 0x11); // FAT12/16 root directory; 0 on FAT32
    const uint16_t total16 = le16_at(b, 0x13);      // 0: the 32-bit count at 0x20 holds it
    const uint8_t media = b[0x15];
    const uint16_t fat16_size = le16_at(b, 0x16); // sectors per FAT; 0 on FAT32
    const uint32_t total32 = le32_at(b, 0x20);
    // ...and FAT32's own: sectors per FAT, flags, the root directory's cluster.
    const uint32_t fat32_size = le32_at(b, 0x24);
    const uint16_t ext_flags = le16_at(b, 0x28);
    const uint32_t root_cluster = le32_at(b, 0x2c);

    const auto field = [&](const std::string& name, uint64_t value, const std::string& why) {
        return Error(bad + name + " is " + std::to_string(value) + ", " + why);
    };
    if (!std::has_single_bit(bytes_per_sector) || bytes_per_sector < 512 || bytes_per_sector > 4096)
        throw field("bytes per sector", bytes_per_sector, "not a power of two from 512 to 4096");
    if (!std::has_single_bit(sectors_per_cluster))
        throw field("sectors per cluster", sectors_per_cluster, "not a power of two");
    if (reserved == 0)
        throw field("reserved sector count", reserved, "but the boot sector itself is reserved");
    if (fats == 0)
        throw field("FAT count", fats, "so there is no FAT");
    if (media != 0xf0 && media < 0xf8)
        throw Error(bad + "media descriptor is " + hex(media) + ", not 0xf0 or 0xf8..0xff");

    // As Linux decides: a zero 16-bit FAT size makes the volume FAT32 (only
    // a FAT32 BPB says where the root is); otherwise FAT12 or FAT16 by the
    // count of clusters, as "FAT Type Determination" says.
    const bool fat32 = fat16_size == 0;
    const uint64_t fat_size = fat32 ? fat32_size : fat16_size;
    const uint64_t total = total16 != 0 ? total16 : total32;
    const uint64_t sector = bytes_per_sector;
    if (fat_size == 0)
        throw field("sectors per FAT", fat_size, "so there is no FAT");
    if (fat32 && root_entries != 0)
        throw field("root directory entries", root_entries, "not 0 as FAT32 requires");
    if (total == 0)
        throw field("total sectors", total, "so there is no data area");
    if (total > length_ / sector)
        throw field("total sectors", total,
                    "more than the " + std::to_string(length_ / sector) + " sectors of the range");
    const uint64_t root_sectors = div_round_up(uint64_t{root_entries} * 32, sector);
    const uint64_t meta = reserved + fats * fat_size + root_sectors;
    if (meta + sectors_per_cluster > total)
        throw Error(bad + "reserved area, FATs and root directory take " + std::to_string(meta) +
                    " of its " + std::to_string(total) + " sectors, leaving no data cluster");
    const uint64_t clusters = (total - meta) / sectors_per_cluster;
    bits_ = fat32 ? 32 : clusters < 4085 ? 12 : 16;

    // BPB_ExtFlags (FAT32): bit 7 set means only the FAT numbered in
    // bits 0-3 is in use; otherwise all are mirrors and the first is read.
    uint64_t active = 0;
    if (fat32 && (ext_flags & 0x80) != 0) {
        active = ext_flags & 0x0f;
        if (active >= fats)
            throw Error(bad + "active FAT is " + std::to_string(active) + ", but there are " +
                        std::to_string(fats));
    }
    cluster_size_ = sector * sectors_per_cluster;
    fat_bytes_ = fat_size * sector;
    fat_offset_ = (reserved + active * fat_size) * sector;
    root_offset_ = (reserved + fats * fat_size) * sector;
    root_bytes_ = uint64_t{root_entries} * 32;
    data_offset_ = meta * sector;
    // The highest cluster: what the data area holds, what the FAT has
    // entries for, and below the bad and end-of-chain marks.
    const uint64_t fat_entries = fat_bytes_ * 8 / static_cast<uint64_t>(bits_);
    if (fat_entries < 3)
        throw field("sectors per FAT", fat_size, "too few to hold an entry for a cluster");
    last_cluster_ = static_cast<uint32_t>(
        std::min({clusters + 1, fat_entries - 1, uint64_t{end_of_chain(bits_)} - 2}));
    if (fat32) {
        if (root_cluster < 2 || root_cluster > last_cluster_)
            throw field("root directory cluster", root_cluster,
                        "outside the data area (clusters 2.." + std::to_string(last_cluster_) +
                            ")");
        root_cluster_ = root_cluster;
    }
}

// ---- the FAT -----------------------------------------------------------------

// "FAT Data Structure": FAT12 packs two 12-bit entries in three bytes,
// little-endian: entry n sits in the 16 bits at byte n + n/2, in the low 12
// of them for an even n, the high 12 for an odd one. FAT16 entries are 16
// bits; FAT32's are 32, of which the top 4 are reserved and ignored.
uint32_t FatVolume::fat_entry(uint32_t cluster) {
    const uint64_t at = bits_ == 12 ? cluster + cluster / 2ull : cluster * (bits_ / 8ull);
    const uint64_t n = bits_ == 32 ? 4 : 2;
    if (at + n > fat_bytes_) // cannot happen below last_cluster_; kept as the last guard
        throw Error(where_ + ": FAT entry of cluster " + std::to_string(cluster) +
                    " lies past the end of the FAT");
    if (fat_window_.empty() || at < fat_window_at_ ||
        at + n > fat_window_at_ + fat_window_.size()) {
        // Chains mostly run forward: read 8 KiB of the FAT at a time.
        const uint64_t start = round_down(at, 4096);
        std::vector<unsigned char> window(std::min<uint64_t>(8192, fat_bytes_ - start));
        read(window.data(), window.size(), fat_offset_ + start);
        fat_window_ = std::move(window);
        fat_window_at_ = start;
    }
    const unsigned char* p = fat_window_.data() + (at - fat_window_at_);
    if (bits_ == 32)
        return load_le<uint32_t>(p) & 0x0fffffff;
    const uint16_t v = load_le<uint16_t>(p);
    if (bits_ == 16)
        return v;
    return cluster & 1 ? v >> 4 : v & 0xfffu;
}

// The chain from `first`: for a file, its first `count` clusters (its size
// says how many it needs); for a directory, every cluster to the
// end-of-chain mark, and more than `count` is an error.
std::vector<uint32_t> FatVolume::chain(uint32_t first, uint64_t count, bool directory,
                                       const std::string& shown) {
    const std::string what = where_ + ": FAT cluster chain of " + shown;
    const uint32_t eoc = end_of_chain(bits_);
    std::vector<uint32_t> out;
    std::unordered_set<uint32_t> seen;
    for (uint32_t c = first;;) {
        if (c < 2 || c > last_cluster_)
            throw Error(what + " points to cluster " + std::to_string(c) +
                        ", outside the FAT (clusters 2.." + std::to_string(last_cluster_) + ")");
        if (!seen.insert(c).second)
            throw Error(what + " loops at cluster " + std::to_string(c));
        out.push_back(c);
        if (!directory && out.size() == count)
            return out;
        const uint32_t next = fat_entry(c);
        if (next >= eoc) {
            if (directory)
                return out;
            throw Error(what + " ends after " + std::to_string(out.size()) + " of the " +
                        std::to_string(count) + " clusters its size needs");
        }
        if (directory && out.size() == count)
            throw Error(where_ + ": directory " + shown + " has more than 65536 entries");
        if (next == 0)
            throw Error(what + " breaks at cluster " + std::to_string(c) +
                        ": its FAT entry marks it free");
        if (next == eoc - 1)
            throw Error(what + " reaches a cluster marked bad after cluster " + std::to_string(c));
        c = next;
    }
}

// ---- reading -----------------------------------------------------------------

void FatVolume::read(void* buf, uint64_t length, uint64_t at) {
    if (length > length_ || at > length_ - length)
        throw Error(where_ + ": FAT read of " + std::to_string(length) + " bytes at " + hex(at) +
                    " lies outside the file system (" + hex(length_) + " bytes)");
    disk_->read(buf, length, offset_ + at);
}

// The first `bytes` of the clusters, a run of consecutive clusters in one read.
std::string FatVolume::read_clusters(const std::vector<uint32_t>& clusters, uint64_t bytes) {
    std::string out(bytes, '\0');
    uint64_t done = 0;
    for (size_t i = 0; i < clusters.size() && done < bytes;) {
        size_t j = i + 1;
        while (j < clusters.size() && clusters[j] == clusters[j - 1] + 1)
            ++j;
        const uint64_t run = std::min<uint64_t>((j - i) * cluster_size_, bytes - done);
        read(out.data() + done, run, data_offset_ + (clusters[i] - 2ull) * cluster_size_);
        done += run;
        i = j;
    }
    return out;
}

// The raw entries of a directory: FAT12/16 keep the root in its own area
// after the FATs; FAT32's root, and every other directory, is a chain.
std::string FatVolume::read_directory(const Node& dir, const std::string& shown) {
    if (dir.root && bits_ != 32) {
        std::string out(root_bytes_, '\0');
        read(out.data(), out.size(), root_offset_);
        return out;
    }
    const uint32_t first = dir.root ? root_cluster_ : dir.cluster;
    const auto clusters =
        chain(first, div_round_up(max_directory_bytes, cluster_size_), true, shown);
    return read_clusters(clusters, clusters.size() * cluster_size_);
}

// ---- directories and paths ---------------------------------------------------

// "FAT Directory Structure", the 32-byte directory entry:
//   0x00 name (8.3)  0x0B attributes  0x14 first cluster, high 16 bits (FAT32)
//   0x1A first cluster, low 16 bits   0x1C size in bytes
// A first name byte of 0x00 ends the directory, 0xE5 marks a deleted entry.
//
// "FAT Long Directory Entries": entries with attributes 0x0F (read-only,
// hidden, system, volume label: what old systems skip) come just before the
// short entry they name, last part first. Each holds 13 UTF-16 characters (at
// 0x01, 0x0E, 0x1C), its order 1..20 at 0x00 (0x40 added on the first
// entry, which holds the end of the name), and the short name's checksum at
// 0x0D. A sequence out of order or with a wrong checksum is not a name.
std::optional<FatVolume::Node> FatVolume::resolve(const std::vector<std::string>& parts) {
    Node node{.directory = true, .root = true};
    std::string shown;
    for (const std::string& part : parts) {
        if (!node.directory)
            return std::nullopt;
        const std::string dir = read_directory(node, shown.empty() ? "\\" : shown);
        shown += "\\" + part;
        const auto* d = reinterpret_cast<const unsigned char*>(dir.data());
        std::u16string lfn;
        int lfn_next = -1; // the order of the long-name entry expected next; 0 when complete
        uint8_t lfn_sum = 0;
        std::optional<Node> found;
        for (size_t at = 0; at + 32 <= dir.size() && !found; at += 32) {
            const unsigned char* e = d + at;
            if (e[0] == 0x00)
                break;
            if (e[0] == 0xe5) {
                lfn_next = -1;
                continue;
            }
            const uint8_t attr = e[0x0b];
            if ((attr & 0x3f) == 0x0f) {
                const int order = e[0] & 0x3f;
                if ((e[0] & 0x40) != 0 && order >= 1 && order <= 20) {
                    lfn.assign(static_cast<size_t>(order) * 13, u'\0');
                    lfn_sum = e[0x0d];
                } else if (order != lfn_next || order == 0 || e[0x0d] != lfn_sum) {
                    lfn_next = -1;
                    continue;
                }
                static constexpr size_t chars[13] = {0x01, 0x03, 0x05, 0x07, 0x09, 0x0e, 0x10,
                                                     0x12, 0x14, 0x16, 0x18, 0x1c, 0x1e};
                for (size_t i = 0; i < 13; ++i)
                    lfn[static_cast<size_t>(order - 1) * 13 + i] = le16_at(e, chars[i]);
                lfn_next = order - 1;
                continue;
            }
            const bool long_name = lfn_next == 0 && short_name_checksum(e) == lfn_sum;
            lfn_next = -1;
            if ((attr & 0x08) != 0 || e[0] == '.') // the volume label, "." and ".."
                continue;
            if (same_name(short_name(e), part) || (long_name && same_name(utf8(lfn), part))) {
                const uint32_t high = bits_ == 32 ? le16_at(e, 0x14) : 0;
                found = Node{.directory = (attr & 0x10) != 0,
                             .cluster = high << 16 | le16_at(e, 0x1a),
                             .size = le32_at(e, 0x1c)};
            }
        }
        if (!found)
            return std::nullopt;
        node = *found;
    }
    return node;
}

namespace {

// "EFI/Microsoft//Boot/" -> {"EFI", "Microsoft", "Boot"}; "." parts dropped.
std::vector<std::string> split(const std::string& path) {
    std::vector<std::string> parts;
    size_t start = 0;
    while (start <= path.size()) {
        const size_t end = std::min(path.find('/', start), path.size());
        std::string part = path.substr(start, end - start);
        if (!part.empty() && part != ".")
            parts.push_back(std::move(part));
        start = end + 1;
    }
    return parts;
}

// {"EFI", "Microsoft"} -> "\EFI\Microsoft", as Windows would name it.
std::string shown_path(const std::vector<std::string>& parts) {
    std::string s;
    for (const auto& p : parts)
        s += "\\" + p;
    return s.empty() ? "\\" : s;
}

} // namespace

std::optional<FatEntry> FatVolume::stat(const std::string& path) {
    const auto parts = split(path);
    const auto node = resolve(parts);
    if (!node)
        return std::nullopt;
    return FatEntry{.directory = node->directory, .size = node->directory ? 0 : node->size};
}

std::string FatVolume::read_file(const std::string& path, uint64_t limit) {
    const auto parts = split(path);
    const std::string shown = shown_path(parts);
    const auto node = resolve(parts);
    if (!node)
        throw Error(where_ + ": " + shown + " does not exist", ENOENT);
    if (node->directory)
        throw Error(where_ + ": " + shown + " is a directory, not a file", EISDIR);
    if (node->size > limit)
        throw Error(where_ + ": " + shown + " is " + human_size(node->size) + "; more than the " +
                        human_size(limit) + " read from such a file",
                    EFBIG);
    if (node->size == 0)
        return {};
    return read_clusters(
        chain(node->cluster, div_round_up(node->size, cluster_size_), false, shown), node->size);
}

} // namespace p2vfs::guest

// VHDX views: dynamic (only blocks that hold data) and fixed (every block,
// in disk order, so reads pass straight through to the source).
//
// Specification: Microsoft "[MS-VHDX]: Virtual Hard Disk v2 (VHDX) File
// Format". Layout, fixed once from size() and extents(), every object on a
// 1 MB boundary (2.1), which leaves their order free (qemu-img puts its BAT
// before the metadata; a 1 MB log right after the header section is what
// Hyper-V and qemu-img both write):
//   0        file type identifier, creator "p2vfs" (2.2.1)
//   64 KB    header 1, sequence number 1 (2.2.2)
//   128 KB   header 2, sequence number 2: both valid, header 2 current
//   192 KB   region table, and its copy at 256 KB (2.2.3): BAT, metadata
//   1 MB     log, 1 MB of zeros; LogGuid is zero, so no reader replays it (2.3)
//   2 MB     metadata region, 1 MB (2.6): table, then the five required items
//   3 MB     BAT (2.5), rounded up to whole MB; entries generated on read
//   ...      payload blocks, each whole and 1 MB aligned (block sizes are
//            whole MB): dynamic, the blocks holding data in disk order;
//            fixed, every block in order, the (grown) source itself
//
// BAT states. Fixed: every payload entry PAYLOAD_BLOCK_FULLY_PRESENT and
// File Parameters' LeaveBlockAllocated set, as Hyper-V writes a fixed disk.
// Dynamic: blocks without data are PAYLOAD_BLOCK_NOT_PRESENT (0), the state
// Hyper-V gives every block of a new dynamic disk (2.5.1.1: "the default
// state for all new blocks"); Windows, qemu and libvhdi read such blocks as
// zeros. PAYLOAD_BLOCK_ZERO would promise zeros in the specification's words
// too, but it is what qemu-img writes by default and calls "non-standard",
// and PAYLOAD_BLOCK_UNMAPPED changed its value between revisions of the
// specification (5, now 3), so neither is used. Sector bitmap entries are
// SB_BLOCK_NOT_PRESENT, as 2.5.1.2 requires of non-differencing disks; they
// are interleaved after every chunk_ratio payload entries (2.5).
//
// Virtual size: the source rounded up to whole logical sectors (2.6.2.2
// requires a multiple of LogicalSectorSize); the padding reads as zeros.
// Identifiers (FileWriteGuid, DataWriteGuid, VirtualDiskId) come from
// stable_uuid(), never from a random source or the clock.
#include "block/grow_device.h"
#include "common/crc32c.h"
#include "common/endian.h"
#include "common/error.h"
#include "common/stable_id.h"
#include "formats/allocation_map.h"
#include "formats/format.h"
#include "formats/layout_view.h"
#include "formats/vhdx_spec.h"

#include <algorithm>
#include <cstring>

namespace p2vfs {
namespace {

constexpr uint64_t log_offset = vhdx::header_section_size;
constexpr uint64_t log_length = vhdx::MiB; // Hyper-V's and qemu-img's default
constexpr uint64_t metadata_offset = log_offset + log_length;
constexpr uint64_t metadata_length = vhdx::MiB;
constexpr uint64_t bat_offset = metadata_offset + metadata_length;
constexpr char creator[] = "p2vfs";

// "32M", "1048576", "256M", "1G": a byte count, with an optional binary K, M
// or G suffix; nullopt if the text is not one.
std::optional<uint64_t> parse_size(const std::string& text) {
    uint64_t n = 0;
    size_t i = 0;
    for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
        if (n > uint64_t{1} << 30) // far larger than any size asked for here
            return std::nullopt;
        n = n * 10 + static_cast<uint64_t>(text[i] - '0');
    }
    if (i == 0)
        return std::nullopt;
    const std::string suffix = text.substr(i);
    unsigned shift = 0;
    if (suffix == "K")
        shift = 10;
    else if (suffix == "M")
        shift = 20;
    else if (suffix == "G")
        shift = 30;
    else if (!suffix.empty())
        return std::nullopt;
    return n << shift; // n < 2^34: no overflow
}

// The sizes a view is laid out from, after its options are checked.
struct Geometry {
    uint64_t disk_size;           // virtual size: the source in whole logical sectors
    uint64_t block_size;          // payload block size
    uint32_t logical_sector_size; // 512 or 4096
    uint32_t physical_sector_size;
    uint64_t blocks;      // payload blocks covering disk_size
    uint64_t chunk_ratio; // payload blocks per sector bitmap block
    uint64_t bat_entries;
    uint64_t bat_length; // the BAT region, whole MB
    uint64_t data_start; // where payload blocks begin

    static Geometry of(const ViewRequest& req) {
        Geometry g{};
        const std::string& bs = req.options.get("block-size");
        const auto block_size = parse_size(bs);
        if (!block_size || *block_size < vhdx::min_block_size ||
            *block_size > vhdx::max_block_size || (*block_size & (*block_size - 1)) != 0)
            throw InvalidArgument("option block-size=" + bs +
                                  ": must be a power of two from 1M to 256M");
        g.block_size = *block_size;
        g.logical_sector_size = static_cast<uint32_t>(
            std::stoul(req.options.get_choice("logical-sector-size", {"512", "4096"})));
        g.physical_sector_size = static_cast<uint32_t>(
            std::stoul(req.options.get_choice("physical-sector-size", {"512", "4096"})));
        // A logical sector spans whole physical sectors: New-VHD and diskpart
        // make no disk that claims otherwise, and guests would align I/O to
        // a physical sector smaller than the smallest they can address.
        if (g.physical_sector_size < g.logical_sector_size)
            throw InvalidArgument(
                "VHDX: physical-sector-size=" + std::to_string(g.physical_sector_size) +
                " is smaller than logical-sector-size=" + std::to_string(g.logical_sector_size));
        g.disk_size = round_up(req.source->size(), g.logical_sector_size);
        // Format::max_size refused larger sources; 64 TB is a whole number of
        // 4 KB sectors, so rounding up cannot cross it.
        if (g.disk_size > vhdx::max_disk_size)
            throw FormatLimitError("VHDX: disk of " + human_size(g.disk_size) +
                                   " exceeds the format's " + human_size(vhdx::max_disk_size) +
                                   " limit");
        g.blocks = div_round_up(g.disk_size, g.block_size);
        g.chunk_ratio = vhdx::chunk_ratio(g.logical_sector_size, g.block_size);
        g.bat_entries = vhdx::bat_entry_count(g.blocks, g.chunk_ratio);
        // A region needs a non-zero, whole-MB length even for an empty disk.
        g.bat_length =
            std::max(round_up(g.bat_entries * 8, vhdx::object_alignment), vhdx::object_alignment);
        g.data_start = bat_offset + g.bat_length;
        return g;
    }
};

template <typename T> std::vector<unsigned char> bytes_of(const T& s) {
    const auto* p = reinterpret_cast<const unsigned char*>(&s);
    return {p, p + sizeof s};
}

// A GUID from stable_uuid(), stored so that its binary form (vhdx_spec.h)
// reads back as the same text: Hyper-V's Get-VHD then shows the identifier
// uuid_text() gives.
void put_stable_guid(unsigned char* out, const std::string& input) {
    const auto u = stable_uuid(input);
    constexpr int to[16] = {3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15};
    for (int i = 0; i < 16; ++i)
        out[to[i]] = u[i];
}

std::vector<unsigned char> file_identifier() {
    vhdx::FileIdentifier id{};
    std::memcpy(id.signature, "vhdxfile", 8);
    for (size_t i = 0; creator[i] != '\0'; ++i)
        id.creator[2 * i] = static_cast<unsigned char>(creator[i]); // UTF-16LE
    return bytes_of(id);
}

std::vector<unsigned char> header(const ViewRequest& req, const std::string& kind,
                                  const Geometry& g, uint64_t sequence_number) {
    vhdx::Header h{};
    std::memcpy(h.signature, "head", 4);
    h.sequence_number.set(sequence_number);
    put_stable_guid(h.file_write_guid,
                    kind + "|file|" + req.options.canonical() + "|" + req.source->identity());
    // DataWriteGuid names the disk's content (2.2.2), which the layout
    // options and the kind of file do not change: differencing disks made on
    // one view also link to the other views of the same content.
    put_stable_guid(h.data_write_guid, "vhdx|data|" + std::to_string(g.logical_sector_size) + "|" +
                                           req.source->identity());
    h.log_version.set(0);
    h.version.set(1);
    h.log_length.set(static_cast<uint32_t>(log_length));
    h.log_offset.set(log_offset);
    h.checksum.set(crc32c(&h, sizeof h));
    return bytes_of(h);
}

std::vector<unsigned char> region_table(const Geometry& g) {
    std::vector<unsigned char> t(vhdx::region_table_size, 0);
    vhdx::RegionTableHeader head{};
    std::memcpy(head.signature, "regi", 4);
    head.entry_count.set(2);
    vhdx::RegionTableEntry entries[2]{};
    std::memcpy(entries[0].guid, vhdx::bat_region.data(), 16);
    entries[0].file_offset.set(bat_offset);
    entries[0].length.set(static_cast<uint32_t>(g.bat_length));
    entries[0].required.set(1);
    std::memcpy(entries[1].guid, vhdx::metadata_region.data(), 16);
    entries[1].file_offset.set(metadata_offset);
    entries[1].length.set(static_cast<uint32_t>(metadata_length));
    entries[1].required.set(1);
    std::memcpy(t.data(), &head, sizeof head);
    std::memcpy(t.data() + sizeof head, entries, sizeof entries);
    head.checksum.set(crc32c(t.data(), t.size()));
    std::memcpy(t.data(), &head, sizeof head);
    return t;
}

// The metadata table followed by its items, which start at 64 KB (2.6.1.2).
std::vector<unsigned char> metadata(const ViewRequest& req, const std::string& kind,
                                    const Geometry& g, bool fixed) {
    vhdx::FileParameters params{};
    params.block_size.set(static_cast<uint32_t>(g.block_size));
    params.flags.set(fixed ? vhdx::leave_block_allocated : 0);
    le64 disk_size{};
    disk_size.set(g.disk_size);
    unsigned char disk_id[16];
    put_stable_guid(disk_id,
                    kind + "|disk-id|" + req.options.canonical() + "|" + req.source->identity());
    le32 logical{}, physical{};
    logical.set(g.logical_sector_size);
    physical.set(g.physical_sector_size);

    struct Item {
        const vhdx::Guid& id;
        uint32_t flags;
        const void* data;
        uint32_t length;
    };
    constexpr uint32_t disk_item = vhdx::metadata_is_virtual_disk | vhdx::metadata_is_required;
    // 2.6.2: the flags the specification gives each known item.
    const Item items[] = {
        {vhdx::file_parameters_item, vhdx::metadata_is_required, &params, sizeof params},
        {vhdx::virtual_disk_size_item, disk_item, &disk_size, sizeof disk_size},
        {vhdx::virtual_disk_id_item, disk_item, disk_id, sizeof disk_id},
        {vhdx::logical_sector_size_item, disk_item, &logical, sizeof logical},
        {vhdx::physical_sector_size_item, disk_item, &physical, sizeof physical},
    };

    std::vector<unsigned char> m(vhdx::metadata_table_size, 0);
    vhdx::MetadataTableHeader head{};
    std::memcpy(head.signature, "metadata", 8);
    head.entry_count.set(static_cast<uint16_t>(std::size(items)));
    std::memcpy(m.data(), &head, sizeof head);
    size_t entry_at = sizeof head;
    for (const Item& item : items) {
        vhdx::MetadataTableEntry e{};
        std::memcpy(e.item_id, item.id.data(), 16);
        e.offset.set(static_cast<uint32_t>(m.size()));
        e.length.set(item.length);
        e.flags.set(item.flags);
        std::memcpy(m.data() + entry_at, &e, sizeof e);
        entry_at += sizeof e;
        const auto* p = static_cast<const unsigned char*>(item.data);
        m.insert(m.end(), p, p + item.length);
    }
    return m;
}

class VhdxView : public LayoutView {
protected:
    VhdxView(const ViewRequest& req, const std::string& kind, bool fixed)
        : LayoutView(req.file_name + " of " + req.source->name(),
                     kind + "(" + req.options.canonical() + "):" + req.source->identity()) {
        const Geometry g = Geometry::of(req);
        data_ = grown(req.source, g.blocks * g.block_size);

        add_structure(file_identifier(), vhdx::header1_offset);
        add_structure(header(req, kind, g, 1), vhdx::header2_offset);
        add_structure(header(req, kind, g, 2), vhdx::region_table1_offset);
        const auto regions = region_table(g);
        add_structure(regions, vhdx::region_table2_offset);
        add_structure(regions, vhdx::region_table2_offset + vhdx::header_slot_size);
        pad_to(metadata_offset); // the rest of the header section, then the log
        add_structure(metadata(req, kind, g, fixed), bat_offset);

        if (fixed) {
            add_bat(g, [data_start = g.data_start, block_size = g.block_size](uint64_t block) {
                return (data_start + block * block_size) | vhdx::payload_block_fully_present;
            });
            // The source itself: reads pass through and splice, holes stay holes.
            add_device(data_, 0, g.blocks * g.block_size);
            return;
        }

        map_ = AllocationMap::of(*req.source, g.block_size);
        const AllocationMap* map = &map_;
        add_bat(g, [map, data_start = g.data_start, block_size = g.block_size](uint64_t block) {
            const auto o = map->ordinal(block);
            return o ? (data_start + *o * block_size) | vhdx::payload_block_fully_present
                     : vhdx::payload_block_not_present;
        });
        add_stored_blocks(data_, map);
    }

private:
    // A structure at the current end, then a hole up to `slot_end`. Its
    // trailing zeros join the hole: same bytes, fewer allocated ones.
    void add_structure(std::vector<unsigned char> bytes, uint64_t slot_end) {
        const auto last = std::find_if(bytes.rbegin(), bytes.rend(), [](unsigned char b) {
                              return b != 0;
                          }).base();
        bytes.erase(last, bytes.end());
        add_bytes(std::move(bytes));
        pad_to(slot_end);
    }

    // The BAT (2.5): payload entries from `payload_entry(block)`, a sector
    // bitmap entry after every chunk_ratio of them, zeros to the region end.
    void add_bat(const Geometry& g, std::function<uint64_t(uint64_t)> payload_entry) {
        const uint64_t ratio = g.chunk_ratio;
        const uint64_t entries = g.bat_entries;
        add_generated(g.bat_length, [ratio, entries, payload_entry = std::move(payload_entry)](
                                        unsigned char* out, size_t n, uint64_t rel) {
            fill_table<uint64_t>(
                out, n, rel, entries,
                [ratio, &payload_entry](uint64_t i) {
                    if (i % (ratio + 1) == ratio)
                        return vhdx::sb_block_not_present;
                    return payload_entry(i - i / (ratio + 1));
                },
                false, 0);
        });
        pad_to(g.data_start);
    }

    DevicePtr data_;
    AllocationMap map_;
};

class VhdxDynamicView : public VhdxView {
public:
    explicit VhdxDynamicView(const ViewRequest& req) : VhdxView(req, "vhdx", false) {}
};

class VhdxFixedView : public VhdxView {
public:
    explicit VhdxFixedView(const ViewRequest& req) : VhdxView(req, "vhdx-fixed", true) {}
};

// Hyper-V's defaults for a new dynamic VHDX: 32 MB blocks, 512-byte logical
// and 4096-byte physical sectors (512e).
const std::vector<FormatOption> vhdx_options{
    {"block-size", "32M", "payload block size, a power of two from 1M to 256M"},
    {"logical-sector-size", "512",
     "sector size the guest sees, 512 or 4096 (4096 rounds the size up to 4 KiB)"},
    {"physical-sector-size", "4096", "physical sector size reported, 512 or 4096"},
};

} // namespace

extern const Format vhdx_dynamic_format{
    // extern: listed in format_table.cpp
    "vhdx",
    "VHDX",
    "disk.vhdx",
    "VHDX, dynamic: only blocks that hold data are in the file (Hyper-V, Windows, qemu)",
    vhdx_options,
    vhdx::max_disk_size,
    one_file<VhdxDynamicView>,
};

extern const Format vhdx_fixed_format{
    // extern: listed in format_table.cpp
    "vhdx-fixed",
    "VHDX",
    "disk-fixed.vhdx",
    "VHDX, fixed: every block present, the disk laid out in order (Hyper-V)",
    vhdx_options,
    vhdx::max_disk_size,
    one_file<VhdxFixedView>,
};

} // namespace p2vfs

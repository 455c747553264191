#include "formats/vmdk_descriptor.h"

#include "common/error.h"
#include "common/stable_id.h"
#include "formats/geometry.h"

#include <cstdio>

namespace p2vfs::vmdk {
namespace {

std::string hex_bytes(const uint8_t* bytes, size_t n) {
    std::string out;
    for (size_t i = 0; i < n; ++i) {
        char h[3];
        std::snprintf(h, sizeof h, "%02x", bytes[i]);
        out += h;
    }
    return out;
}

} // namespace

DiskDatabase disk_database(const ViewOptions& options) {
    DiskDatabase ddb{options.get_choice("adapter", {"ide", "lsilogic", "buslogic", "pvscsi"}),
                     options.get_uint("hwversion", 4, 21)};
    if (ddb.adapter == "pvscsi" && ddb.hw_version < 7)
        throw InvalidArgument("VMDK: adapter=pvscsi needs hwversion 7 or later (given " +
                              std::to_string(ddb.hw_version) + ")");
    return ddb;
}

std::string extent_line(uint64_t sectors, std::string_view type, std::string_view file,
                        std::optional<uint64_t> offset) {
    std::string line = "RW " + std::to_string(sectors) + " " + std::string(type) + " \"" +
                       std::string(file) + "\"";
    if (offset)
        line += " " + std::to_string(*offset);
    return line;
}

std::string descriptor_text(const DescriptorSpec& spec) {
    auto id = stable_hash128(spec.content_key);
    // CID ffffffff means "no parent" and fffffffe "use the long content ID"
    // to VMware's readers; a content hash must not land on either.
    if (id[0] == 0xff && id[1] == 0xff && id[2] == 0xff && id[3] >= 0xfe)
        id[0] = 0x7f;
    const std::string cid = hex_bytes(id.data(), 4);
    const std::string long_cid = hex_bytes(id.data(), id.size());
    // ddb.uuid: the 16 bytes in hex, spaces between them and a dash in the
    // middle, as VMware writes it.
    const auto uuid = stable_uuid(spec.uuid_key);
    std::string ddb_uuid;
    for (size_t i = 0; i < uuid.size(); ++i)
        ddb_uuid += (i == 0 ? "" : (i == 8 ? "-" : " ")) + hex_bytes(&uuid[i], 1);
    const Chs chs = vmdk_geometry(spec.capacity_sectors, spec.ddb.adapter != "ide");

    std::string d;
    d += "# Disk DescriptorFile\n";
    d += "version=1\n";
    d += "CID=" + cid + "\n";
    d += "parentCID=ffffffff\n";
    d += "createType=\"" + spec.create_type + "\"\n\n";
    d += "# Extent description\n";
    d += spec.extent_line + "\n\n";
    d += "# The Disk Data Base\n#DDB\n\n";
    d += "ddb.virtualHWVersion = \"" + std::to_string(spec.ddb.hw_version) + "\"\n";
    d += "ddb.geometry.cylinders = \"" + std::to_string(chs.cylinders) + "\"\n";
    d += "ddb.geometry.heads = \"" + std::to_string(chs.heads) + "\"\n";
    d += "ddb.geometry.sectors = \"" + std::to_string(chs.sectors_per_track) + "\"\n";
    d += "ddb.adapterType = \"" + spec.ddb.adapter + "\"\n";
    d += "ddb.uuid = \"" + ddb_uuid + "\"\n";
    d += "ddb.longContentID = \"" + long_cid + "\"\n";
    return d;
}

} // namespace p2vfs::vmdk

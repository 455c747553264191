// VMDK flat pair: a text descriptor and the flat extent it names, two files
// a user copies to a datastore together.
//
// Specification: VMware "Virtual Disk Format 5.0", "The Descriptor File" and
// "Simple Extents" (a flat extent is the disk's sectors, nothing else).
//
//   disk-esx.vmdk        descriptor text (createType, one extent line, DDB)
//   disk-esx-flat.vmdk   the source, grown to whole sectors, passed through:
//                        reads splice from the source, holes stay holes
//
// Names follow VMware's NAME.vmdk + NAME-flat.vmdk convention (ESXi's
// datastore browser and vmkfstools show such a pair as one disk); disk.vmdk
// is the sparse view, so this pair is "disk-esx". The extent line names the
// extent file by its bare name, relative to the descriptor: the pair works
// from any directory it is copied to.
//
// createType: "vmfs" (default), with a `VMFS` extent line, is what ESXi
// itself writes for a thick disk on a datastore (and what VMware's KB on
// recreating a descriptor prescribes), so an uploaded pair is a disk ESXi
// knows. "monolithicFlat", with a `FLAT ... 0` line, is the hosted products'
// preallocated disk (Workstation, Fusion, VirtualBox). qemu and libvmdk read
// both.
#include "block/filter_device.h"
#include "block/grow_device.h"
#include "common/endian.h"
#include "formats/format.h"
#include "formats/layout_view.h"
#include "formats/vmdk_descriptor.h"
#include "formats/vmdk_spec.h"

namespace p2vfs {
namespace {

// "disk-esx.vmdk" -> "disk-esx-flat.vmdk"; a name without ".vmdk" gets the
// suffix appended whole ("pc1" -> "pc1-flat.vmdk").
std::string extent_file_name(const std::string& descriptor) {
    const std::string ext = ".vmdk";
    std::string stem = descriptor;
    if (stem.size() > ext.size() && stem.compare(stem.size() - ext.size(), ext.size(), ext) == 0)
        stem.resize(stem.size() - ext.size());
    return stem + "-flat.vmdk";
}

class VmdkFlatDescriptor : public LayoutView {
public:
    VmdkFlatDescriptor(const ViewRequest& req, const std::string& extent_name, uint64_t capacity)
        : LayoutView(req.file_name + " of " + req.source->name(),
                     "vmdk-flat(" + req.options.canonical() + "):" + req.source->identity()) {
        const std::string& type = req.options.get_choice("createtype", {"vmfs", "monolithicFlat"});
        const std::string text = vmdk::descriptor_text({
            type,
            type == "vmfs" ? vmdk::extent_line(capacity, "VMFS", extent_name)
                           : vmdk::extent_line(capacity, "FLAT", extent_name, 0),
            capacity,
            vmdk::disk_database(req.options),
            "vmdk-flat|" + req.options.canonical() + "|" + req.source->identity(),
            "vmdk-flat-uuid|" + req.source->identity(),
        });
        add_bytes({text.begin(), text.end()});
    }
};

// The extent: the grown source under its own name; every call passes through.
class VmdkFlatExtent : public FilterDevice {
public:
    VmdkFlatExtent(DevicePtr data, std::string name)
        : FilterDevice(std::move(data)), name_(std::move(name)) {}
    std::string name() const override { return name_; }
    std::string identity() const override { return "vmdk-flat-extent:" + next_->identity(); }

private:
    std::string name_;
};

std::vector<ViewFile> make_flat_files(const ViewRequest& req) {
    const uint64_t capacity = div_round_up(req.source->size(), vmdk::sector_size);
    const std::string extent_name = extent_file_name(req.file_name);
    auto descriptor = std::make_shared<VmdkFlatDescriptor>(req, extent_name, capacity);
    auto extent = std::make_shared<VmdkFlatExtent>(grown(req.source, capacity * vmdk::sector_size),
                                                   extent_name + " of " + req.source->name());
    return {{req.file_name, std::move(descriptor)}, {extent_name, std::move(extent)}};
}

} // namespace

extern const Format vmdk_flat_format{
    // extern: listed in format_table.cpp
    "vmdk-flat",
    "VMDK flat",
    "disk-esx.vmdk",
    "VMDK descriptor + flat extent (disk-esx-flat.vmdk): copy both to an ESXi datastore",
    {vmdk::adapter_option,
     vmdk::hwversion_option,
     {"createtype", "vmfs",
      "vmfs (ESXi's own thick disk) or monolithicFlat (hosted VMware products)"}},
    0,
    make_flat_files,
};

} // namespace p2vfs

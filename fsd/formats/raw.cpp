// The raw view: the disk itself, byte for byte. Reads, holes and splicing
// all pass through to the source.
#include "block/filter_device.h"
#include "formats/format.h"

namespace p2vfs {
namespace {

class RawView : public FilterDevice {
public:
    explicit RawView(const ViewRequest& req)
        : FilterDevice(req.source), file_name_(req.file_name) {}
    std::string name() const override { return file_name_ + " of " + next_->name(); }
    std::string identity() const override { return "raw:" + next_->identity(); }

private:
    std::string file_name_;
};

} // namespace

extern const Format raw_format{
    // extern: listed in format_table.cpp
    "raw",
    "raw",
    "disk.raw",
    "raw disk image, byte for byte the source (dd, loop devices, any hypervisor)",
    {},
    0,
    one_file<RawView>,
};

} // namespace p2vfs

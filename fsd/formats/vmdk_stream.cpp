// VMDK streamOptimized view.
//
// Specification: VMware "Virtual Disk Format 5.0", "Stream-Optimized
// Compressed Sparse Extents" (structures in vmdk_spec.h and
// vmdk_stream_spec.h).
//
// Layout, in sectors, fixed when prepare() has compressed the grains:
//   0          header: version 3, compressed grains with markers, gdOffset
//              GD_AT_END (the directory's place is in the footer)
//   1..20      embedded descriptor (createType "streamOptimized")
//   21..127    zeros (a hole)
//   128        the body, from the cache file (vmdk_stream_body.h): per 512
//              grains holding data, their grain markers and zlib streams, then
//              a grain-table marker and the grain table
//   ...        grain-directory marker, grain directory
//   end-3      footer marker
//   end-2      footer: the header again, with the real gdOffset
//   end-1      end-of-stream marker
// This is the order VMware's own exports write, so the file can be read as a
// stream front to back (ESXi's OVF import) or at random through the
// directory in the footer (qemu, libvmdk). Reads of the body splice from
// the cache file.
#include "formats/vmdk_stream.h"

#include "block/grow_device.h"
#include "common/endian.h"
#include "common/error.h"
#include "formats/vmdk_descriptor.h"
#include "formats/vmdk_spec.h"
#include "formats/vmdk_stream_spec.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace p2vfs {
namespace {

constexpr uint64_t body_start_sector = 128; // one grain, where VMware's exports start it
constexpr uint64_t grain_bytes = vmdk::default_grain_sectors * vmdk::sector_size;

std::string default_cache_dir() {
    const char* tmp = std::getenv("TMPDIR");
    return std::string(tmp && *tmp ? tmp : "/var/tmp") + "/p2vfs-cache";
}

vmdk::StreamBodySettings settings_from(const ViewOptions& options) {
    const std::string& dir = options.get("cachedir");
    return {dir.empty() ? default_cache_dir() : dir,
            std::clamp(std::thread::hardware_concurrency(), 1u, 8u), 6};
}

// The options that change the bytes: all but where the cache lives.
std::string content_options(const ViewOptions& options) {
    auto values = options.values();
    values.erase("cachedir");
    return ViewOptions(std::move(values)).canonical();
}

std::vector<unsigned char> marker_sector(uint64_t num_sectors, vmdk::MarkerType type) {
    vmdk::MetadataMarker m{};
    m.num_sectors.set(num_sectors);
    m.type.set(type);
    const auto* p = reinterpret_cast<const unsigned char*>(&m);
    return {p, p + sizeof m};
}

} // namespace

VmdkStreamView::VmdkStreamView(const ViewRequest& req)
    : VmdkStreamView(req, settings_from(req.options)) {}

VmdkStreamView::VmdkStreamView(const ViewRequest& req, vmdk::StreamBodySettings settings)
    : LayoutView(req.file_name + " of " + req.source->name(),
                 "vmdk-stream(" + content_options(req.options) + "):" + req.source->identity()),
      settings_(std::move(settings)),
      capacity_(div_round_up(req.source->size(), vmdk::sector_size)) {
    const uint64_t grains = div_round_up(capacity_, vmdk::default_grain_sectors);
    source_ = grown(req.source, grains * grain_bytes);
    descriptor_ = vmdk::descriptor_text({
        "streamOptimized",
        vmdk::extent_line(capacity_, "SPARSE", req.file_name),
        capacity_,
        vmdk::disk_database(req.options),
        "vmdk-stream|" + content_options(req.options) + "|" + req.source->identity(),
        "vmdk-stream-uuid|" + req.source->identity(),
    });
    if (descriptor_.size() >= vmdk::descriptor_sectors * vmdk::sector_size)
        throw Error("VMDK stream: descriptor of " + std::to_string(descriptor_.size()) +
                    " bytes does not fit its " +
                    std::to_string(vmdk::descriptor_sectors * vmdk::sector_size) + " reserved");
}

std::vector<unsigned char> VmdkStreamView::header(uint64_t gd_offset) const {
    vmdk::SparseExtentHeader h{};
    h.magic_number.set(vmdk::magic);
    h.version.set(vmdk::stream_version);
    // No redundant directory: a stream has one, written at the end.
    h.flags.set(vmdk::flag_valid_newline_test | vmdk::flag_compressed | vmdk::flag_markers);
    h.capacity.set(capacity_);
    h.grain_size.set(vmdk::default_grain_sectors);
    h.descriptor_offset.set(1);
    h.descriptor_size.set(vmdk::descriptor_sectors);
    h.num_gtes_per_gt.set(vmdk::gtes_per_gt);
    h.rgd_offset.set(0);
    h.gd_offset.set(gd_offset);
    h.over_head.set(body_start_sector);
    h.single_end_line_char = '\n';
    h.non_end_line_char = ' ';
    h.double_end_line_char1 = '\r';
    h.double_end_line_char2 = '\n';
    h.compress_algorithm.set(vmdk::compress_deflate);
    const auto* p = reinterpret_cast<const unsigned char*>(&h);
    return {p, p + sizeof h};
}

void VmdkStreamView::prepare(const Progress& progress) {
    std::lock_guard lock(prepare_mutex_);
    if (ready())
        return;
    const AllocationMap map = AllocationMap::of(*source_, grain_bytes);
    vmdk::StreamBody body = vmdk::write_stream_body(*source_, map, capacity_, body_start_sector,
                                                    settings_, progress, name());
    cache_ = std::move(body.cache);

    add_bytes(header(vmdk::gd_at_end));
    std::vector<unsigned char> desc(vmdk::descriptor_sectors * vmdk::sector_size, 0);
    std::memcpy(desc.data(), descriptor_.data(), descriptor_.size());
    add_bytes(std::move(desc));
    pad_to(body_start_sector * vmdk::sector_size);

    auto cache = cache_;
    add_generated(
        body.length,
        [cache](unsigned char* out, size_t n, uint64_t rel) { cache->read_at(out, n, rel); }, {},
        [cache](uint64_t rel, size_t) -> std::optional<FdSpan> {
            return FdSpan{cache->fd(), rel};
        });

    const uint64_t gd_sectors = div_round_up(body.directory.size() * 4, vmdk::sector_size);
    add_bytes(marker_sector(gd_sectors, vmdk::marker_grain_directory));
    const uint64_t gd_offset = end() / vmdk::sector_size;
    std::vector<unsigned char> gd(gd_sectors * vmdk::sector_size, 0);
    for (size_t i = 0; i < body.directory.size(); ++i)
        store_le<uint32_t>(&gd[4 * i], body.directory[i]);
    add_bytes(std::move(gd));
    add_bytes(marker_sector(1, vmdk::marker_footer));
    add_bytes(header(gd_offset));
    add_bytes(marker_sector(0, vmdk::marker_eos));
    ready_.store(true, std::memory_order_release);
}

uint64_t VmdkStreamView::size() const {
    return ready() ? LayoutView::size() : 0;
}

void VmdkStreamView::require_ready(const char* op, uint64_t offset) const {
    if (!ready())
        throw Error(name() + ": " + op + " at " + hex(offset) +
                    " before the view was prepared (its grains are not compressed yet)");
}

void VmdkStreamView::read(void* buf, size_t length, uint64_t offset) {
    require_ready("read", offset);
    LayoutView::read(buf, length, offset);
}

std::vector<Extent> VmdkStreamView::extents(uint64_t offset, uint64_t length) {
    require_ready("extents", offset);
    return LayoutView::extents(offset, length);
}

std::optional<FdSpan> VmdkStreamView::fd_span(uint64_t offset, size_t length) {
    require_ready("fd_span", offset);
    return LayoutView::fd_span(offset, length);
}

extern const Format vmdk_stream_format{
    // extern: listed in format_table.cpp
    "vmdk-stream",
    "VMDK stream",
    "disk-stream.vmdk",
    "VMDK streamOptimized (compressed): OVF/OVA import into ESXi or vCenter, ovftool; "
    "compressed when first opened",
    {vmdk::adapter_option,
     vmdk::hwversion_option,
     {"cachedir", "",
      "directory for the compressed grains (default $TMPDIR/p2vfs-cache, else "
      "/var/tmp/p2vfs-cache)"}},
    0,
    one_file<VmdkStreamView>,
};

} // namespace p2vfs

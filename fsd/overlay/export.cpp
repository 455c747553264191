#include "overlay/export.h"

#include "block/copy_to_file.h"
#include "formats/format.h"

#include <spdlog/spdlog.h>

namespace p2vfs {

ExportSummary export_qcow2(Overlay& overlay, const std::string& top, const BackingFile& backing,
                           const std::string& path,
                           const std::function<void(uint64_t, uint64_t)>& progress) {
    const DevicePtr delta = overlay.delta(top);
    // Clusters of the chunk size: a backed qcow2 maps whole clusters, and
    // every chunk is wholly changed or not at all.
    const DevicePtr view = make_view(*find_format("qcow2"), delta,
                                     {{"cluster-size", std::to_string(overlay.geometry().chunk_size)},
                                      {"backing-file", backing.file},
                                      {"backing-format", backing.format}},
                                     path);
    ExportSummary summary;
    for (const Extent& e : delta->extents(0, delta->size()))
        if (e.type == ExtentType::Data)
            summary.changed_bytes += e.length;
    copy_to_file(*view, path, progress);
    summary.file_bytes = view->size();
    spdlog::info("overlay of '{}': exported {} of changes (layers up to '{}') to {}, backed by {} "
                 "({})",
                 overlay.source_name(), human_size(summary.changed_bytes), top, path, backing.file,
                 backing.format);
    return summary;
}

} // namespace p2vfs

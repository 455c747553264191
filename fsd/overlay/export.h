// Exports the changes of an overlay as a qcow2 file backed by the pristine
// source: the changes travel as a small delta, and any qemu-based tool
// reads the overlaid disk from it (qemu-img convert, qemu -drive).
#pragma once

#include "block/open_source.h"
#include "overlay/overlay.h"

#include <functional>
#include <string>

namespace p2vfs {

struct ExportSummary {
    uint64_t changed_bytes = 0; // chunks the layers hold
    uint64_t file_bytes = 0;    // size of the qcow2 file
};

// Writes the chunks of the layers up to `top` as a qcow2 file at `path`
// (clusters the size of the overlay's chunks) whose backing file is
// `backing`; unchanged clusters are left to it. The file appears complete
// or not at all (copy_to_file).
ExportSummary export_qcow2(Overlay& overlay, const std::string& top, const BackingFile& backing,
                           const std::string& path,
                           const std::function<void(uint64_t, uint64_t)>& progress = {});

} // namespace p2vfs

// The folder a source shows in the mount: which view files, made how.
#pragma once

#include "block/block_device.h"
#include "formats/format.h"
#include "fuse/fuse_frontend.h"
#include "overlay/overlay.h"

#include <map>
#include <string>
#include <vector>

namespace p2vfs {

struct ViewSpec {
    const Format* format;
    std::string file_name; // empty: the format's default
    std::map<std::string, std::string> options;
    bool asked_for = false; // named by --view: a failure is an error, not a warning
};

// Makes the files of every spec. A default view the disk does not fit is
// left out with a warning naming the limit; an asked-for one throws. Throws
// InvalidArgument for bad options and for two files of one name.
MountedFolder build_folder(const std::string& name, const DevicePtr& source,
                           const std::vector<ViewSpec>& specs);

// The same over an overlay: `disk` is the overlaid disk (overlay->device()).
// Every file is live (fuse_frontend.h): remade on open after the overlay's
// allocation changed — or, for a view whose bytes are computed from the
// data (a stream-optimized VMDK), after any write. With `writable`, the raw
// view takes writes, which go to `disk`.
MountedFolder build_overlay_folder(const std::string& name, const OverlayPtr& overlay,
                                   const DevicePtr& disk, const std::vector<ViewSpec>& specs,
                                   bool writable);

} // namespace p2vfs

// Turns a --source SPEC into the device it names.
//
// Today a SPEC is a path to an image file or block device; NBD URIs and
// snapshots will be recognised here by their scheme, behind the same option.
#pragma once

#include "block/block_device.h"

#include <string>

namespace p2vfs {

struct SourceOptions {
    bool direct = false;
};

// Throws Error naming the spec when it cannot be opened or used.
DevicePtr open_source(const std::string& spec, const SourceOptions& options);

} // namespace p2vfs

// Writes a device's bytes to a regular file, leaving its holes as holes.
#pragma once

#include "block/block_device.h"

#include <functional>
#include <string>

namespace p2vfs {

// Copies `dev` into a new file at `path`: written as `path`.part, synced,
// then renamed, so `path` never names a half-written copy. Ranges the device
// reports as Hole are not written: they stay holes of the file. (Zero
// ranges are written: an allocated range of zeros stays allocated.) `progress(done, total)` is called after each piece, with
// byte offsets of the device. Throws Error naming the file or the device.
void copy_to_file(BlockDevice& dev, const std::string& path,
                  const std::function<void(uint64_t, uint64_t)>& progress = {});

} // namespace p2vfs

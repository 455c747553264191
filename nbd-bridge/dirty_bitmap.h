// Change detection from an NBD server's dirty bitmap: the meta context
// "qemu:dirty-bitmap:NAME" (qemu-nbd -B NAME of a qcow2 image holding a
// persistent bitmap, or an export of a running QEMU).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace p2vfs {

// The dirty ranges [offset, offset+length) of the export at `uri`, sorted,
// merged, covering [0, size). Connects once (libnbd, its own handle), asks
// block status in pieces of at most 1 GiB. Throws Error naming the URI when
// the server does not offer the context ("... does not offer
// qemu:dirty-bitmap:NAME; the bitmaps it offers: ..." when it lists them),
// when the export's size is not `size`, or when the connection fails.
std::vector<std::pair<uint64_t, uint64_t>> nbd_dirty_ranges(const std::string& uri,
                                                            const std::string& bitmap,
                                                            uint64_t size);

} // namespace p2vfs

// Change detection for image files on file systems with reflinks (btrfs,
// xfs with reflink=1): each sync generation is a reflink copy of the origin
// (FICLONE: metadata only, atomic against writes to the origin), and what
// changed between two generations is where their FIEMAP physical extents
// differ (a write to the origin after a clone gets new blocks: copy on
// write).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace p2vfs {

// Clones `origin` to `copy` (made 0400; via copy.tmp, fsync, rename,
// directory fsync), replacing a file already named `copy`. Throws Error
// naming both and the reason (no reflink support: UnsupportedError naming
// the file system and mount point; EXDEV: not the same file system; EEXIST:
// copy.tmp is there, left by an interrupted take: it is not removed, that
// is the caller's decision). On failure nothing of this call is left.
void take_reflink_copy(const std::string& origin, const std::string& copy);

// The byte ranges [offset, offset+length) of [0, size) where `older` and
// `newer` (two reflink copies of one origin) may differ: sorted, merged.
// Ranges that are holes in both, or map to the same physical extent in both
// (same physical offset, neither marked unknown/delalloc/encoded/inline), do
// not differ; every other range does, conservatively (an unwritten extent
// against a hole too; xfs clones unwritten extents as holes, so between two
// of its clones that does not arise). The granularity is the file system
// block (xfs: 4 KiB, whatever the CoW extent size hint). FIEMAP with
// FIEMAP_FLAG_SYNC. Throws Error naming the file when FIEMAP fails.
std::vector<std::pair<uint64_t, uint64_t>> reflink_changed_ranges(const std::string& older,
                                                                  const std::string& newer,
                                                                  uint64_t size);

} // namespace p2vfs

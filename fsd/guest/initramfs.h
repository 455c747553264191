// What an initramfs image holds: its archives (an uncompressed early cpio,
// for microcode, may precede the compressed main one), their compression,
// and the kernel modules in it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace p2vfs::guest {

struct InitramfsContents {
    // One per archive: "none", "gzip", "zstd", "xz", "lzma", "lz4"; also
    // "bzip2" and "lzo", which are named but not read (a problem says so).
    std::vector<std::string> compressions;
    std::vector<std::string> modules;      // module names, sorted, unique: "virtio_blk" (from .../virtio_blk.ko[.xz|.zst|.gz])
    std::vector<std::string> builtin;      // modules built into the kernel (lib/modules/*/modules.builtin), sorted, unique
    std::vector<std::string> problems;     // "archive 2 at 0x1c000: zstd: Data corruption detected"...
    uint64_t files = 0;                    // entries in all archives
};

// Parses `image` (the whole file, as read from /boot). Never throws on bad
// data: what could not be read is in `problems`, and reading stops at the
// first error, as the kernel's unpacking does (what came before is kept).
// Decompressed output is streamed through the cpio parser, never held
// whole; a limit on the total decompressed bytes (`max_output`) stops a
// decompression bomb.
InitramfsContents read_initramfs(std::string_view image, uint64_t max_output = 4ull << 30);

} // namespace p2vfs::guest

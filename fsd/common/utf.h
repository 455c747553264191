// UTF-16 (as Windows, NTFS names, GPT labels, FAT long names and registry
// strings store text) and UTF-8 (as everything else here does).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace p2vfs {

// Appends code point `cp` (at most U+10FFFF) to `out` as UTF-8.
void append_utf8(std::string& out, uint32_t cp);

// The UTF-16LE text in the `size` bytes at `bytes` as UTF-8, up to the first
// NUL unit; an odd last byte is ignored, unpaired surrogates become U+FFFD.
std::string utf16le_to_utf8(const void* bytes, size_t size);
inline std::string utf16le_to_utf8(const std::string& bytes) {
    return utf16le_to_utf8(bytes.data(), bytes.size());
}

// UTF-8 as UTF-16LE bytes (no terminator); malformed sequences become U+FFFD.
std::string utf8_to_utf16le(const std::string& utf8);

} // namespace p2vfs

// Identifiers derived from what a view shows, never from a random source.
//
// A view's bytes are a pure function of its layers and options (DESIGN.md), so
// the UUIDs and content IDs in format headers are hashes of a description of
// the source (its identity, size) and the view (format, options).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace p2vfs {

// 128 bits of a keyed, well-mixed hash (two independent 64-bit lanes).
// Not cryptographic; collisions only need to be unlikely between disks.
std::array<uint8_t, 16> stable_hash128(std::string_view input);

// An RFC 9562 version-8 ("custom") UUID made of stable_hash128(input), in
// big-endian byte order as it appears on the wire.
std::array<uint8_t, 16> stable_uuid(std::string_view input);

// "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
std::string uuid_text(const std::array<uint8_t, 16>& uuid);

} // namespace p2vfs

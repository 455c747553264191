// What a fuzz target tells replay_main.cpp besides LLVMFuzzerTestOneInput:
// inputs built in code with the structures its parsers check planted in
// them, and where in an input its fields and signatures lie, so that the
// replay's simple mutations start next to the checks that matter. Each
// replay binary links replay_main.cpp, the target, and one definition of
// replay_target() (guest_parsers_planted.cpp, hive_planted.cpp).
#pragma once

#include "common/endian.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace p2vfs::fuzz {

using Bytes = std::vector<unsigned char>;

struct Input {
    std::string name;
    Bytes bytes;
};

struct ReplayTarget {
    std::vector<Input> planted;
    // Inputs are made of units (disk sectors, hive pages): mutations put
    // values at `fields` from a unit's start and copy whole units about.
    size_t unit = 512;
    std::vector<size_t> fields;
    // Written over an input at their offsets.
    std::vector<std::pair<size_t, std::string>> signatures;
};

ReplayTarget replay_target();

// ---- for building planted inputs -------------------------------------------

inline void put(Bytes& d, size_t at, const void* p, size_t n) {
    if (d.size() < at + n)
        d.resize(at + n);
    std::memcpy(&d[at], p, n);
}
inline void put_text(Bytes& d, size_t at, const char* text) {
    put(d, at, text, std::strlen(text));
}
template <typename T> void put_le(Bytes& d, size_t at, T v) {
    if (d.size() < at + sizeof v)
        d.resize(at + sizeof v);
    p2vfs::store_le<T>(&d[at], v);
}
template <typename T> void put_be(Bytes& d, size_t at, T v) {
    if (d.size() < at + sizeof v)
        d.resize(at + sizeof v);
    p2vfs::store_be<T>(&d[at], v);
}

} // namespace p2vfs::fuzz

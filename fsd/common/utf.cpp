#include "common/utf.h"

namespace p2vfs {

void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xc0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xe0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
        out += static_cast<char>(0xf0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    }
}

std::string utf16le_to_utf8(const void* bytes, size_t size) {
    const auto* p = static_cast<const unsigned char*>(bytes);
    const size_t units = size / 2;
    const auto unit = [&](size_t i) { return static_cast<uint32_t>(p[2 * i] | p[2 * i + 1] << 8); };
    std::string out;
    for (size_t i = 0; i < units; ++i) {
        const uint32_t u = unit(i);
        if (u == 0)
            break;
        if (u >= 0xd800 && u < 0xdc00 && i + 1 < units) {
            const uint32_t low = unit(i + 1);
            if (low >= 0xdc00 && low < 0xe000) {
                append_utf8(out, 0x10000 + ((u - 0xd800) << 10) + (low - 0xdc00));
                ++i;
                continue;
            }
        }
        append_utf8(out, u >= 0xd800 && u < 0xe000 ? 0xfffd : u);
    }
    return out;
}

std::string utf8_to_utf16le(const std::string& utf8) {
    std::string out;
    const auto put = [&](uint32_t unit) {
        out += static_cast<char>(unit & 0xff);
        out += static_cast<char>(unit >> 8);
    };
    for (size_t i = 0; i < utf8.size();) {
        const auto b = static_cast<unsigned char>(utf8[i]);
        uint32_t cp = 0xfffd;
        size_t n = 1;
        if (b < 0x80) {
            cp = b;
        } else if ((b & 0xe0) == 0xc0 && i + 1 < utf8.size()) {
            cp = (b & 0x1fu) << 6 | (utf8[i + 1] & 0x3f);
            n = 2;
        } else if ((b & 0xf0) == 0xe0 && i + 2 < utf8.size()) {
            cp = (b & 0x0fu) << 12 | (utf8[i + 1] & 0x3fu) << 6 | (utf8[i + 2] & 0x3f);
            n = 3;
        } else if ((b & 0xf8) == 0xf0 && i + 3 < utf8.size()) {
            cp = (b & 0x07u) << 18 | (utf8[i + 1] & 0x3fu) << 12 | (utf8[i + 2] & 0x3fu) << 6 |
                 (utf8[i + 3] & 0x3f);
            n = 4;
        }
        i += n;
        if (cp >= 0x10000 && cp <= 0x10ffff) {
            cp -= 0x10000;
            put(0xd800 + (cp >> 10));
            put(0xdc00 + (cp & 0x3ff));
        } else {
            put(cp > 0xffff ? 0xfffd : cp);
        }
    }
    return out;
}

} // namespace p2vfs

#include "common/error.h"

#include <array>
#include <cstdio>
#include <cstring>

namespace p2vfs {

std::string hex(uint64_t value) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(value));
    return buf;
}

std::string human_size(uint64_t bytes) {
    static constexpr std::array<const char*, 7> units{"B",   "KiB", "MiB", "GiB",
                                                      "TiB", "PiB", "EiB"};
    // An exact size prints whole in the unit that keeps it under 10000:
    // "2040 GiB", as the limits are spoken of, not "2.0 TiB".
    for (size_t u = units.size() - 1; u > 0; --u) {
        const uint64_t unit = uint64_t{1} << (10 * u);
        if (bytes % unit == 0 && bytes / unit > 0 && bytes / unit < 10000)
            return std::to_string(bytes / unit) + " " + units[u];
    }
    if (bytes < 1024)
        return std::to_string(bytes) + " B";
    double v = static_cast<double>(bytes);
    size_t u = 0;
    while (v >= 1024.0 && u + 1 < units.size()) {
        v /= 1024.0;
        ++u;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, v < 10 ? "%.2f %s" : "%.1f %s", v, units[u]);
    return buf;
}

std::string errno_text(int err) {
    char buf[128];
    // GNU strerror_r returns the message pointer, which may or may not be buf.
    return ::strerror_r(err, buf, sizeof buf);
}

} // namespace p2vfs

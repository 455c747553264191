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
    static constexpr std::array<const char*, 7> units{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (bytes < 1024)
        return std::to_string(bytes) + " B";
    double v = static_cast<double>(bytes);
    size_t u = 0;
    while (v >= 1024.0 && u + 1 < units.size()) {
        v /= 1024.0;
        ++u;
    }
    char buf[32];
    // Whole numbers print without a fraction: "2040 GiB", not "2040.0 GiB".
    if (v == static_cast<double>(static_cast<uint64_t>(v)))
        std::snprintf(buf, sizeof buf, "%llu %s", static_cast<unsigned long long>(v), units[u]);
    else
        std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
    return buf;
}

std::string errno_text(int err) {
    char buf[128];
    // GNU strerror_r returns the message pointer, which may or may not be buf.
    return ::strerror_r(err, buf, sizeof buf);
}

} // namespace p2vfs

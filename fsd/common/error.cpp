#include "common/error.h"

#include <array>
#include <cctype>
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

uint64_t parse_size(const std::string& text, const std::string& what) {
    const auto bad = [&] {
        return InvalidArgument(what + " " + text +
                               ": expected a size such as 4096, 64K, 256M or 2G");
    };
    size_t i = 0;
    uint64_t n = 0;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
        const uint64_t digit = static_cast<uint64_t>(text[i] - '0');
        if (n > (UINT64_MAX - digit) / 10)
            throw bad();
        n = n * 10 + digit;
        ++i;
    }
    if (i == 0)
        throw bad();
    std::string unit = text.substr(i);
    if (unit.size() == 3 && unit.substr(1) == "iB")
        unit.resize(1);
    static const std::string units = "KMGT";
    if (unit.empty() || unit == "B")
        return n;
    const size_t u =
        unit.size() == 1
            ? units.find(static_cast<char>(std::toupper(static_cast<unsigned char>(unit[0]))))
            : std::string::npos;
    if (u == std::string::npos)
        throw bad();
    const unsigned shift = 10 * static_cast<unsigned>(u + 1);
    if (n > (UINT64_MAX >> shift))
        throw bad();
    return n << shift;
}

std::string errno_text(int err) {
    char buf[128];
    // GNU strerror_r returns the message pointer, which may or may not be buf.
    return ::strerror_r(err, buf, sizeof buf);
}

} // namespace p2vfs

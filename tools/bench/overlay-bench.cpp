// Measures the overlay store (fsd/overlay/) one step at a time for
// tools/bench/overlay-bench.sh, which drives it and writes the report; what
// each figure means is in tools/bench/README.md ("Overlay").
//
//   overlay_bench make-source PATH BYTES random|text
//   overlay_bench populate STATE SOURCE [write options] [--no-compress]
//   overlay_bench read SOURCE [--overlay STATE] [--view none|raw|vmdk|qcow2]
//   overlay_bench open STATE SOURCE [--read-only] [--seed N]
//   overlay_bench costs                              CPU cost of a chunk's steps
//   overlay_bench qemu-writes SOURCE [write options]
//
// Write options: --chunks N or --fraction F (of the disk's 64 KiB chunks),
// --unaligned, --content random|text|tiny, --seed N. populate makes a fresh
// overlay named "bench" in STATE over the raw file SOURCE and writes N
// 64 KiB blocks at distinct chunks in random order, each at the chunk's
// start or, --unaligned, 28 KiB into it (so it spans two chunks and costs two
// read-modify-writes; writes never overlap one another). qemu-writes prints
// the same writes as qemu-io commands.
//
// Results are KEY=VALUE lines on stdout; messages go to stderr. A timed
// section holds only the engine calls it measures: sources, overlays, views
// and buffers are made before the clock starts, and with --drop-caches the
// page cache is dropped (sync, then 3 > /proc/sys/vm/drop_caches) right
// before it. read --warm reads the range a second time at once, from the
// page cache.
#include "block/local_source.h"
#include "common/crc32c.h"
#include "common/error.h"
#include "common/file_io.h"
#include "common/logging.h"
#include "formats/format.h"
#include "formats/prepared_view.h"
#include "overlay/overlay.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <lz4.h>
#include <map>
#include <set>
#include <string>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace p2vfs {
namespace {

constexpr const char* overlay_name = "bench";
constexpr uint32_t chunk_size = 64 * 1024;
// Where an unaligned write starts inside its chunk: 4 KiB-aligned like a
// guest's block writes, not 64 KiB-aligned.
constexpr uint32_t unaligned_shift = 28 * 1024;

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

double cpu_seconds() {
    rusage u{};
    ::getrusage(RUSAGE_SELF, &u);
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

void drop_caches() {
    ::sync();
    UniqueFd fd = open_file("/proc/sys/vm/drop_caches", O_WRONLY);
    if (::write(fd.get(), "3\n", 2) != 2)
        throw Error("/proc/sys/vm/drop_caches: cannot write (run as root): " + errno_text(errno));
}

// splitmix64: a fast generator whose whole state is one word, so content can
// be derived from a key without keeping anything.
struct Mix {
    uint64_t s;
    uint64_t next() {
        uint64_t z = (s += 0x9e3779b97f4a7c15);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
        z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
        return z ^ (z >> 31);
    }
};

uint64_t key(uint64_t space, uint64_t seed, uint64_t i) {
    Mix a{space ^ (seed * 0xd1b54a32d192ed03)};
    Mix b{a.next() ^ i};
    return b.next();
}
constexpr uint64_t source_space = 0x50;
constexpr uint64_t write_space = 0x57;

void fill_random(uint64_t k, unsigned char* out, size_t length) {
    Mix rng{k};
    size_t i = 0;
    for (; i + 8 <= length; i += 8) {
        const uint64_t v = rng.next();
        std::memcpy(out + i, &v, 8);
    }
    const uint64_t v = rng.next();
    std::memcpy(out + i, &v, length - i);
}

// Log-like lines, the kind of text a system disk is full of: pieces of this
// pool make compressible chunks (lz4 stores them in about half).
const std::vector<unsigned char>& text_pool() {
    static const std::vector<unsigned char> pool = [] {
        static const char* const units[] = {"kernel", "sshd",   "systemd",  "cron",
                                            "nginx",  "mysqld", "dhclient", "rsyslogd"};
        static const char* const verbs[] = {"started",  "stopped", "accepted",  "failed",
                                            "reloaded", "timeout", "connected", "closed"};
        static const char* const things[] = {"session",     "connection", "worker", "request",
                                             "transaction", "job",        "lease",  "unit"};
        constexpr size_t size = 4 << 20;
        std::vector<unsigned char> p;
        p.reserve(size + 256);
        Mix rng{0x7e47};
        char line[256];
        while (p.size() < size) {
            const uint64_t r = rng.next();
            const uint64_t q = rng.next();
            const int n = std::snprintf(
                line, sizeof line,
                "2026-%02u-%02uT%02u:%02u:%02u.%06u host%02u %s[%u]: %s %s %u from "
                "10.%u.%u.%u port %u status=%u\n",
                unsigned(r % 12 + 1), unsigned(r >> 4 & 15) + 1, unsigned(r >> 8 & 15),
                unsigned(r >> 12 & 63) % 60, unsigned(r >> 18 & 63) % 60, unsigned(q % 1000000),
                unsigned(r >> 24 & 31), units[r >> 29 & 7], unsigned(r >> 32 & 0xffff),
                things[r >> 48 & 7], verbs[r >> 51 & 7], unsigned(q >> 20 & 0xfffff),
                unsigned(q >> 40 & 255), unsigned(q >> 48 & 255), unsigned(q >> 56),
                unsigned(q >> 8 & 0xffff) % 64511 + 1024, unsigned(r >> 54 & 3) * 100 + 200);
            p.insert(p.end(), line, line + n);
        }
        p.resize(size);
        return p;
    }();
    return pool;
}

void fill_text(uint64_t k, unsigned char* out, size_t length) {
    const auto& pool = text_pool();
    Mix rng{k};
    for (size_t at = 0; at < length;) {
        const uint64_t r = rng.next();
        const size_t piece = std::min<size_t>(length - at, 256 + (r & 4095));
        const size_t from = (r >> 16) % (pool.size() - piece);
        std::memcpy(out + at, pool.data() + from, piece);
        at += piece;
    }
}

// 64 random bytes repeated: lz4 stores a chunk in a few hundred bytes, so
// every record takes one 4 KiB block of the log.
void fill_tiny(uint64_t k, unsigned char* out, size_t length) {
    unsigned char pattern[64];
    fill_random(k, pattern, sizeof pattern);
    for (size_t at = 0; at < length; at += sizeof pattern)
        std::memcpy(out + at, pattern, std::min(sizeof pattern, length - at));
}

void fill(const std::string& content, uint64_t k, unsigned char* out, size_t length) {
    if (content == "random")
        fill_random(k, out, length);
    else if (content == "text")
        fill_text(k, out, length);
    else if (content == "tiny")
        fill_tiny(k, out, length);
    else
        throw InvalidArgument("content '" + content + "': use random, text or tiny");
}

// ---------------------------------------------------------------- arguments

struct Args {
    std::vector<std::string> positional;
    std::map<std::string, std::string> options;

    bool flag(const std::string& name) const { return options.count(name) != 0; }
    std::string get(const std::string& name, const std::string& fallback = {}) const {
        auto it = options.find(name);
        return it == options.end() ? fallback : it->second;
    }
    double number(const std::string& name, double fallback) const {
        auto it = options.find(name);
        if (it == options.end())
            return fallback;
        size_t used = 0;
        double v = 0;
        try {
            v = std::stod(it->second, &used);
        } catch (const std::exception&) {
        }
        if (used != it->second.size() || used == 0)
            throw InvalidArgument("--" + name + " '" + it->second + "' is not a number");
        return v;
    }
    const std::string& at(size_t i, const char* what) const {
        if (i >= positional.size())
            throw InvalidArgument(std::string("missing ") + what);
        return positional[i];
    }
};

Args parse(int argc, char** argv, const std::set<std::string>& flags) {
    Args a;
    for (int i = 2; i < argc; ++i) {
        const std::string s = argv[i];
        if (s.rfind("--", 0) != 0) {
            a.positional.push_back(s);
            continue;
        }
        const std::string name = s.substr(2);
        if (flags.count(name)) {
            a.options[name] = "";
        } else {
            if (i + 1 >= argc)
                throw InvalidArgument(s + " wants a value");
            a.options[name] = argv[++i];
        }
    }
    return a;
}

void put(const char* k, uint64_t v) {
    std::printf("%s=%llu\n", k, static_cast<unsigned long long>(v));
}
void put(const char* k, double v) {
    std::printf("%s=%.6f\n", k, v);
}

// ---------------------------------------------------------------- the writes

struct WritePlan {
    std::string content = "random";
    uint64_t seed = 1;
    bool unaligned = false;
    std::vector<uint64_t> offsets; // in the order they are written
};

WritePlan plan_writes(const Args& a, uint64_t disk_size) {
    WritePlan p;
    p.content = a.get("content", "random");
    p.seed = static_cast<uint64_t>(a.number("seed", 1));
    p.unaligned = a.flag("unaligned");
    const uint64_t chunks = (disk_size + chunk_size - 1) / chunk_size;
    // An unaligned write must end inside the disk: not in the last full chunk.
    const uint64_t candidates = disk_size / chunk_size - (p.unaligned ? 1 : 0);
    uint64_t n = 0;
    if (a.flag("chunks"))
        n = static_cast<uint64_t>(a.number("chunks", 0));
    else
        n = static_cast<uint64_t>(
            std::llround(a.number("fraction", 0.1) * static_cast<double>(chunks)));
    if (n > candidates)
        throw InvalidArgument(std::to_string(n) + " writes do not fit a disk of " +
                              std::to_string(chunks) + " chunks");
    // The first n of a Fisher-Yates shuffle: distinct chunks in random order.
    std::vector<uint32_t> order(candidates);
    for (uint64_t c = 0; c < candidates; ++c)
        order[c] = static_cast<uint32_t>(c);
    Mix rng{key(0x0ff5e7, p.seed, n)};
    p.offsets.reserve(n);
    for (uint64_t i = 0; i < n; ++i) {
        const uint64_t j = i + rng.next() % (candidates - i);
        std::swap(order[i], order[j]);
        p.offsets.push_back(uint64_t{order[i]} * chunk_size + (p.unaligned ? unaligned_shift : 0));
    }
    return p;
}

struct Usage {
    uint64_t log_size = 0, log_allocated = 0, index_size = 0, index_allocated = 0;
};

// The overlay's files on disk, all layers and segments.
Usage usage_of(const std::string& dir) {
    Usage u;
    for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
        struct stat st {};
        if (!e.is_regular_file() || ::stat(e.path().c_str(), &st) != 0)
            continue;
        const uint64_t allocated = static_cast<uint64_t>(st.st_blocks) * 512;
        if (e.path().filename() == "log") {
            u.log_size += static_cast<uint64_t>(st.st_size);
            u.log_allocated += allocated;
        } else if (e.path().filename() == "index") {
            u.index_size += static_cast<uint64_t>(st.st_size);
            u.index_allocated += allocated;
        }
    }
    return u;
}

void put_usage(const Usage& u) {
    put("log_bytes", u.log_size);
    put("log_allocated", u.log_allocated);
    put("index_bytes", u.index_size);
    put("index_allocated", u.index_allocated);
}

// ---------------------------------------------------------------- subcommands

int make_source(const Args& a) {
    const std::string path = a.at(0, "PATH");
    const uint64_t size = std::stoull(a.at(1, "BYTES"));
    const std::string content = a.at(2, "random|text");
    if (size == 0 || size % chunk_size)
        throw InvalidArgument("BYTES must be a positive multiple of 64 KiB");
    UniqueFd fd = open_file(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    constexpr size_t block = 16 * chunk_size;
    std::vector<unsigned char> buf(block);
    const auto t0 = Clock::now();
    for (uint64_t at = 0; at < size; at += block) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(block, size - at));
        for (size_t c = 0; c < n; c += chunk_size)
            fill(content, key(source_space, 0, (at + c) / chunk_size), buf.data() + c, chunk_size);
        pwrite_full(fd.get(), buf.data(), n, at, path);
    }
    put("bytes", size);
    put("seconds", seconds_since(t0));
    return 0;
}

int populate(const Args& a) {
    const std::string state = a.at(0, "STATE");
    const std::string source_path = a.at(1, "SOURCE");
    auto source = std::make_shared<LocalSource>(source_path);
    const WritePlan plan = plan_writes(a, source->size());
    remove_tree(Overlay::directory(state, overlay_name));

    OverlayOptions options;
    options.writable = true;
    options.compress = !a.flag("no-compress");
    auto overlay = Overlay::open(state, overlay_name, source, source_path, options, true);
    DevicePtr dev = overlay->device(user_layer, user_layer);

    std::vector<unsigned char> buf(chunk_size);
    double write_s = 0;
    for (size_t i = 0; i < plan.offsets.size(); ++i) {
        fill(plan.content, key(write_space, plan.seed, i), buf.data(), chunk_size);
        const auto t0 = Clock::now();
        dev->write(buf.data(), chunk_size, plan.offsets[i]);
        write_s += seconds_since(t0);
    }
    const auto t1 = Clock::now();
    dev->flush();
    const double flush_s = seconds_since(t1);

    // Read back a sample of the writes (at most --verify of them, spread
    // over all): each must read as written.
    const uint64_t want = static_cast<uint64_t>(a.number("verify", 2000));
    const size_t step = std::max<size_t>(1, plan.offsets.size() / std::max<uint64_t>(1, want));
    std::vector<unsigned char> got(chunk_size);
    uint64_t verified = 0;
    for (size_t i = 0; i < plan.offsets.size() && want; i += step) {
        fill(plan.content, key(write_space, plan.seed, i), buf.data(), chunk_size);
        dev->read(got.data(), chunk_size, plan.offsets[i]);
        if (got != buf)
            throw Error("overlay of " + source_path + ": the write at " + hex(plan.offsets[i]) +
                        " reads back different bytes");
        ++verified;
    }

    const overlay::LayerInfo info = overlay->layer(user_layer).info();
    put("writes", static_cast<uint64_t>(plan.offsets.size()));
    put("write_seconds", write_s);
    put("flush_seconds", flush_s);
    put("chunks", info.chunks);
    put("disk_chunks", overlay->geometry().chunk_count());
    put("stored_bytes", info.stored_bytes);
    put("verified", verified);
    overlay.reset();
    put_usage(usage_of(Overlay::directory(state, overlay_name)));
    return 0;
}

// One sequential pass over [0, length) in requests of `request` bytes.
struct Pass {
    double seconds = 0;
    double cpu = 0;
};
Pass read_range(BlockDevice& dev, std::vector<unsigned char>& buf, uint64_t length) {
    const uint64_t request = buf.size();
    const double cpu0 = cpu_seconds();
    const auto t0 = Clock::now();
    for (uint64_t at = 0; at < length; at += request)
        dev.read(buf.data(), static_cast<size_t>(std::min(request, length - at)), at);
    return {seconds_since(t0), cpu_seconds() - cpu0};
}

int read_pass(const Args& a) {
    const std::string source_path = a.at(0, "SOURCE");
    const std::string view = a.get("view", "none");
    const uint64_t request = static_cast<uint64_t>(a.number("request", 1 << 20));
    auto source = std::make_shared<LocalSource>(source_path);
    OverlayPtr overlay;
    DevicePtr base = source;
    if (a.flag("overlay")) {
        overlay = Overlay::open(a.get("overlay"), overlay_name, source, source_path, {}, false);
        base = overlay->device(user_layer);
    }
    const auto t0 = Clock::now();
    DevicePtr dev = base;
    if (view != "none") {
        const Format* format = find_format(view);
        if (!format)
            throw InvalidArgument("no format named '" + view + "'");
        dev = prepared(make_view(*format, base, {}));
    }
    const double setup_s = seconds_since(t0);
    std::vector<unsigned char> buf(request);
    const uint64_t length = std::min(
        dev->size(), static_cast<uint64_t>(a.number("length", static_cast<double>(dev->size()))));
    if (a.flag("drop-caches"))
        drop_caches();

    const Pass first = read_range(*dev, buf, length);
    put("bytes", length);
    put("setup_seconds", setup_s);
    put("read_seconds", first.seconds);
    put("cpu_seconds", first.cpu);
    put("mib_per_s", static_cast<double>(length) / 1048576.0 / first.seconds);
    if (a.flag("warm")) {
        // Again at once: everything is in the page cache now, so this pass
        // costs what the engine itself costs.
        const Pass again = read_range(*dev, buf, length);
        put("warm_read_seconds", again.seconds);
        put("warm_cpu_seconds", again.cpu);
    }
    return 0;
}

int open_timing(const Args& a) {
    const std::string state = a.at(0, "STATE");
    const std::string source_path = a.at(1, "SOURCE");
    auto source = std::make_shared<LocalSource>(source_path);
    OverlayOptions options;
    options.writable = !a.flag("read-only");
    if (a.flag("drop-caches"))
        drop_caches();

    const auto t0 = Clock::now();
    auto overlay = Overlay::open(state, overlay_name, source, source_path, options, false);
    const double open_s = seconds_since(t0);

    // A random chunk the overlay holds: the first at or after a random one.
    DevicePtr dev = overlay->device(user_layer);
    const overlay::Layer& layer = overlay->layer(user_layer);
    const uint64_t count = overlay->geometry().chunk_count();
    Mix rng{key(0x09e7, static_cast<uint64_t>(a.number("seed", 1)), 0)};
    uint64_t c = layer.next_present(rng.next() % count, count);
    if (c == count)
        c = layer.next_present(0, count);
    if (c == count)
        throw Error(Overlay::directory(state, overlay_name) + ": the user layer holds no chunk");
    std::vector<unsigned char> buf(chunk_size);
    const auto t1 = Clock::now();
    dev->read(buf.data(), overlay->geometry().chunk_length(c), c * chunk_size);
    const double read_s = seconds_since(t1);

    const auto t2 = Clock::now();
    dev.reset();
    overlay.reset();
    const double close_s = seconds_since(t2);

    rusage u{};
    ::getrusage(RUSAGE_SELF, &u);
    put("open_seconds", open_s);
    put("first_read_seconds", read_s);
    put("close_seconds", close_s);
    put("chunk", c);
    put("max_rss_kib", static_cast<uint64_t>(u.ru_maxrss));
    put_usage(usage_of(Overlay::directory(state, overlay_name)));
    return 0;
}

// What one 64 KiB chunk costs in each step of an overlay read or write on
// this CPU, the data in cache: the bound of an overlay read when no I/O
// waits. Each figure is the best of five rounds of ~0.1 s.
int costs(const Args&) {
    std::vector<unsigned char> text(chunk_size), random(chunk_size), out(chunk_size);
    fill_text(key(write_space, 1, 0), text.data(), chunk_size);
    fill_random(key(write_space, 1, 1), random.data(), chunk_size);
    std::vector<char> packed(static_cast<size_t>(LZ4_compressBound(chunk_size)));
    const int packed_size =
        LZ4_compress_default(reinterpret_cast<const char*>(text.data()), packed.data(), chunk_size,
                             static_cast<int>(packed.size()));
    volatile uint32_t sink = 0;
    auto rate = [&](const char* name, auto&& step) {
        double best = 0;
        for (int round = 0; round < 5; ++round) {
            uint64_t n = 0;
            const auto t0 = Clock::now();
            while (seconds_since(t0) < 0.1) {
                for (int i = 0; i < 16; ++i)
                    step();
                n += 16;
            }
            best = std::max(best,
                            static_cast<double>(n) * chunk_size / 1073741824.0 / seconds_since(t0));
        }
        put(name, best);
    };
    rate("crc32c_gib_s", [&] { sink = sink + crc32c(random.data(), chunk_size); });
    rate("crc32c_portable_gib_s",
         [&] { sink = sink + crc32c_portable(random.data(), chunk_size); });
    rate("lz4_decompress_text_gib_s", [&] {
        sink = sink + static_cast<uint32_t>(LZ4_decompress_safe(packed.data(),
                                                                reinterpret_cast<char*>(out.data()),
                                                                packed_size, chunk_size));
    });
    rate("lz4_compress_text_gib_s", [&] {
        sink = sink + static_cast<uint32_t>(LZ4_compress_default(
                          reinterpret_cast<const char*>(text.data()), packed.data(), chunk_size,
                          static_cast<int>(packed.size())));
    });
    rate("lz4_compress_random_gib_s", [&] {
        sink = sink + static_cast<uint32_t>(LZ4_compress_default(
                          reinterpret_cast<const char*>(random.data()), packed.data(), chunk_size,
                          static_cast<int>(packed.size())));
    });
    rate("memcpy_gib_s", [&] {
        std::memcpy(out.data(), random.data(), chunk_size);
        sink = sink + out[sink % chunk_size];
    });
    put("text_stored_fraction", static_cast<double>(packed_size) / chunk_size);
    return 0;
}

int qemu_writes(const Args& a) {
    const LocalSource source(a.at(0, "SOURCE"));
    const WritePlan plan = plan_writes(a, source.size());
    for (size_t i = 0; i < plan.offsets.size(); ++i)
        std::printf("write -P %zu %llu %u\n", i % 255 + 1,
                    static_cast<unsigned long long>(plan.offsets[i]), chunk_size);
    std::printf("flush\n");
    return 0;
}

int usage(FILE* to) {
    std::fputs(
        "usage: overlay_bench make-source PATH BYTES random|text\n"
        "       overlay_bench populate STATE SOURCE [--chunks N | --fraction F] [--unaligned]\n"
        "                     [--content random|text|tiny] [--seed N] [--no-compress]\n"
        "                     [--verify N]\n"
        "       overlay_bench read SOURCE [--overlay STATE] [--view none|raw|vmdk|qcow2|...]\n"
        "                     [--request BYTES] [--length BYTES] [--drop-caches] [--warm]\n"
        "       overlay_bench open STATE SOURCE [--read-only] [--seed N] [--drop-caches]\n"
        "       overlay_bench costs\n"
        "       overlay_bench qemu-writes SOURCE [--chunks N | --fraction F] [--unaligned]\n"
        "                     [--seed N]\n"
        "Results are KEY=VALUE lines on stdout. See tools/bench/README.md (Overlay).\n",
        to);
    return to == stdout ? 0 : 2;
}

} // namespace
} // namespace p2vfs

int main(int argc, char** argv) {
    using namespace p2vfs;
    if (argc < 2)
        return usage(stderr);
    const std::string command = argv[1];
    if (command == "-h" || command == "--help")
        return usage(stdout);
    try {
        setup_logging("overlay_bench", "warn");
        const Args a =
            parse(argc, argv, {"unaligned", "no-compress", "drop-caches", "read-only", "warm"});
        if (command == "make-source")
            return make_source(a);
        if (command == "populate")
            return populate(a);
        if (command == "read")
            return read_pass(a);
        if (command == "open")
            return open_timing(a);
        if (command == "costs")
            return costs(a);
        if (command == "qemu-writes")
            return qemu_writes(a);
        std::fprintf(stderr, "overlay_bench: unknown command '%s'\n", command.c_str());
        return usage(stderr);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "overlay_bench %s: %s\n", command.c_str(), e.what());
        return 1;
    }
}

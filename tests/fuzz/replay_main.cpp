// Runs a fuzz target without libFuzzer: every file named (or found in a
// directory named) on the command line, then a number of seeded mutations
// of those files and of disks built here with planted signatures. It is how
// g++ and sanitizer builds exercise the target in ctest.
//
//   guest_parsers_replay [--mutations N] [--seed S] [--write K FILE] PATH...
//
// Mutations are a pure function of the seed, the inputs and their order, so
// a failure is reproduced by the same command; the input that was running
// is named on stderr when the process dies (signal or sanitizer report), and
// `--write K FILE` saves mutation K for a debugger or the libFuzzer binary.
// The mutator is deliberately simple (bit flips, interesting values at
// on-disk field positions, insertions, deletions, sector copies, planted
// signatures); coverage-guided search is libFuzzer's job.
#include "common/crc32c.h"
#include "common/endian.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <unistd.h>
#include <vector>
#include <zlib.h>

// Sanitizers end the process without a signal; their runtime calls back.
#if defined(__SANITIZE_ADDRESS__)
#define P2VFS_HAVE_SANITIZER_INTERFACE 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define P2VFS_HAVE_SANITIZER_INTERFACE 1
#endif
#endif
#ifdef P2VFS_HAVE_SANITIZER_INTERFACE
#include <sanitizer/common_interface_defs.h>
#endif

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

using Bytes = std::vector<unsigned char>;

struct Input {
    std::string name;
    Bytes bytes;
};

// What is running, for the death report; written only between runs.
char current[512] = "(nothing yet)";

void say_current() {
    const char prefix[] = "\nguest_parsers_replay: died on input ";
    [[maybe_unused]] ssize_t n = ::write(2, prefix, sizeof prefix - 1);
    n = ::write(2, current, std::strlen(current));
    n = ::write(2, "\n", 1);
}

void on_signal(int sig) {
    say_current();
    std::signal(sig, SIG_DFL);
    std::raise(sig);
}

void set_current(const std::string& what) {
    std::snprintf(current, sizeof current, "%s", what.c_str());
}

// --- Disks with planted signatures ----------------------------------------
// Small and mostly valid, so mutations start next to the checks that matter.

void put(Bytes& d, size_t at, const void* p, size_t n) {
    if (d.size() < at + n)
        d.resize(at + n);
    std::memcpy(&d[at], p, n);
}
void put_text(Bytes& d, size_t at, const char* text) {
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

uint32_t zcrc(const unsigned char* p, size_t n) {
    return static_cast<uint32_t>(::crc32(0L, p, static_cast<uInt>(n)));
}

void mbr_entry(Bytes& d, size_t sector_at, unsigned slot, uint8_t type, uint32_t start,
               uint32_t count) {
    const size_t e = sector_at + 0x1be + 16 * slot;
    d[e + 4] = type;
    put_le<uint32_t>(d, e + 8, start);
    put_le<uint32_t>(d, e + 12, count);
    d[sector_at + 510] = 0x55;
    d[sector_at + 511] = 0xaa;
}

// A GPT on `sectors` sectors with a 4-entry array (one sector at 512 bytes).
Bytes gpt_disk(uint32_t ss, uint64_t sectors) {
    Bytes d(ss * sectors);
    mbr_entry(d, 0, 0, 0xee, 1, static_cast<uint32_t>(sectors - 1));
    const uint32_t entries = 4, entry_size = 128;
    const uint64_t array_sectors = (entries * entry_size + ss - 1) / ss;
    const uint64_t last = sectors - 1;
    const uint64_t first_usable = 2 + array_sectors, last_usable = last - 1 - array_sectors;
    const auto entry = [&](uint64_t array_lba, unsigned i, const char* type_last_byte,
                           uint64_t first, uint64_t end) {
        const size_t at = array_lba * ss + i * entry_size;
        for (size_t b = 0; b < 16; ++b)
            d[at + b] = static_cast<unsigned char>(0x11 * (b + 1));
        d[at + 15] = static_cast<unsigned char>(type_last_byte[0]);
        d[at + 16] = static_cast<unsigned char>(i + 1);
        put_le<uint64_t>(d, at + 32, first);
        put_le<uint64_t>(d, at + 40, end);
        put_le<uint16_t>(d, at + 56, 'p');
    };
    for (const uint64_t array_lba : {uint64_t{2}, last - array_sectors}) {
        entry(array_lba, 0, "a", first_usable, first_usable + 3);
        entry(array_lba, 1, "b", first_usable + 4, last_usable);
    }
    for (const auto& [lba, alternate, array_lba] :
         {std::array<uint64_t, 3>{1, last, 2}, {last, 1, last - array_sectors}}) {
        const size_t h = lba * ss;
        put_text(d, h, "EFI PART");
        put_le<uint32_t>(d, h + 8, 0x00010000);
        put_le<uint32_t>(d, h + 12, 92);
        put_le<uint64_t>(d, h + 24, lba);
        put_le<uint64_t>(d, h + 32, alternate);
        put_le<uint64_t>(d, h + 40, first_usable);
        put_le<uint64_t>(d, h + 48, last_usable);
        for (size_t b = 0; b < 16; ++b)
            d[h + 56 + b] = static_cast<unsigned char>(0xa0 + b);
        put_le<uint64_t>(d, h + 72, array_lba);
        put_le<uint32_t>(d, h + 80, entries);
        put_le<uint32_t>(d, h + 84, entry_size);
        put_le<uint32_t>(d, h + 88, zcrc(&d[array_lba * ss], entries * entry_size));
        put_le<uint32_t>(d, h + 16, zcrc(&d[h], 92));
    }
    return d;
}

Bytes mbr_chain_disk() {
    Bytes d(64 * 512);
    mbr_entry(d, 0, 0, 0x83, 2, 4);
    mbr_entry(d, 0, 1, 0x05, 8, 56);
    // EBRs at 8, 20, 40: a logical partition each, linked relative to 8.
    mbr_entry(d, 8 * 512, 0, 0x83, 2, 6);
    mbr_entry(d, 8 * 512, 1, 0x05, 12, 20);
    mbr_entry(d, 20 * 512, 0, 0x8e, 2, 10);
    mbr_entry(d, 20 * 512, 1, 0x05, 32, 24);
    mbr_entry(d, 40 * 512, 0, 0xfd, 1, 20);
    return d;
}

Bytes ext_volume() {
    Bytes d(8192);
    const size_t sb = 1024;
    put_le<uint32_t>(d, sb + 0x04, 8);      // blocks
    put_le<uint32_t>(d, sb + 0x14, 1);      // first data block
    put_le<uint32_t>(d, sb + 0x18, 0);      // 1 KiB blocks
    put_le<uint16_t>(d, sb + 0x38, 0xef53); // magic
    put_le<uint32_t>(d, sb + 0x4c, 1);
    put_le<uint32_t>(d, sb + 0x5c, 0x4);   // has_journal
    put_le<uint32_t>(d, sb + 0x60, 0x2c6); // filetype, recover, extents, 64bit, flex_bg
    put_text(d, sb + 0x78, "planted");
    return d;
}

Bytes xfs_volume() {
    Bytes d(8192);
    put_text(d, 0, "XFSB");
    put_be<uint32_t>(d, 4, 4096);
    put_be<uint64_t>(d, 8, 2);
    put_be<uint32_t>(d, 88, 1);
    put_be<uint16_t>(d, 100, 0xb4a5);
    put_be<uint16_t>(d, 102, 512);
    put_text(d, 108, "planted");
    return d;
}

Bytes btrfs_volume() {
    Bytes d((64 << 10) + 4096);
    const size_t sb = 64 << 10;
    put_le<uint64_t>(d, sb + 0x30, sb);
    put_text(d, sb + 0x40, "_BHRfS_M");
    put_le<uint64_t>(d, sb + 0x70, d.size());
    put_le<uint64_t>(d, sb + 0x88, 1);
    put_le<uint32_t>(d, sb + 0x90, 4096);
    put_le<uint32_t>(d, sb + 0x94, 16384);
    put_le<uint64_t>(d, sb + 0xc9 + 8, d.size());
    put_text(d, sb + 0x12b, "planted");
    put_le<uint32_t>(d, sb, p2vfs::crc32c(&d[sb + 32], 4096 - 32));
    return d;
}

Bytes boot_sector(const char* oem) {
    Bytes d(512);
    d[0] = 0xeb;
    d[1] = 0x52;
    d[2] = 0x90;
    put_text(d, 3, oem);
    d[510] = 0x55;
    d[511] = 0xaa;
    return d;
}

Bytes ntfs_volume() {
    Bytes d = boot_sector("NTFS    ");
    d.resize(16384);
    put_le<uint16_t>(d, 0x0b, 512);
    d[0x0d] = 8;
    put_le<uint64_t>(d, 0x28, 31);
    put_le<uint64_t>(d, 0x30, 1);
    put_le<uint64_t>(d, 0x38, 2);
    put_le<uint64_t>(d, 0x48, 0x0123456789abcdefULL);
    return d;
}

Bytes fat_volume(bool fat32) {
    Bytes d = boot_sector("mkfs.fat");
    d.resize(fat32 ? 40960 : 16384);
    put_le<uint16_t>(d, 0x0b, 512);
    d[0x0d] = 1;
    put_le<uint16_t>(d, 0x0e, fat32 ? 8 : 1);
    d[0x10] = 2;
    put_le<uint16_t>(d, 0x11, fat32 ? 0 : 16);
    put_le<uint16_t>(d, 0x13, static_cast<uint16_t>(d.size() / 512));
    d[0x15] = 0xf8;
    put_le<uint16_t>(d, 0x16, fat32 ? 0 : 1);
    const size_t ext = fat32 ? 0x40 : 0x24;
    if (fat32)
        put_le<uint32_t>(d, 0x24, 1);
    d[ext + 2] = 0x29;
    put_le<uint32_t>(d, ext + 3, 0x1234abcd);
    put_text(d, ext + 7, "PLANTED    ");
    put_text(d, fat32 ? 0x52 : 0x36, fat32 ? "FAT32   " : "FAT12   ");
    return d;
}

Bytes swap_volume(const char* signature) {
    Bytes d(4 * 4096);
    put_le<uint32_t>(d, 1024, 1);
    put_le<uint32_t>(d, 1028, 3);
    for (size_t b = 0; b < 16; ++b)
        d[1036 + b] = static_cast<unsigned char>(b * 17);
    put_text(d, 1052, "planted");
    put_text(d, 4096 - 10, signature);
    return d;
}

Bytes lvm_volume() {
    Bytes d(4096);
    const size_t at = 512;
    put_text(d, at, "LABELONE");
    put_le<uint64_t>(d, at + 8, 1);
    put_le<uint32_t>(d, at + 20, 32);
    put_text(d, at + 24, "LVM2 001");
    put_text(d, at + 32, "aBcDeF123456789abcDEFGhijkLMNOPq");
    put_le<uint64_t>(d, at + 64, d.size());
    // LVM's CRC: the zlib polynomial from 0xf597a6cf without inversions.
    const uint32_t crc =
        ~static_cast<uint32_t>(::crc32(~0xf597a6cfu, &d[at + 20], static_cast<uInt>(512 - 20)));
    put_le<uint32_t>(d, at + 16, crc);
    return d;
}

std::vector<Input> planted_inputs() {
    return {
        {"planted:gpt-512", gpt_disk(512, 48)},
        {"planted:gpt-4096", gpt_disk(4096, 12)},
        {"planted:mbr-chain", mbr_chain_disk()},
        {"planted:ext", ext_volume()},
        {"planted:xfs", xfs_volume()},
        {"planted:btrfs", btrfs_volume()},
        {"planted:ntfs", ntfs_volume()},
        {"planted:bitlocker", boot_sector("-FVE-FS-")},
        {"planted:fat12", fat_volume(false)},
        {"planted:fat32", fat_volume(true)},
        {"planted:swap", swap_volume("SWAPSPACE2")},
        {"planted:swap-hibernated", swap_volume("S1SUSPEND")},
        {"planted:lvm", lvm_volume()},
    };
}

// --- Mutations ---------------------------------------------------------------

// std::mt19937_64's output is fixed by the standard; distributions are not,
// so numbers are drawn from the raw output.
class Mutator {
public:
    explicit Mutator(uint64_t seed) : rng_(seed) {}

    uint64_t below(uint64_t n) { return n == 0 ? 0 : rng_() % n; }

    void mutate(Bytes& d, const std::vector<Input>& pool) {
        const uint64_t steps = 1 + below(6);
        for (uint64_t i = 0; i < steps; ++i)
            step(d, pool);
    }

private:
    // Where on-disk fields are: near the start (MBR, GPT header and entries,
    // boot sectors, superblocks at 1 KiB), near the end (backup GPT), at
    // sector boundaries (EBRs), or anywhere.
    size_t position(const Bytes& d) {
        if (d.empty())
            return 0;
        switch (below(5)) {
        case 0:
            return below(std::min<size_t>(d.size(), 2048));
        case 1:
            return d.size() - 1 - below(std::min<size_t>(d.size(), 1024));
        case 2: {
            const size_t sector = below(d.size() / 512 + 1) * 512;
            static constexpr std::array<size_t, 8> fields{0,     3,     0x0b,  0x1be,
                                                          0x1c6, 0x1ca, 0x1fe, 0x38};
            return std::min(d.size() - 1, sector + fields[below(fields.size())] + below(16));
        }
        default:
            return below(d.size());
        }
    }

    uint64_t interesting(const Bytes& d) {
        static constexpr std::array<uint64_t, 14> values{0,
                                                         1,
                                                         2,
                                                         0x7f,
                                                         0x80,
                                                         0xff,
                                                         0x100,
                                                         0x7fffffff,
                                                         0x80000000,
                                                         0xffffffff,
                                                         0xfffffffe,
                                                         0x7fffffffffffffff,
                                                         0xffffffffffffffff,
                                                         4096};
        switch (below(4)) {
        case 0:
            return d.size() / 512 + below(3) - 1;
        case 1:
            return d.size() / 4096 + below(3) - 1;
        case 2:
            return rng_();
        default:
            return values[below(values.size())];
        }
    }

    void step(Bytes& d, const std::vector<Input>& pool) {
        switch (below(10)) {
        case 0: // flip a bit
            if (!d.empty())
                d[position(d)] ^= static_cast<unsigned char>(1u << below(8));
            break;
        case 1: { // an interesting value in a field of 1, 2, 4 or 8 bytes
            const size_t width = size_t{1} << below(4);
            if (d.size() < width)
                break;
            const size_t at = std::min(position(d), d.size() - width);
            uint64_t v = interesting(d);
            for (size_t b = 0; b < width; ++b, v >>= 8)
                d[at + b] = static_cast<unsigned char>(v);
            break;
        }
        case 2: { // insert bytes
            const size_t at = d.empty() ? 0 : position(d);
            const size_t n = 1 + below(64);
            Bytes add(n);
            for (auto& b : add)
                b = static_cast<unsigned char>(rng_());
            d.insert(d.begin() + static_cast<ptrdiff_t>(at), add.begin(), add.end());
            break;
        }
        case 3: { // erase bytes
            if (d.empty())
                break;
            const size_t at = position(d);
            const size_t n = std::min<size_t>(d.size() - at, 1 + below(512));
            d.erase(d.begin() + static_cast<ptrdiff_t>(at),
                    d.begin() + static_cast<ptrdiff_t>(at + n));
            break;
        }
        case 4: // cut the disk short
            d.resize(below(d.size() + 1));
            break;
        case 5: { // copy a sector over another (EBR chains, backup headers)
            const size_t sectors = d.size() / 512;
            if (sectors < 2)
                break;
            const size_t from = below(sectors) * 512, to = below(sectors) * 512;
            std::memmove(&d[to], &d[from], 512);
            break;
        }
        case 6: { // splice in a sector from another input
            const Input& other = pool[below(pool.size())];
            const size_t sectors = other.bytes.size() / 512;
            if (sectors == 0 || d.size() < 512)
                break;
            const size_t from = below(sectors) * 512, to = below(d.size() / 512) * 512;
            std::memcpy(&d[to], &other.bytes[from], 512);
            break;
        }
        case 7: { // plant a signature where a parser looks for one
            static constexpr std::array<std::pair<size_t, const char*>, 12> signatures{{
                {512, "EFI PART"},
                {4096, "EFI PART"},
                {510, "\x55\xaa"},
                {0x1c2, "\xee"},
                {0x1c2, "\x05"},
                {512, "LABELONE"},
                {1024 + 0x38, "\x53\xef"},
                {0, "XFSB"},
                {3, "NTFS    "},
                {0x52, "FAT32   "},
                {4096 - 10, "SWAPSPACE2"},
                {(64 << 10) + 0x40, "_BHRfS_M"},
            }};
            const auto& [at, text] = signatures[below(signatures.size())];
            const size_t n = std::strlen(text);
            if (d.size() >= at + n)
                std::memcpy(&d[at], text, n);
            break;
        }
        case 8: { // grow the disk
            d.resize(d.size() + 512 * (1 + below(16)));
            break;
        }
        default: { // a random byte
            if (!d.empty())
                d[position(d)] = static_cast<unsigned char>(rng_());
            break;
        }
        }
    }

    std::mt19937_64 rng_;
};

void add_path(const std::filesystem::path& p, std::vector<Input>& out) {
    if (std::filesystem::is_directory(p)) {
        std::vector<std::filesystem::path> files;
        for (const auto& e : std::filesystem::directory_iterator(p))
            if (e.is_regular_file())
                files.push_back(e.path());
        // Sorted, so the mutations do not depend on directory order.
        std::sort(files.begin(), files.end());
        for (const auto& f : files)
            add_path(f, out);
        return;
    }
    std::ifstream in(p, std::ios::binary);
    if (!in) {
        std::fprintf(stderr, "guest_parsers_replay: cannot read %s\n", p.c_str());
        std::exit(2);
    }
    out.push_back({p.string(), Bytes(std::istreambuf_iterator<char>(in), {})});
}

int usage() {
    std::fprintf(stderr, "usage: guest_parsers_replay [--mutations N] [--seed S] [--write K FILE] "
                         "PATH...\n");
    return 2;
}

} // namespace

int main(int argc, char** argv) {
    uint64_t mutations = 0, seed = 1;
    long long write_index = -1;
    std::string write_file;
    std::vector<Input> corpus;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--mutations" && i + 1 < argc)
            mutations = std::strtoull(argv[++i], nullptr, 0);
        else if (a == "--seed" && i + 1 < argc)
            seed = std::strtoull(argv[++i], nullptr, 0);
        else if (a == "--write" && i + 2 < argc) {
            write_index = std::strtoll(argv[++i], nullptr, 0);
            write_file = argv[++i];
        } else if (!a.empty() && a[0] == '-')
            return usage();
        else
            add_path(a, corpus);
    }
    for (const int sig : {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL})
        std::signal(sig, on_signal);
#ifdef P2VFS_HAVE_SANITIZER_INTERFACE
    __sanitizer_set_death_callback(say_current);
#endif
    const auto start = std::chrono::steady_clock::now();

    std::vector<Input> pool = corpus;
    for (auto& p : planted_inputs())
        pool.push_back(std::move(p));
    if (write_index < 0)
        for (const auto& in : pool) {
            set_current(in.name);
            LLVMFuzzerTestOneInput(in.bytes.data(), in.bytes.size());
        }

    Mutator m(seed);
    for (uint64_t k = 0; k < mutations; ++k) {
        const Input& base = pool[m.below(pool.size())];
        Bytes d = base.bytes;
        m.mutate(d, pool);
        if (write_index >= 0) {
            if (k != static_cast<uint64_t>(write_index))
                continue;
            std::ofstream(write_file, std::ios::binary)
                .write(reinterpret_cast<const char*>(d.data()),
                       static_cast<std::streamsize>(d.size()));
            std::printf("mutation %llu (of %s) written to %s\n", static_cast<unsigned long long>(k),
                        base.name.c_str(), write_file.c_str());
            return 0;
        }
        set_current("mutation " + std::to_string(k) + " of " + base.name + " (--seed " +
                    std::to_string(seed) + "; save it with --write " + std::to_string(k) +
                    " FILE)");
        LLVMFuzzerTestOneInput(d.data(), d.size());
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("guest_parsers_replay: %zu inputs (%zu from the corpus), %llu mutations, seed "
                "%llu: no failure in %.1f s\n",
                pool.size(), corpus.size(), static_cast<unsigned long long>(mutations),
                static_cast<unsigned long long>(seed), seconds);
    return 0;
}

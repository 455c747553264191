// Runs a fuzz target without libFuzzer: every file named (or found in a
// directory named) on the command line, then a number of seeded mutations
// of those files and of the inputs the target plants (replay.h). It is how
// g++ and sanitizer builds exercise the targets in ctest.
//
//   TARGET_replay [--mutations N] [--seed S] [--write K FILE] PATH...
//
// Mutations are a pure function of the seed, the inputs and their order, so
// a failure is reproduced by the same command; the input that was running
// is named on stderr when the process dies (signal or sanitizer report), and
// `--write K FILE` saves mutation K for a debugger or the libFuzzer binary.
// The mutator is deliberately simple (bit flips, interesting values at
// the target's field positions, insertions, deletions, copies of units —
// sectors, pages —, planted signatures); coverage-guided search is
// libFuzzer's job.
#include "replay.h"

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

using p2vfs::fuzz::Bytes;
using p2vfs::fuzz::Input;
using p2vfs::fuzz::ReplayTarget;

// The binary's name, for messages ("hive_replay").
char program[64] = "replay";

// What is running, for the death report; written only between runs.
char current[512] = "(nothing yet)";

void say_current() {
    [[maybe_unused]] ssize_t n = ::write(2, "\n", 1);
    n = ::write(2, program, std::strlen(program));
    const char prefix[] = ": died on input ";
    n = ::write(2, prefix, sizeof prefix - 1);
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

// --- Mutations ---------------------------------------------------------------

// std::mt19937_64's output is fixed by the standard; distributions are not,
// so numbers are drawn from the raw output.
class Mutator {
public:
    Mutator(uint64_t seed, const ReplayTarget& target) : target_(target), rng_(seed) {}

    uint64_t below(uint64_t n) { return n == 0 ? 0 : rng_() % n; }

    void mutate(Bytes& d, const std::vector<Input>& pool) {
        const uint64_t steps = 1 + below(6);
        for (uint64_t i = 0; i < steps; ++i)
            step(d, pool);
    }

private:
    // Where fields are: near the start (MBR, GPT header and entries, boot
    // sectors, superblocks at 1 KiB, a hive's header), near the end (backup
    // GPT), at the target's fields of a unit (EBRs, hbin headers), or
    // anywhere.
    size_t position(const Bytes& d) {
        if (d.empty())
            return 0;
        switch (below(5)) {
        case 0:
            return below(std::min<size_t>(d.size(), 2048));
        case 1:
            return d.size() - 1 - below(std::min<size_t>(d.size(), 1024));
        case 2: {
            const size_t unit = below(d.size() / target_.unit + 1) * target_.unit;
            const auto& fields = target_.fields;
            const size_t field = fields.empty() ? 0 : fields[below(fields.size())];
            return std::min(d.size() - 1, unit + field + below(16));
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
        case 5: { // copy a unit over another (EBR chains, backup headers, hbins)
            const size_t unit = target_.unit;
            const size_t units = d.size() / unit;
            if (units < 2)
                break;
            const size_t from = below(units) * unit, to = below(units) * unit;
            std::memmove(&d[to], &d[from], unit);
            break;
        }
        case 6: { // splice in a unit from another input
            const size_t unit = target_.unit;
            const Input& other = pool[below(pool.size())];
            const size_t units = other.bytes.size() / unit;
            if (units == 0 || d.size() < unit)
                break;
            const size_t from = below(units) * unit, to = below(d.size() / unit) * unit;
            std::memcpy(&d[to], &other.bytes[from], unit);
            break;
        }
        case 7: { // plant a signature where a parser looks for one
            const auto& signatures = target_.signatures;
            if (signatures.empty())
                break;
            const auto& [at, text] = signatures[below(signatures.size())];
            if (d.size() >= at + text.size())
                std::memcpy(&d[at], text.data(), text.size());
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

    const ReplayTarget& target_;
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
        std::fprintf(stderr, "%s: cannot read %s\n", program, p.c_str());
        std::exit(2);
    }
    out.push_back({p.string(), Bytes(std::istreambuf_iterator<char>(in), {})});
}

int usage() {
    std::fprintf(stderr, "usage: %s [--mutations N] [--seed S] [--write K FILE] PATH...\n",
                 program);
    return 2;
}

} // namespace

int main(int argc, char** argv) {
    if (argc > 0)
        std::snprintf(program, sizeof program, "%s",
                      std::filesystem::path(argv[0]).filename().c_str());
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

    ReplayTarget target = p2vfs::fuzz::replay_target();
    std::vector<Input> pool = corpus;
    for (auto& p : target.planted)
        pool.push_back(std::move(p));
    if (write_index < 0)
        for (const auto& in : pool) {
            set_current(in.name);
            LLVMFuzzerTestOneInput(in.bytes.data(), in.bytes.size());
        }

    Mutator m(seed, target);
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
    std::printf("%s: %zu inputs (%zu from the corpus), %llu mutations, seed "
                "%llu: no failure in %.1f s\n",
                program, pool.size(), corpus.size(), static_cast<unsigned long long>(mutations),
                static_cast<unsigned long long>(seed), seconds);
    return 0;
}

// Fuzz target for registry hives (guest/registry.h over hivex): the input is
// a hive file. It is read as inspection reads SYSTEM and SOFTWARE (the
// control set Select\Current names, its services' Start, Type, Group and
// ImagePath, MountedDevices, CurrentVersion's strings) and walked key by
// key to a small depth; then a writable copy is edited as fixups edit one
// (a key made, values set and removed), committed, and the committed bytes
// opened again.
//
// Running it (Clang with libFuzzer):
//   cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++
//   ninja -C build-fuzz hive_fuzz
//   mkdir -p /tmp/hive-corpus
//   build-fuzz/tests/fuzz/hive_fuzz -max_len=65536 -timeout=10 NEW SEEDS
// with NEW = /tmp/hive-corpus, where libFuzzer keeps the inputs it finds,
// and SEEDS = tests/fuzz/corpus/hive, the checked-in seeds. hivex is the
// system's library, not instrumented: coverage guides the search through
// our side only, and hivex's own reads outside the hive show as crashes,
// not as sanitizer reports. Without libFuzzer, hive_replay (replay_main.cpp
// with hive_planted.cpp, ctest fuzz.hive) runs the same function over the
// corpus and seeded mutations of it.
//
// What counts as a bug: a crash; any exception other than p2vfs::Error;
// text that is not UTF-8; a key found by name whose name differs in more
// than case; an edit that commits without error but is not in the
// committed hive when it is opened again.
//
// Known in hivex 1.3.23: setting or removing a value of a key whose value
// list names one value twice, or whose values share a cell, frees a cell
// twice and hivex aborts (write.c, mark_block_unused: "Assertion
// `IS_VALID_BLOCK (h, offset)' failed"). Hive::check_editable refuses such
// keys before hivex sees the edit; the inputs that reached the abort are in
// the corpus (crash-*). Not guarded: a value whose data offset points at
// another key's record has that record freed by the edit (--seed 4,
// mutation 13952: that key cannot be read in the committed hive).
#include "common/endian.h"
#include "common/error.h"
#include "guest/registry.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <strings.h>
#include <vector>

namespace {

using p2vfs::guest::Hive;
using p2vfs::guest::RegValue;

[[noreturn]] void broken(const std::string& what) {
    std::fprintf(stderr, "hive_fuzz: %s\n", what.c_str());
    std::abort();
}

bool is_utf8(const std::string& s) {
    for (size_t i = 0; i < s.size();) {
        const auto b = static_cast<unsigned char>(s[i]);
        const size_t n = b < 0x80             ? 1
                         : (b & 0xe0) == 0xc0 ? 2
                         : (b & 0xf0) == 0xe0 ? 3
                         : (b & 0xf8) == 0xf0 ? 4
                                              : 0;
        if (n == 0 || i + n > s.size())
            return false;
        for (size_t k = 1; k < n; ++k)
            if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80)
                return false;
        i += n;
    }
    return true;
}

void text(const std::string& s, const char* what) {
    if (!is_utf8(s))
        broken(std::string(what) + " is not UTF-8");
}

// Runs `part`; a damaged hive ends only that part.
template <typename F> void guarded(F&& part) {
    try {
        part();
    } catch (const p2vfs::Error&) {
    }
}

void show(const RegValue& v) {
    text(p2vfs::guest::reg_readable(v), "a value's readable text");
    const std::string e = p2vfs::guest::reg_export_text(v);
    if (e.empty())
        broken("an empty export text");
}

Hive::Node key(Hive& h, const std::string& path) {
    const Hive::Node node = h.key(path);
    if (node) {
        const std::string name = h.key_name(node);
        const std::string last = path.substr(path.rfind('\\') + 1);
        if (strcasecmp(name.c_str(), last.c_str()) != 0)
            broken("key " + path + " found as " + name);
    }
    return node;
}

void walk(Hive& h, Hive::Node node, unsigned depth, unsigned& budget) {
    if (depth > 6 || budget == 0)
        return;
    --budget;
    guarded([&] { text(h.key_name(node), "a key's name"); });
    guarded([&] {
        for (const auto& [name, v] : h.values(node)) {
            text(name, "a value's name");
            show(v);
        }
    });
    std::vector<Hive::Node> children;
    guarded([&] { children = h.subkeys(node); });
    for (const Hive::Node c : children)
        walk(h, c, depth + 1, budget);
}

// What inspection reads; returns the control set's name, "" when unknown.
std::string inspect(Hive& h) {
    std::string set;
    guarded([&] {
        const Hive::Node select = key(h, "Select");
        const auto current = select ? h.dword(select, "Current") : std::nullopt;
        if (!current || *current < 1 || *current > 999)
            return;
        char name[16];
        std::snprintf(name, sizeof name, "ControlSet%03u", *current);
        if (const Hive::Node n = key(h, name))
            set = h.key_name(n);
    });
    if (!set.empty()) {
        guarded([&] {
            for (const char* k : {"\\Control\\ComputerName\\ComputerName",
                                  "\\Control\\Session Manager\\Environment",
                                  "\\Control\\Session Manager\\Power", "\\Control\\Power"})
                if (const Hive::Node n = key(h, set + k))
                    for (const char* v : {"ComputerName", "PROCESSOR_ARCHITECTURE"})
                        if (const auto s = h.string(n, v))
                            text(*s, "a string value");
        });
        guarded([&] {
            const Hive::Node services = key(h, set + "\\Services");
            if (!services)
                return;
            unsigned n = 0;
            for (const Hive::Node s : h.subkeys(services)) {
                if (++n > 256)
                    break;
                guarded([&] {
                    text(h.key_name(s), "a service's name");
                    h.dword(s, "Start");
                    h.dword(s, "Type");
                    for (const char* v : {"Group", "ImagePath"})
                        if (const auto str = h.string(s, v))
                            text(*str, "a string value");
                });
            }
        });
    }
    guarded([&] {
        if (const Hive::Node md = key(h, "MountedDevices"))
            for (const auto& [name, v] : h.values(md)) {
                text(name, "a value's name");
                show(v);
            }
    });
    guarded([&] {
        if (const Hive::Node cv = key(h, "Microsoft\\Windows NT\\CurrentVersion"))
            for (const char* v : {"ProductName", "EditionID", "InstallationType", "CurrentVersion",
                                  "CurrentBuildNumber", "DisplayVersion", "SystemRoot"})
                if (const auto s = h.string(cv, v))
                    text(*s, "a string value");
    });
    return set;
}

// An edit made and what it should read back as.
struct Expected {
    std::string key;
    std::string value;
    std::optional<RegValue> after;
};

// What fixups do to a writable copy: the edits made, in `done`; whether
// every one that was tried succeeded (fixups commit nothing otherwise).
bool edit(Hive& h, const std::string& set, std::vector<Expected>& done) {
    bool whole = true;
    const auto guarded = [&](auto&& part) {
        try {
            part();
        } catch (const p2vfs::Error&) {
            whole = false;
        }
    };
    const std::string cs = set.empty() ? "ControlSet001" : set;
    guarded([&] {
        const std::string k = cs + "\\Control\\CrashControl";
        const Hive::Node n = h.add_key(k);
        const RegValue v = p2vfs::guest::reg_dword_value(0);
        h.set_value(n, "AutoReboot", v);
        done.push_back({k, "AutoReboot", v});
    });
    guarded([&] {
        const Hive::Node services = h.key(cs + "\\Services");
        if (!services)
            return;
        const auto children = h.subkeys(services);
        if (children.empty())
            return;
        const std::string k = cs + "\\Services\\" + h.key_name(children.front());
        const Hive::Node n = h.key(k);
        if (n != children.front())
            return; // two keys of one name: the first is found
        const RegValue v = p2vfs::guest::reg_string("SCSI miniport");
        h.set_value(n, "Group", v);
        done.push_back({k, "Group", v});
    });
    guarded([&] {
        const Hive::Node md = h.key("MountedDevices");
        if (!md)
            return;
        const auto values = h.values(md);
        if (values.empty())
            return;
        h.delete_value(md, values.front().first);
        // Another value of the same name (matched without regard to case)
        // goes too.
        done.push_back({"MountedDevices", values.front().first, std::nullopt});
    });
    return whole;
}

void run(const uint8_t* data, size_t size) {
    const std::string bytes(reinterpret_cast<const char*>(data), size);
    std::string set;
    try {
        Hive h(bytes, "fuzz input");
        set = inspect(h);
        unsigned budget = 512;
        guarded([&] { walk(h, h.root(), 0, budget); });
    } catch (const p2vfs::Error&) {
        return;
    }

    std::string committed;
    std::vector<Expected> done;
    try {
        Hive h(bytes, "fuzz input", true);
        if (!edit(h, set, done))
            return;
        committed = h.commit();
    } catch (const p2vfs::Error&) {
        return;
    }
    std::unique_ptr<Hive> again;
    try {
        again = std::make_unique<Hive>(committed, "committed fuzz input");
    } catch (const p2vfs::Error& e) {
        broken(std::string("the committed hive does not open again: ") + e.what());
    }
    for (const Expected& e : done) {
        try {
            const Hive::Node n = again->key(e.key);
            if (!n)
                broken("key " + e.key + " is not in the committed hive");
            if (again->value(n, e.value) != e.after)
                broken("value " + e.value + " of " + e.key + " did not commit as edited");
        } catch (const p2vfs::Error& err) {
            broken(std::string("the committed hive cannot be read where it was edited: ") +
                   err.what());
        }
    }
    unsigned budget = 512;
    guarded([&] { walk(*again, again->root(), 0, budget); });
}

// A hive's header checksum: the XOR of its first 127 32-bit words.
bool fix_checksum(std::string& d) {
    if (d.size() < 0x200)
        return false;
    auto* p = reinterpret_cast<unsigned char*>(d.data());
    uint32_t sum = 0;
    for (size_t at = 0; at < 0x1fc; at += 4)
        sum ^= p2vfs::load_le<uint32_t>(p + at);
    if (p2vfs::load_le<uint32_t>(p + 0x1fc) == sum)
        return false;
    p2vfs::store_le<uint32_t>(p + 0x1fc, sum);
    return true;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    run(data, size);
    // A mutated header almost never keeps a right checksum, and hivex opens
    // nothing behind a wrong one: a second pass gets it made right.
    std::string fixed(reinterpret_cast<const char*>(data), size);
    if (fix_checksum(fixed))
        run(reinterpret_cast<const uint8_t*>(fixed.data()), fixed.size());
    return 0;
}

// Windows-like disks for tests, made by the tools Windows disks are checked
// against rather than by our code: an NTFS volume made by mkntfs, filled
// through libntfs-3g (the library of the ntfs-3g driver, not our reader)
// with registry hives that hivex's C API builds from an empty hive, placed
// in a partition table made by sfdisk.
//
// The empty hive is the public hivex project's images/minimal (8 KiB);
// P2VFS_MINIMAL_HIVE names it, else the shared test data copy is used.
//
// Include this header after every other one: libntfs-3g's headers need
// <cstddef>, <cstdarg>, <ctime> first and define min() and max() (undone
// here) and other short names as macros.
#pragma once

#include "block/local_source.h"
#include "guest/inspect.h"

#include <cerrno>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <gtest/gtest.h>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#include <utility>
#include <vector>

extern "C" {
#include <ntfs-3g/attrib.h>
#include <ntfs-3g/dir.h>
#include <ntfs-3g/inode.h>
#include <ntfs-3g/types.h>
#include <ntfs-3g/unistr.h>
#include <ntfs-3g/volume.h>
}
#undef min
#undef max
#include <hivex.h>

namespace p2vfs::guest::windows_disk {

namespace fs = std::filesystem;

inline bool have(const char* tool) {
    return std::system((std::string("command -v ") + tool + " >/dev/null 2>&1").c_str()) == 0;
}

inline std::string minimal_hive_path() {
    const char* env = std::getenv("P2VFS_MINIMAL_HIVE");
    return env ? env : P2VFS_TEST_DATA "/registry/minimal.hive";
}

inline std::string read_whole(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// ---- bytes, for damaging what was built ------------------------------------

inline uint16_t get_le16(const std::string& b, size_t at) {
    return static_cast<uint16_t>(static_cast<unsigned char>(b[at]) |
                                 static_cast<unsigned char>(b[at + 1]) << 8);
}

inline uint32_t get_le32(const std::string& b, size_t at) {
    uint32_t v = 0;
    for (size_t i = 4; i-- > 0;)
        v = v << 8 | static_cast<unsigned char>(b[at + i]);
    return v;
}

inline void put_le32(std::string& b, size_t at, uint32_t v) {
    for (size_t i = 0; i < 4; ++i)
        b[at + i] = static_cast<char>(v >> (8 * i));
}

inline void write_whole(const fs::path& p, const std::string& bytes) {
    std::ofstream(p, std::ios::binary | std::ios::trunc)
        .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// ---- registry values, as hivex stores them ----------------------------------

struct Value {
    std::string name;
    hive_type type;
    std::string bytes;
};

// UTF-16LE of ASCII text, without a terminating NUL.
inline std::string utf16(const std::string& ascii) {
    std::string b;
    for (char c : ascii)
        b += std::string{c, '\0'};
    return b;
}

inline Value sz(const std::string& name, const std::string& ascii) {
    return {name, hive_t_REG_SZ, utf16(ascii) + std::string(2, '\0')};
}

inline Value expand(const std::string& name, const std::string& ascii) {
    Value v = sz(name, ascii);
    v.type = hive_t_REG_EXPAND_SZ;
    return v;
}

inline Value dword(const std::string& name, uint32_t v) {
    std::string b(4, '\0');
    for (int i = 0; i < 4; ++i)
        b[static_cast<size_t>(i)] = static_cast<char>(v >> (8 * i));
    return {name, hive_t_REG_DWORD, b};
}

inline Value binary(const std::string& name, const std::string& bytes) {
    return {name, hive_t_REG_BINARY, bytes};
}

// Keys by '\'-separated path, each with the values it holds.
using Keys = std::vector<std::pair<std::string, std::vector<Value>>>;

inline std::string findings_of(const Inventory& inv) {
    std::string out;
    for (const Finding& f : inv.findings)
        out += f.id + " [" + f.severity + "] " + f.message + "\n";
    return out;
}

// A fixture with its own temporary directory, where make_disk() leaves
// image_. Skips when mkntfs, sfdisk or the empty hive are missing.
class WindowsDiskTest : public ::testing::Test {
protected:
    void SetUp() override {
        for (const char* tool : {"mkntfs", "sfdisk"})
            if (!have(tool))
                GTEST_SKIP() << "needs " << tool << " (packages ntfs-3g, fdisk) to build its disk";
        if (!fs::exists(minimal_hive_path()))
            GTEST_SKIP() << "needs the empty registry hive " << minimal_hive_path()
                         << " (hivex's images/minimal; set P2VFS_MINIMAL_HIVE)";
        char tmpl[] = "/tmp/p2vfs-windows-test-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        image_ = dir_ / "disk.img";
    }
    void TearDown() override {
        if (!dir_.empty())
            fs::remove_all(dir_);
    }

    void run(const std::string& cmd) {
        const int rc =
            std::system(("{ " + cmd + "; } >" + (dir_ / "log").string() + " 2>&1").c_str());
        ASSERT_EQ(rc, 0) << cmd << "\n" << read_whole(dir_ / "log");
    }

    // The empty hive with `keys` added (every parent made on the way).
    std::string hive(const Keys& keys) {
        hive_h* h = hivex_open(minimal_hive_path().c_str(), HIVEX_OPEN_WRITE);
        EXPECT_NE(h, nullptr) << minimal_hive_path() << ": " << std::strerror(errno);
        if (!h)
            return {};
        for (const auto& [path, values] : keys) {
            hive_node_h node = hivex_root(h);
            std::istringstream parts(path);
            std::string part;
            while (std::getline(parts, part, '\\')) {
                hive_node_h child = hivex_node_get_child(h, node, part.c_str());
                if (!child)
                    child = hivex_node_add_child(h, node, part.c_str());
                if (!child) {
                    ADD_FAILURE() << path << ": " << std::strerror(errno);
                    hivex_close(h);
                    return {};
                }
                node = child;
            }
            std::vector<hive_set_value> set;
            for (const Value& v : values)
                set.push_back({const_cast<char*>(v.name.c_str()), v.type, v.bytes.size(),
                               const_cast<char*>(v.bytes.data())});
            EXPECT_EQ(hivex_node_set_values(h, node, set.size(), set.data(), 0), 0)
                << path << ": " << std::strerror(errno);
        }
        const fs::path out = dir_ / "hive";
        EXPECT_EQ(hivex_commit(h, out.c_str(), 0), 0) << std::strerror(errno);
        hivex_close(h);
        return read_whole(out);
    }

    std::string software_hive(const std::string& product, const std::string& edition,
                              const std::string& build, const std::string& display = "") {
        std::vector<Value> v{sz("ProductName", product),      sz("EditionID", edition),
                             sz("CurrentVersion", "6.3"),     sz("CurrentBuild", build),
                             sz("CurrentBuildNumber", build), sz("SystemRoot", "C:\\Windows")};
        if (!display.empty())
            v.push_back(sz("DisplayVersion", display));
        return hive({{"Microsoft\\Windows NT\\CurrentVersion", v}});
    }

    std::string system_hive(const std::string& hostname, uint32_t hiberboot) {
        return hive(
            {{"Select", {dword("Current", 1), dword("Default", 1)}},
             {"ControlSet001\\Control\\ComputerName\\ComputerName", {sz("ComputerName", hostname)}},
             {"ControlSet001\\Control\\Session Manager\\Power",
              {dword("HiberbootEnabled", hiberboot)}}});
    }

    // The files of a Windows Server 2019 system volume that boots by BIOS.
    std::map<std::string, std::string> server_2019(const std::string& hiberfil_head) {
        std::string hiberfil(4096, '\0');
        hiberfil.replace(0, hiberfil_head.size(), hiberfil_head);
        return {{"Windows/System32/config/SOFTWARE",
                 software_hive("Windows Server 2019 Standard", "ServerStandard", "17763")},
                {"Windows/System32/config/SYSTEM", system_hive("WIN-P2V01", 0)},
                {"hiberfil.sys", hiberfil},
                {"bootmgr", std::string(4096, 'B')},
                {"Boot/BCD", hive({{"Description", {sz("KeyName", "BCD00000000")}}})}};
    }

    // Writes `files` into the NTFS file system in `image` through
    // libntfs-3g, making directories on the way.
    void ntfs_put(const fs::path& image, const std::map<std::string, std::string>& files) {
        ntfs_volume* vol = ntfs_mount(image.c_str(), 0);
        ASSERT_NE(vol, nullptr) << image << ": " << std::strerror(errno);
        for (const auto& [path, content] : files) {
            std::vector<ntfs_inode*> chain{ntfs_inode_open(vol, FILE_root)};
            std::istringstream parts(path);
            std::string part;
            std::vector<std::string> names;
            while (std::getline(parts, part, '/'))
                names.push_back(part);
            for (size_t i = 0; i < names.size(); ++i) {
                ntfschar* u = nullptr;
                const int len = ntfs_mbstoucs(names[i].c_str(), &u);
                ASSERT_GT(len, 0) << names[i];
                const u64 ref = ntfs_inode_lookup_by_name(chain.back(), u, len);
                ntfs_inode* ni =
                    ref == static_cast<u64>(-1)
                        ? ntfs_create(chain.back(), const_cpu_to_le32(0), u, static_cast<u8>(len),
                                      i + 1 == names.size() ? S_IFREG : S_IFDIR)
                        : ntfs_inode_open(vol, MREF(ref));
                std::free(u);
                ASSERT_NE(ni, nullptr) << path << ": " << std::strerror(errno);
                chain.push_back(ni);
            }
            ntfs_attr* na = ntfs_attr_open(chain.back(), AT_DATA, AT_UNNAMED, 0);
            ASSERT_NE(na, nullptr) << path;
            if (!content.empty()) {
                ASSERT_EQ(ntfs_attr_pwrite(na, 0, static_cast<s64>(content.size()), content.data()),
                          static_cast<s64>(content.size()))
                    << path;
            }
            ntfs_attr_close(na);
            // Each inode is closed while its directory is open, so that its
            // name in the directory's index can be updated.
            for (size_t i = chain.size() - 1; i > 0; --i)
                ASSERT_EQ(ntfs_inode_close_in_dir(chain[i], chain[i - 1]), 0)
                    << path << ": " << std::strerror(errno);
            ASSERT_EQ(ntfs_inode_close(chain[0]), 0) << path << ": " << std::strerror(errno);
        }
        ASSERT_EQ(ntfs_umount(vol, FALSE), 0) << image;
    }

    // A disk with a 32 MiB NTFS partition holding `files`. `scheme` "mbr":
    // it is partition 1, active. "gpt": it is partition 2, a basic data
    // partition after an EFI System partition (left unformatted).
    // `on_volume`, when given, is handed the NTFS volume's image once the
    // files are in, before it is placed on the disk.
    void make_disk(const std::map<std::string, std::string>& files,
                   const std::string& scheme = "mbr",
                   const std::function<void(const fs::path&)>& on_volume = {}) {
        const fs::path ntfs = dir_ / "ntfs.img";
        const uint64_t start = scheme == "gpt" ? 18432 : 2048; // sectors
        run("truncate -s 32M " + ntfs.string());
        run("mkntfs -Q -F -q -L Windows -p " + std::to_string(start) + " -H 255 -S 63 " +
            ntfs.string());
        ntfs_put(ntfs, files);
        if (HasFatalFailure())
            return;
        if (on_volume) {
            on_volume(ntfs);
            if (HasFatalFailure())
                return;
        }
        if (scheme == "gpt") {
            run("truncate -s 45M " + image_.string());
            const std::string esp = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
            const std::string basic_data = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";
            run("printf 'label: gpt\\nstart=2048, size=16384, type=" + esp +
                "\\nstart=18432, size=65536, type=" + basic_data + "\\n' | sfdisk -q " +
                image_.string());
        } else {
            run("truncate -s 34M " + image_.string());
            run("printf 'label: dos\\nlabel-id: 0x2008a2b1\\nstart=2048, size=65536, type=7, "
                "bootable\\n' | sfdisk -q " +
                image_.string());
        }
        run("dd if=" + ntfs.string() + " of=" + image_.string() +
            " bs=512 seek=" + std::to_string(start) + " conv=notrunc,sparse status=none");
    }

    Inventory inspect_disk() { return inspect(std::make_shared<LocalSource>(image_.string())); }

    fs::path dir_;
    fs::path image_;
};

} // namespace p2vfs::guest::windows_disk

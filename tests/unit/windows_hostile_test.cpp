// Hostile Windows disks: damage placed exactly (a registry cell, an hbin
// header, an MFT record's update sequence, a hive too large to be real) in
// disks built as in windows_disk.h. Each must end in a finding or an error
// that names what is damaged and where, never in a crash; CI runs these
// under ASan and UBSan too. The registry layer on its own is
// registry_test.cpp's.
#include "common/error.h"
#include "guest/fixups.h"
#include "guest/inspect.h"
#include "guest/ntfs.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

// Last: it brings in libntfs-3g's headers.
#include "windows_disk.h"

namespace p2vfs::guest {
namespace {

using namespace windows_disk;

// The offset of the cell of key `name` (an "nk" cell, its name stored in
// ASCII at 0x50 after the cell's size, its length at 0x4c), or of value
// `name` (a "vk" cell: name at 0x18, length at 0x06). Found by its name,
// which the test's hives hold once.
size_t cell_of(const std::string& hive, const char* id, const std::string& name) {
    const size_t name_at = id == std::string("nk") ? 0x50 : 0x18;
    const size_t length_at = id == std::string("nk") ? 0x4c : 0x06;
    size_t found = std::string::npos;
    for (size_t at = hive.find(name); at != std::string::npos; at = hive.find(name, at + 1)) {
        if (at < name_at)
            continue;
        const size_t cell = at - name_at;
        if (hive.compare(cell + 4, 2, id) != 0 ||
            (get_le32(hive, cell + length_at) & 0xffff) != name.size())
            continue;
        EXPECT_EQ(found, std::string::npos) << id << " cell " << name << " found twice";
        found = cell;
    }
    EXPECT_NE(found, std::string::npos) << "no " << id << " cell named " << name;
    return found;
}

// The offsets of the 1024-byte MFT records ("FILE") of `image` whose own
// $FILE_NAME attribute (type 0x30, resident) is `name`. A directory's
// record also holds its children's names, in its index: those do not count.
std::vector<size_t> mft_records_named(const std::string& image, const std::string& name) {
    const std::string u = utf16(name);
    std::vector<size_t> out;
    for (size_t rec = 0; rec + 1024 <= image.size(); rec += 1024) {
        if (image.compare(rec, 4, "FILE") != 0)
            continue;
        for (size_t at = rec + get_le16(image, rec + 0x14); at + 0x18 <= rec + 1024;) {
            const uint32_t type = get_le32(image, at), length = get_le32(image, at + 4);
            if (type == 0xffffffff || length < 0x18 || at + length > rec + 1024)
                break;
            if (type == 0x30 && image[at + 8] == 0) {
                const size_t fn = at + get_le16(image, at + 0x14);
                if (fn + 0x42 + u.size() <= rec + 1024 &&
                    static_cast<unsigned char>(image[fn + 0x40]) == name.size() &&
                    image.compare(fn + 0x42, u.size(), u) == 0) {
                    out.push_back(rec);
                    break;
                }
            }
            at += length;
        }
    }
    return out;
}

class WindowsHostile : public WindowsDiskTest {
protected:
    // A Windows Server 2019 whose SYSTEM hive has a control set that
    // fixups can act on: storahci (with its file), CrashControl.
    std::map<std::string, std::string> fixable_server() {
        auto files = server_2019("");
        files["Windows/System32/config/SYSTEM"] =
            hive({{"Select", {dword("Current", 1), dword("Default", 1)}},
                  {"ControlSet001\\Control\\ComputerName\\ComputerName",
                   {sz("ComputerName", "WIN-P2V01")}},
                  {"ControlSet001\\Control\\CrashControl",
                   {dword("AutoReboot", 1), dword("CrashDumpEnabled", 7)}},
                  {"ControlSet001\\Services\\storahci",
                   {dword("Type", 1), dword("Start", 3), sz("Group", "SCSI miniport"),
                    expand("ImagePath", "system32\\drivers\\storahci.sys")}}});
        files["Windows/System32/drivers/storahci.sys"] = "MZ storahci";
        return files;
    }

    // Inspects the disk and plans its fixups for KVM; the plan's refusals,
    // or "threw: " and the Error's text.
    std::string plan_outcome(Inventory& inv) {
        const DevicePtr disk = std::make_shared<LocalSource>(image_.string());
        inv = inspect(disk);
        try {
            const FixupPlan plan = plan_fixups(disk, inv, FixupOptions{});
            std::string out;
            for (const std::string& r : plan.refusals)
                out += "refused: " + r + "\n";
            return out;
        } catch (const Error& e) {
            return std::string("threw: ") + e.what() + "\n";
        }
    }
};

// What the damage below is measured against: the same disk, undamaged.
TEST_F(WindowsHostile, UndamagedDiskIsReadAndPlannedWithoutRefusal) {
    make_disk(fixable_server());
    ASSERT_FALSE(HasFatalFailure());
    Inventory inv;
    EXPECT_EQ(plan_outcome(inv), "");
    EXPECT_EQ(findings_of(inv), "");
    ASSERT_TRUE(inv.windows_guest.has_value());
    EXPECT_EQ(inv.windows_guest->control_set, "ControlSet001");
    EXPECT_EQ(inv.windows_guest->hostname, "WIN-P2V01");
}

// ---- a SYSTEM hive with broken cells -----------------------------------------

const std::string system_unknown =
    "refused: the current control set of the SYSTEM hive is unknown (see the inspection's "
    "findings): nothing can be edited\n";

TEST_F(WindowsHostile, SystemHiveWithABrokenHbinHeaderIsNamedAndFixupsRefused) {
    auto files = fixable_server();
    std::string& system = files["Windows/System32/config/SYSTEM"];
    ASSERT_EQ(system.compare(0x1000, 4, "hbin"), 0);
    system[0x1003] = 'x';
    make_disk(files);
    ASSERT_FALSE(HasFatalFailure());
    Inventory inv;
    EXPECT_EQ(plan_outcome(inv), system_unknown);
    EXPECT_EQ(findings_of(inv),
              "windows-unreadable [warning] \\Windows\\System32\\config\\SYSTEM on partition 1 is "
              "a damaged registry hive (hivex: Operation not supported)\n");
    ASSERT_TRUE(inv.windows_guest.has_value());
    EXPECT_EQ(inv.windows_guest->product_name, "Windows Server 2019 Standard");
    EXPECT_EQ(inv.windows_guest->control_set, "");
}

TEST_F(WindowsHostile, SystemHiveWithACellSizeNotAMultipleOfFourIsNamedAndFixupsRefused) {
    auto files = fixable_server();
    std::string& system = files["Windows/System32/config/SYSTEM"];
    const size_t cell = cell_of(system, "nk", "Select");
    ASSERT_FALSE(HasFailure());
    // A used cell's size is negative: -(size) of 0x...fffd is 3 bytes.
    put_le32(system, cell, 0xfffffffd);
    make_disk(files);
    ASSERT_FALSE(HasFatalFailure());
    Inventory inv;
    EXPECT_EQ(plan_outcome(inv), system_unknown);
    EXPECT_EQ(findings_of(inv),
              "windows-unreadable [warning] \\Windows\\System32\\config\\SYSTEM on partition 1 is "
              "a damaged registry hive (hivex: Operation not supported)\n");
}

TEST_F(WindowsHostile, SystemHiveWhoseSelectKeyIsNoKeyCellIsNamedAndFixupsRefused) {
    auto files = fixable_server();
    std::string& system = files["Windows/System32/config/SYSTEM"];
    const size_t cell = cell_of(system, "nk", "Select");
    ASSERT_FALSE(HasFailure());
    system.replace(cell + 4, 2, "xx");
    make_disk(files);
    ASSERT_FALSE(HasFatalFailure());
    Inventory inv;
    EXPECT_EQ(plan_outcome(inv), system_unknown);
    EXPECT_EQ(findings_of(inv),
              "windows-unreadable [warning] \\Windows\\System32\\config\\SYSTEM on partition 1: "
              "key Select cannot be read (hivex: Bad address)\n");
    ASSERT_TRUE(inv.windows_guest.has_value());
    EXPECT_EQ(inv.windows_guest->hostname, "");
}

TEST_F(WindowsHostile, SystemHiveWhoseCurrentValueIsNoValueCellIsNamedAndFixupsRefused) {
    auto files = fixable_server();
    std::string& system = files["Windows/System32/config/SYSTEM"];
    const size_t cell = cell_of(system, "vk", "Current");
    ASSERT_FALSE(HasFailure());
    system.replace(cell + 4, 2, "xx");
    make_disk(files);
    ASSERT_FALSE(HasFatalFailure());
    Inventory inv;
    EXPECT_EQ(plan_outcome(inv), system_unknown);
    EXPECT_EQ(findings_of(inv),
              "windows-unreadable [warning] \\Windows\\System32\\config\\SYSTEM on partition 1: "
              "value Current of Select cannot be read (hivex: Invalid argument)\n");
}

// Inspection never reads CrashControl; planning does, and stops there.
TEST_F(WindowsHostile, SystemHiveDamagedWhereOnlyFixupsLookFailsThePlanNamingTheValue) {
    auto files = fixable_server();
    std::string& system = files["Windows/System32/config/SYSTEM"];
    const size_t cell = cell_of(system, "vk", "AutoReboot");
    ASSERT_FALSE(HasFailure());
    system.replace(cell + 4, 2, "xx");
    make_disk(files);
    ASSERT_FALSE(HasFatalFailure());
    Inventory inv;
    EXPECT_EQ(plan_outcome(inv),
              "threw: \\Windows\\System32\\config\\SYSTEM on partition 1: value AutoReboot of "
              "ControlSet001\\Control\\CrashControl cannot be read (hivex: Invalid argument)\n");
    EXPECT_EQ(findings_of(inv), "");
    ASSERT_TRUE(inv.windows_guest.has_value());
    EXPECT_EQ(inv.windows_guest->control_set, "ControlSet001");
}

// ---- an NTFS volume with a damaged MFT record --------------------------------

// The disk's MFT record of `name`, found and handed to `damage`.
class WindowsHostileMft : public WindowsHostile {
protected:
    // Returns the record's number (NTFS 3.1 keeps it at 0x2c).
    uint32_t damage_record(const std::string& name, const std::function<void(char*)>& damage) {
        make_disk(fixable_server());
        if (HasFatalFailure())
            return 0;
        std::string image = read_whole(image_);
        const auto records = mft_records_named(image, name);
        EXPECT_EQ(records.size(), 1u) << name;
        if (records.size() != 1)
            return 0;
        const uint32_t number = get_le32(image, records[0] + 0x2c);
        damage(&image[records[0]]);
        write_whole(image_, image);
        return number;
    }

    // The findings and refusal of a disk whose system volume cannot be
    // searched: libntfs-3g's words (`damage`, the record named) between
    // ours, which name the volume and the path looked up.
    void expect_unsearchable(const std::vector<std::string>& damage) {
        Inventory inv;
        const std::string outcome = plan_outcome(inv);
        EXPECT_FALSE(inv.windows_guest.has_value());
        ASSERT_EQ(inv.findings.size(), 2u) << findings_of(inv);
        const Finding& lookup = inv.findings[0];
        EXPECT_EQ(lookup.id, "windows-unreadable");
        const std::string prefix =
            "partition 1: cannot look up \\Windows\\System32\\config\\SYSTEM: Input/output "
            "error (";
        EXPECT_EQ(lookup.message.rfind(prefix, 0), 0u) << lookup.message;
        for (const std::string& d : damage)
            EXPECT_NE(lookup.message.find(d), std::string::npos) << d << "\n" << lookup.message;
        EXPECT_EQ(lookup.message.back(), ')') << lookup.message;
        EXPECT_EQ(inv.findings[1].message,
                  "no NTFS volume holds \\Windows\\System32\\config\\SYSTEM (searched partition "
                  "1): no Windows installation was found");
        EXPECT_EQ(outcome, "refused: the disk holds NTFS but no Windows installation was read; " +
                               lookup.message + "; " + inv.findings[1].message + "\n");
    }
};

// Every 512 bytes of a record end in the update sequence number, the bytes
// that stood there kept in the record's update sequence array: a sector
// torn in writing shows as a mismatch, and libntfs-3g calls the record bad.
TEST_F(WindowsHostileMft, SystemHiveRecordWithATornSectorIsNamedAndFixupsRefused) {
    const uint32_t record =
        damage_record("SYSTEM", [](char* r) { r[510] = static_cast<char>(r[510] ^ 0x5a); });
    ASSERT_FALSE(HasFailure());
    expect_unsearchable({"Incomplete multi-sector transfer: ",
                         "Record " + std::to_string(record) + " has no FILE magic"});
}

TEST_F(WindowsHostileMft, SystemHiveRecordWithAttributesPastItsEndIsNamedAndFixupsRefused) {
    const uint32_t record = damage_record("SYSTEM", [](char* r) {
        // The first attribute's offset (16 bits at 0x14) in the record's
        // last 8 bytes, past the bytes in use.
        r[0x14] = static_cast<char>(0xf8);
        r[0x15] = 0x03;
    });
    ASSERT_FALSE(HasFailure());
    expect_unsearchable({"Bad end of MFT record " + std::to_string(record)});
}

// A directory on the way: the lookup of the path fails at \Windows.
TEST_F(WindowsHostileMft, WindowsDirectoryRecordWithATornSectorIsNamedAndFixupsRefused) {
    const uint32_t record =
        damage_record("Windows", [](char* r) { r[1022] = static_cast<char>(r[1022] ^ 0x5a); });
    ASSERT_FALSE(HasFailure());
    expect_unsearchable({"Incomplete multi-sector transfer: ",
                         "Record " + std::to_string(record) + " has no FILE magic"});
}

// ---- a hive larger than any real one -----------------------------------------

long peak_rss_kib() {
    rusage u{};
    ::getrusage(RUSAGE_SELF, &u);
    return u.ru_maxrss;
}

// A SYSTEM file of 600 MiB on a 32 MiB volume: its first 4 KiB a real
// hive's header, the rest a hole (libntfs-3g extends a file sparse).
TEST_F(WindowsHostile, SixHundredMibSystemHiveIsRefusedBeforeItIsRead) {
    constexpr s64 size = 600ll << 20;
    auto files = fixable_server();
    std::string& system = files["Windows/System32/config/SYSTEM"];
    system.resize(4096);
    make_disk(files, "mbr", [&](const fs::path& ntfs) {
        ntfs_volume* vol = ntfs_mount(ntfs.c_str(), 0);
        ASSERT_NE(vol, nullptr) << std::strerror(errno);
        ntfs_inode* ni = ntfs_pathname_to_inode(vol, nullptr, "Windows/System32/config/SYSTEM");
        ASSERT_NE(ni, nullptr) << std::strerror(errno);
        ntfs_attr* na = ntfs_attr_open(ni, AT_DATA, AT_UNNAMED, 0);
        ASSERT_NE(na, nullptr) << std::strerror(errno);
        EXPECT_EQ(ntfs_attr_truncate(na, size), 0) << std::strerror(errno);
        // Sparse: one cluster, the header's, is allocated.
        EXPECT_NE(na->data_flags & ATTR_IS_SPARSE, 0);
        EXPECT_EQ(na->compressed_size, 4096);
        ntfs_attr_close(na);
        EXPECT_EQ(ntfs_inode_close(ni), 0) << std::strerror(errno);
        ASSERT_EQ(ntfs_umount(vol, FALSE), 0);
    });
    ASSERT_FALSE(HasFatalFailure());
    struct stat st {};
    ASSERT_EQ(::stat(image_.c_str(), &st), 0);
    // The disk's image takes what mkntfs and the files wrote (about 2 MiB).
    EXPECT_LT(static_cast<uint64_t>(st.st_blocks) * 512, 8u << 20);
    {
        NtfsVolume vol(std::make_shared<LocalSource>(image_.string()), 1 << 20, 32 << 20,
                       "partition 1");
        const auto e = vol.stat("Windows/System32/config/SYSTEM");
        ASSERT_TRUE(e.has_value());
        EXPECT_EQ(e->size, static_cast<uint64_t>(size));
    }

    const long before = peak_rss_kib();
    Inventory inv;
    EXPECT_EQ(plan_outcome(inv), system_unknown);
    EXPECT_EQ(findings_of(inv),
              "windows-unreadable [warning] \\Windows\\System32\\config\\SYSTEM on partition 1 is "
              "600 MiB, more than the 512 MiB a registry hive is read up to\n");
    // Read, the hive would have taken 600 MiB of memory (the hole reads as
    // zeros into the copy).
    EXPECT_LT(peak_rss_kib() - before, 64l << 10) << "KiB more at the peak";
}

} // namespace
} // namespace p2vfs::guest

// The registry layer (guest/registry.h) on its own: value texts as
// hivexregedit writes them, UTF-16, edits committed and read back, and
// hives that are not, or are cut short, or whose header lies about them.
// Hives are hivex's empty one (windows_disk.h) edited through the layer.
#include "common/error.h"
#include "guest/registry.h"

#include <gtest/gtest.h>

// Last: it brings in libntfs-3g's headers.
#include "windows_disk.h"

namespace p2vfs::guest {
namespace {

using namespace windows_disk;

TEST(RegistryText, ExportTextIsTheRightHandSideHivexregeditWrites) {
    EXPECT_EQ(reg_export_text(reg_dword_value(3)), "dword:00000003");
    EXPECT_EQ(reg_export_text(reg_dword_value(0xdeadbeef)), "dword:deadbeef");
    EXPECT_EQ(reg_export_text(reg_string("ab")), "hex(1):61,00,62,00,00,00");
    EXPECT_EQ(reg_export_text(reg_string("%a", reg_expand_sz)), "hex(2):25,00,61,00,00,00");
    EXPECT_EQ(reg_export_text(reg_binary_value(std::string("\x01\xff", 2))), "hex(3):01,ff");
    EXPECT_EQ(reg_export_text(reg_binary_value("")), "hex(3):");
    EXPECT_EQ(reg_export_text(reg_multi_string({"a", "b"})),
              "hex(7):61,00,00,00,62,00,00,00,00,00");
    // A DWORD of the wrong length is shown as the bytes it holds.
    EXPECT_EQ(reg_export_text({reg_dword, "\x01\x02\x03"}), "hex(4):01,02,03");
    EXPECT_EQ(reg_export_text({reg_qword, std::string(8, '\x11')}),
              "hex(b):11,11,11,11,11,11,11,11");
    EXPECT_EQ(reg_export_text({reg_none, ""}), "hex(0):");
}

TEST(RegistryText, ReadableTextOfEachType) {
    EXPECT_EQ(reg_readable(reg_dword_value(3)), "3");
    EXPECT_EQ(reg_readable(reg_dword_value(9)), "9");
    EXPECT_EQ(reg_readable(reg_dword_value(10)), "10 (0xa)");
    EXPECT_EQ(reg_readable(reg_string("SCSI miniport")), "SCSI miniport");
    EXPECT_EQ(reg_readable(reg_string("%SystemRoot%\\inf", reg_expand_sz)), "%SystemRoot%\\inf");
    EXPECT_EQ(reg_readable(reg_multi_string({"a", "bc"})), "a | bc");
    EXPECT_EQ(reg_readable(reg_multi_string({})), "");
    EXPECT_EQ(reg_readable({reg_none, ""}), "(key)");
    EXPECT_EQ(reg_readable(reg_binary_value(std::string("\x01\xff\x00", 3))),
              "REG_BINARY 01 ff 00");
    EXPECT_EQ(reg_readable({reg_dword, "\x01\x02"}), "REG_DWORD 01 02");
    // Binary data that is UTF-16 text (a device path in MountedDevices).
    EXPECT_EQ(reg_readable(reg_binary_value(utf16("\\??\\IDE#CdRom"))),
              "REG_BINARY \"\\??\\IDE#CdRom\" (UTF-16)");
    EXPECT_EQ(reg_readable({0x1234, "\x07"}), "REG_OTHER 07");
    EXPECT_STREQ(reg_type_name(reg_multi_sz), "REG_MULTI_SZ");
    EXPECT_STREQ(reg_type_name(reg_dword_big_endian), "REG_DWORD_BIG_ENDIAN");
}

TEST(RegistryText, Utf16RoundTripsUtf8) {
    // ASCII, two-, three- and four-byte UTF-8 (the last a surrogate pair).
    const std::string text = "C:\\Windows \xc3\x84 \xe2\x82\xac \xf0\x9f\x98\x80";
    const std::string u = utf8_to_utf16le(text);
    EXPECT_EQ(u, utf16("C:\\Windows ") +
                     std::string("\xc4\x00 \x00\xac\x20 \x00\x3d\xd8\x00\xde", 12));
    EXPECT_EQ(utf16le_to_utf8(u), text);
    EXPECT_EQ(utf16le_to_utf8(reg_string(text).bytes), text);
}

TEST(RegistryText, Utf16DecodingStopsAtNulAndReplacesWhatIsNotText) {
    EXPECT_EQ(utf16le_to_utf8(utf16("ab") + std::string(2, '\0') + utf16("cd")), "ab");
    const std::string replacement = "\xef\xbf\xbd"; // U+FFFD
    // An unpaired high surrogate, then an unpaired low one.
    EXPECT_EQ(utf16le_to_utf8(std::string("\x00\xd8\x41\x00\x00\xdc", 6)),
              replacement + "A" + replacement);
    // A high surrogate as the last unit.
    EXPECT_EQ(utf16le_to_utf8(std::string("\x41\x00\x00\xd8", 4)), "A" + replacement);
    // An odd byte at the end is not half a character.
    EXPECT_EQ(utf16le_to_utf8(std::string("\x41\x00\x42", 3)), "A");
    // UTF-8 that is not: a lone continuation byte.
    EXPECT_EQ(utf8_to_utf16le("a\x80"), std::string("a\x00\xfd\xff", 4));
}

class RegistryHive : public ::testing::Test {
protected:
    void SetUp() override {
        if (!fs::exists(minimal_hive_path()))
            GTEST_SKIP() << "needs the empty registry hive " << minimal_hive_path()
                         << " (hivex's images/minimal; set P2VFS_MINIMAL_HIVE)";
        minimal_ = read_whole(minimal_hive_path());
        ASSERT_EQ(minimal_.size(), 8192u);
    }

    // The empty hive with Select\Current and Select\Default, made by our
    // edits and committed.
    std::string select_hive() {
        Hive h(minimal_, "test SYSTEM", true);
        const Hive::Node select = h.add_key("Select");
        h.set_value(select, "Current", reg_dword_value(1));
        h.set_value(select, "Default", reg_dword_value(1));
        return h.commit();
    }

    std::string minimal_;
};

TEST_F(RegistryHive, EditsAreCommittedAndReadBackFromTheBytes) {
    std::string bytes;
    {
        Hive h(minimal_, "test SYSTEM", true);
        // Missing parents are made on the way.
        const Hive::Node node = h.add_key("ControlSet001\\Services\\viostor");
        h.set_value(node, "Start", reg_dword_value(0));
        h.set_value(node, "Group", reg_string("SCSI miniport"));
        h.set_value(node, "ImagePath", reg_string("system32\\drivers\\viostor.sys", reg_expand_sz));
        h.set_value(node, "Tags", reg_multi_string({"a", "b"}));
        bytes = h.commit();
    }
    ASSERT_EQ(bytes.compare(0, 4, "regf"), 0);
    Hive h(bytes, "committed SYSTEM");
    const Hive::Node node = h.key("ControlSet001\\Services\\viostor");
    ASSERT_NE(node, 0u);
    EXPECT_EQ(h.key_name(node), "viostor");
    EXPECT_EQ(h.dword(node, "Start"), 0u);
    EXPECT_EQ(h.string(node, "Group"), "SCSI miniport");
    EXPECT_EQ(h.string(node, "ImagePath"), "system32\\drivers\\viostor.sys");
    EXPECT_EQ(h.value(node, "ImagePath")->type, reg_expand_sz);
    EXPECT_EQ(h.value(node, "Tags"), reg_multi_string({"a", "b"}));
    // Typed reads give nothing for values of another type.
    EXPECT_EQ(h.dword(node, "Group"), std::nullopt);
    EXPECT_EQ(h.string(node, "Start"), std::nullopt);
    EXPECT_EQ(h.string(node, "Missing"), std::nullopt);
    std::vector<std::string> names;
    for (const Hive::Node n : h.subkeys(h.key("ControlSet001")))
        names.push_back(h.key_name(n));
    EXPECT_EQ(names, std::vector<std::string>{"Services"});
}

TEST_F(RegistryHive, NamesMatchWithoutCaseAndKeepTheirStoredCase) {
    std::string bytes = select_hive();
    {
        Hive h(bytes, "test SYSTEM", true);
        const Hive::Node select = h.key("SELECT");
        ASSERT_NE(select, 0u);
        EXPECT_EQ(h.key_name(select), "Select");
        EXPECT_EQ(h.value_name(select, "current"), "Current");
        h.set_value(select, "CURRENT", reg_dword_value(2));
        // The key is found, not made again beside itself.
        const Hive::Node made = h.add_key("select\\LastKnownGood");
        EXPECT_EQ(made, h.key("Select\\LastKnownGood"));
        EXPECT_EQ(h.add_key("SELECT\\lastknowngood"), made);
        h.delete_value(select, "DEFAULT");
        h.delete_value(select, "NoSuchValue"); // nothing to remove
        bytes = h.commit();
    }
    Hive h(bytes, "committed SYSTEM");
    const Hive::Node select = h.key("Select");
    ASSERT_NE(select, 0u);
    const auto values = h.values(select);
    ASSERT_EQ(values.size(), 1u);
    EXPECT_EQ(values[0].first, "Current");
    EXPECT_EQ(values[0].second, reg_dword_value(2));
    ASSERT_EQ(h.subkeys(h.root()).size(), 1u);
    std::vector<std::string> names;
    for (const Hive::Node n : h.subkeys(select))
        names.push_back(h.key_name(n));
    EXPECT_EQ(names, std::vector<std::string>{"LastKnownGood"});
}

TEST_F(RegistryHive, BigEndianDwordIsReadAsANumber) {
    Hive h(minimal_, "test hive", true);
    const Hive::Node node = h.add_key("K");
    h.set_value(node, "Big", {reg_dword_big_endian, std::string("\x00\x00\x01\x02", 4)});
    EXPECT_EQ(h.dword(node, "Big"), 0x102u);
}

// Types beyond the ones winnt.h names are common (device properties keep
// 0xffff0000 | DEVPROPTYPE) and damage makes any number: each is read,
// written and kept as the number it is. hivex takes and gives an enum
// whose enumerators end at 11; UBSan catches one read as that enum.
TEST_F(RegistryHive, ValueTypesNoEnumeratorNamesAreReadAndKept) {
    const RegValue property{0xffff0012, std::string("\x01\x02", 2)};
    const RegValue damaged{0x8b04, "\x07"};
    std::string bytes;
    {
        Hive h(minimal_, "test hive", true);
        const Hive::Node node = h.add_key("Properties");
        h.set_value(node, "Property", property);
        h.set_value(node, "Damaged", damaged);
        h.set_value(node, "Other", reg_dword_value(1));
        EXPECT_EQ(h.value(node, "Property"), property);
        // Every value but Other written again.
        h.delete_value(node, "Other");
        bytes = h.commit();
    }
    Hive h(bytes, "committed hive");
    const Hive::Node node = h.key("Properties");
    ASSERT_NE(node, 0u);
    const auto values = h.values(node);
    ASSERT_EQ(values.size(), 2u);
    EXPECT_EQ(values[0].first, "Property");
    EXPECT_EQ(values[0].second, property);
    EXPECT_EQ(values[1].first, "Damaged");
    EXPECT_EQ(values[1].second, damaged);
    EXPECT_EQ(h.dword(node, "Damaged"), std::nullopt);
    EXPECT_EQ(reg_export_text(property), "hex(ffff0012):01,02");
    EXPECT_EQ(reg_readable(damaged), "REG_OTHER 07");
}

// A damaged key holding one name twice: hivex would set the last and read
// the first, so the edit would not be seen (found by hive_fuzz). Not edited.
TEST_F(RegistryHive, ValueHeldTwiceUnderOneNameIsNotEdited) {
    const fs::path dir = [] {
        char tmpl[] = "/tmp/p2vfs-registry-test-XXXXXX";
        return fs::path(::mkdtemp(tmpl) ? tmpl : "");
    }();
    ASSERT_FALSE(dir.empty());
    hive_h* raw = hivex_open(minimal_hive_path().c_str(), HIVEX_OPEN_WRITE);
    ASSERT_NE(raw, nullptr);
    const hive_node_h key = hivex_node_add_child(raw, hivex_root(raw), "storahci");
    const Value start = dword("Start", 3), again = dword("START", 4);
    hive_set_value twice[] = {{const_cast<char*>(start.name.c_str()), start.type, 4,
                               const_cast<char*>(start.bytes.data())},
                              {const_cast<char*>(again.name.c_str()), again.type, 4,
                               const_cast<char*>(again.bytes.data())}};
    EXPECT_EQ(hivex_node_set_values(raw, key, 2, twice, 0), 0);
    EXPECT_EQ(hivex_commit(raw, (dir / "hive").c_str(), 0), 0);
    hivex_close(raw);
    const std::string bytes = read_whole(dir / "hive");
    fs::remove_all(dir);

    Hive h(bytes, "test SYSTEM", true);
    const Hive::Node node = h.key("storahci");
    ASSERT_NE(node, 0u);
    EXPECT_EQ(h.dword(node, "start"), 3u); // the first
    try {
        h.set_value(node, "start", reg_dword_value(0));
        FAIL() << "edited";
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(), "test SYSTEM: key storahci holds 2 values named start (names match "
                               "without regard to case): which one Windows reads is not known, so "
                               "none is edited");
    }
    EXPECT_EQ(h.dword(node, "start"), 3u);
    // Removing the name removes both.
    h.delete_value(node, "Start");
    EXPECT_EQ(h.values(node).size(), 0u);
}

TEST_F(RegistryHive, BytesThatAreNotAHiveAreRefused) {
    for (const std::string& bytes : {std::string(), std::string("MZ\x90\x00", 4),
                                     std::string(16384, '\0'), std::string("reg")}) {
        try {
            Hive h(bytes, "\\Windows\\System32\\config\\SYSTEM on partition 2");
            FAIL() << "opened " << bytes.size() << " bytes";
        } catch (const Error& e) {
            EXPECT_STREQ(e.what(), "\\Windows\\System32\\config\\SYSTEM on partition 2 is not a "
                                   "registry hive: it does not start with 'regf'");
            EXPECT_EQ(e.error_number(), EIO);
        }
    }
}

// A hive of 6 pages: the header, an hbin of the minimal hive's keys, one
// of key Big, and one of 3 pages holding the value's data.
std::string hive_with_a_blob(const std::string& minimal) {
    Hive h(minimal, "test hive", true);
    const Hive::Node node = h.add_key("Big");
    h.set_value(node, "Blob", reg_binary_value(std::string(9000, 'b')));
    return h.commit();
}

// Whether the hive opens and Big\Blob reads whole, or the Error's text.
std::string blob_outcome(const std::string& bytes) {
    try {
        Hive h(bytes, "cut.hive");
        const Hive::Node node = h.key("Big");
        const auto blob = node ? h.value(node, "Blob") : std::nullopt;
        return blob == reg_binary_value(std::string(9000, 'b')) ? "read" : "wrong";
    } catch (const Error& e) {
        EXPECT_EQ(e.error_number(), EIO) << e.what();
        return e.what();
    }
}

// A hive cut short holds fewer bins than its header counts. Cut inside its
// header, hivex refuses it, telling why only by errno (EINVAL: smaller than
// a header and one page).
TEST_F(RegistryHive, HiveCutShortIsADamagedHive) {
    const std::string big = hive_with_a_blob(minimal_);
    ASSERT_EQ(big.size(), 0x6000u);
    EXPECT_EQ(blob_outcome(big), "read");
    const std::string damaged = "cut.hive is a damaged registry hive (hivex: ";
    const std::string header = big.substr(0, 0x1000);
    EXPECT_EQ(blob_outcome(header.substr(0, 0x800)), damaged + "Invalid argument)");
    EXPECT_EQ(blob_outcome(header), "cut.hive is cut short: its header counts 20 KiB of hive "
                                    "bins, the file holds 0 B");
    EXPECT_EQ(blob_outcome(big.substr(0, 0x1fff)),
              "cut.hive is cut short: its header counts 20 KiB of hive bins, the file holds "
              "4095 bytes");
    EXPECT_EQ(blob_outcome(big.substr(0, 0x2000)),
              "cut.hive is cut short: its header counts 20 KiB of hive bins, the file holds "
              "4 KiB");
    EXPECT_EQ(blob_outcome(big.substr(0, 0x3000)),
              "cut.hive is cut short: its header counts 20 KiB of hive bins, the file holds "
              "8 KiB");
    EXPECT_EQ(blob_outcome(big.substr(0, 0x5fff)),
              "cut.hive is cut short: its header counts 20 KiB of hive bins, the file holds "
              "20479 bytes");
}

void set_checksum(std::string& hive) {
    uint32_t sum = 0;
    for (size_t at = 0; at < 0x1fc; at += 4)
        sum ^= get_le32(hive, at);
    put_le32(hive, 0x1fc, sum);
}

// hivex trusts the header's length of the hive bins (at 0x28) and puts the
// bin an edit needs there: over bins it read when the length is short of
// them, so that the committed hive opens nowhere. Refused, though hivex
// opens each of these.
TEST_F(RegistryHive, HeaderThatDisagreesWithTheBinsIsRefused) {
    const std::string big = hive_with_a_blob(minimal_);
    ASSERT_EQ(get_le32(big, 0x28), 0x5000u);
    // Bins of 4, 4 and 12 KiB.
    ASSERT_EQ(get_le32(big, 0x3000 + 8), 0x3000u);
    const auto with_bins = [&](uint32_t bins) {
        std::string b = big;
        put_le32(b, 0x28, bins);
        set_checksum(b);
        return b;
    };
    EXPECT_EQ(blob_outcome(with_bins(0x4f00)),
              "cut.hive: its header counts 20224 bytes of hive bins, not a whole number of 4 KiB "
              "pages");
    EXPECT_EQ(blob_outcome(with_bins(0x3000)),
              "cut.hive: the hive bin at 0x3000 (12 KiB) reaches past the 12 KiB of hive bins its "
              "header counts");
    EXPECT_EQ(
        blob_outcome(with_bins(0x6000)),
        "cut.hive is cut short: its header counts 24 KiB of hive bins, the file holds 20 KiB");
    // Bins the header does not count are left alone, as in hives where
    // Windows left slack after the last bin.
    EXPECT_EQ(blob_outcome(with_bins(0x2000)), "cut.hive: value Blob of Big cannot be read "
                                               "(hivex: Bad address)");
}

// The hive the fuzz target found (tests/fuzz/hive_fuzz.cpp): the empty
// hive whose header counts two pages of bins where it holds one. Before
// the header was checked, the first edit put its bin after a page of
// zeros, and the committed hive did not open.
TEST_F(RegistryHive, EditOfAHiveWhoseHeaderCountsMoreBinsIsRefused) {
    std::string bytes = minimal_;
    put_le32(bytes, 0x28, 0x2000);
    set_checksum(bytes);
    try {
        Hive h(bytes, "SYSTEM", true);
        const Hive::Node node = h.add_key("ControlSet001\\Control\\CrashControl");
        h.set_value(node, "AutoReboot", reg_dword_value(0));
        Hive again(h.commit(), "committed SYSTEM");
        FAIL() << "edited; the committed hive opens";
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(), "SYSTEM is cut short: its header counts 8 KiB of hive bins, the "
                               "file holds 4 KiB");
    }
}

TEST_F(RegistryHive, HeaderWithAWrongChecksumIsADamagedHive) {
    std::string bytes = minimal_;
    bytes[0x1fc] = static_cast<char>(bytes[0x1fc] ^ 1);
    try {
        Hive h(bytes, "sum.hive");
        FAIL() << "opened";
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(), "sum.hive is a damaged registry hive (hivex: Invalid argument)");
    }
}

TEST_F(RegistryHive, ReadOnlyHiveRefusesEdits) {
    Hive h(select_hive(), "ro.hive");
    const Hive::Node select = h.key("Select");
    ASSERT_NE(select, 0u);
    const auto refused = [](const std::function<void()>& edit) {
        try {
            edit();
            ADD_FAILURE() << "edited";
        } catch (const InvalidState& e) {
            EXPECT_STREQ(e.what(), "ro.hive was opened read-only");
        }
    };
    refused([&] { h.add_key("New"); });
    refused([&] { h.set_value(select, "Current", reg_dword_value(2)); });
    refused([&] { h.delete_value(select, "Current"); });
    refused([&] { h.commit(); });
    EXPECT_EQ(h.dword(select, "Current"), 1u);
    EXPECT_EQ(h.key("New"), 0u);
}

// What reg_export_text promises, checked against hivex's own exporter.
TEST_F(RegistryHive, ExportTextMatchesHivexregeditExport) {
    if (!have("hivexregedit"))
        GTEST_SKIP() << "needs hivexregedit (package libwin-hivex-perl)";
    const std::vector<std::pair<std::string, RegValue>> values{
        {"Dword", reg_dword_value(0x1234abcd)},
        {"Sz", reg_string("SCSI miniport")},
        {"Expand", reg_string("%SystemRoot%\\inf", reg_expand_sz)},
        {"Multi", reg_multi_string({"a", "b"})},
        {"Binary", reg_binary_value(std::string("\x00\x01\xfe\xff", 4))},
        {"Qword", {reg_qword, std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8)}},
        {"None", {reg_none, ""}},
    };
    Hive h(minimal_, "test hive", true);
    const Hive::Node node = h.add_key("Export");
    for (const auto& [name, v] : values)
        h.set_value(node, name, v);
    char tmpl[] = "/tmp/p2vfs-registry-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    const fs::path dir = tmpl;
    write_whole(dir / "hive", h.commit());
    const int rc = std::system(("hivexregedit --export " + (dir / "hive").string() +
                                " '\\Export' >" + (dir / "out").string() + " 2>&1")
                                   .c_str());
    const std::string exported = read_whole(dir / "out");
    fs::remove_all(dir);
    ASSERT_EQ(rc, 0) << exported;
    for (const auto& [name, v] : values) {
        const std::string line = "\"" + name + "\"=" + reg_export_text(v) + "\n";
        EXPECT_NE(exported.find(line), std::string::npos) << line << "not in\n" << exported;
    }
}

} // namespace
} // namespace p2vfs::guest

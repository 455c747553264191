// Windows inspection and fixups on small disks made by the test
// (windows_disk.h): NTFS by mkntfs, filled through libntfs-3g with hives
// that hivex's C API builds, in a partition table made by sfdisk.
#include "guest/fixups.h"
#include "guest/inspect.h"
#include "overlay/overlay.h"

#include <gtest/gtest.h>

// Last: it brings in libntfs-3g's headers.
#include "windows_disk.h"

namespace p2vfs::guest {
namespace {

using namespace windows_disk;

class WindowsInspect : public WindowsDiskTest {};

TEST_F(WindowsInspect, ReadsVersionRootHostAndBiosBootOfASystemVolume) {
    make_disk(server_2019(""));
    ASSERT_FALSE(HasFatalFailure());
    const Inventory inv = inspect_disk();
    EXPECT_EQ(inv.os, "windows");
    EXPECT_EQ(findings_of(inv), "");
    ASSERT_TRUE(inv.windows_guest.has_value());
    const WindowsGuest& w = *inv.windows_guest;
    EXPECT_EQ(w.system_partition, 1u);
    EXPECT_EQ(w.product_name, "Windows Server 2019 Standard");
    EXPECT_EQ(w.edition_id, "ServerStandard");
    EXPECT_EQ(w.current_version, "6.3");
    EXPECT_EQ(w.current_build, "17763");
    EXPECT_EQ(w.display_version, "");
    EXPECT_EQ(w.system_root, "C:\\Windows");
    EXPECT_EQ(w.boot_mode, "bios");
    EXPECT_EQ(w.boot_partition, 1u);
    EXPECT_EQ(w.hostname, "WIN-P2V01");
    EXPECT_FALSE(w.hibernated);
    EXPECT_FALSE(w.fast_startup);

    EXPECT_EQ(to_json(inv)["windows"],
              nlohmann::json({{"system_partition", 1},
                              {"product_name", "Windows Server 2019 Standard"},
                              {"edition_id", "ServerStandard"},
                              {"installation_type", ""},
                              {"current_version", "6.3"},
                              {"current_build", "17763"},
                              {"display_version", ""},
                              {"version", "6.3"},
                              {"system_root", "C:\\Windows"},
                              {"architecture", ""},
                              {"control_set", "ControlSet001"},
                              {"boot_mode", "bios"},
                              {"boot_partition", 1},
                              {"bcd_partition", 1},
                              {"bcd_path", "\\Boot\\BCD"},
                              {"hostname", "WIN-P2V01"},
                              {"hiberfil", true},
                              {"hibernation_enabled", true},
                              {"hibernated", false},
                              {"fast_startup", false},
                              {"storage_drivers", nlohmann::json::array()},
                              {"hypervisor_tools", nlohmann::json::array()},
                              {"vendor_agents", nlohmann::json::array()},
                              {"bitlocker_partitions", nlohmann::json::array()},
                              {"dynamic_disk", false},
                              {"drive_letters", nlohmann::json::array()}}));
    const std::string report = report_text(inv);
    EXPECT_NE(
        report.find("Operating system: windows\n  Windows Server 2019 Standard (build 17763), "
                    "C:\\Windows on partition 1, boot bios, hostname 'WIN-P2V01'\n"),
        std::string::npos)
        << report;
}

TEST_F(WindowsInspect, HibernationImageInHiberfilIsABlocker) {
    make_disk(server_2019("HIBR"));
    ASSERT_FALSE(HasFatalFailure());
    const Inventory inv = inspect_disk();
    ASSERT_TRUE(inv.windows_guest.has_value());
    EXPECT_TRUE(inv.windows_guest->hibernated);
    EXPECT_EQ(findings_of(inv),
              "hibernated [blocker] partition 1: \\hiberfil.sys holds a hibernation image "
              "(signature 'HIBR'); resume Windows and shut it down fully first, or it resumes into "
              "the old hardware and the volumes' changes since are lost\n");
}

TEST_F(WindowsInspect, WakeSignatureIsHibernationToo) {
    make_disk(server_2019("WAKE"));
    ASSERT_FALSE(HasFatalFailure());
    const Inventory inv = inspect_disk();
    ASSERT_TRUE(inv.windows_guest.has_value());
    EXPECT_TRUE(inv.windows_guest->hibernated);
    ASSERT_EQ(inv.findings.size(), 1u) << findings_of(inv);
    EXPECT_EQ(inv.findings[0].id, "hibernated");
}

TEST_F(WindowsInspect, ResumedHiberfilIsNotHibernation) {
    for (const char* head : {"hibr", "wake"}) {
        make_disk(server_2019(head));
        ASSERT_FALSE(HasFatalFailure());
        const Inventory inv = inspect_disk();
        ASSERT_TRUE(inv.windows_guest.has_value()) << head;
        EXPECT_FALSE(inv.windows_guest->hibernated) << head;
        EXPECT_EQ(findings_of(inv), "") << head;
    }
}

TEST_F(WindowsInspect, FastStartupIsAWarning) {
    auto files = server_2019("");
    files["Windows/System32/config/SOFTWARE"] =
        software_hive("Windows 10 Pro", "Professional", "19045", "22H2");
    files["Windows/System32/config/SYSTEM"] = system_hive("DESK-7", 1);
    make_disk(files);
    ASSERT_FALSE(HasFatalFailure());
    const Inventory inv = inspect_disk();
    ASSERT_TRUE(inv.windows_guest.has_value());
    EXPECT_EQ(inv.windows_guest->product_name, "Windows 10 Pro");
    EXPECT_EQ(inv.windows_guest->display_version, "22H2");
    EXPECT_EQ(inv.windows_guest->hostname, "DESK-7");
    EXPECT_TRUE(inv.windows_guest->fast_startup);
    EXPECT_FALSE(inv.windows_guest->hibernated);
    EXPECT_EQ(
        findings_of(inv),
        "fast-startup [warning] Fast Startup is on (HiberbootEnabled=1 in "
        "ControlSet001\\Control\\Session Manager\\Power of \\Windows\\System32\\config\\SYSTEM "
        "on partition 1): a shutdown hibernates the kernel and may leave the NTFS volumes "
        "dirty; turn it off (powercfg /h off) and shut down again before the last sync\n");
}

// Names differ in case from Windows' own, as NTFS allows; and the disk is
// GPT with an EFI System partition before the Windows volume — left
// unformatted here, so the BCD store is not found (the integration test's
// disks have it).
TEST_F(WindowsInspect, UefiSystemOnGptFoundWhateverTheCaseOfItsPaths) {
    make_disk({{"WINDOWS/system32/CONFIG/software",
                software_hive("Windows Server 2022 Datacenter", "ServerDatacenter", "20348")},
               {"WINDOWS/system32/CONFIG/system", system_hive("WIN-EFI", 0)}},
              "gpt");
    ASSERT_FALSE(HasFatalFailure());
    const Inventory inv = inspect_disk();
    EXPECT_EQ(findings_of(inv),
              "windows-no-bcd [warning] no EFI System partition holds \\EFI\\Microsoft\\Boot\\BCD: "
              "Windows' boot configuration was not found\n");
    ASSERT_TRUE(inv.windows_guest.has_value());
    EXPECT_EQ(inv.windows_guest->system_partition, 2u);
    EXPECT_EQ(inv.windows_guest->product_name, "Windows Server 2022 Datacenter");
    EXPECT_EQ(inv.windows_guest->current_build, "20348");
    EXPECT_EQ(inv.windows_guest->hostname, "WIN-EFI");
    EXPECT_EQ(inv.windows_guest->boot_mode, "uefi");
    EXPECT_EQ(inv.windows_guest->boot_partition, 0u);
}

TEST_F(WindowsInspect, BiosDiskWithoutBootLoaderHasUnknownBootMode) {
    auto files = server_2019("");
    files.erase("bootmgr");
    make_disk(files);
    ASSERT_FALSE(HasFatalFailure());
    const Inventory inv = inspect_disk();
    ASSERT_TRUE(inv.windows_guest.has_value());
    EXPECT_EQ(inv.windows_guest->boot_mode, "unknown");
    EXPECT_EQ(inv.windows_guest->boot_partition, 0u);
}

TEST_F(WindowsInspect, MissingSystemHiveIsNamed) {
    auto files = server_2019("");
    files.erase("Windows/System32/config/SYSTEM");
    make_disk(files);
    ASSERT_FALSE(HasFatalFailure());
    const Inventory inv = inspect_disk();
    EXPECT_EQ(findings_of(inv), "windows-unreadable [warning] partition 1: "
                                "\\Windows\\System32\\config\\SYSTEM is missing\n");
    // What SOFTWARE says is still reported.
    ASSERT_TRUE(inv.windows_guest.has_value());
    EXPECT_EQ(inv.windows_guest->product_name, "Windows Server 2019 Standard");
    EXPECT_EQ(inv.windows_guest->hostname, "");
}

TEST_F(WindowsInspect, CurrentControlSetThatDoesNotExistIsNamed) {
    auto files = server_2019("");
    files["Windows/System32/config/SYSTEM"] =
        hive({{"Select", {dword("Current", 2)}},
              {"ControlSet001\\Control\\ComputerName\\ComputerName", {sz("ComputerName", "OLD")}}});
    make_disk(files);
    ASSERT_FALSE(HasFatalFailure());
    const Inventory inv = inspect_disk();
    EXPECT_EQ(findings_of(inv), "windows-unreadable [warning] \\Windows\\System32\\config\\SYSTEM "
                                "on partition 1: Select\\Current names ControlSet002, which does "
                                "not exist: the host name, drivers and services are unknown\n");
    ASSERT_TRUE(inv.windows_guest.has_value());
    EXPECT_EQ(inv.windows_guest->hostname, "");
}

TEST_F(WindowsInspect, VolumeWithoutWindowsIsNamed) {
    make_disk({{"Users/readme.txt", "not Windows\n"}});
    ASSERT_FALSE(HasFatalFailure());
    const Inventory inv = inspect_disk();
    EXPECT_EQ(inv.os, "windows");
    EXPECT_FALSE(inv.windows_guest.has_value());
    EXPECT_EQ(findings_of(inv),
              "windows-unreadable [warning] no NTFS volume holds "
              "\\Windows\\System32\\config\\SYSTEM (searched partition 1): no Windows "
              "installation was found\n");
}

TEST_F(WindowsInspect, GarbageSoftwareHiveIsNamedAndSystemStillRead) {
    std::string garbage(64 << 10, '\0');
    for (size_t i = 0; i < garbage.size(); ++i)
        garbage[i] = static_cast<char>((i * 2654435761u) >> 13);
    auto files = server_2019("");
    files["Windows/System32/config/SOFTWARE"] = garbage;
    make_disk(files);
    ASSERT_FALSE(HasFatalFailure());
    const Inventory inv = inspect_disk();
    EXPECT_EQ(findings_of(inv),
              "windows-unreadable [warning] \\Windows\\System32\\config\\SOFTWARE on partition 1 "
              "is not a registry hive: it does not start with 'regf'\n");
    ASSERT_TRUE(inv.windows_guest.has_value());
    EXPECT_EQ(inv.windows_guest->product_name, "");
    EXPECT_EQ(inv.windows_guest->hostname, "WIN-P2V01");
}

// A real hive header over damaged bins: the header passes, the cells lie.
TEST_F(WindowsInspect, HiveWithDamagedBinsIsNamed) {
    auto files = server_2019("");
    std::string& hive = files["Windows/System32/config/SYSTEM"];
    ASSERT_GT(hive.size(), 0x1000u + 64);
    for (size_t i = 0x1000 + 32; i < hive.size(); ++i)
        hive[i] = static_cast<char>(0xA5 ^ (i * 7));
    make_disk(files);
    ASSERT_FALSE(HasFatalFailure());
    const Inventory inv = inspect_disk();
    ASSERT_EQ(inv.findings.size(), 1u) << findings_of(inv);
    EXPECT_EQ(inv.findings[0].id, "windows-unreadable");
    EXPECT_EQ(
        inv.findings[0].message.rfind("\\Windows\\System32\\config\\SYSTEM on partition 1", 0), 0u)
        << inv.findings[0].message;
    ASSERT_TRUE(inv.windows_guest.has_value());
    EXPECT_EQ(inv.windows_guest->product_name, "Windows Server 2019 Standard");
    EXPECT_EQ(inv.windows_guest->hostname, "");
}

TEST_F(WindowsInspect, TruncatedNtfsIsAFindingNotACrash) {
    make_disk(server_2019(""));
    ASSERT_FALSE(HasFatalFailure());
    // The disk ends 4 MiB into the partition: boot sector there, most of the
    // MFT and every file's data gone.
    fs::resize_file(image_, (1 << 20) + (4 << 20));
    const Inventory inv = inspect_disk();
    EXPECT_EQ(inv.os, "windows");
    EXPECT_FALSE(inv.windows_guest.has_value());
    std::vector<const Finding*> unreadable;
    for (const Finding& f : inv.findings)
        if (f.id == "windows-unreadable")
            unreadable.push_back(&f);
    ASSERT_EQ(unreadable.size(), 1u) << findings_of(inv);
    EXPECT_EQ(unreadable[0]->severity, "warning");
    const std::string& m = unreadable[0]->message;
    EXPECT_EQ(m.rfind("partition 1: the NTFS file system cannot be opened: ", 0), 0u) << m;
    EXPECT_NE(m.find("lies past the end of the partition (4 MiB)"), std::string::npos) << m;
}

// ---- fixups ------------------------------------------------------------------

class WindowsFixups : public WindowsInspect {
protected:
    // A Windows Server 2008 R2 on partition 1 (MBR 0x2008a2b1, offset 1 MiB),
    // booted from an HP Smart Array, with HP's agents and an old CD drive's
    // letter.
    void make_2008r2() {
        const std::string c_id = std::string("\xb1\xa2\x08\x20\x00\x00\x10\x00\x00\x00\x00\x00", 12);
        const std::string service = "ControlSet001\\Services\\";
        const auto driver = [&](const std::string& name, uint32_t start, const std::string& group) {
            return std::pair<std::string, std::vector<Value>>{
                service + name,
                {dword("Type", 1), dword("Start", start), dword("ErrorControl", 1), sz("Group", group),
                 expand("ImagePath", "system32\\DRIVERS\\" + name + ".sys")}};
        };
        const std::string system = hive(
            {{"Select", {dword("Current", 1), dword("Default", 1)}},
             {"ControlSet001\\Control\\ComputerName\\ComputerName", {sz("ComputerName", "W2K8R2")}},
             {"ControlSet001\\Control\\Session Manager\\Environment",
              {sz("PROCESSOR_ARCHITECTURE", "AMD64")}},
             {"ControlSet001\\Control\\CrashControl", {dword("AutoReboot", 1)}},
             driver("msahci", 3, "SCSI miniport"),
             driver("atapi", 0, "SCSI miniport"),
             driver("intelide", 3, "System Bus Extender"),
             driver("HpCISSs2", 0, "SCSI miniport"),
             {service + "CqMgHost", {dword("Type", 16), dword("Start", 2)}},
             {service + "SysMgmtHp", {dword("Type", 16), dword("Start", 4)}},
             {"MountedDevices",
              {binary("\\DosDevices\\C:", c_id),
               binary("\\DosDevices\\D:", utf16("\\??\\IDE#CdRomHL-DT-ST#5&2a2f&0&1.0.0#{53f56308}"))}}});
        std::string software;
        {
            std::vector<Value> v{sz("ProductName", "Windows Server 2008 R2 Standard"),
                                 sz("EditionID", "ServerStandard"), sz("CurrentVersion", "6.1"),
                                 sz("CurrentBuildNumber", "7601"), sz("InstallationType", "Server"),
                                 sz("SystemRoot", "C:\\Windows")};
            software = hive({{"Microsoft\\Windows NT\\CurrentVersion", v}});
        }
        make_disk({{"Windows/System32/config/SOFTWARE", software},
                   {"Windows/System32/config/SYSTEM", system},
                   {"Windows/System32/drivers/msahci.sys", "MZ msahci"},
                   {"Windows/System32/drivers/atapi.sys", "MZ atapi"},
                   {"Windows/System32/drivers/intelide.sys", "MZ intelide"},
                   {"Windows/System32/drivers/HpCISSs2.sys", "MZ HpCISSs2"},
                   {"bootmgr", std::string(4096, 'B')}});
    }

    OverlayPtr overlay(const DevicePtr& src) {
        return Overlay::open((dir_ / "state").string(), "win", src, image_.string(),
                             OverlayOptions{.writable = true}, true);
    }
};

std::string edits_of(const FixupPlan& plan) {
    std::string out;
    for (const FixupStep& s : plan.steps)
        for (const RegistryEdit& e : s.registry)
            out += s.name + ": " + e.hive + "\\" + e.key + (e.value ? " " + *e.value : "") + " " +
                   (e.before ? reg_export_text(*e.before) : "-") + " -> " +
                   (e.after ? (e.value ? reg_export_text(*e.after) : "(key)") : "-") + "\n";
    return out;
}

TEST_F(WindowsFixups, PlanIsTheRegistryEditsTheTargetNeeds) {
    make_2008r2();
    ASSERT_FALSE(HasFatalFailure());
    const DevicePtr disk = std::make_shared<LocalSource>(image_.string());
    const Inventory inv = inspect(disk);
    ASSERT_TRUE(inv.windows_guest.has_value()) << findings_of(inv);
    EXPECT_EQ(inv.windows_guest->drive_letters.size(), 2u);
    FixupOptions o;
    o.profile = "kvm";
    const FixupPlan plan = plan_fixups(disk, inv, o);
    ASSERT_TRUE(plan.refusals.empty()) << plan.refusals.front();
    EXPECT_EQ(plan.os, "windows");
    EXPECT_EQ(plan.os_variant, "win2k8r2");
    EXPECT_EQ(plan.firmware, "bios");
    EXPECT_EQ(plan.controller, "sata");
    EXPECT_EQ(edits_of(plan),
              "boot-driver: SYSTEM\\ControlSet001\\Services\\msahci Start dword:00000003 -> "
              "dword:00000000\n"
              "critical-device-database: SYSTEM\\ControlSet001\\Control\\CriticalDeviceDatabase "
              "- -> (key)\n"
              "critical-device-database: SYSTEM\\ControlSet001\\Control\\CriticalDeviceDatabase"
              "\\pci#ven_8086&dev_2922&cc_0106 - -> (key)\n"
              "critical-device-database: SYSTEM\\ControlSet001\\Control\\CriticalDeviceDatabase"
              "\\pci#ven_8086&dev_2922&cc_0106 Service - -> hex(1):6d,00,73,00,61,00,68,00,63,00,69,00,00,00\n"
              "critical-device-database: SYSTEM\\ControlSet001\\Control\\CriticalDeviceDatabase"
              "\\pci#ven_8086&dev_2922&cc_0106 ClassGUID - -> " +
                  reg_export_text(reg_string("{4D36E96A-E325-11CE-BFC1-08002BE10318}")) + "\n"
              "disable-services: SYSTEM\\ControlSet001\\Services\\CqMgHost Start dword:00000002 -> "
              "dword:00000004\n"
              "mounted-devices: SYSTEM\\MountedDevices \\DosDevices\\D: " +
                  reg_export_text(reg_binary_value(utf16("\\??\\IDE#CdRomHL-DT-ST#5&2a2f&0&1.0.0#{53f56308}"))) +
                  " -> -\n"
              "crash-control: SYSTEM\\ControlSet001\\Control\\CrashControl AutoReboot "
              "dword:00000001 -> dword:00000000\n");
    const std::string preview = preview_text(plan);
    EXPECT_NE(preview.find("~ HKLM\\SYSTEM\\ControlSet001\\Services\\msahci  Start: 3 -> 0\n"),
              std::string::npos)
        << preview;
    EXPECT_NE(preview.find("- HKLM\\SYSTEM\\MountedDevices  \\DosDevices\\D: (was "),
              std::string::npos)
        << preview;
}

TEST_F(WindowsFixups, AppliedThroughTheOverlayTheSourceUnchanged) {
    make_2008r2();
    ASSERT_FALSE(HasFatalFailure());
    const std::string pristine = read_whole(image_);
    const OverlayPtr ov = overlay(std::make_shared<LocalSource>(image_.string()));
    const DevicePtr disk = ov->device(fixups_layer, fixups_layer);
    const Inventory inv = inspect(disk);
    FixupOptions o;
    o.profile = "hyperv"; // BIOS: generation 1, IDE
    const FixupPlan plan = plan_fixups(disk, inv, o);
    ASSERT_TRUE(plan.refusals.empty()) << plan.refusals.front();
    EXPECT_EQ(plan.controller, "hyperv-ide");
    apply_fixups(disk, inv, plan);
    ov->layer(fixups_layer).sync();
    EXPECT_EQ(read_whole(image_), pristine);

    // What the fixed-up disk says now, read afresh.
    const Inventory after = inspect(disk);
    ASSERT_TRUE(after.windows_guest.has_value()) << findings_of(after);
    std::string drivers;
    for (const WindowsService& d : after.windows_guest->storage_drivers)
        drivers += d.name + "=" + std::to_string(d.start) + "/" + d.group + " ";
    EXPECT_EQ(drivers, "atapi=0/SCSI miniport HpCISSs2=0/SCSI miniport "
                       "intelide=0/System Bus Extender msahci=3/SCSI miniport ");
    ASSERT_EQ(after.windows_guest->vendor_agents.size(), 2u);
    EXPECT_EQ(after.windows_guest->vendor_agents[0].start, 4u);
    ASSERT_EQ(after.windows_guest->drive_letters.size(), 1u);
    EXPECT_EQ(after.windows_guest->drive_letters[0].letter, "C:");
    EXPECT_EQ(after.windows_guest->drive_letters[0].target, "partition 1");
    // Planned again on the fixed-up disk: nothing is left to do.
    const FixupPlan again = plan_fixups(disk, after, o);
    EXPECT_EQ(edits_of(again), "");

    // Discarding the layer gives the source's bytes back.
    ov->layer(fixups_layer).discard();
    ov->changed_layers();
    const Inventory discarded = inspect(disk);
    ASSERT_TRUE(discarded.windows_guest.has_value());
    EXPECT_EQ(discarded.windows_guest->drive_letters.size(), 2u);
}

TEST_F(WindowsFixups, ValueChangedSincePlanningIsRefusedAndNothingWritten) {
    make_2008r2();
    ASSERT_FALSE(HasFatalFailure());
    const OverlayPtr ov = overlay(std::make_shared<LocalSource>(image_.string()));
    const DevicePtr disk = ov->device(fixups_layer, fixups_layer);
    const Inventory inv = inspect(disk);
    FixupPlan plan = plan_fixups(disk, inv, FixupOptions{});
    ASSERT_TRUE(plan.refusals.empty());
    // The crash-control step, last, saw another value: every earlier edit
    // must not be written either.
    ASSERT_EQ(plan.steps.back().name, "crash-control");
    plan.steps.back().registry.back().before = reg_dword_value(7);
    try {
        apply_fixups(disk, inv, plan);
        FAIL() << "applied";
    } catch (const InvalidState& e) {
        EXPECT_STREQ(e.what(), "HKLM\\SYSTEM\\ControlSet001\\Control\\CrashControl value "
                               "AutoReboot changed since the plan was made (step crash-control); "
                               "plan again");
    }
    EXPECT_EQ(ov->layer(fixups_layer).info().chunks, 0u);
}

TEST_F(WindowsFixups, VirtioDriverCopiedFromTheDriverDirectory) {
    make_2008r2();
    ASSERT_FALSE(HasFatalFailure());
    const fs::path drivers = dir_ / "virtio-win";
    fs::create_directories(drivers / "viostor" / "2k8R2" / "amd64");
    const std::string sys(20000, 'V');
    {
        std::ofstream(drivers / "viostor" / "2k8R2" / "amd64" / "viostor.sys", std::ios::binary) << sys;
        std::ofstream(drivers / "viostor" / "2k8R2" / "amd64" / "viostor.inf") << "[Version]\n";
    }
    const OverlayPtr ov = overlay(std::make_shared<LocalSource>(image_.string()));
    const DevicePtr disk = ov->device(fixups_layer, fixups_layer);
    const Inventory inv = inspect(disk);
    FixupOptions o;
    o.drivers_dir = drivers.string();
    const FixupPlan plan = plan_fixups(disk, inv, o);
    ASSERT_TRUE(plan.refusals.empty()) << plan.refusals.front();
    EXPECT_EQ(plan.controller, "virtio-blk");
    ASSERT_GE(plan.steps.size(), 2u);
    EXPECT_EQ(plan.steps[1].name, "copy-drivers");
    ASSERT_EQ(plan.steps[1].edits.size(), 2u);
    EXPECT_EQ(plan.steps[1].edits[0].path, "\\Windows\\System32\\drivers\\viostor.sys");
    EXPECT_EQ(plan.steps[1].edits[1].path, "\\Windows\\Drivers\\VirtIO\\viostor.inf");
    apply_fixups(disk, inv, plan);
    const Inventory after = inspect(disk);
    ASSERT_TRUE(after.windows_guest.has_value());
    bool found = false;
    for (const WindowsService& d : after.windows_guest->storage_drivers)
        if (d.name == "viostor") {
            found = true;
            EXPECT_EQ(d.start, 0u);
            EXPECT_TRUE(d.file);
            EXPECT_EQ(d.group, "SCSI miniport");
        }
    EXPECT_TRUE(found);
}

} // namespace
} // namespace p2vfs::guest

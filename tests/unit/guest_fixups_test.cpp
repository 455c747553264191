// Inspection and Linux fixups on small guests made by the test: a file tree
// (os-release, fstab, GRUB or extlinux configuration, a kernel and an
// initramfs made with cpio) put into an ext4 partition by mkfs.ext4 -d, read
// and fixed up through a real overlay, and checked with e2fsck and debugfs.
#include "block/local_source.h"
#include "common/error.h"
#include "guest/fixups.h"
#include "guest/inspect.h"
#include "overlay/overlay.h"

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <unistd.h>

namespace p2vfs::guest {
namespace {

namespace fs = std::filesystem;

constexpr const char* root_uuid = "0b6f3a52-6a64-4c1f-9d41-6b8e2a9c0d11";
constexpr const char* kernel = "6.1.0-99-amd64";

bool have(const char* tool) {
    return std::system((std::string("command -v ") + tool + " >/dev/null 2>&1").c_str()) == 0;
}

void run(const std::string& cmd) {
    const int rc = std::system(("{ " + cmd + "; } >/dev/null 2>&1").c_str());
    ASSERT_EQ(rc, 0) << cmd;
}

std::string output_of(const std::string& cmd) {
    std::string out;
    FILE* p = ::popen(cmd.c_str(), "r");
    std::array<char, 4096> buf{};
    size_t n;
    while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0)
        out.append(buf.data(), n);
    ::pclose(p);
    return out;
}

void write(const fs::path& p, const std::string& text) {
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
}

class GuestFixups : public ::testing::Test {
protected:
    void SetUp() override {
        for (const char* tool : {"mkfs.ext4", "sfdisk", "cpio", "gzip", "debugfs", "e2fsck"})
            if (!have(tool))
                GTEST_SKIP() << "needs " << tool << " (e2fsprogs, fdisk, cpio, gzip)";
        char tmpl[] = "/tmp/p2vfs-guest-test-XXXXXX";
        dir_ = ::mkdtemp(tmpl);
        tree_ = dir_ / "tree";
        image_ = dir_ / "disk.img";
    }
    void TearDown() override {
        if (!dir_.empty())
            fs::remove_all(dir_);
    }

    // A physical-looking Debian: root and swap by controller path.
    void make_tree(const std::string& bootloader = "grub") {
        write(tree_ / "etc/os-release",
              "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n"
              "VERSION_ID=\"12\"\nID=debian\n");
        write(tree_ / "etc/hostname", "box7\n");
        write(tree_ / "etc/fstab",
              "# /etc/fstab\n/dev/sda1 / ext4 errors=remount-ro 0 1\n"
              "/dev/sda2 none swap sw 0 0\nproc /proc proc defaults 0 0\n");
        if (bootloader == "grub")
            write(tree_ / "boot/grub/grub.cfg",
                  "menuentry 'Debian' {\n\tlinux /boot/vmlinuz-" + std::string(kernel) +
                      " root=/dev/sda1 ro quiet\n\tinitrd /boot/initrd.img-" + kernel + "\n}\n");
        else
            write(tree_ / "boot/extlinux/extlinux.conf",
                  "DEFAULT linux\nLABEL linux\n  KERNEL /boot/vmlinuz-" + std::string(kernel) +
                      "\n  APPEND root=/dev/sda1 ro\n");
        write(tree_ / ("boot/vmlinuz-" + std::string(kernel)), "not a kernel\n");
        write(tree_ / "etc/udev/rules.d/70-persistent-net.rules",
              "SUBSYSTEM==\"net\", ATTR{address}==\"00:11:22:33:44:55\", NAME=\"eth0\"\n");
        write(tree_ / "etc/initramfs-tools/modules", "# modules\n");
        fs::create_directories(tree_ / "etc/systemd/system/multi-user.target.wants");
        fs::create_directories(tree_ / "usr/local/sbin");
        write(tree_ / "etc/systemd/system/dataeng.service", "[Service]\nExecStart=/bin/true\n");
        fs::create_symlink("/etc/systemd/system/dataeng.service",
                           tree_ / "etc/systemd/system/multi-user.target.wants/dataeng.service");
        fs::create_directories(tree_ / "sbin");
        fs::create_symlink("/lib/systemd/systemd", tree_ / "sbin/init");
        fs::create_directories(tree_ / ("lib/modules/" + std::string(kernel)));
        write(tree_ / "usr/sbin/update-initramfs", "#!/bin/sh\n");
        // The initramfs: virtio and AHCI drivers, gzip-compressed newc cpio.
        const fs::path ir = dir_ / "initramfs";
        const std::string mods = "lib/modules/" + std::string(kernel) + "/kernel/drivers/";
        for (const char* m : {"block/virtio_blk.ko", "virtio/virtio_pci.ko", "ata/ahci.ko",
                              "scsi/sd_mod.ko", "ata/ata_piix.ko", "net/virtio_net.ko"})
            write(ir / (mods + m), "module");
        run("cd " + ir.string() + " && find . | cpio -o -H newc | gzip -9 > " +
            (tree_ / ("boot/initrd.img-" + std::string(kernel))).string());
    }

    // MBR: partition 1 ext4 (the tree) at 1 MiB, partition 2 swap.
    void make_image(const std::string& extra_mkfs = "") {
        run("truncate -s 96M " + image_.string());
        run("printf 'label: dos\\nstart=2048, size=131072, type=83\\nstart=133120, type=82\\n' | sfdisk -q " +
            image_.string());
        run("mkfs.ext4 -q -F -E offset=1048576 -U " + std::string(root_uuid) + " -L root " +
            extra_mkfs + " -d " + tree_.string() + " " + image_.string() + " 65536");
        // A swap signature at partition 2 (mkswap on a copy, then dd in place).
        run("truncate -s 31M " + (dir_ / "swap").string());
        run("mkswap -U 7d0a4c8e-33f1-4b6a-9e2d-5c1f0a8b7e64 " + (dir_ / "swap").string());
        run("dd if=" + (dir_ / "swap").string() + " of=" + image_.string() +
            " bs=1M seek=65 conv=notrunc,sparse status=none");
    }

    DevicePtr source() { return std::make_shared<LocalSource>(image_.string()); }

    OverlayPtr overlay(const DevicePtr& src) {
        return Overlay::open((dir_ / "state").string(), "guest", src, image_.string(),
                             OverlayOptions{.writable = true}, true);
    }

    // A file of the partition as debugfs (e2fsprogs, not libext2fs through
    // our code) reads it, from an image file.
    std::string cat(const fs::path& image, const std::string& path) {
        run("dd if=" + image.string() + " of=" + (dir_ / "p1").string() +
            " bs=1M skip=1 count=64 status=none");
        return output_of("debugfs -R 'cat " + path + "' " + (dir_ / "p1").string() + " 2>/dev/null");
    }

    void copy_out(const DevicePtr& disk, const fs::path& to) {
        std::ofstream out(to, std::ios::binary);
        std::vector<char> buf(1 << 20);
        for (uint64_t at = 0; at < disk->size(); at += buf.size()) {
            disk->read(buf.data(), buf.size(), at);
            out.write(buf.data(), static_cast<std::streamsize>(buf.size()));
        }
    }

    fs::path dir_, tree_, image_;
};

TEST_F(GuestFixups, InspectsTheGuestExactly) {
    make_tree();
    make_image();
    const Inventory inv = inspect(source());
    ASSERT_EQ(inv.os, "linux");
    EXPECT_EQ(inv.table.scheme, "mbr");
    ASSERT_EQ(inv.volumes.size(), 2u);
    ASSERT_TRUE(inv.volumes[0].fs);
    EXPECT_EQ(inv.volumes[0].fs->type, "ext4");
    EXPECT_EQ(inv.volumes[0].fs->uuid, root_uuid);
    EXPECT_EQ(inv.volumes[0].mounted_at, "/");
    ASSERT_TRUE(inv.volumes[1].fs);
    EXPECT_EQ(inv.volumes[1].fs->type, "swap");
    EXPECT_EQ(inv.volumes[1].mounted_at, "swap");
    ASSERT_TRUE(inv.linux_guest);
    const LinuxGuest& g = *inv.linux_guest;
    EXPECT_EQ(g.distribution, "debian");
    EXPECT_EQ(g.version, "12");
    EXPECT_EQ(g.hostname, "box7");
    EXPECT_EQ(g.init_system, "systemd");
    ASSERT_EQ(g.kernels.size(), 1u);
    EXPECT_EQ(g.kernels[0].version, kernel);
    EXPECT_EQ(g.kernels[0].storage_modules,
              (std::vector<std::string>{"ahci", "ata_piix", "sd_mod", "virtio_blk", "virtio_pci"}));
    EXPECT_EQ(g.kernels[0].network_modules, std::vector<std::string>{"virtio_net"});
    EXPECT_EQ(g.bootloader.type, "grub2");
    EXPECT_FALSE(g.bootloader.in_mbr);
    EXPECT_EQ(g.bootloader.kernel_args, std::vector<std::string>{"root=/dev/sda1 ro quiet"});
    EXPECT_EQ(g.vendor_agents, std::vector<std::string>{"dataeng"});
    std::vector<std::string> ids;
    for (const Finding& f : inv.findings)
        ids.push_back(f.id);
    EXPECT_EQ(ids, (std::vector<std::string>{"disk-names-by-controller", "persistent-net-rules",
                                             "vendor-agent"}))
        << report_text(inv);
    const std::string report = report_text(inv);
    EXPECT_NE(report.find("[warning] vendor-agent: hardware vendor agent 'dataeng' is enabled"),
              std::string::npos)
        << report;
}

TEST_F(GuestFixups, AppliesIntoTheOverlayAndDiscardRestores) {
    make_tree("extlinux");
    make_image();
    const std::string pristine = output_of("sha256sum " + image_.string());
    const DevicePtr src = source();
    const OverlayPtr ov = overlay(src);
    const DevicePtr disk = ov->device(fixups_layer, fixups_layer);
    const Inventory inv = inspect(disk);
    FixupOptions o;
    o.profile = "vmware"; // no pvscsi or mptspi here: SATA (ahci) is chosen
    const FixupPlan plan = plan_fixups(disk, inv, o);
    ASSERT_TRUE(plan.refusals.empty()) << plan.refusals.front();
    EXPECT_EQ(plan.controller, "sata");
    apply_fixups(disk, inv, plan);
    ov->layer(fixups_layer).sync();

    copy_out(disk, dir_ / "fixed.img");
    EXPECT_EQ(cat(dir_ / "fixed.img", "/etc/fstab"),
              std::string("# /etc/fstab\n# p2vfs: was /dev/sda1\nUUID=") + root_uuid +
                  " / ext4 errors=remount-ro 0 1\n# p2vfs: was /dev/sda2\n"
                  "UUID=7d0a4c8e-33f1-4b6a-9e2d-5c1f0a8b7e64 none swap sw 0 0\n"
                  "proc /proc proc defaults 0 0\n");
    EXPECT_EQ(cat(dir_ / "fixed.img", "/boot/extlinux/extlinux.conf"),
              "DEFAULT linux\nLABEL linux\n  KERNEL /boot/vmlinuz-" + std::string(kernel) +
                  "\n  APPEND root=UUID=" + root_uuid + " ro\n");
    EXPECT_EQ(cat(dir_ / "fixed.img", "/etc/initramfs-tools/modules"),
              "# modules\n# Drivers of the target's disk controller (sata), added by p2vfs "
              "fixups.\nahci\nsd_mod\n");
    EXPECT_EQ(cat(dir_ / "fixed.img", "/etc/udev/rules.d/70-persistent-net.rules"), "");
    EXPECT_NE(cat(dir_ / "fixed.img", "/usr/local/sbin/p2vfs-firstboot").find("update-initramfs -u -k all"),
              std::string::npos);
    // The file system is consistent as e2fsck sees it.
    EXPECT_EQ(std::system(("e2fsck -fn " + (dir_ / "p1").string() + " >/dev/null 2>&1").c_str()), 0);
    // The plan again finds nothing left to do.
    const Inventory after = inspect(disk);
    EXPECT_TRUE(after.findings.empty());
    const FixupPlan again = plan_fixups(disk, after, o);
    EXPECT_TRUE(again.empty());

    // The source is untouched; discarding brings the pristine bytes back.
    EXPECT_EQ(output_of("sha256sum " + image_.string()), pristine);
    ov->layer(fixups_layer).discard();
    ov->changed_layers();
    copy_out(ov->device(user_layer), dir_ / "discarded.img");
    EXPECT_EQ(output_of("cmp " + image_.string() + " " + (dir_ / "discarded.img").string() +
                        " && echo same"),
              "same\n");
}

TEST_F(GuestFixups, PlanChangedUnderneathIsRefused) {
    make_tree();
    make_image();
    const OverlayPtr ov = overlay(source());
    const DevicePtr disk = ov->device(fixups_layer, fixups_layer);
    const Inventory inv = inspect(disk);
    FixupPlan plan = plan_fixups(disk, inv, {});
    ASSERT_TRUE(plan.refusals.empty());
    // Someone edits fstab between the plan and the apply.
    for (FixupStep& s : plan.steps)
        for (FileEdit& e : s.edits)
            if (e.path == "/etc/fstab")
                e.before = "something else\n";
    try {
        apply_fixups(disk, inv, plan);
        FAIL() << "applied a stale plan";
    } catch (const InvalidState& e) {
        EXPECT_NE(std::string(e.what()).find("/etc/fstab changed since the plan was made"),
                  std::string::npos)
            << e.what();
    }
    EXPECT_EQ(ov->layer(fixups_layer).info().chunks, 0u) << "nothing is written before the check";
}

TEST_F(GuestFixups, JournalNeedingRecoveryRefusesFixups) {
    make_tree();
    make_image();
    // Mark the journal as needing recovery, as a running system's is.
    run("dd if=" + image_.string() + " of=" + (dir_ / "p1").string() + " bs=1M skip=1 count=64 status=none");
    run("debugfs -w -R 'feature needs_recovery' " + (dir_ / "p1").string());
    run("dd if=" + (dir_ / "p1").string() + " of=" + image_.string() +
        " bs=1M seek=1 conv=notrunc status=none");
    const OverlayPtr ov = overlay(source());
    const DevicePtr disk = ov->device(fixups_layer, fixups_layer);
    const Inventory inv = inspect(disk);
    bool named = false;
    for (const Finding& f : inv.findings)
        named = named || (f.id == "journal-needs-recovery" && f.severity == "blocker");
    EXPECT_TRUE(named);
    const FixupPlan plan = plan_fixups(disk, inv, {});
    ASSERT_FALSE(plan.refusals.empty());
    EXPECT_NE(plan.refusals.front().find("journal needs recovery"), std::string::npos)
        << plan.refusals.front();
    EXPECT_THROW(apply_fixups(disk, inv, plan), InvalidState);
    EXPECT_THROW(ExtFs(disk, 1 << 20, 64 << 20, true, "partition 1"), Error);
}

TEST_F(GuestFixups, SymlinkLoopIsAFindingNotACrash) {
    make_tree();
    fs::remove(tree_ / "etc/os-release");
    fs::create_symlink("/etc/os-release.d", tree_ / "etc/os-release");
    fs::create_symlink("/etc/os-release", tree_ / "etc/os-release.d");
    make_image();
    const Inventory inv = inspect(source());
    EXPECT_EQ(inv.os, "unknown");
    bool named = false;
    for (const Finding& f : inv.findings)
        named = named || (f.id == "filesystem-unreadable" &&
                          f.message.find("'/etc/os-release' is a loop of symbolic links") !=
                              std::string::npos);
    EXPECT_TRUE(named) << to_json(inv).dump(2);
    const FixupPlan plan = plan_fixups(source(), inv, {});
    ASSERT_EQ(plan.refusals.size(), 1u);
    EXPECT_NE(plan.refusals[0].find("no Linux system was found"), std::string::npos);
}

TEST_F(GuestFixups, NoDriverForAnyControllerIsABlocker) {
    make_tree();
    // An initramfs with no disk driver at all (MODULES=dep on other hardware).
    const fs::path ir = dir_ / "initramfs-none";
    write(ir / ("lib/modules/" + std::string(kernel) + "/kernel/drivers/net/tg3.ko"), "module");
    run("cd " + ir.string() + " && find . | cpio -o -H newc | gzip > " +
        (tree_ / ("boot/initrd.img-" + std::string(kernel))).string());
    make_image();
    const Inventory inv = inspect(source());
    std::vector<std::string> blocked;
    for (const Finding& f : inv.findings)
        if (f.id == "no-storage-driver")
            blocked.push_back(f.message.substr(f.message.find("controllers ") + 12, 6));
    EXPECT_EQ(blocked, (std::vector<std::string>{"kvm of", "vmware", "hyperv"}));
    const FixupPlan plan = plan_fixups(source(), inv, {});
    ASSERT_FALSE(plan.refusals.empty());
    EXPECT_NE(plan.refusals.front().find("has a driver for none of the disk controllers kvm offers"),
              std::string::npos)
        << plan.refusals.front();
}

TEST(FixupPreview, ShowsChangedLinesWithTheKeptOnesBetweenAsContext) {
    FixupPlan plan;
    plan.profile = "kvm";
    plan.steps.push_back({"fstab-by-uuid", "names by UUID",
                          {{"/etc/fstab", "file", "# t\n/dev/sda1 / ext4 0 1\nproc /proc proc 0 0\n/dev/sda2 none swap 0 0\n# end\n",
                            "# t\nUUID=1 / ext4 0 1\nproc /proc proc 0 0\nUUID=2 none swap 0 0\n# end\n", 0644, 0}},
                          {}});
    plan.steps.push_back({"remove-persistent-net-rules", "gone", {{"/etc/x.rules", "file", "a\n", std::nullopt, 0644, 0}}, {}});
    EXPECT_EQ(preview_text(plan), "Fixups for kvm\n"
                                  "\n== fstab-by-uuid: names by UUID\n"
                                  "--- /etc/fstab\n+++ /etc/fstab\n@@ line 2 @@\n"
                                  "-/dev/sda1 / ext4 0 1\n+UUID=1 / ext4 0 1\n"
                                  " proc /proc proc 0 0\n"
                                  "-/dev/sda2 none swap 0 0\n+UUID=2 none swap 0 0\n"
                                  "\n== remove-persistent-net-rules: gone\n"
                                  "--- /etc/x.rules\n+++ /etc/x.rules (removed)\n@@ line 1 @@\n-a\n");
}

TEST(DeviceNames, PartitionOfControllerPaths) {
    EXPECT_EQ(partition_of_device_name("/dev/sda1"), 1u);
    EXPECT_EQ(partition_of_device_name("/dev/cciss/c0d0p2"), 2u);
    EXPECT_EQ(partition_of_device_name("/dev/nvme0n1p3"), 3u);
    EXPECT_EQ(partition_of_device_name("/dev/hda5"), 5u);
    EXPECT_EQ(partition_of_device_name("/dev/disk/by-id/scsi-3600508b1001c-part2"), 2u);
    EXPECT_EQ(partition_of_device_name("/dev/sdb1"), std::nullopt); // another disk
    EXPECT_EQ(partition_of_device_name("/dev/sda"), std::nullopt);  // the whole disk
    EXPECT_EQ(partition_of_device_name("/dev/nvme0n1"), std::nullopt);
    EXPECT_EQ(partition_of_device_name("/dev/cciss/c0d0"), std::nullopt);
    EXPECT_EQ(partition_of_device_name("UUID=1234"), std::nullopt);
    EXPECT_EQ(partition_of_device_name("/dev/mapper/vg-root"), std::nullopt);
    EXPECT_EQ(partition_of_device_name("/dev/sda01"), std::nullopt);
}

} // namespace
} // namespace p2vfs::guest

// Target profiles: which controller a guest's modules allow, and the VM
// descriptions (libvirt XML checked by libvirt's own schema when
// virt-xml-validate is installed, .vmx, Hyper-V summary), hostile names
// included.
#include "common/error.h"
#include "guest/profiles.h"

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

namespace p2vfs::guest {
namespace {

using Names = std::vector<std::string>;

std::string chosen(const std::string& profile_name, const Names& available) {
    const Controller* c = choose_controller(profile(profile_name), available);
    return c ? c->name : "(none)";
}

template <typename F> std::string error_of(F&& f) {
    try {
        f();
    } catch (const InvalidArgument& e) {
        return e.what();
    }
    return "(no error)";
}

Names lines_of(const std::string& text) {
    Names lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
        lines.push_back(line);
    return lines;
}

bool has_line(const std::string& text, const std::string& line) {
    const Names lines = lines_of(text);
    return std::find(lines.begin(), lines.end(), line) != lines.end();
}

// `key = "value"`: a key of letters, digits, '.' and ':', a value without '"'.
bool is_vmx_pair(const std::string& line) {
    const size_t eq = line.find(" = \"");
    if (eq == std::string::npos || eq == 0 || line.back() != '"' || line.size() < eq + 5)
        return false;
    for (size_t i = 0; i < eq; ++i)
        if (!std::isalnum(static_cast<unsigned char>(line[i])) && line[i] != '.' && line[i] != ':')
            return false;
    return line.find('"', eq + 4) == line.size() - 1;
}

VmDescription debian(const std::string& controller, const std::string& disk_format,
                     const std::string& disk_path) {
    VmDescription vm;
    vm.name = "pc1";
    vm.os = "linux";
    vm.os_variant = "debian12";
    vm.firmware = "bios";
    vm.memory_mib = 4096;
    vm.cpus = 4;
    vm.controller = controller;
    vm.disk_path = disk_path;
    vm.disk_format = disk_format;
    vm.disk_size = 20ull << 30;
    return vm;
}

// A name and path made to break out of every format's quoting.
const std::string hostile_name = "evil'\"<x>&|$`\n";
const std::string hostile_path = "/srv/p2v/a&b <c> 'd' \"e\".img";

TEST(Profiles, AreKvmVmwareAndHyperV) {
    Names names, formats;
    for (const Profile& p : profiles()) {
        names.push_back(p.name);
        formats.push_back(p.disk_format);
    }
    EXPECT_EQ(names, (Names{"kvm", "vmware", "hyperv"}));
    EXPECT_EQ(formats, (Names{"qcow2", "vmdk", "vhdx"}));
}

TEST(Profiles, ListControllersInOrderOfPreference) {
    const auto controllers = [](const std::string& name) {
        Names s;
        for (const Controller& c : profile(name).controllers) {
            std::string line = c.name + " " + c.guest_disk + ":";
            for (const std::string& m : c.modules)
                line += " " + m;
            s.push_back(line);
        }
        return s;
    };
    EXPECT_EQ(controllers("kvm"),
              (Names{"virtio-blk /dev/vda: virtio_blk virtio_pci",
                     "virtio-scsi /dev/sda: virtio_scsi virtio_pci sd_mod",
                     "sata /dev/sda: ahci sd_mod", "ide /dev/sda: ata_piix sd_mod"}));
    EXPECT_EQ(controllers("vmware"),
              (Names{"pvscsi /dev/sda: vmw_pvscsi sd_mod", "lsilogic /dev/sda: mptspi sd_mod",
                     "lsisas /dev/sda: mptsas sd_mod", "sata /dev/sda: ahci sd_mod", "ide /dev/sda: ata_piix sd_mod"}));
    EXPECT_EQ(controllers("hyperv"), (Names{"hyperv-scsi /dev/sda: hv_storvsc hv_vmbus sd_mod",
                                            "hyperv-ide /dev/sda: ata_piix sd_mod"}));
}

TEST(Profiles, AnUnknownProfileNamesTheKnownOnes) {
    EXPECT_EQ(error_of([] { profile("xen"); }),
              "unknown target profile 'xen' (known: kvm, vmware, hyperv)");
}

TEST(ProfileControllers, VirtioModulesGiveVirtioBlk) {
    EXPECT_EQ(chosen("kvm", {"ahci", "sd_mod", "virtio_pci", "virtio_blk", "libata"}),
              "virtio-blk");
}

TEST(ProfileControllers, OnlyAhciGivesSata) {
    EXPECT_EQ(chosen("kvm", {"ahci", "sd_mod", "libata"}), "sata");
    EXPECT_EQ(chosen("vmware", {"ahci", "sd_mod", "libata"}), "sata");
}

TEST(ProfileControllers, EveryModuleOfAControllerIsNeeded) {
    // virtio_blk without virtio_pci binds nothing; sd_mod alone drives nothing.
    EXPECT_EQ(chosen("kvm", {"virtio_blk", "sd_mod"}), "(none)");
    EXPECT_EQ(chosen("kvm", {"virtio_scsi", "virtio_pci"}), "(none)");
    EXPECT_EQ(chosen("kvm", {"virtio_scsi", "virtio_pci", "sd_mod"}), "virtio-scsi");
}

TEST(ProfileControllers, NothingGivesNoController) {
    EXPECT_EQ(choose_controller(profile("kvm"), {}), nullptr);
    EXPECT_EQ(choose_controller(profile("hyperv"), {"ext4", "e1000"}), nullptr);
}

TEST(ProfileControllers, DashAndUnderscoreAreTheSame) {
    EXPECT_EQ(chosen("kvm", {"virtio-blk", "virtio-pci"}), "virtio-blk");
    EXPECT_EQ(chosen("vmware", {"ata-piix", "sd-mod"}), "ide");
}

TEST(ProfileControllers, BuiltinDriversCountAsAvailable) {
    // What a caller passes: the initramfs's modules and the kernel's built-in ones.
    Names available{"sd_mod"};
    const Names builtin{"ahci", "libata"};
    available.insert(available.end(), builtin.begin(), builtin.end());
    EXPECT_EQ(chosen("kvm", available), "sata");
}

TEST(ProfileControllers, VmwareAndHyperVDrivers) {
    EXPECT_EQ(chosen("vmware", {"vmw_pvscsi", "sd_mod", "mptspi"}), "pvscsi");
    EXPECT_EQ(chosen("vmware", {"mptspi", "mptscsih", "mptbase", "sd_mod"}), "lsilogic");
    EXPECT_EQ(chosen("hyperv", {"hv_storvsc", "hv_vmbus", "sd_mod", "ata_piix"}), "hyperv-scsi");
    EXPECT_EQ(chosen("hyperv", {"hv_vmbus", "ata_piix", "sd_mod"}), "hyperv-ide");
}

// ---- libvirt ----

TEST(ProfileLibvirt, DescribesAVirtioBlkBiosMachine) {
    const std::string xml = libvirt_domain_xml(debian("virtio-blk", "qcow2", "/srv/p2v/pc1.qcow2"));
    EXPECT_EQ(xml, "<domain type='kvm'>\n"
                   "  <name>pc1</name>\n"
                   "  <memory unit='MiB'>4096</memory>\n"
                   "  <vcpu>4</vcpu>\n"
                   "  <os>\n"
                   "    <type arch='x86_64' machine='pc'>hvm</type>\n"
                   "    <boot dev='hd'/>\n"
                   "  </os>\n"
                   "  <features>\n"
                   "    <acpi/>\n"
                   "    <apic/>\n"
                   "  </features>\n"
                   "  <cpu mode='host-passthrough'/>\n"
                   "  <clock offset='utc'/>\n"
                   "  <devices>\n"
                   "    <disk type='file' device='disk'>\n"
                   "      <driver name='qemu' type='qcow2'/>\n"
                   "      <source file='/srv/p2v/pc1.qcow2'/>\n"
                   "      <target dev='vda' bus='virtio'/>\n"
                   "    </disk>\n"
                   "    <interface type='network'>\n"
                   "      <source network='default'/>\n"
                   "      <model type='virtio'/>\n"
                   "    </interface>\n"
                   "    <serial type='pty'>\n"
                   "      <target port='0'/>\n"
                   "    </serial>\n"
                   "    <console type='pty'>\n"
                   "      <target type='serial' port='0'/>\n"
                   "    </console>\n"
                   "    <graphics type='vnc' port='-1' autoport='yes'/>\n"
                   "  </devices>\n"
                   "</domain>\n");
}

TEST(ProfileLibvirt, UefiUsesQ35AndLetsLibvirtChooseTheFirmware) {
    VmDescription vm = debian("sata", "raw", "/srv/p2v/pc1.img");
    vm.firmware = "uefi";
    const std::string xml = libvirt_domain_xml(vm);
    EXPECT_TRUE(has_line(xml, "  <os firmware='efi'>")) << xml;
    EXPECT_TRUE(has_line(xml, "    <type arch='x86_64' machine='q35'>hvm</type>")) << xml;
    EXPECT_TRUE(has_line(xml, "      <driver name='qemu' type='raw'/>")) << xml;
    EXPECT_TRUE(has_line(xml, "      <target dev='sda' bus='sata'/>")) << xml;
}

TEST(ProfileLibvirt, AnIdeDiskKeepsThePcMachineUnderUefi) {
    // q35 has no IDE controller.
    VmDescription vm = debian("ide", "qcow2", "/srv/p2v/pc1.qcow2");
    vm.firmware = "uefi";
    const std::string xml = libvirt_domain_xml(vm);
    EXPECT_TRUE(has_line(xml, "    <type arch='x86_64' machine='pc'>hvm</type>")) << xml;
    EXPECT_TRUE(has_line(xml, "      <target dev='hda' bus='ide'/>")) << xml;
}

TEST(ProfileLibvirt, VirtioScsiAddsItsController) {
    const std::string xml = libvirt_domain_xml(debian("virtio-scsi", "qcow2", "/d.qcow2"));
    EXPECT_TRUE(has_line(xml, "    <controller type='scsi' index='0' model='virtio-scsi'/>"))
        << xml;
    EXPECT_TRUE(has_line(xml, "      <target dev='sda' bus='scsi'/>")) << xml;
}

TEST(ProfileLibvirt, EachMacGetsAnInterface) {
    VmDescription vm = debian("virtio-blk", "qcow2", "/d.qcow2");
    vm.macs = {"52:54:00:AA:bb:01", "52-54-00-aa-bb-02"};
    const std::string xml = libvirt_domain_xml(vm);
    EXPECT_TRUE(has_line(xml, "      <mac address='52:54:00:aa:bb:01'/>")) << xml;
    EXPECT_TRUE(has_line(xml, "      <mac address='52:54:00:aa:bb:02'/>")) << xml;
    vm.macs = {"52:54:00:aa:bb"};
    EXPECT_EQ(error_of([&] { libvirt_domain_xml(vm); }),
              "libvirt: MAC address '52:54:00:aa:bb' is not six hex bytes separated by ':'");
    vm.macs = {"01:00:5e:00:00:01"};
    EXPECT_EQ(error_of([&] { libvirt_domain_xml(vm); }),
              "libvirt: MAC address '01:00:5e:00:00:01' is a multicast address");
}

TEST(ProfileLibvirt, WindowsGetsLocalTimeAndAnE1000e) {
    VmDescription vm = debian("sata", "qcow2", "/d.qcow2");
    vm.os = "windows";
    vm.os_variant = "win10";
    const std::string xml = libvirt_domain_xml(vm);
    EXPECT_TRUE(has_line(xml, "  <clock offset='localtime'/>")) << xml;
    EXPECT_TRUE(has_line(xml, "      <model type='e1000e'/>")) << xml;
}

TEST(ProfileLibvirt, EscapesHostileNames) {
    VmDescription vm = debian("virtio-blk", "qcow2", hostile_path);
    vm.name = hostile_name + "/x";
    const std::string xml = libvirt_domain_xml(vm);
    // libvirt refuses '/' and newlines in domain names: they become '_'.
    EXPECT_TRUE(has_line(xml, "  <name>evil&apos;&quot;&lt;x&gt;&amp;|$`__x</name>")) << xml;
    EXPECT_TRUE(has_line(xml, "      <source file='/srv/p2v/a&amp;b &lt;c&gt; &apos;d&apos; "
                              "&quot;e&quot;.img'/>"))
        << xml;
    EXPECT_EQ(lines_of(xml).size(), 33u) << xml;
}

TEST(ProfileLibvirt, RefusesWhatLibvirtCannotTake) {
    EXPECT_EQ(error_of([] { libvirt_domain_xml(debian("virtio-blk", "qcow2", "pc1.qcow2")); }),
              "libvirt: the disk path 'pc1.qcow2' must be absolute");
    EXPECT_EQ(error_of([] { libvirt_domain_xml(debian("virtio-blk", "qcow2", "/a\x01.qcow2")); }),
              "libvirt: the disk path '/a\\x01.qcow2' holds the control character 0x01, which "
              "XML 1.0 cannot carry");
    EXPECT_EQ(error_of([] { libvirt_domain_xml(debian("virtio-blk", "qcow2", "/a\xff.qcow2")); }),
              "libvirt: the disk path '/a\xff.qcow2' is not valid UTF-8 (byte 0xff at 2)");
    EXPECT_EQ(
        error_of([] { libvirt_domain_xml(debian("pvscsi", "qcow2", "/d.qcow2")); }),
        "libvirt: no disk controller 'pvscsi' (kvm offers virtio-blk, virtio-scsi, sata, ide)");
    EXPECT_EQ(error_of([] { libvirt_domain_xml(debian("sata", "vhd", "/d.vhd")); }),
              "libvirt: disk format 'vhd' is not one qemu reads (qcow2, raw, vmdk, vhdx, vdi)");
    VmDescription vm = debian("sata", "qcow2", "/d.qcow2");
    vm.firmware = "";
    EXPECT_EQ(error_of([&] { libvirt_domain_xml(vm); }),
              "libvirt: firmware '' is neither bios nor uefi");
}

TEST(ProfileLibvirt, PassesLibvirtsSchema) {
    if (std::system("command -v virt-xml-validate >/dev/null 2>&1") != 0)
        GTEST_SKIP() << "virt-xml-validate is not installed (Debian package libvirt-clients): "
                        "the domain XML cannot be checked against libvirt's schema";
    char tmpl[] = "/tmp/p2vfs-libvirt-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    const std::string dir = tmpl;
    int n = 0;
    for (const Controller& c : profile("kvm").controllers) {
        for (const std::string firmware : {"bios", "uefi"}) {
            VmDescription vm = debian(c.name, "qcow2", hostile_path);
            vm.name = hostile_name;
            vm.firmware = firmware;
            vm.macs = {"52:54:00:12:34:56", "52:54:00:12:34:57"};
            const std::string file = dir + "/domain" + std::to_string(n++) + ".xml";
            std::ofstream(file) << libvirt_domain_xml(vm);
            const std::string cmd = "virt-xml-validate '" + file + "' domain >/dev/null 2>&1";
            EXPECT_EQ(std::system(cmd.c_str()), 0)
                << c.name << ", " << firmware << ": " << libvirt_domain_xml(vm);
        }
    }
    std::filesystem::remove_all(dir);
}

// ---- VMware ----

TEST(ProfileVmx, DescribesAPvscsiBiosMachine) {
    const std::string vmx = vmware_vmx(debian("pvscsi", "vmdk", "pc1.vmdk"));
    EXPECT_EQ(vmx, ".encoding = \"UTF-8\"\n"
                   "config.version = \"8\"\n"
                   "virtualHW.version = \"14\"\n"
                   "displayName = \"pc1\"\n"
                   "guestOS = \"debian12-64\"\n"
                   "memsize = \"4096\"\n"
                   "numvcpus = \"4\"\n"
                   "pciBridge0.present = \"TRUE\"\n"
                   "pciBridge4.present = \"TRUE\"\n"
                   "pciBridge4.virtualDev = \"pcieRootPort\"\n"
                   "pciBridge4.functions = \"8\"\n"
                   "pciBridge5.present = \"TRUE\"\n"
                   "pciBridge5.virtualDev = \"pcieRootPort\"\n"
                   "pciBridge5.functions = \"8\"\n"
                   "pciBridge6.present = \"TRUE\"\n"
                   "pciBridge6.virtualDev = \"pcieRootPort\"\n"
                   "pciBridge6.functions = \"8\"\n"
                   "pciBridge7.present = \"TRUE\"\n"
                   "pciBridge7.virtualDev = \"pcieRootPort\"\n"
                   "pciBridge7.functions = \"8\"\n"
                   "scsi0.present = \"TRUE\"\n"
                   "scsi0.virtualDev = \"pvscsi\"\n"
                   "scsi0:0.present = \"TRUE\"\n"
                   "scsi0:0.fileName = \"pc1.vmdk\"\n"
                   "ethernet0.present = \"TRUE\"\n"
                   "ethernet0.virtualDev = \"vmxnet3\"\n"
                   "ethernet0.addressType = \"generated\"\n");
}

TEST(ProfileVmx, PlacesTheDiskOnTheChosenController) {
    VmDescription vm = debian("lsilogic", "vmdk", "pc1.vmdk");
    std::string vmx = vmware_vmx(vm);
    EXPECT_TRUE(has_line(vmx, "scsi0.virtualDev = \"lsilogic\"")) << vmx;
    EXPECT_TRUE(has_line(vmx, "scsi0:0.fileName = \"pc1.vmdk\"")) << vmx;

    vm.controller = "sata";
    vmx = vmware_vmx(vm);
    EXPECT_TRUE(has_line(vmx, "sata0.present = \"TRUE\"")) << vmx;
    EXPECT_TRUE(has_line(vmx, "sata0:0.present = \"TRUE\"")) << vmx;
    EXPECT_TRUE(has_line(vmx, "sata0:0.fileName = \"pc1.vmdk\"")) << vmx;
    EXPECT_EQ(vmx.find("scsi0"), std::string::npos) << vmx;

    vm.controller = "ide";
    vmx = vmware_vmx(vm);
    EXPECT_TRUE(has_line(vmx, "ide0:0.present = \"TRUE\"")) << vmx;
    EXPECT_TRUE(has_line(vmx, "ide0:0.fileName = \"pc1.vmdk\"")) << vmx;
    EXPECT_EQ(vmx.find("scsi0"), std::string::npos) << vmx;
    EXPECT_EQ(vmx.find("sata0"), std::string::npos) << vmx;
}

TEST(ProfileVmx, UefiAndMemoryInWholeFourMiB) {
    VmDescription vm = debian("pvscsi", "vmdk", "pc1.vmdk");
    vm.firmware = "uefi";
    vm.memory_mib = 2049;
    const std::string vmx = vmware_vmx(vm);
    EXPECT_TRUE(has_line(vmx, "firmware = \"efi\"")) << vmx;
    EXPECT_TRUE(has_line(vmx, "memsize = \"2052\"")) << vmx;
}

TEST(ProfileVmx, GuestOsFollowsTheVariant) {
    const auto guest_os = [](const std::string& os, const std::string& variant) {
        VmDescription vm = debian("sata", "vmdk", "d.vmdk");
        vm.os = os;
        vm.os_variant = variant;
        for (const std::string& line : lines_of(vmware_vmx(vm)))
            if (line.rfind("guestOS = ", 0) == 0)
                return line.substr(10);
        return std::string("(none)");
    };
    EXPECT_EQ(guest_os("linux", "debian12"), "\"debian12-64\"");
    EXPECT_EQ(guest_os("linux", "debian13"), "\"debian12-64\"");
    EXPECT_EQ(guest_os("linux", "debian10"), "\"debian10-64\"");
    EXPECT_EQ(guest_os("linux", "ubuntu22.04"), "\"ubuntu-64\"");
    EXPECT_EQ(guest_os("linux", "rhel9.2"), "\"rhel9-64\"");
    EXPECT_EQ(guest_os("linux", "rocky8"), "\"rhel8-64\"");
    EXPECT_EQ(guest_os("linux", "centos7.0"), "\"centos7-64\"");
    EXPECT_EQ(guest_os("linux", ""), "\"other5xlinux-64\"");
    EXPECT_EQ(guest_os("linux", "archlinux"), "\"other5xlinux-64\"");
    EXPECT_EQ(guest_os("windows", "win10"), "\"windows9-64\"");
    EXPECT_EQ(guest_os("windows", "win2k22"), "\"windows2019srvNext-64\"");
    EXPECT_EQ(guest_os("windows", ""), "\"windows9-64\"");
}

TEST(ProfileVmx, KeepsTheMachinesMacAddresses) {
    VmDescription vm = debian("pvscsi", "vmdk", "pc1.vmdk");
    vm.macs = {"00:50:56:01:02:03", "52:54:00:AA:BB:CC"};
    const std::string vmx = vmware_vmx(vm);
    EXPECT_TRUE(has_line(vmx, "ethernet0.addressType = \"static\"")) << vmx;
    EXPECT_TRUE(has_line(vmx, "ethernet0.address = \"00:50:56:01:02:03\"")) << vmx;
    EXPECT_EQ(vmx.find("ethernet0.checkMACAddress"), std::string::npos) << vmx;
    // Outside VMware's static range: accepted only when VMware is told not to check.
    EXPECT_TRUE(has_line(vmx, "ethernet1.address = \"52:54:00:aa:bb:cc\"")) << vmx;
    EXPECT_TRUE(has_line(vmx, "ethernet1.checkMACAddress = \"FALSE\"")) << vmx;
}

TEST(ProfileVmx, AHostileNameCannotAddALine) {
    VmDescription vm = debian("pvscsi", "vmdk", "a\"b|c\nscsi0:0.fileName = \"/etc/shadow\".vmdk");
    vm.name = "pc\"1|\nguestOS = \"windows9-64\"";
    const std::string vmx = vmware_vmx(vm);
    EXPECT_TRUE(has_line(vmx, "displayName = \"pc|221|7c|0aguestOS = |22windows9-64|22\"")) << vmx;
    EXPECT_TRUE(has_line(vmx, "scsi0:0.fileName = \"a|22b|7cc|0ascsi0:0.fileName = "
                              "|22/etc/shadow|22.vmdk\""))
        << vmx;
    // Every line is one key and one quoted value without a quote inside.
    for (const std::string& line : lines_of(vmx))
        EXPECT_TRUE(is_vmx_pair(line)) << line;
    EXPECT_EQ(lines_of(vmx).size(), 27u) << vmx;
}

TEST(ProfileVmx, RefusesWhatVmwareCannotTake) {
    EXPECT_EQ(
        error_of([] { vmware_vmx(debian("virtio-blk", "vmdk", "d.vmdk")); }),
        "VMware: no disk controller 'virtio-blk' (vmware offers pvscsi, lsilogic, lsisas, sata, ide)");
    EXPECT_EQ(error_of([] { vmware_vmx(debian("pvscsi", "qcow2", "d.qcow2")); }),
              "VMware: disk format 'qcow2' is not vmdk");
    VmDescription vm = debian("pvscsi", "vmdk", "d.vmdk");
    vm.cpus = 0;
    EXPECT_EQ(error_of([&] { vmware_vmx(vm); }), "VMware: the machine has no CPU (cpus is 0)");
}

TEST(ProfileVmx, VmdkAdapterForEachController) {
    EXPECT_EQ(vmdk_adapter_for("pvscsi"), "pvscsi");
    EXPECT_EQ(vmdk_adapter_for("lsilogic"), "lsilogic");
    EXPECT_EQ(vmdk_adapter_for("sata"), "ide");
    EXPECT_EQ(vmdk_adapter_for("ide"), "ide");
    EXPECT_EQ(
        error_of([] { vmdk_adapter_for("virtio-blk"); }),
        "VMware: no disk controller 'virtio-blk' (vmware offers pvscsi, lsilogic, lsisas, sata, ide)");
}

// ---- Hyper-V ----

TEST(ProfileHyperV, DescribesAGeneration2LinuxMachine) {
    VmDescription vm = debian("hyperv-scsi", "vhdx", "D:\\VMs\\pc1.vhdx");
    vm.firmware = "uefi";
    vm.memory_mib = 4095;
    vm.macs = {"00:15:5d:01:02:03", "00:15:5d:01:02:04"};
    EXPECT_EQ(
        hyperv_summary(vm),
        "Hyper-V virtual machine: pc1\n"
        "Generation: 2 (uefi)\n"
        "Memory: 4096 MiB\n"
        "CPUs: 4\n"
        "Controller: hyperv-scsi (the disk on SCSI controller 0, location 0)\n"
        "Disk: D:\\VMs\\pc1.vhdx (vhdx, 20 GiB)\n"
        "Network adapters: 2\n"
        "\n"
        "PowerShell:\n"
        "New-VM -Name \"pc1\" -Generation 2 -MemoryStartupBytes 4096MB -VHDPath "
        "\"D:\\VMs\\pc1.vhdx\"\n"
        "Set-VMProcessor -VMName \"pc1\" -Count 4\n"
        "Set-VMFirmware -VMName \"pc1\" -SecureBootTemplate MicrosoftUEFICertificateAuthority\n"
        "Set-VMNetworkAdapter -VMName \"pc1\" -StaticMacAddress \"00155d010203\"\n"
        "Add-VMNetworkAdapter -VMName \"pc1\" -StaticMacAddress \"00155d010204\"\n");
}

TEST(ProfileHyperV, BiosMachinesAreGeneration1WithTheDiskOnIde) {
    const std::string s = hyperv_summary(debian("hyperv-scsi", "vhdx", "pc1.vhdx"));
    EXPECT_TRUE(has_line(s, "Generation: 1 (bios)")) << s;
    EXPECT_TRUE(has_line(s, "Controller: hyperv-scsi (the disk on IDE controller 0, location 0)"))
        << s;
    EXPECT_TRUE(has_line(s, "Network adapters: 1 (MAC address chosen by Hyper-V)")) << s;
    EXPECT_TRUE(has_line(s, "New-VM -Name \"pc1\" -Generation 1 -MemoryStartupBytes 4096MB "
                            "-VHDPath \"pc1.vhdx\""))
        << s;
    EXPECT_EQ(s.find("Set-VMFirmware"), std::string::npos) << s;
}

TEST(ProfileHyperV, AHostileNameStaysInsideItsQuotes) {
    VmDescription vm = debian("hyperv-ide", "vhdx", "C:\\a\"$(rm)`.vhdx");
    // U+201D ends a PowerShell string as '"' does.
    vm.name = "pc\"1$(Stop-Computer)`\n\xe2\x80\x9dx\x01";
    const std::string s = hyperv_summary(vm);
    EXPECT_TRUE(
        has_line(s, "Hyper-V virtual machine: pc\"1$(Stop-Computer)`\\x0a\xe2\x80\x9dx\\x01"))
        << s;
    EXPECT_TRUE(has_line(s,
                         "New-VM -Name \"pc`\"1`$(Stop-Computer)```n`\xe2\x80\x9dx$([char]0x01)\" "
                         "-Generation 1 -MemoryStartupBytes 4096MB -VHDPath "
                         "\"C:\\a`\"`$(rm)``.vhdx\""))
        << s;
    EXPECT_EQ(lines_of(s).size(), 11u) << s;
}

TEST(ProfileHyperV, RefusesWhatAGenerationCannotTake) {
    VmDescription vm = debian("hyperv-ide", "vhdx", "pc1.vhdx");
    vm.firmware = "uefi";
    EXPECT_EQ(error_of([&] { hyperv_summary(vm); }),
              "Hyper-V: generation 2 (uefi) has no IDE controller; the guest needs hv_storvsc "
              "(the hyperv-scsi controller)");
    vm.controller = "hyperv-scsi";
    vm.disk_format = "vhd";
    EXPECT_EQ(error_of([&] { hyperv_summary(vm); }),
              "Hyper-V: generation 2 (uefi) takes only VHDX disks, not vhd");
    vm.disk_format = "qcow2";
    EXPECT_EQ(error_of([&] { hyperv_summary(vm); }),
              "Hyper-V: disk format 'qcow2' is neither vhdx nor vhd");
    vm.os = "bsd";
    EXPECT_EQ(error_of([&] { hyperv_summary(vm); }),
              "Hyper-V: operating system 'bsd' is neither linux nor windows");
}

} // namespace
} // namespace p2vfs::guest

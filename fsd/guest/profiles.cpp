// Target profiles and the VM descriptions written for them.
//
// Every string of a VmDescription may come from the machine being converted
// (its host name, a path named after it), so each output format escapes it
// by that format's own rules, and nothing read can add a line or an element:
// XML character references, the .vmx file's "|XX" escapes (as VMware and
// libvirt's vmx.c write them), PowerShell's backtick escapes.
#include "guest/profiles.h"

#include "common/error.h"

#include <algorithm>
#include <cctype>
#include <set>
#include <string_view>

namespace p2vfs::guest {
namespace {

// modprobe treats '-' and '_' in module names as the same character.
std::string module_key(std::string name) {
    std::replace(name.begin(), name.end(), '-', '_');
    return name;
}

std::string names_of(const std::vector<Controller>& controllers) {
    std::string s;
    for (const Controller& c : controllers)
        s += (s.empty() ? "" : ", ") + c.name;
    return s;
}

constexpr char digits[] = "0123456789abcdef";

std::string hex2(unsigned char b) {
    return {digits[b >> 4], digits[b & 15]};
}

// Offset of the first byte that is not part of valid UTF-8, or npos.
size_t invalid_utf8(std::string_view s) {
    size_t i = 0;
    while (i < s.size()) {
        const auto b = static_cast<unsigned char>(s[i]);
        size_t n = 0;
        uint32_t cp = 0;
        if (b < 0x80) {
            ++i;
            continue;
        } else if (b >= 0xc2 && b <= 0xdf) {
            n = 1;
            cp = b & 0x1f;
        } else if (b >= 0xe0 && b <= 0xef) {
            n = 2;
            cp = b & 0x0f;
        } else if (b >= 0xf0 && b <= 0xf4) {
            n = 3;
            cp = b & 0x07;
        } else {
            return i;
        }
        if (s.size() - i <= n)
            return i;
        for (size_t k = 1; k <= n; ++k) {
            const auto c = static_cast<unsigned char>(s[i + k]);
            if ((c & 0xc0) != 0x80)
                return i;
            cp = cp << 6 | (c & 0x3f);
        }
        // Overlong forms, UTF-16 surrogates, past U+10FFFF.
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || (cp >= 0xd800 && cp <= 0xdfff) ||
            cp > 0x10ffff)
            return i;
        i += n + 1;
    }
    return std::string_view::npos;
}

// Control characters shown as "\x0a": for names in messages and plain text.
std::string printable(std::string_view s) {
    std::string out;
    for (char c : s) {
        const auto b = static_cast<unsigned char>(c);
        if (b < 0x20 || b == 0x7f)
            out += "\\x" + hex2(b);
        else
            out += c;
    }
    return out;
}

void check_text(std::string_view target, std::string_view field, const std::string& value) {
    if (const size_t bad = invalid_utf8(value); bad != std::string_view::npos)
        throw InvalidArgument(std::string(target) + ": the " + std::string(field) + " '" +
                              printable(value) + "' is not valid UTF-8 (byte 0x" +
                              hex2(static_cast<unsigned char>(value[bad])) + " at " +
                              std::to_string(bad) + ")");
}

// "52:54:00:12:34:56" (or with '-'), as lower case with ':'.
std::string checked_mac(std::string_view target, const std::string& mac) {
    const auto bad = [&](const std::string& why) {
        return InvalidArgument(std::string(target) + ": MAC address '" + printable(mac) + "' " +
                               why);
    };
    if (mac.size() != 17)
        throw bad("is not six hex bytes separated by ':'");
    std::string out;
    for (size_t i = 0; i < mac.size(); ++i) {
        const char c = mac[i];
        if (i % 3 == 2) {
            if (c != ':' && c != '-')
                throw bad("is not six hex bytes separated by ':'");
            out += ':';
        } else if (std::isxdigit(static_cast<unsigned char>(c))) {
            out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        } else {
            throw bad("is not six hex bytes separated by ':'");
        }
    }
    // Bit 0 of the first byte marks a group address, which no adapter can have.
    if (std::stoi(out.substr(0, 2), nullptr, 16) & 1)
        throw bad("is a multicast address");
    return out;
}

// What every description needs, checked the same way for each target.
const Controller& checked(const VmDescription& vm, const std::string& profile_name,
                          std::string_view target) {
    const std::string t(target);
    const Profile& p = profile(profile_name);
    const auto c = std::find_if(p.controllers.begin(), p.controllers.end(),
                                [&](const Controller& k) { return k.name == vm.controller; });
    if (c == p.controllers.end())
        throw InvalidArgument(t + ": no disk controller '" + printable(vm.controller) + "' (" +
                              p.name + " offers " + names_of(p.controllers) + ")");
    if (vm.name.empty())
        throw InvalidArgument(t + ": the machine has no name");
    if (vm.os != "linux" && vm.os != "windows")
        throw InvalidArgument(t + ": operating system '" + printable(vm.os) +
                              "' is neither linux nor windows");
    if (vm.firmware != "bios" && vm.firmware != "uefi")
        throw InvalidArgument(t + ": firmware '" + printable(vm.firmware) +
                              "' is neither bios nor uefi");
    if (vm.memory_mib == 0)
        throw InvalidArgument(t + ": the machine has no memory (memory_mib is 0)");
    if (vm.cpus == 0)
        throw InvalidArgument(t + ": the machine has no CPU (cpus is 0)");
    if (vm.disk_path.empty())
        throw InvalidArgument(t + ": no disk path");
    check_text(target, "machine name", vm.name);
    check_text(target, "disk path", vm.disk_path);
    check_text(target, "OS variant", vm.os_variant);
    return *c;
}

// ---- libvirt ----

// Text for XML content or a quoted attribute. Line ends become character
// references (an attribute's literal newline would be read back as a space);
// other control characters cannot appear in XML 1.0 at all.
std::string xml(std::string_view field, std::string_view s) {
    static constexpr std::pair<char, std::string_view> entities[]{
        {'&', "&amp;"},  {'<', "&lt;"},   {'>', "&gt;"},   {'\'', "&apos;"},
        {'"', "&quot;"}, {'\n', "&#10;"}, {'\r', "&#13;"}, {'\t', "&#9;"},
    };
    std::string out;
    for (char c : s) {
        const auto e = std::find_if(std::begin(entities), std::end(entities),
                                    [c](const auto& entity) { return entity.first == c; });
        if (e != std::end(entities)) {
            out += e->second;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            throw InvalidArgument("libvirt: the " + std::string(field) + " '" + printable(s) +
                                  "' holds the control character 0x" +
                                  hex2(static_cast<unsigned char>(c)) +
                                  ", which XML 1.0 cannot carry");
        } else {
            out += c;
        }
    }
    return out;
}

// libvirt refuses domain names with a newline (its schema) or '/' (the name
// is the file name of the domain's configuration); control characters
// cannot be carried. They become '_', so the domain can still be defined.
std::string libvirt_name(std::string_view name) {
    std::string out(name);
    for (char& c : out)
        if (c == '/' || static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
            c = '_';
    return out;
}

} // namespace

const std::vector<Profile>& profiles() {
    // Module lists name the driver and what makes its disk a block device,
    // not the driver's own dependencies: an initramfs builder adds those
    // (modules.dep) with the module, so the driver's presence implies them.
    static const std::vector<Profile> all{
        {"kvm",
         "qcow2",
         {
             // The virtio devices of a PC machine sit on PCI: virtio_blk binds
             // nothing without virtio_pci.
             {"virtio-blk", {"virtio_blk", "virtio_pci"}, "/dev/vda"},
             {"virtio-scsi", {"virtio_scsi", "virtio_pci", "sd_mod"}, "/dev/sda"},
             // libata drives SATA and PIIX IDE disks as SCSI disks (sd_mod);
             // the old IDE layer (ide-generic, /dev/hda) left the kernel in 5.14.
             {"sata", {"ahci", "sd_mod"}, "/dev/sda"},
             {"ide", {"ata_piix", "sd_mod"}, "/dev/sda"},
         }},
        {"vmware",
         "vmdk",
         {
             {"pvscsi", {"vmw_pvscsi", "sd_mod"}, "/dev/sda"},
             // LSI Logic parallel SCSI (mptspi; mptbase and mptscsih come with it).
             {"lsilogic", {"mptspi", "sd_mod"}, "/dev/sda"},
             // LSI Logic SAS (lsisas1068): what VMware gives Windows since
             // Server 2008, which has its driver (LSI_SAS) in the box.
             {"lsisas", {"mptsas", "sd_mod"}, "/dev/sda"},
             {"sata", {"ahci", "sd_mod"}, "/dev/sda"},
             {"ide", {"ata_piix", "sd_mod"}, "/dev/sda"},
         }},
        {"hyperv",
         "vhdx",
         {
             // The synthetic storage of VMBus: generation 2's only disks, and
             // a faster path to generation 1's IDE disks.
             {"hyperv-scsi", {"hv_storvsc", "hv_vmbus", "sd_mod"}, "/dev/sda"},
             // Generation 1's emulated PIIX4 IDE controller.
             {"hyperv-ide", {"ata_piix", "sd_mod"}, "/dev/sda"},
         }},
    };
    return all;
}

const Profile& profile(const std::string& name) {
    for (const Profile& p : profiles())
        if (p.name == name)
            return p;
    std::string known;
    for (const Profile& p : profiles())
        known += (known.empty() ? "" : ", ") + p.name;
    throw InvalidArgument("unknown target profile '" + printable(name) + "' (known: " + known +
                          ")");
}

const Controller* choose_controller(const Profile& p, const std::vector<std::string>& available) {
    std::set<std::string> have;
    for (const std::string& m : available)
        have.insert(module_key(m));
    for (const Controller& c : p.controllers) {
        if (std::all_of(c.modules.begin(), c.modules.end(),
                        [&](const std::string& m) { return have.count(module_key(m)) != 0; }))
            return &c;
    }
    return nullptr;
}

std::string libvirt_domain_xml(const VmDescription& vm) {
    const Controller& c = checked(vm, "kvm", "libvirt");
    static const std::set<std::string> formats{"qcow2", "raw", "vmdk", "vhdx", "vdi"};
    if (!formats.count(vm.disk_format))
        throw InvalidArgument("libvirt: disk format '" + printable(vm.disk_format) +
                              "' is not one qemu reads (qcow2, raw, vmdk, vhdx, vdi)");
    // libvirt resolves nothing relative to the XML (its schema wants an absolute path).
    if (vm.disk_path.front() != '/')
        throw InvalidArgument("libvirt: the disk path '" + printable(vm.disk_path) +
                              "' must be absolute");
    const bool uefi = vm.firmware == "uefi";
    // q35 for UEFI, but q35 has no IDE controller: an IDE disk keeps the
    // i440fx machine ('pc'), which OVMF boots too.
    const std::string machine = uefi && c.name != "ide" ? "q35" : "pc";
    // The bus of each kvm controller, and the name libvirt gives the disk on
    // it (the guest names its disks itself).
    static const std::vector<std::pair<std::string, std::string>> targets{
        {"virtio-blk", "<target dev='vda' bus='virtio'/>"},
        {"virtio-scsi", "<target dev='sda' bus='scsi'/>"},
        {"sata", "<target dev='sda' bus='sata'/>"},
        {"ide", "<target dev='hda' bus='ide'/>"},
    };
    const auto target = std::find_if(targets.begin(), targets.end(),
                                     [&](const auto& t) { return t.first == c.name; });
    // Windows has no virtio network driver of its own, and keeps the RTC in
    // local time.
    const bool windows = vm.os == "windows";

    std::string x;
    x += "<domain type='kvm'>\n";
    x += "  <name>" + xml("machine name", libvirt_name(vm.name)) + "</name>\n";
    x += "  <memory unit='MiB'>" + std::to_string(vm.memory_mib) + "</memory>\n";
    x += "  <vcpu>" + std::to_string(vm.cpus) + "</vcpu>\n";
    // firmware='efi': libvirt picks the OVMF build and makes the NVRAM file,
    // whose paths differ between distributions.
    x += uefi ? "  <os firmware='efi'>\n" : "  <os>\n";
    x += "    <type arch='x86_64' machine='" + machine + "'>hvm</type>\n";
    x += "    <boot dev='hd'/>\n";
    x += "  </os>\n";
    x += "  <features>\n    <acpi/>\n    <apic/>\n  </features>\n";
    // The machine ran on real CPUs; qemu's default model lacks what current
    // distributions require (x86-64-v2).
    x += "  <cpu mode='host-passthrough'/>\n";
    x += std::string("  <clock offset='") + (windows ? "localtime" : "utc") + "'/>\n";
    x += "  <devices>\n";
    if (c.name == "virtio-scsi")
        x += "    <controller type='scsi' index='0' model='virtio-scsi'/>\n";
    x += "    <disk type='file' device='disk'>\n";
    x += "      <driver name='qemu' type='" + vm.disk_format + "'/>\n";
    x += "      <source file='" + xml("disk path", vm.disk_path) + "'/>\n";
    x += "      " + target->second + "\n";
    x += "    </disk>\n";
    const size_t adapters = std::max<size_t>(vm.macs.size(), 1);
    for (size_t i = 0; i < adapters; ++i) {
        x += "    <interface type='network'>\n";
        x += "      <source network='default'/>\n";
        if (!vm.macs.empty())
            x += "      <mac address='" + checked_mac("libvirt", vm.macs[i]) + "'/>\n";
        x += std::string("      <model type='") + (windows ? "e1000e" : "virtio") + "'/>\n";
        x += "    </interface>\n";
    }
    x += "    <serial type='pty'>\n      <target port='0'/>\n    </serial>\n";
    x += "    <console type='pty'>\n      <target type='serial' port='0'/>\n    </console>\n";
    x += "    <graphics type='vnc' port='-1' autoport='yes'/>\n";
    x += "  </devices>\n";
    x += "</domain>\n";
    return x;
}

namespace {

// ---- VMware ----

// A .vmx value between its quotes: '"', the escape character '|' and control
// characters as "|22", "|7c", "|0a" — a name cannot end its value or line.
std::string vmx(std::string_view s) {
    std::string out;
    for (char c : s) {
        const auto b = static_cast<unsigned char>(c);
        if (c == '"' || c == '|' || b < 0x20 || b == 0x7f)
            out += "|" + hex2(b);
        else
            out += c;
    }
    return out;
}

// "debian12" -> "debian", 12; "rhel9.2" -> "rhel", 9; "centos-stream9" ->
// "centos-stream", 9 (libosinfo's short ids, as virt-install takes them).
std::pair<std::string, int> family_and_major(const std::string& variant) {
    const size_t d = variant.find_first_of("0123456789");
    if (d == std::string::npos)
        return {variant, 0};
    const size_t end = variant.find_first_not_of("0123456789", d);
    const std::string number = variant.substr(d, end == std::string::npos ? end : end - d);
    return {variant.substr(0, d), number.size() > 4 ? 0 : std::stoi(number)};
}

// VMware's guest OS identifier. It chooses default devices and VMware
// Tools behaviour, not what can run; a release newer than the table takes
// its family's newest identifier.
std::string vmware_guest_os(const VmDescription& vm) {
    if (vm.os == "windows") {
        static const std::vector<std::pair<std::string, std::string>> windows{
            {"win11", "windows11-64"},        {"win10", "windows9-64"},
            {"win8.1", "windows8-64"},        {"win8", "windows8-64"},
            {"win7", "windows7-64"},          {"win2k22", "windows2019srvNext-64"},
            {"win2k19", "windows2019srv-64"}, {"win2k16", "windows9srv-64"},
            {"win2k12r2", "windows8srv-64"},  {"win2k12", "windows8srv-64"},
        };
        for (const auto& [variant, id] : windows)
            if (vm.os_variant == variant)
                return id;
        return "windows9-64";
    }
    struct Family {
        const char* prefix;
        const char* vmware; // identifier stem; numbered ones take the major version
        int oldest, newest; // 0: not numbered
    };
    static const Family families[] = {
        {"debian", "debian", 6, 12},     {"rhel", "rhel", 6, 9},
        {"rocky", "rhel", 8, 9},         {"almalinux", "rhel", 8, 9},
        {"centos-stream", "rhel", 8, 9}, {"centos", "centos", 6, 8},
        {"sles", "sles", 10, 15},        {"ubuntu", "ubuntu-64", 0, 0},
        {"fedora", "fedora-64", 0, 0},   {"opensuse", "opensuse-64", 0, 0},
    };
    const auto [family, major] = family_and_major(vm.os_variant);
    for (const Family& f : families) {
        if (family != f.prefix)
            continue;
        if (f.newest == 0)
            return f.vmware;
        if (major < f.oldest)
            return "otherlinux-64";
        return std::string(f.vmware) + std::to_string(std::min(major, f.newest)) + "-64";
    }
    return "other5xlinux-64";
}

// VMware's static MAC range, 00:50:56:00:00:00-00:50:56:3f:ff:ff; it
// refuses other static addresses unless told not to check.
bool vmware_static_mac(const std::string& mac) {
    return mac.compare(0, 9, "00:50:56:") == 0 && std::stoi(mac.substr(9, 2), nullptr, 16) <= 0x3f;
}

} // namespace

std::string vmware_vmx(const VmDescription& vm) {
    const Controller& c = checked(vm, "vmware", "VMware");
    if (vm.disk_format != "vmdk")
        throw InvalidArgument("VMware: disk format '" + printable(vm.disk_format) +
                              "' is not vmdk");
    const auto line = [](std::string_view key, std::string_view value) {
        return std::string(key) + " = \"" + std::string(value) + "\"\n";
    };
    std::string v;
    v += line(".encoding", "UTF-8");
    v += line("config.version", "8");
    // 14: ESXi 6.7, Workstation 15, Fusion 11 and later run it; it has
    // PVSCSI (7+), SATA (10+) and UEFI.
    v += line("virtualHW.version", "14");
    v += line("displayName", vmx(vm.name));
    v += line("guestOS", vmware_guest_os(vm));
    // VMware takes memory in multiples of 4 MiB only.
    v += line("memsize", std::to_string((uint64_t{vm.memory_mib} + 3) / 4 * 4));
    v += line("numvcpus", std::to_string(vm.cpus));
    if (vm.firmware == "uefi")
        v += line("firmware", "efi");
    // The PCI bridge and PCIe root ports VMware's own wizards create: PVSCSI
    // and VMXNET3 are placed behind them.
    v += line("pciBridge0.present", "TRUE");
    for (int b = 4; b <= 7; ++b) {
        const std::string bridge = "pciBridge" + std::to_string(b);
        v += line(bridge + ".present", "TRUE");
        v += line(bridge + ".virtualDev", "pcieRootPort");
        v += line(bridge + ".functions", "8");
    }
    std::string disk;
    if (c.name == "pvscsi" || c.name == "lsilogic" || c.name == "lsisas") {
        v += line("scsi0.present", "TRUE");
        v += line("scsi0.virtualDev", c.name == "lsisas" ? "lsisas1068" : c.name);
        disk = "scsi0:0";
    } else if (c.name == "sata") {
        v += line("sata0.present", "TRUE");
        disk = "sata0:0";
    } else {
        disk = "ide0:0"; // the IDE controller is always there
    }
    v += line(disk + ".present", "TRUE");
    v += line(disk + ".fileName", vmx(vm.disk_path));
    // VMXNET3 has had a Linux driver since 2.6.32; Windows has none of its own.
    const std::string nic = vm.os == "windows" ? "e1000e" : "vmxnet3";
    const size_t adapters = std::max<size_t>(vm.macs.size(), 1);
    for (size_t i = 0; i < adapters; ++i) {
        const std::string eth = "ethernet" + std::to_string(i);
        v += line(eth + ".present", "TRUE");
        v += line(eth + ".virtualDev", nic);
        if (vm.macs.empty()) {
            v += line(eth + ".addressType", "generated");
            continue;
        }
        // The physical adapter's address: DHCP reservations and licences keep working.
        const std::string mac = checked_mac("VMware", vm.macs[i]);
        v += line(eth + ".addressType", "static");
        v += line(eth + ".address", mac);
        if (!vmware_static_mac(mac))
            v += line(eth + ".checkMACAddress", "FALSE");
    }
    return v;
}

namespace {

// ---- Hyper-V ----

// Text for a double-quoted PowerShell string: backtick escapes for what
// would end it or expand in it ('"', the typographic double quotes
// PowerShell also takes, '$', '`') and for control characters, so the
// command stays one line. $([char]0x..) for those without a letter escape
// in Windows PowerShell 5.1.
std::string powershell(std::string_view s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        const auto b = static_cast<unsigned char>(c);
        // U+201C, U+201D, U+201E: E2 80 9C/9D/9E.
        if (b == 0xe2 && i + 2 < s.size() && s[i + 1] == '\x80' &&
            (s[i + 2] == '\x9c' || s[i + 2] == '\x9d' || s[i + 2] == '\x9e')) {
            out += '`';
            out += s.substr(i, 3);
            i += 2;
            continue;
        }
        static constexpr std::pair<char, std::string_view> escapes[]{
            {'"', "`\""}, {'$', "`$"},  {'`', "``"},  {'\0', "`0"}, {'\a', "`a"}, {'\b', "`b"},
            {'\f', "`f"}, {'\n', "`n"}, {'\r', "`r"}, {'\t', "`t"}, {'\v', "`v"},
        };
        const auto e = std::find_if(std::begin(escapes), std::end(escapes),
                                    [c](const auto& escape) { return escape.first == c; });
        if (e != std::end(escapes))
            out += e->second;
        else if (b < 0x20 || b == 0x7f)
            out += "$([char]0x" + hex2(b) + ")";
        else
            out += c;
    }
    return out;
}

} // namespace

std::string hyperv_summary(const VmDescription& vm) {
    const Controller& c = checked(vm, "hyperv", "Hyper-V");
    const bool uefi = vm.firmware == "uefi";
    const int generation = uefi ? 2 : 1;
    if (vm.disk_format != "vhdx" && vm.disk_format != "vhd")
        throw InvalidArgument("Hyper-V: disk format '" + printable(vm.disk_format) +
                              "' is neither vhdx nor vhd");
    if (uefi && vm.disk_format != "vhdx")
        throw InvalidArgument("Hyper-V: generation 2 (uefi) takes only VHDX disks, not " +
                              vm.disk_format);
    if (uefi && c.name == "hyperv-ide")
        throw InvalidArgument("Hyper-V: generation 2 (uefi) has no IDE controller; the guest "
                              "needs hv_storvsc (the hyperv-scsi controller)");
    // Hyper-V takes startup memory in multiples of 2 MiB only.
    const uint64_t memory = (uint64_t{vm.memory_mib} + 1) / 2 * 2;
    // New-VM attaches -VHDPath to SCSI 0:0 in generation 2 and to IDE 0:0 in
    // generation 1, which boots only from IDE; hv_storvsc drives that disk too.
    const std::string attached =
        uefi ? "SCSI controller 0, location 0" : "IDE controller 0, location 0";
    std::string s;
    s += "Hyper-V virtual machine: " + printable(vm.name) + "\n";
    s += "Generation: " + std::to_string(generation) + " (" + vm.firmware + ")\n";
    s += "Memory: " + std::to_string(memory) + " MiB\n";
    s += "CPUs: " + std::to_string(vm.cpus) + "\n";
    s += "Controller: " + c.name + " (the disk on " + attached + ")\n";
    s += "Disk: " + printable(vm.disk_path) + " (" + vm.disk_format +
         (vm.disk_size ? ", " + human_size(vm.disk_size) : "") + ")\n";
    std::vector<std::string> macs;
    for (const std::string& m : vm.macs)
        macs.push_back(checked_mac("Hyper-V", m));
    s += "Network adapters: " + std::to_string(std::max<size_t>(macs.size(), 1)) +
         (macs.empty() ? " (MAC address chosen by Hyper-V)" : "") + "\n";
    s += "\nPowerShell:\n";
    const std::string name = "\"" + powershell(vm.name) + "\"";
    s += "New-VM -Name " + name + " -Generation " + std::to_string(generation) +
         " -MemoryStartupBytes " + std::to_string(memory) + "MB -VHDPath \"" +
         powershell(vm.disk_path) + "\"\n";
    s += "Set-VMProcessor -VMName " + name + " -Count " + std::to_string(vm.cpus) + "\n";
    // Generation 2's default Secure Boot template trusts only Windows; Linux
    // boots through shim, signed by Microsoft's UEFI CA.
    if (uefi && vm.os == "linux")
        s += "Set-VMFirmware -VMName " + name +
             " -SecureBootTemplate MicrosoftUEFICertificateAuthority\n";
    // New-VM makes one adapter; more are added.
    for (size_t i = 0; i < macs.size(); ++i) {
        std::string bare = macs[i];
        bare.erase(std::remove(bare.begin(), bare.end(), ':'), bare.end());
        s += (i == 0 ? "Set-VMNetworkAdapter" : "Add-VMNetworkAdapter") + std::string(" -VMName ") +
             name + " -StaticMacAddress \"" + bare + "\"\n";
    }
    return s;
}

std::string vmdk_adapter_for(const std::string& controller) {
    // ddb.adapterType sets the geometry and disk class a VMDK is made for;
    // VMware's VirtualDiskAdapterType knows only ide, busLogic and lsiLogic
    // (vmkfstools adds pvscsi and lsisas), none for SATA: VMware's hosted
    // products describe their SATA disks as "ide".
    if (controller == "pvscsi")
        return "pvscsi";
    if (controller == "lsilogic" || controller == "lsisas")
        return "lsilogic";
    if (controller == "sata" || controller == "ide")
        return "ide";
    throw InvalidArgument("VMware: no disk controller '" + printable(controller) +
                          "' (vmware offers " + names_of(profile("vmware").controllers) + ")");
}

} // namespace p2vfs::guest

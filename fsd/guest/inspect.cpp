#include "guest/inspect.h"

#include "common/error.h"
#include "formats/format.h"
#include "guest/profiles.h"
#include "guest/windows.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <set>
#include <spdlog/spdlog.h>
#include <sstream>

namespace p2vfs::guest {

using json = nlohmann::json;

namespace {

constexpr uint64_t initramfs_limit = 1ull << 30; // an initramfs larger than this is not read

std::string lower(std::string s) {
    for (char& c : s)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

std::string trim(const std::string& s) {
    size_t a = 0, b = s.size();
    while (a < b && std::isspace(static_cast<unsigned char>(s[a])))
        ++a;
    while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1])))
        --b;
    return s.substr(a, b - a);
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line))
        out.push_back(line);
    return out;
}

std::vector<std::string> words_of(const std::string& line) {
    std::vector<std::string> out;
    std::istringstream in(line);
    std::string w;
    while (in >> w)
        out.push_back(w);
    return out;
}

bool starts_with(const std::string& s, const std::string& p) {
    return s.compare(0, p.size(), p) == 0;
}

bool ends_with(const std::string& s, const std::string& p) {
    return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

// os-release: KEY=value, the value optionally quoted.
std::map<std::string, std::string> parse_os_release(const std::string& text) {
    std::map<std::string, std::string> out;
    for (const std::string& raw : lines_of(text)) {
        const std::string line = trim(raw);
        if (line.empty() || line[0] == '#')
            continue;
        const auto eq = line.find('=');
        if (eq == std::string::npos)
            continue;
        std::string v = line.substr(eq + 1);
        if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'') && v.back() == v.front())
            v = v.substr(1, v.size() - 2);
        out[line.substr(0, eq)] = v;
    }
    return out;
}

std::vector<FstabEntry> parse_fstab(const std::string& text) {
    std::vector<FstabEntry> out;
    unsigned n = 0;
    for (const std::string& line : lines_of(text)) {
        ++n;
        const auto w = words_of(line);
        if (w.empty() || w[0][0] == '#' || w.size() < 2)
            continue;
        out.push_back({w[0], w[1], w.size() > 2 ? w[2] : "", w.size() > 3 ? w[3] : "", n});
    }
    return out;
}

// "6.1.0-28-amd64" against "6.1.0-9-amd64": numbers compared as numbers.
bool version_less(const std::string& a, const std::string& b) {
    size_t i = 0, j = 0;
    while (i < a.size() && j < b.size()) {
        if (std::isdigit(static_cast<unsigned char>(a[i])) &&
            std::isdigit(static_cast<unsigned char>(b[j]))) {
            size_t i2 = i, j2 = j;
            while (i2 < a.size() && std::isdigit(static_cast<unsigned char>(a[i2])))
                ++i2;
            while (j2 < b.size() && std::isdigit(static_cast<unsigned char>(b[j2])))
                ++j2;
            const std::string na = a.substr(i, i2 - i), nb = b.substr(j, j2 - j);
            const std::string za = na.substr(std::min(na.find_first_not_of('0'), na.size()));
            const std::string zb = nb.substr(std::min(nb.find_first_not_of('0'), nb.size()));
            if (za.size() != zb.size())
                return za.size() < zb.size();
            if (za != zb)
                return za < zb;
            i = i2;
            j = j2;
        } else {
            if (a[i] != b[j])
                return a[i] < b[j];
            ++i;
            ++j;
        }
    }
    return a.size() - i < b.size() - j;
}

// The arguments of the kernel lines of a GRUB configuration ("linux PATH ARGS").
std::vector<std::string> grub_kernel_args(const std::string& cfg) {
    std::vector<std::string> out;
    for (const std::string& line : lines_of(cfg)) {
        const auto w = words_of(line);
        if (w.size() < 2 || (w[0] != "linux" && w[0] != "linux16" && w[0] != "linuxefi"))
            continue;
        std::string args;
        for (size_t i = 2; i < w.size(); ++i)
            args += (args.empty() ? "" : " ") + w[i];
        out.push_back(args);
    }
    return out;
}

std::vector<std::string> extlinux_kernel_args(const std::string& cfg) {
    std::vector<std::string> out;
    for (const std::string& line : lines_of(cfg)) {
        const std::string t = trim(line);
        if (lower(t.substr(0, 7)) == "append ")
            out.push_back(trim(t.substr(7)));
    }
    return out;
}

void add(Inventory& inv, std::string id, std::string severity, std::string message) {
    inv.findings.push_back({std::move(id), std::move(severity), std::move(message)});
}

std::string volume_name(const Volume& v) {
    return v.partition ? "partition " + std::to_string(v.partition) : "the whole disk";
}

// Reads the Linux system whose root is `root`.
void inspect_linux(const DevicePtr& disk, Inventory& inv, const Volume& root_volume, ExtFs& root,
                   const InspectOptions& options) {
    LinuxGuest g;
    g.root_partition = root_volume.partition;
    auto os_release = root.read_file_if_exists("/etc/os-release");
    if (!os_release)
        os_release = root.read_file_if_exists("/usr/lib/os-release");
    if (os_release) {
        const auto kv = parse_os_release(*os_release);
        auto get = [&](const char* k) {
            const auto it = kv.find(k);
            return it == kv.end() ? std::string() : it->second;
        };
        g.distribution = get("ID");
        g.version = get("VERSION_ID");
        g.pretty_name = get("PRETTY_NAME");
    }
    if (auto h = root.read_file_if_exists("/etc/hostname", 4096))
        g.hostname = trim(*h);
    if (auto f = root.read_file_if_exists("/etc/fstab"))
        g.fstab = parse_fstab(*f);
    for (auto& v : inv.volumes) {
        if (&v == &root_volume)
            v.mounted_at = "/";
    }
    for (const FstabEntry& e : g.fstab) {
        if (const Volume* v = volume_for_spec(inv, e.spec)) {
            for (auto& vol : inv.volumes)
                if (&vol == v && vol.mounted_at.empty())
                    vol.mounted_at = e.type == "swap" ? "swap" : e.mount_point;
        }
    }
    if (auto st = root.stat("/sbin/init", false); st && st->is_link()) {
        const std::string target = root.read_link("/sbin/init");
        g.init_system = target.find("systemd") != std::string::npos ? "systemd" : "other";
    } else if (root.stat("/lib/systemd/systemd") || root.stat("/usr/lib/systemd/systemd")) {
        g.init_system = "systemd";
    } else if (root.stat("/sbin/init")) {
        g.init_system = "sysvinit";
    }
    if (root.stat("/usr/sbin/update-initramfs"))
        g.initramfs_tool = "initramfs-tools";
    else if (root.stat("/usr/bin/dracut") || root.stat("/sbin/dracut"))
        g.initramfs_tool = "dracut";

    // Kernels and bootloader live under /boot, which may be its own volume.
    std::unique_ptr<ExtFs> boot_fs;
    ExtFs* boot = &root;
    std::string boot_prefix = "/boot";
    for (const FstabEntry& e : g.fstab) {
        if (e.mount_point != "/boot")
            continue;
        const Volume* v = volume_for_spec(inv, e.spec);
        if (!v) {
            add(inv, "boot-volume-missing", "warning",
                "/etc/fstab line " + std::to_string(e.line) + " mounts /boot from '" + e.spec +
                    "', which names no volume of this disk");
            break;
        }
        if (!v->fs || (v->fs->type != "ext2" && v->fs->type != "ext3" && v->fs->type != "ext4")) {
            add(inv, "unsupported-filesystem", "warning",
                "/boot is on " + volume_name(*v) + " (" + (v->fs ? v->fs->type : "unknown") +
                    "), which is not read: kernels and bootloader are not inspected");
            boot = nullptr;
            break;
        }
        try {
            boot_fs = std::make_unique<ExtFs>(disk, v->offset, v->length, false, volume_name(*v));
            boot = boot_fs.get();
            boot_prefix = "";
        } catch (const Error& err) {
            add(inv, "filesystem-unreadable", "warning", err.what());
            boot = nullptr;
        }
        break;
    }
    if (boot) {
        const std::string dir = boot_prefix.empty() ? "/" : boot_prefix;
        const auto names = boot->list(dir);
        for (const std::string& n : names) {
            if (!starts_with(n, "vmlinuz-") && !starts_with(n, "vmlinux-"))
                continue;
            Kernel k;
            k.version = n.substr(8);
            k.image = "/boot/" + n;
            for (const std::string& cand : {"initrd.img-" + k.version, "initramfs-" + k.version + ".img",
                                            "initrd-" + k.version}) {
                if (std::find(names.begin(), names.end(), cand) != names.end()) {
                    k.initramfs = "/boot/" + cand;
                    try {
                        const std::string image =
                            boot->read_file(boot_prefix + "/" + cand, initramfs_limit);
                        k.initramfs_contents = read_initramfs(image);
                    } catch (const Error& e) {
                        k.initramfs_contents.problems.push_back(e.what());
                    }
                    break;
                }
            }
            for (const std::string& m : k.initramfs_contents.modules) {
                if (is_storage_module(m))
                    k.storage_modules.push_back(m);
                if (is_network_module(m))
                    k.network_modules.push_back(m);
            }
            k.modules_dir = root.stat("/lib/modules/" + k.version).has_value() ||
                            root.stat("/usr/lib/modules/" + k.version).has_value();
            g.kernels.push_back(std::move(k));
        }
        std::sort(g.kernels.begin(), g.kernels.end(),
                  [](const Kernel& a, const Kernel& b) { return version_less(b.version, a.version); });

        g.bootloader.type = "none";
        for (const char* cfg : {"/grub/grub.cfg", "/grub2/grub.cfg"}) {
            if (auto text = boot->read_file_if_exists(boot_prefix + cfg, 8 << 20)) {
                g.bootloader.type = "grub2";
                g.bootloader.config = "/boot" + std::string(cfg);
                g.bootloader.kernel_args = grub_kernel_args(*text);
                break;
            }
        }
        if (g.bootloader.type == "none") {
            for (const char* cfg :
                 {"/extlinux/extlinux.conf", "/extlinux.conf", "/syslinux/syslinux.cfg"}) {
                if (auto text = boot->read_file_if_exists(boot_prefix + cfg, 1 << 20)) {
                    g.bootloader.type = "extlinux";
                    g.bootloader.config = "/boot" + std::string(cfg);
                    g.bootloader.kernel_args = extlinux_kernel_args(*text);
                    break;
                }
            }
        }
        // GRUB's boot.img carries the text "GRUB " in the MBR's boot code.
        unsigned char mbr[440];
        if (disk->size() >= 512) {
            disk->read(mbr, sizeof mbr, 0);
            const std::string code(reinterpret_cast<const char*>(mbr), sizeof mbr);
            if (g.bootloader.type == "grub2")
                g.bootloader.in_mbr = code.find("GRUB ") != std::string::npos;
            else if (g.bootloader.type == "extlinux")
                g.bootloader.in_mbr = code.find_first_not_of('\0') != std::string::npos &&
                                      code.find("GRUB ") == std::string::npos;
        }
    }

    for (const std::string& n : root.list("/etc/udev/rules.d"))
        if (n.find("persistent-net") != std::string::npos && ends_with(n, ".rules"))
            g.persistent_net_rules.push_back("/etc/udev/rules.d/" + n);

    std::set<std::string> agents;
    for (const std::string& d : root.list("/etc/systemd/system")) {
        if (!ends_with(d, ".wants"))
            continue;
        for (const std::string& unit : root.list("/etc/systemd/system/" + d))
            for (const std::string& a : options.vendor_agents)
                if (unit == a + ".service")
                    agents.insert(a);
    }
    for (const char* rc : {"/etc/rc2.d", "/etc/rc3.d", "/etc/rc5.d"})
        for (const std::string& link : root.list(rc))
            if (link.size() > 3 && link[0] == 'S')
                for (const std::string& a : options.vendor_agents)
                    if (link.substr(3) == a)
                        agents.insert(a);
    g.vendor_agents.assign(agents.begin(), agents.end());

    // Findings.
    if (g.kernels.empty())
        add(inv, "no-kernel", "blocker", "no kernel (vmlinuz-*) in /boot");
    for (const Kernel& k : g.kernels) {
        if (k.initramfs.empty())
            add(inv, "no-initramfs", "warning", "kernel " + k.version + " has no initramfs in /boot");
        for (const std::string& p : k.initramfs_contents.problems)
            add(inv, "initramfs-unreadable", "warning", k.initramfs + ": " + p);
    }
    if (!g.kernels.empty() && !g.kernels.front().initramfs.empty()) {
        const Kernel& k = g.kernels.front();
        std::vector<std::string> available = k.initramfs_contents.modules;
        available.insert(available.end(), k.initramfs_contents.builtin.begin(),
                         k.initramfs_contents.builtin.end());
        for (const Profile& p : profiles()) {
            if (!choose_controller(p, available)) {
                std::string offered;
                for (const Controller& c : p.controllers)
                    offered += (offered.empty() ? "" : ", ") + c.name;
                add(inv, "no-storage-driver", "blocker",
                    "the initramfs of kernel " + k.version + " (" + k.initramfs +
                        ") has a driver for none of the disk controllers " + p.name +
                        " offers (" + offered + "); the fixups' firstboot rebuild cannot run "
                        "before the root file system is found");
            }
        }
    }
    std::vector<std::string> by_controller;
    for (const FstabEntry& e : g.fstab)
        if (partition_of_device_name(e.spec))
            by_controller.push_back("/etc/fstab line " + std::to_string(e.line) + " (" + e.spec +
                                    " on " + e.mount_point + ")");
    for (size_t i = 0; i < g.bootloader.kernel_args.size(); ++i)
        for (const std::string& w : words_of(g.bootloader.kernel_args[i]))
            for (const char* key : {"root=", "resume="})
                if (starts_with(w, key) && partition_of_device_name(w.substr(std::string(key).size())))
                    by_controller.push_back(g.bootloader.config + " entry " + std::to_string(i + 1) +
                                            " (" + w + ")");
    if (!by_controller.empty()) {
        std::string list;
        for (const auto& s : by_controller)
            list += (list.empty() ? "" : "; ") + s;
        add(inv, "disk-names-by-controller", "warning",
            "the guest names disks by their physical controller, which virtual hardware does "
            "not have: " + list + " (the fixups rewrite them to UUID=)");
    }
    if (!g.persistent_net_rules.empty())
        add(inv, "persistent-net-rules", "warning",
            "udev rules tie network names to the physical machine's MAC addresses (" +
                g.persistent_net_rules.front() + "); the fixups remove them");
    for (const std::string& a : g.vendor_agents)
        add(inv, "vendor-agent", "warning",
            "hardware vendor agent '" + a + "' is enabled; it expects the physical hardware "
            "(the fixups disable it)");
    if (root.needs_recovery())
        add(inv, "journal-needs-recovery", "blocker",
            root.where() + ": the ext4 journal needs recovery (not shut down cleanly, or the "
            "source is running): what is read may be stale and fixups cannot be written");
    if (g.bootloader.type == "none")
        add(inv, "no-bootloader", "blocker", "no GRUB or extlinux configuration under /boot");
    inv.linux_guest = std::move(g);
}

bool is_ext(const Volume& v) {
    return v.fs && v.fs->error.empty() &&
           (v.fs->type == "ext2" || v.fs->type == "ext3" || v.fs->type == "ext4");
}

} // namespace

std::vector<std::string> InspectOptions::default_vendor_agents() {
    // HPE (Proliant agents, AMS, SMH), Dell (OpenManage), Lenovo/IBM, Fujitsu.
    return {"hp-health",       "hp-snmp-agents", "hpsmhd",      "hp-ams",     "amsd",
            "ahslog",          "smad",           "cpqiScsi",    "dataeng",    "dsm_om_connsvc",
            "dsm_sa_datamgrd", "instsvcdrv",     "dsm_sa_eventmgrd", "ibmasm", "srvadmin-services",
            "ServerView",      "sraidmon"};
}

bool is_storage_module(const std::string& m) {
    static const std::set<std::string> names{
        "ahci",       "ata_piix",   "ata_generic", "sd_mod",       "virtio_blk",   "virtio_scsi",
        "virtio_pci", "vmw_pvscsi", "mptspi",      "mptsas",       "mptbase",      "mptscsih",
        "mpt3sas",    "megaraid_sas", "hpsa",      "cciss",        "smartpqi",     "aacraid",
        "hv_storvsc", "nvme",       "nvme_core",   "xen_blkfront", "BusLogic",     "libata",
        "libahci",    "scsi_mod",   "isci",        "mvsas",        "qla2xxx",      "lpfc",
        "sym53c8xx",  "3w_9xxx",    "arcmsr",      "pmcraid",      "mptfc"};
    return names.count(m) || starts_with(m, "pata_") || starts_with(m, "sata_");
}

bool is_network_module(const std::string& m) {
    static const std::set<std::string> names{
        "virtio_net", "e1000",  "e1000e", "vmxnet3", "hv_netvsc", "igb",      "ixgbe", "i40e",
        "ice",        "tg3",    "bnx2",   "bnx2x",   "r8169",     "xen_netfront", "be2net",
        "mlx4_en",    "mlx5_core", "enic", "qlcnic", "e100",      "8139cp",   "8139too", "pcnet32",
        "ne2k_pci",   "netxen_nic", "cxgb4", "sfc",  "atl1c",     "forcedeth", "sky2", "bnxt_en"};
    return names.count(m) > 0;
}

std::optional<unsigned> partition_of_device_name(const std::string& name) {
    // by-id and by-path names carry the controller or the disk's serial
    // number: "-partN" at the end gives the partition.
    if (starts_with(name, "/dev/disk/by-id/") || starts_with(name, "/dev/disk/by-path/")) {
        const auto p = name.rfind("-part");
        if (p == std::string::npos)
            return std::nullopt;
        const std::string digits = name.substr(p + 5);
        if (digits.empty() || digits.size() > 3 ||
            digits.find_first_not_of("0123456789") != std::string::npos)
            return std::nullopt;
        return static_cast<unsigned>(std::stoul(digits));
    }
    // The first disk of each controller family, then the partition number
    // (after a "p" where the disk name ends in a digit).
    static const std::vector<std::pair<std::string, bool>> disks{
        {"/dev/sda", false},        {"/dev/hda", false},        {"/dev/vda", false},
        {"/dev/xvda", false},       {"/dev/cciss/c0d0", true},  {"/dev/ida/c0d0", true},
        {"/dev/rd/c0d0", true},     {"/dev/nvme0n1", true},     {"/dev/mmcblk0", true}};
    for (const auto& [disk, needs_p] : disks) {
        if (!starts_with(name, disk))
            continue;
        std::string rest = name.substr(disk.size());
        if (needs_p) {
            if (rest.empty() || rest[0] != 'p')
                return std::nullopt;
            rest = rest.substr(1);
        }
        if (rest.empty() || rest.size() > 3 || rest.find_first_not_of("0123456789") != std::string::npos ||
            rest[0] == '0')
            return std::nullopt;
        return static_cast<unsigned>(std::stoul(rest));
    }
    return std::nullopt;
}

const Volume* volume_for_spec(const Inventory& inv, const std::string& spec) {
    auto by = [&](auto pred) -> const Volume* {
        for (const Volume& v : inv.volumes)
            if (pred(v))
                return &v;
        return nullptr;
    };
    auto value_after = [&](const std::string& prefix) { return spec.substr(prefix.size()); };
    for (const std::string& p : {std::string("UUID="), std::string("/dev/disk/by-uuid/")})
        if (starts_with(spec, p)) {
            const std::string u = lower(value_after(p));
            return by([&](const Volume& v) { return v.fs && lower(v.fs->uuid) == u; });
        }
    for (const std::string& p : {std::string("LABEL="), std::string("/dev/disk/by-label/")})
        if (starts_with(spec, p)) {
            const std::string l = value_after(p);
            return by([&](const Volume& v) { return v.fs && v.fs->label == l; });
        }
    for (const std::string& p : {std::string("PARTUUID="), std::string("/dev/disk/by-partuuid/")})
        if (starts_with(spec, p)) {
            const std::string u = lower(value_after(p));
            return by([&](const Volume& v) {
                for (const Partition& part : inv.table.partitions)
                    if (part.number == v.partition && !part.guid.empty() && lower(part.guid) == u)
                        return true;
                return false;
            });
        }
    if (const auto n = partition_of_device_name(spec))
        return by([&](const Volume& v) { return v.partition == *n; });
    return nullptr;
}

Inventory inspect(const DevicePtr& disk, const InspectOptions& options) {
    Inventory inv;
    inv.disk = disk->name();
    inv.size = disk->size();
    inv.os = "unknown";
    inv.firmware = "unknown";
    try {
        inv.table = read_partition_table(*disk);
    } catch (const InspectError& e) {
        inv.table.scheme = "unreadable";
        add(inv, "partition-table-unreadable", "blocker", e.what());
    }
    for (const std::string& p : inv.table.problems)
        add(inv, "partition-table", "warning", p);

    if (inv.table.scheme == "none" || inv.table.scheme == "unreadable") {
        inv.volumes.push_back({0, 0, disk->size(), std::nullopt, {}});
    } else {
        for (const Partition& p : inv.table.partitions) {
            if (p.extended)
                continue;
            // A partition past the end is listed clamped by the parser.
            inv.volumes.push_back({p.number, p.offset, p.length, std::nullopt, {}});
            const std::string t = lower(p.type);
            if (t == "0x42" || t == "5808c8aa-7e8f-42e0-85d2-e1e90434cfb3" ||
                t == "af9b60a0-1431-4f62-bc68-3311714a69ad")
                add(inv, "dynamic-disk", "blocker",
                    "partition " + std::to_string(p.number) + " is part of a Windows dynamic disk "
                    "(LDM); hypervisors boot only basic disks — convert it to basic first");
            if (t == "c12a7328-f81f-11d2-ba4b-00a0c93ec93b" || t == "0xef")
                inv.firmware = "uefi";
        }
        if (inv.firmware == "unknown")
            inv.firmware = "bios";
    }
    for (Volume& v : inv.volumes) {
        try {
            v.fs = probe_filesystem(*disk, v.offset, v.length);
        } catch (const Error& e) {
            add(inv, "volume-unreadable", "warning", volume_name(v) + ": " + e.what());
            continue;
        }
        if (!v.fs)
            continue;
        if (!v.fs->error.empty())
            add(inv, "filesystem-damaged", "warning", volume_name(v) + ": " + v.fs->error);
        if (v.fs->type == "BitLocker")
            add(inv, "bitlocker", "blocker",
                volume_name(v) + " is encrypted with BitLocker; suspend or decrypt it on the "
                "source (its key is sealed to the physical TPM)");
        if (v.fs->type == "LVM2_member")
            add(inv, "lvm", "warning",
                volume_name(v) + " is an LVM physical volume; the logical volumes in it are "
                "not inspected, and file systems in them get no fixups");
        for (const std::string& f : v.fs->flags)
            if (f.find("hibernat") != std::string::npos)
                add(inv, "hibernated", "blocker",
                    volume_name(v) + " (" + v.fs->type + ") holds a hibernation image; resume "
                    "and shut the machine down properly first, or it resumes into the old hardware");
    }
    for (const Format* f : format_table())
        if (f->max_size && disk->size() > f->max_size)
            add(inv, "over-format-limit", "warning",
                "the disk (" + human_size(disk->size()) + ") is larger than " +
                    std::string(f->label) + " holds (" + human_size(f->max_size) + "): no " +
                    std::string(f->name) + " view");

    // The Linux root: an ext volume with an os-release and an fstab.
    bool linux_found = false;
    for (Volume& v : inv.volumes) {
        if (!is_ext(v))
            continue;
        try {
            ExtFs fs(disk, v.offset, v.length, false, volume_name(v));
            const bool has_os = fs.stat("/etc/os-release").has_value() ||
                                fs.stat("/usr/lib/os-release").has_value();
            if (!has_os || !fs.stat("/etc/fstab"))
                continue;
            inspect_linux(disk, inv, v, fs, options);
            inv.os = "linux";
            linux_found = true;
            break;
        } catch (const Error& e) {
            add(inv, "filesystem-unreadable", "warning", e.what());
        }
    }
    if (!linux_found) {
        bool ntfs = false;
        for (const Volume& v : inv.volumes) {
            if (!v.fs)
                continue;
            if (v.fs->type == "ntfs")
                ntfs = true;
            if (v.fs->type == "xfs" || v.fs->type == "btrfs")
                add(inv, "unsupported-filesystem", "warning",
                    volume_name(v) + " holds " + v.fs->type + ", which is not read: a guest "
                    "whose root is there is not inspected, and gets no fixups");
        }
        if (ntfs) {
            inv.os = "windows";
            inspect_windows(disk, inv);
        }
    }
    return inv;
}

GuestTree::GuestTree(const DevicePtr& disk, const Inventory& inv, bool writable) {
    if (!inv.linux_guest)
        throw Error("no Linux system was found on " + inv.disk, ENOENT);
    const LinuxGuest& g = *inv.linux_guest;
    const Volume* root = nullptr;
    for (const Volume& v : inv.volumes)
        if (v.partition == g.root_partition)
            root = &v;
    if (!root)
        throw Error("the Linux root volume is gone from the inventory");
    auto name = [](const Volume& v) { return volume_name(v); };
    root_ = std::make_unique<ExtFs>(disk, root->offset, root->length, writable, name(*root));
    for (const FstabEntry& e : g.fstab) {
        if (e.mount_point != "/boot")
            continue;
        if (const Volume* v = volume_for_spec(inv, e.spec); v && v != root)
            boot_ = std::make_unique<ExtFs>(disk, v->offset, v->length, writable, name(*v));
    }
}

std::pair<ExtFs*, std::string> GuestTree::locate(const std::string& path) {
    if (boot_ && (path == "/boot" || starts_with(path, "/boot/")))
        return {boot_.get(), path.size() == 5 ? "/" : path.substr(5)};
    return {root_.get(), path};
}

std::optional<std::string> GuestTree::read_if_exists(const std::string& path, uint64_t limit) {
    auto [fs, inner] = locate(path);
    return fs->read_file_if_exists(inner, limit);
}

std::optional<ExtStat> GuestTree::stat(const std::string& path, bool follow) {
    auto [fs, inner] = locate(path);
    return fs->stat(inner, follow);
}

std::vector<std::string> GuestTree::list(const std::string& dir) {
    auto [fs, inner] = locate(dir);
    return fs->list(inner);
}

void GuestTree::close() {
    if (boot_)
        boot_->close();
    root_->close();
}

// ---- output -----------------------------------------------------------------

json to_json(const Inventory& inv) {
    json parts = json::array();
    for (const Partition& p : inv.table.partitions) {
        json j = {{"number", p.number}, {"offset", p.offset},  {"length", p.length},
                  {"type", p.type},     {"type_name", p.type_name}, {"bootable", p.bootable},
                  {"logical", p.logical}, {"extended", p.extended}};
        if (!p.guid.empty())
            j["guid"] = p.guid;
        if (!p.label.empty())
            j["label"] = p.label;
        parts.push_back(j);
    }
    json table = {{"scheme", inv.table.scheme},
                  {"sector_size", inv.table.sector_size},
                  {"disk_id", inv.table.disk_id},
                  {"partitions", parts},
                  {"problems", inv.table.problems}};
    if (inv.table.scheme == "gpt")
        table["gpt_header_used"] = inv.table.gpt_header_used;
    json volumes = json::array();
    for (const Volume& v : inv.volumes) {
        json j = {{"partition", v.partition}, {"offset", v.offset}, {"length", v.length}};
        if (v.fs) {
            j["filesystem"] = {{"type", v.fs->type},   {"version", v.fs->version},
                               {"uuid", v.fs->uuid},   {"label", v.fs->label},
                               {"block_size", v.fs->block_size}, {"size", v.fs->size},
                               {"flags", v.fs->flags}};
            if (!v.fs->error.empty())
                j["filesystem"]["error"] = v.fs->error;
        } else {
            j["filesystem"] = nullptr;
        }
        if (!v.mounted_at.empty())
            j["mounted_at"] = v.mounted_at;
        volumes.push_back(j);
    }
    json out = {{"disk", inv.disk},     {"size", inv.size},         {"partition_table", table},
                {"volumes", volumes}, {"firmware", inv.firmware}, {"os", inv.os}};
    if (inv.linux_guest) {
        const LinuxGuest& g = *inv.linux_guest;
        json fstab = json::array();
        for (const FstabEntry& e : g.fstab)
            fstab.push_back({{"spec", e.spec}, {"mount_point", e.mount_point}, {"type", e.type},
                             {"options", e.options}, {"line", e.line}});
        json kernels = json::array();
        for (const Kernel& k : g.kernels)
            kernels.push_back({{"version", k.version},
                               {"image", k.image},
                               {"initramfs", k.initramfs},
                               {"initramfs_compression", k.initramfs_contents.compressions},
                               {"initramfs_modules", k.initramfs_contents.modules.size()},
                               {"storage_modules", k.storage_modules},
                               {"network_modules", k.network_modules},
                               {"builtin_modules", k.initramfs_contents.builtin.size()},
                               {"modules_directory", k.modules_dir}});
        out["linux"] = {{"root_partition", g.root_partition},
                        {"distribution", g.distribution},
                        {"version", g.version},
                        {"pretty_name", g.pretty_name},
                        {"hostname", g.hostname},
                        {"init_system", g.init_system},
                        {"initramfs_tool", g.initramfs_tool},
                        {"fstab", fstab},
                        {"kernels", kernels},
                        {"bootloader",
                         {{"type", g.bootloader.type},
                          {"config", g.bootloader.config},
                          {"in_mbr", g.bootloader.in_mbr},
                          {"kernel_args", g.bootloader.kernel_args}}},
                        {"persistent_net_rules", g.persistent_net_rules},
                        {"vendor_agents", g.vendor_agents}};
        // Which controller each profile would give the machine.
        json targets = json::object();
        if (!g.kernels.empty()) {
            const Kernel& k = g.kernels.front();
            std::vector<std::string> available = k.initramfs_contents.modules;
            available.insert(available.end(), k.initramfs_contents.builtin.begin(),
                             k.initramfs_contents.builtin.end());
            for (const Profile& p : profiles()) {
                const Controller* c = choose_controller(p, available);
                targets[p.name] = c ? json(c->name) : json(nullptr);
            }
        }
        out["linux"]["target_controllers"] = targets;
    }
    if (inv.windows_guest) {
        const WindowsGuest& w = *inv.windows_guest;
        const auto services = [](const std::vector<WindowsService>& list, bool drivers) {
            json a = json::array();
            for (const WindowsService& sv : list) {
                json e = {{"name", sv.name}, {"start", sv.start}};
                if (drivers) {
                    e["group"] = sv.group;
                    e["file"] = sv.file;
                }
                a.push_back(e);
            }
            return a;
        };
        json letters = json::array();
        for (const DriveLetter& d : w.drive_letters)
            letters.push_back({{"letter", d.letter}, {"target", d.target}});
        out["windows"] = {{"system_partition", w.system_partition},
                          {"product_name", w.product_name},
                          {"edition_id", w.edition_id},
                          {"installation_type", w.installation_type},
                          {"current_version", w.current_version},
                          {"current_build", w.current_build},
                          {"display_version", w.display_version},
                          {"version", w.version},
                          {"system_root", w.system_root},
                          {"architecture", w.architecture},
                          {"control_set", w.control_set},
                          {"boot_mode", w.boot_mode},
                          {"boot_partition", w.boot_partition},
                          {"bcd_partition", w.bcd_partition},
                          {"bcd_path", w.bcd_path},
                          {"hostname", w.hostname},
                          {"hiberfil", w.hiberfil},
                          {"hibernation_enabled", w.hibernation_enabled},
                          {"hibernated", w.hibernated},
                          {"fast_startup", w.fast_startup},
                          {"storage_drivers", services(w.storage_drivers, true)},
                          {"hypervisor_tools", services(w.hypervisor_tools, false)},
                          {"vendor_agents", services(w.vendor_agents, false)},
                          {"bitlocker_partitions", w.bitlocker_partitions},
                          {"dynamic_disk", w.dynamic_disk},
                          {"drive_letters", letters}};
    }
    json findings = json::array();
    for (const Finding& f : inv.findings)
        findings.push_back({{"id", f.id}, {"severity", f.severity}, {"message", f.message}});
    out["findings"] = findings;
    return out;
}

std::string report_text(const Inventory& inv) {
    std::ostringstream o;
    o << "Disk: " << inv.disk << " (" << human_size(inv.size) << ")\n";
    o << "Partition table: " << inv.table.scheme;
    if (!inv.table.disk_id.empty())
        o << " " << inv.table.disk_id;
    if (inv.table.scheme == "gpt")
        o << " (" << inv.table.gpt_header_used << " header)";
    o << "\nFirmware: " << inv.firmware << "\n\nVolumes:\n";
    for (const Volume& v : inv.volumes) {
        o << "  " << (v.partition ? "partition " + std::to_string(v.partition) : "whole disk")
          << "  at " << hex(v.offset) << ", " << human_size(v.length) << ": ";
        if (v.fs) {
            o << v.fs->type;
            if (!v.fs->uuid.empty())
                o << " UUID=" << v.fs->uuid;
            if (!v.fs->label.empty())
                o << " LABEL=" << v.fs->label;
        } else {
            o << "(nothing recognised)";
        }
        if (!v.mounted_at.empty())
            o << "  [" << v.mounted_at << "]";
        o << "\n";
    }
    o << "\nOperating system: " << inv.os << "\n";
    if (inv.linux_guest) {
        const LinuxGuest& g = *inv.linux_guest;
        o << "  " << (g.pretty_name.empty() ? g.distribution + " " + g.version : g.pretty_name)
          << ", root on partition " << g.root_partition << ", hostname '" << g.hostname << "'\n";
        o << "  bootloader: " << g.bootloader.type;
        if (!g.bootloader.config.empty())
            o << " (" << g.bootloader.config << (g.bootloader.in_mbr ? ", in the MBR" : "") << ")";
        o << "\n";
        for (const Kernel& k : g.kernels) {
            o << "  kernel " << k.version << ": " << k.storage_modules.size()
              << " storage and " << k.network_modules.size() << " network drivers in "
              << (k.initramfs.empty() ? "(no initramfs)" : k.initramfs) << "\n";
        }
    }
    if (inv.windows_guest) {
        const WindowsGuest& w = *inv.windows_guest;
        o << "  " << (w.product_name.empty() ? "Windows" : w.product_name);
        if (!w.current_build.empty())
            o << " (build " << w.current_build << ")";
        o << ", " << (w.system_root.empty() ? "system" : w.system_root) << " on partition "
          << w.system_partition << ", boot " << w.boot_mode << ", hostname '" << w.hostname
          << "'\n";
        o << "  version " << (w.version.empty() ? "unknown" : w.version) << ", "
          << (w.architecture.empty() ? "architecture unknown" : w.architecture) << ", "
          << (w.control_set.empty() ? "no current control set" : w.control_set);
        if (w.bcd_partition)
            o << ", BCD " << w.bcd_path << " on partition " << w.bcd_partition;
        o << "\n";
        const auto names = [](const std::vector<WindowsService>& list) {
            std::string t;
            for (const WindowsService& sv : list)
                t += (t.empty() ? "" : ", ") + sv.name + " (start " + std::to_string(sv.start) + ")";
            return t.empty() ? std::string("none") : t;
        };
        o << "  storage drivers: " << names(w.storage_drivers) << "\n";
        o << "  hypervisor tools: " << names(w.hypervisor_tools) << "\n";
        o << "  vendor agents: " << names(w.vendor_agents) << "\n";
        o << "  hibernation: " << (w.hibernation_enabled ? "enabled" : "disabled")
          << (w.hiberfil ? ", \\hiberfil.sys present" : "")
          << (w.hibernated ? ", HIBERNATED" : "") << "; Fast Startup "
          << (w.fast_startup ? "on" : "off") << "\n";
        for (const DriveLetter& d : w.drive_letters)
            o << "  drive " << d.letter << " -> " << d.target << "\n";
    }
    size_t blockers = 0;
    for (const Finding& f : inv.findings)
        blockers += f.severity == "blocker";
    o << "\nFindings: " << inv.findings.size() << " (" << blockers << " blocking)\n";
    for (const Finding& f : inv.findings)
        o << "  [" << f.severity << "] " << f.id << ": " << f.message << "\n";
    if (inv.findings.empty())
        o << "  none\n";
    return o.str();
}

} // namespace p2vfs::guest

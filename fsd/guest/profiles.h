// Target profiles: the virtual hardware a converted machine gets on KVM,
// VMware or Hyper-V, chosen from what the guest can boot with, and the VM
// description written beside the disk so the machine can be registered at
// once.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace p2vfs::guest {

// A disk controller a target offers, and the Linux modules that drive it.
struct Controller {
    std::string name;                 // "virtio-blk", "virtio-scsi", "sata", "ide", "lsilogic", "pvscsi", "hyperv-scsi", "hyperv-ide"
    std::vector<std::string> modules; // all must be present: {"virtio_blk", "virtio_pci"}
    std::string guest_disk;           // how the guest names the first disk: "/dev/vda", "/dev/sda"
};

struct Profile {
    std::string name;                     // "kvm", "vmware", "hyperv"
    std::string disk_format;              // the view users register: "qcow2", "vmdk", "vhdx"
    std::vector<Controller> controllers;  // in order of preference
};

// The three profiles; profile() throws InvalidArgument naming the known ones.
const std::vector<Profile>& profiles();
const Profile& profile(const std::string& name);

// The first controller of `p` whose modules are all in `available` (the
// modules an initramfs holds, or built in); nullptr if none.
const Controller* choose_controller(const Profile& p, const std::vector<std::string>& available);

struct VmDescription {
    std::string name;            // the machine's name
    std::string os;              // "linux" or "windows"
    std::string os_variant;      // "debian12", "win10"... may be empty
    std::string firmware;        // "bios" or "uefi"
    unsigned memory_mib = 2048;
    unsigned cpus = 2;
    std::string controller;      // a Controller::name
    std::string disk_path;       // path of the disk file (absolute, or relative to the description)
    std::string disk_format;     // "qcow2", "raw", "vmdk", "vhdx"
    uint64_t disk_size = 0;      // bytes
    std::vector<std::string> macs; // network adapters to create (empty: one, MAC left to the hypervisor)
};

// A libvirt domain (kvm), a .vmx (vmware; virtualHW.version and the SCSI
// adapter's virtualDev from the controller), a Hyper-V summary (generation 1
// for bios, 2 for uefi; a PowerShell New-VM line a user can paste).
//
// Each throws InvalidArgument naming the field for what its target cannot
// take: a controller of another profile, firmware other than bios/uefi, os
// other than linux/windows, a disk format the target does not read, a
// relative disk path (libvirt), an IDE disk or a VHD under generation 2
// (Hyper-V), a malformed MAC, text that is not UTF-8. Memory is rounded up
// to what the hypervisor takes (VMware: 4 MiB steps, Hyper-V: 2 MiB).
// Every string is escaped for its format; a domain name loses the '/' and
// control characters libvirt refuses (they become '_').
std::string libvirt_domain_xml(const VmDescription& vm);
std::string vmware_vmx(const VmDescription& vm);
std::string hyperv_summary(const VmDescription& vm);

// The VMDK adapter type ("ide", "lsilogic", "buslogic", "pvscsi"?) the vmware
// profile's disk uses for a controller, as the vmdk view's adapter option
// takes it.
std::string vmdk_adapter_for(const std::string& controller);

} // namespace p2vfs::guest

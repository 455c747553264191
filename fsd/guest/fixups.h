// Linux fixups: the changes a physical machine's system needs to boot on a
// target's virtual hardware, as a plan of named steps of file edits that
// can be previewed (the before and after of every file), applied into the
// overlay's fixups layer, and discarded with that layer.
//
// Steps (each named, so users and tests can refer to them):
//   choose-controller        the target's disk controller, from the drivers
//                            the newest kernel's initramfs holds (no edit)
//   fstab-by-uuid            /etc/fstab entries naming a disk by controller
//                            path (/dev/sda1, /dev/cciss/c0d0p1...) -> UUID=
//   bootloader-by-uuid       root= and resume= of the GRUB / extlinux
//                            entries likewise; /etc/default/grub stops
//                            forcing device names (GRUB_DISABLE_LINUX_UUID)
//   resume-by-uuid           the initramfs' RESUME= setting likewise
//   remove-persistent-net-rules  udev rules that pin names to old MACs
//   disable-vendor-agents    hardware vendors' agents (a configurable list)
//   initramfs-drivers        the controller's modules added to the list the
//                            initramfs tool always includes
//   firstboot-initramfs      a oneshot unit that rebuilds the initramfs on
//                            the first boot on the target, then stays off
//
// Only ext2/3/4 are edited (through libext2fs, in process); a guest whose
// root or /boot is another file system gets a plan that refuses, naming it.
#pragma once

#include "block/block_device.h"
#include "guest/inspect.h"

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

namespace p2vfs::guest {

struct FileEdit {
    std::string path;                  // in the guest
    std::string kind;                  // "file" or "symlink"
    std::optional<std::string> before; // nullopt: absent; a symlink's target for symlinks
    std::optional<std::string> after;  // nullopt: removed
    uint32_t mode = 0644;              // for a file made new
};

struct FixupStep {
    std::string name;
    std::string description; // one sentence: what and why
    std::vector<FileEdit> edits;
};

struct FixupOptions {
    std::string profile = "kvm";
    std::vector<std::string> vendor_agents = InspectOptions::default_vendor_agents();
    bool firstboot_initramfs = true;
};

struct FixupPlan {
    std::string profile;
    std::string controller;   // chosen controller (a Controller::name); empty if none
    std::string guest_disk;   // how the guest will name its disk there ("/dev/vda")
    std::string disk_format;  // the profile's view format
    std::string firmware;
    std::string os_variant;   // "debian12"
    std::vector<FixupStep> steps;
    // Why the plan cannot be applied; empty when it can.
    std::vector<std::string> refusals;

    bool empty() const; // no step edits anything
};

// Plans the fixups of the guest on `disk` (inspected as `inv`) for a target.
// Throws InvalidArgument for an unknown profile.
FixupPlan plan_fixups(const DevicePtr& disk, const Inventory& inv, const FixupOptions& options);

// Writes the plan's edits into `disk`, which must take writes (the overlay
// device whose write layer is the fixups layer), checking first that every
// file is still as the plan saw it. Throws Error naming the refusal, the
// file that changed, or the edit that failed.
void apply_fixups(const DevicePtr& disk, const Inventory& inv, const FixupPlan& plan);

nlohmann::json to_json(const FixupPlan& plan);
// The plan as a person reads it: each step, then each file's changed lines
// ("-" before, "+" after).
std::string preview_text(const FixupPlan& plan);

} // namespace p2vfs::guest

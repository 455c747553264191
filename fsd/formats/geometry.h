// Cylinder/head/sector geometries that virtual disk headers carry.
//
// Nothing modern addresses a disk by CHS, but BIOS-booting guests and some
// hypervisors still read the numbers from the header, so they must follow
// each format's own rules exactly.
#pragma once

#include <cstdint>

namespace p2vfs {

struct Chs {
    uint32_t cylinders;
    uint32_t heads;
    uint32_t sectors_per_track;
    uint64_t total_sectors() const { return uint64_t{cylinders} * heads * sectors_per_track; }
    bool operator==(const Chs&) const = default;
};

// Virtual Hard Disk Image Format Specification (Microsoft, 2006),
// appendix "CHS Calculation": at most 65535 cylinders, 16 heads, 255 sectors.
Chs vhd_geometry(uint64_t total_sectors);

// VMware Virtual Disk Format 5.0, "The Disk DataBase": IDE disks use 16 heads
// and 63 sectors, at most 16383 cylinders; SCSI disks 255 heads, 63 sectors.
Chs vmdk_geometry(uint64_t total_sectors, bool scsi);

} // namespace p2vfs

#include "formats/geometry.h"

#include <algorithm>

namespace p2vfs {

Chs vhd_geometry(uint64_t total_sectors) {
    // The specification's algorithm, step for step.
    uint64_t sectors = std::min<uint64_t>(total_sectors, 65535ULL * 16 * 255);
    uint64_t spt, heads, cyl_times_heads;
    if (sectors >= 65535ULL * 16 * 63) {
        spt = 255;
        heads = 16;
        cyl_times_heads = sectors / spt;
    } else {
        spt = 17;
        cyl_times_heads = sectors / spt;
        heads = (cyl_times_heads + 1023) / 1024;
        if (heads < 4)
            heads = 4;
        if (cyl_times_heads >= heads * 1024 || heads > 16) {
            spt = 31;
            heads = 16;
            cyl_times_heads = sectors / spt;
        }
        if (cyl_times_heads >= heads * 1024) {
            spt = 63;
            heads = 16;
            cyl_times_heads = sectors / spt;
        }
    }
    return {static_cast<uint32_t>(cyl_times_heads / heads), static_cast<uint32_t>(heads),
            static_cast<uint32_t>(spt)};
}

Chs vmdk_geometry(uint64_t total_sectors, bool scsi) {
    const uint32_t heads = scsi ? 255 : 16;
    const uint32_t spt = 63;
    // Whole cylinders (rounded down, as VMware and qemu write them); at least one.
    uint64_t cylinders = total_sectors / (uint64_t{heads} * spt);
    if (!scsi)
        cylinders = std::min<uint64_t>(cylinders, 16383);
    cylinders = std::clamp<uint64_t>(cylinders, 1, 0xffffffffULL);
    return {static_cast<uint32_t>(cylinders), heads, spt};
}

} // namespace p2vfs

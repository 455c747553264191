// Foreign image files as sources: a qcow2, VMDK, VHD, VHDX or VDI image,
// with its backing or snapshot chain, read through a qemu-nbd that this
// process starts on a private unix socket and stops when the source closes.
//
// qemu already reads every one of these formats and their chains correctly;
// serving the image over NBD gives the engine an NbdSource whose allocation
// (block status) flattens the chain lazily: nothing is converted, and
// unallocated clusters stay holes in the views.
//
// qemu-nbd runs read-only (--read-only, so the image and its backing files
// are never written), persistent (our connections may come and go), shared
// by as many connections as the NbdOptions ask for, and dies with us
// (PR_SET_PDEATHSIG) if this process is killed.
#pragma once

#include "block/block_device.h"
#include "nbd-bridge/nbd_source.h"

#include <string>

namespace p2vfs {

// qemu's names: qcow2, vmdk, vpc (VHD), vhdx, vdi.
bool is_image_format(const std::string& name);

// The format of an image file by its magic (qemu's names above), or "raw".
// A file that cannot be read probes as raw: opening it then says why.
std::string probe_image_format(const std::string& path);

// Throws Error naming the image when qemu-nbd is missing or cannot open it
// (its own message included).
DevicePtr open_image_source(const std::string& path, const std::string& format,
                            const NbdOptions& options);

} // namespace p2vfs

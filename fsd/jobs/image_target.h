// A sync job's target: one image file written in guest-disk offsets.
//
// raw is the file itself. The image formats (qcow2, vmdk monolithicSparse,
// vhd dynamic, vhdx dynamic, vdi dynamic) are made with `qemu-img create`
// and written through a qemu-nbd of ours serving the file writable on a
// private unix socket (--discard=unmap --detect-zeroes=unmap, so written
// zeros deallocate), which keeps the format's tables; the Destination's
// workers each have a connection. The qemu-nbd is stopped (SIGTERM, then
// SIGKILL after 5 s) when the Destination is destroyed, which closes the
// image cleanly; it dies with the daemon (PR_SET_PDEATHSIG, which follows
// the thread that opened the target: that thread must outlive it).
//
// An image target's size and every request to it are whole 512-byte sectors
// (qemu's images hold sectors, and its vhdx driver takes nothing finer);
// others are refused with InvalidArgument. A raw target takes any bytes.
#pragma once

#include "jobs/destination.h"

#include <cstdint>
#include <memory>
#include <string>

namespace p2vfs {

// Our format names (raw, qcow2, vmdk, vhd, vhdx, vdi) -> qemu's (vhd: vpc).
// Throws InvalidArgument naming the format and listing the valid ones.
std::string qemu_format_name(const std::string& format);

// Opens `path` (the exact file, e.g. DEST.part) as a target of `size` bytes
// in `format`. `create`: the file is made and reads as zeros (raw: created
// 0600 or truncated in place; an image: an existing file is removed and a
// new one made, then given mode 0600); otherwise it must exist, be of
// `format` (by its magic) and of virtual size `size`: Error naming the file
// and what differs. A symlink at `path` is refused. The file is given owner
// `uid`:`gid` when >= 0. Destination::commit() does nothing (the caller
// renames the file). Throws Error naming the file, with qemu-img's or
// qemu-nbd's own message.
// `work_dir` (a job's directory): qemu-nbd's socket directory goes there
// (`work_dir/qemu-nbd`, one left by a killed daemon replaced), so nothing is
// left elsewhere; "" or a path too long for a socket: a new one in $TMPDIR.
std::unique_ptr<Destination> open_image_target(const std::string& path, const std::string& format,
                                               uint64_t size, unsigned connections, bool create,
                                               int64_t uid = -1, int64_t gid = -1,
                                               const std::string& work_dir = {});

// `qemu-img check` of a closed target (formats that qemu can check: qcow2,
// vmdk, vhdx, vdi; nothing for raw and vhd). Throws Error naming the file
// with qemu-img's findings when it reports errors or leaks.
void check_image_target(const std::string& path, const std::string& format);

} // namespace p2vfs

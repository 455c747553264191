// Where a materialization writes: a regular file or an NBD export.
//
// A file destination DEST is written as DEST.part and only renamed to DEST by
// commit(), so DEST never names a partial copy. An NBD export (any URI
// nbd_connect_uri(3) takes: nbd://, nbds://, nbd+unix://, ...) is written in
// place; each worker has its own connection. Which one a destination is:
// is_nbd_uri() (nbd-bridge/nbd_source.h).
//
// Thread model: write(), write_zeros() and read() are called by many workers
// at once, each passing its own worker index (a file is one descriptor that
// all share with pwrite/pread; an NBD destination has one libnbd handle per
// worker). sync() may run on another thread while they do; it covers every
// write that returned before sync() was called. commit() is called once,
// when no worker is left.
#pragma once

#include "common/file_io.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace p2vfs {

class Destination {
public:
    virtual ~Destination() = default;

    // For messages: the file written ("/srv/vm/pc1.vmdk.part") or the URI.
    virtual std::string name() const = 0;

    // The unit of zero detection: a run of zeros this long (aligned to it)
    // is not written as data. 4 KiB, or the NBD server's minimum block size
    // if larger.
    virtual uint64_t granularity() const = 0;

    // Writes all of buf at `offset`. Throws Error naming the destination, the
    // offset and the reason (ENOSPC keeps its errno).
    virtual void write(unsigned worker, const void* buf, size_t length, uint64_t offset) = 0;

    // Makes [offset, offset+length) read as zeros without writing data: on a
    // file left as a hole (punched when the file may hold bytes of an earlier
    // run; nothing at all in a file this run created), on NBD a write-zeroes
    // request that allows the server to trim.
    virtual void write_zeros(unsigned worker, uint64_t offset, uint64_t length) = 0;

    // Reads back what the destination holds, from its storage rather than a
    // cache where that can be asked for. Throws Error like write().
    virtual void read(unsigned worker, void* buf, size_t length, uint64_t offset) = 0;

    // Makes every write that returned before this call durable: fdatasync,
    // or a flush on every NBD connection.
    virtual void sync() = 0;

    // The copy is complete, synced and verified. A file: closes DEST.part and
    // renames it to DEST (never over an existing DEST), then syncs the
    // directory. NBD: nothing.
    virtual void commit() = 0;

protected:
    // write_zeros() where the storage can neither punch nor zero a range:
    // zeros written as data, a MiB at a time.
    void write_zeros_as_data(unsigned worker, uint64_t offset, uint64_t length);
};

// The name a file destination is written under until it is complete.
std::string partial_path(const std::string& destination);

// The directory of a file destination, opened O_PATH; with `no_symlinks`
// (a copy made for a caller other than root) a symlink anywhere in its path
// is refused. Throws Error naming the destination.
UniqueFd open_destination_directory(const std::string& destination, bool no_symlinks);

// Removes DEST.part (gone already is fine), through that directory.
void remove_partial(const std::string& destination, bool no_symlinks);

// Opens DEST.part for a copy of `size` bytes. `keep_content` false: the file
// is created or truncated, so it reads as one hole; true: reopened as it is
// (resuming). Either way its size is set to `size` up front, and it is
// given owner `uid`:`gid` when those are >= 0. Throws Error naming the file.
std::unique_ptr<Destination> open_file_destination(const std::string& destination, uint64_t size,
                                                   bool keep_content, int64_t uid = -1,
                                                   int64_t gid = -1);

// Connects `connections` times to the NBD export at `uri`. Refuses (Error
// naming the URI) a read-only export or one smaller than `size`.
std::unique_ptr<Destination> open_nbd_destination(const std::string& uri, uint64_t size,
                                                  unsigned connections);

} // namespace p2vfs

// Snapshot sources: a point-in-time copy of a source whose content keeps
// changing (the image file of a running VM), so that views, and the overlays
// stacked on them, show one fixed moment instead of bytes read at different
// times.
//
//   --source pc1=snapshot:/srv/pc1.img         (snapshot:FORMAT:PATH as well)
//
// The snapshot is then opened exactly as a plain path would be: probed for
// an image format, read raw otherwise (open_source.cpp).
//
// Kinds. A SnapshotKind makes one kind of snapshot; the store below keeps
// the records and decides, at each open, whether to keep a snapshot or take
// one. Implemented:
//
//  - reflink: an image file cloned with ioctl(FICLONE) into the snapshot
//    directory. The clone shares the origin's blocks, so it costs no copy and
//    no space until the origin is overwritten; the file system copies on
//    write from then on. Needs btrfs, or xfs made with `mkfs.xfs -m
//    reflink=1`, and the snapshot directory on the origin's file system.
//
// Kinds the same interface is shaped for, not built:
//
//  - LVM (an origin that is a logical volume, on a host with device-mapper
//    and lvm2; not available here: no device-mapper): take = `lvcreate
//    --snapshot --size COW --name NAME VG/LV`. The COW volume must hold
//    every block the origin rewrites while the snapshot lives; a full COW
//    volume invalidates the snapshot, so the size is an option and present()
//    must check `lvs -o snap_percent` (and refuse an invalid one). Thin
//    volumes (`lvcreate -s VG/THIN`) need no size. The snapshot is the block
//    device /dev/VG/NAME, which open_source opens read-only and raw like any
//    block device; the record holds that path, the place's stem is NAME (a
//    deterministic name, so a snapshot left by a crash before its record is
//    found and discarded); discard = `lvremove -y VG/NAME`. The snapshot
//    directory holds only the record.
//  - file-system snapshot: an image file on btrfs -> `btrfs subvolume
//    snapshot -r` of the subvolume holding it; the snapshot is the file at
//    the same relative path inside the new read-only subvolume, which must
//    be on the same file system (so the place is a directory there);
//    discard = `btrfs subvolume delete`. One snapshot then freezes every
//    image of the subvolume at one moment. A block device holding a file
//    system needs device-mapper instead: dm-snapshot (`dmsetup create` with
//    a COW device) or a thin-pool snapshot, as LVM does without its metadata.
//    xfs has no snapshots: a consistent point of several files there is
//    `xfs_freeze -f` (FIFREEZE), a reflink of each, `xfs_freeze -u`.
//
// On disk, in the snapshot directory (made mode 0700 when missing: a
// snapshot is a copy of a whole disk), for an origin whose canonical path is
// /srv/pc1.img:
//
//   pc1.img-<16 hex>.snap       the snapshot (reflink kind), mode 0400; never
//                               written after it is made
//   pc1.img-<16 hex>.meta       its record: "key=value" lines: kind, origin,
//                               origin-device, origin-inode, snapshot,
//                               snapshot-inode, taken, size
//   *.snap.tmp, *.meta.tmp      temporaries of an interrupted take
//
// The 16 hex digits are a hash of the origin's canonical path, so the name
// is readable and still unique per origin.
//
// Crash rules. Taking: clone into STEM.snap.tmp, fsync it, rename it to
// STEM.snap, fsync the directory; then write STEM.meta.tmp, fsync, rename to
// STEM.meta, fsync the directory. The record is the commit point: at open,
// under flock() of the directory (several daemons may share it),
//  - temporaries are removed;
//  - a record whose snapshot is there is KEPT, however old: overlays are
//    stacked on that point in time, so a restart must not move it;
//  - a record whose snapshot is gone means someone deleted the snapshot to
//    get a new one: a new one is taken. (A `refresh` request, not built yet,
//    would do the same: discard the snapshot and its record, take anew.)
//  - a snapshot without a record was made by a take that crashed before its
//    record: nothing ever used it, it is discarded and taken again.
// A snapshot that is there but not as recorded (another size or inode: it
// was replaced or written) is an error, never served.
#pragma once

#include "block/filter_device.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace p2vfs {

// What is being snapshotted, as found at open.
struct SnapshotOrigin {
    std::string path;      // as given on the command line
    std::string canonical; // realpath(): names the snapshot
    uint64_t device = 0;   // st_dev
    uint64_t inode = 0;
    uint64_t size = 0;
    bool regular_file = false;
    bool block_device = false;
};

// One snapshot, as its record persists it.
struct SnapshotRecord {
    std::string kind;   // SnapshotKind::name()
    std::string origin; // canonical path of the origin
    uint64_t origin_device = 0;
    uint64_t origin_inode = 0;
    std::string path; // where the snapshot is opened, absolute
    uint64_t snapshot_inode = 0;
    int64_t taken_ns = 0; // when, in nanoseconds since the epoch (UTC)
    uint64_t size = 0;    // of the snapshot, bytes
    bool kept = false;    // not persisted: kept from an earlier run
};

// Where a kind puts the snapshot of one origin: a directory and a name stem
// unique to that origin, the same at every run.
struct SnapshotPlace {
    std::string dir;
    std::string stem;
};

class SnapshotKind {
public:
    virtual ~SnapshotKind() = default;

    // "reflink"; what records say.
    virtual std::string name() const = 0;

    // Whether this kind can snapshot `origin` at all.
    virtual bool handles(const SnapshotOrigin& origin) const = 0;

    // Makes a snapshot of `origin` at `place`, durable (synced) when this
    // returns, and says what it made. Throws Error naming the origin and
    // the reason when the file system or host cannot do it.
    virtual SnapshotRecord take(const SnapshotOrigin& origin, const SnapshotPlace& place) = 0;

    // True when the snapshot of `record` is there as recorded, false when it
    // is gone; throws Error when it is there but changed.
    virtual bool present(const SnapshotRecord& record) const = 0;

    // Removes whatever take() left at `place`, complete or not.
    virtual void discard(const SnapshotPlace& place) = 0;
};

// Every kind this build has, in the order they are tried.
const std::vector<SnapshotKind*>& snapshot_kinds();

// The snapshot of the file at `origin_path` kept in `dir`: the one an
// earlier run took, or a new one (see the crash rules above). Logs at info
// which of the two happened. Throws Error naming the reason when no
// snapshot can be had: no directory given, the origin missing or a block
// device, the file system unable to reflink or the directory on another one.
SnapshotRecord keep_or_take_snapshot(const std::string& origin_path, const std::string& dir);

// "pc1.img-0123456789abcdef": the name stem of an origin's snapshot.
std::string snapshot_stem(const std::string& canonical_origin);

// The record as its file holds it, and back. parse_snapshot_record throws
// Error naming `where` when a line is missing or malformed. A snapshot in
// `dir` is recorded by its name alone, so the directory can be moved whole.
std::string snapshot_record_text(const SnapshotRecord& record, const std::string& dir);
SnapshotRecord parse_snapshot_record(const std::string& text, const std::string& where,
                                     const std::string& dir);

// "/srv (xfs)": the mount point and file system type holding `path`, for messages.
std::string describe_mount(const std::string& path);

// "2026-11-24T21:31:36Z", or with nanoseconds "2026-11-24T21:31:36.123456789Z".
std::string snapshot_time_text(int64_t ns, bool nanoseconds = false);

// The device a snapshot source serves: the snapshot, opened as a plain path
// would be (raw, or an image through qemu-nbd), under a name that says it is
// a snapshot and an identity of its own, so views of the snapshot never
// share identifiers with views of the live origin.
class SnapshotSource : public FilterDevice {
public:
    // `format`: how the snapshot is read ("raw", "qcow2"...).
    SnapshotSource(DevicePtr snapshot, SnapshotRecord record, std::string format);

    // "snapshot of /srv/pc1.img taken 2026-11-24T21:31:36Z"
    std::string name() const override;
    std::string identity() const override;

    const SnapshotRecord& record() const { return record_; }

private:
    SnapshotRecord record_;
    std::string format_;
};

// Refuses an image whose data is partly in other files that a snapshot does
// not freeze and that, beside the snapshot, may not even be found: a VMDK
// descriptor (its extents) and a qcow2 whose backing file is named relative
// to the image's directory. Checked on the origin before a snapshot is taken
// (so none is left behind for nothing) and on the snapshot, which may have
// been kept from before the origin was fixed. Returns a qcow2's absolute
// backing file: it is served, but read where it is, live.
std::optional<std::string> check_snapshot_image(const std::string& origin, const std::string& image,
                                                const std::string& format);

} // namespace p2vfs

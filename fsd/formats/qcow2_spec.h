// On-disk structures of the QEMU Copy-On-Write format, version 3.
//
// qemu's docs/interop/qcow2.txt: "Header" (version 3 fields through
// header_length), "Header extensions", "Host cluster management" (refcount
// table and blocks) and "Cluster mapping" (L1 and L2 tables). All numbers are
// big-endian.
#pragma once

#include "common/endian.h"

#include <cstdint>

namespace p2vfs::qcow2 {

inline constexpr uint32_t magic = 0x514649fb; // "QFI\xfb"
inline constexpr uint32_t version = 3;
inline constexpr uint32_t header_length = 104; // version 3 header without optional fields

// refcount_bits = 1 << refcount_order: 16-bit refcounts, the order qemu-img
// writes by default and the only one version 2 readers know.
inline constexpr uint32_t refcount_order = 4;
inline constexpr uint64_t refcount_bytes = 2;

// L1 and L2 entry bit 63 ("COPIED"): the table or cluster it points at has a
// refcount of exactly one. qemu-img check reports every entry where this
// disagrees with the refcounts.
inline constexpr uint64_t flag_copied = 1ULL << 63;

// L2 entry bit 0 ("Standard Cluster Descriptor", version 3 only): the guest
// cluster reads as zeros. With host offset 0 it is unallocated, and still
// nothing is read from the backing file.
inline constexpr uint64_t flag_zero = 1;

// "backing_file_size": a backing file name is at most 1023 bytes (no NUL).
inline constexpr uint32_t max_backing_file_name = 1023;

// The cluster sizes offered: 4 KiB to 2 MiB. qemu opens at most 2 MiB
// clusters; under 4 KiB the L1 table of a large disk outgrows qemu's limit.
inline constexpr uint32_t min_cluster_bits = 12;
inline constexpr uint32_t max_cluster_bits = 21;
inline constexpr uint32_t default_cluster_bits = 16; // 64 KiB, qemu-img's default

// qemu's implementation limits ("size" and "Host cluster management"): the
// L1 table at most 32 MiB, the refcount table at most 8 MiB.
inline constexpr uint64_t max_l1_bytes = 32ULL << 20;
inline constexpr uint64_t max_refcount_table_bytes = 8ULL << 20;

struct Header {
    be32 magic;
    be32 version;
    be64 backing_file_offset; // 0: no backing file
    be32 backing_file_size;
    be32 cluster_bits;
    be64 size; // virtual disk size in bytes
    be32 crypt_method;
    be32 l1_size; // entries
    be64 l1_table_offset;
    be64 refcount_table_offset;
    be32 refcount_table_clusters;
    be32 nb_snapshots;
    be64 snapshots_offset;
    // Version 3 from here on.
    be64 incompatible_features;
    be64 compatible_features;
    be64 autoclear_features;
    be32 refcount_order;
    be32 header_length;
};
static_assert(sizeof(Header) == header_length);

// "Header extensions": from header_length on, each a type, the length of its
// data, and the data padded to a multiple of 8 bytes; type 0 ends the list.
inline constexpr uint32_t extension_end = 0x00000000;
inline constexpr uint32_t extension_backing_format = 0xe2792aca; // the name, no NUL
inline constexpr uint64_t extension_alignment = 8;

struct ExtensionHeader {
    be32 type;
    be32 length; // of the data, without padding
};
static_assert(sizeof(ExtensionHeader) == 8);

} // namespace p2vfs::qcow2

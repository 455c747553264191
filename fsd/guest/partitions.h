// Partition tables: MBR (primary, extended and logical partitions) and GPT
// (primary header checked against its backup).
//
// The parser trusts nothing it reads: every table, header and entry is
// range-checked against the disk, and what is wrong is reported by name
// and offset. A table that cannot be read at all throws InspectError; one
// that can be partly read gives what it could and lists the rest in
// `problems` (a partition past the end of the disk, a loop in the chain of
// extended boot records, a GPT primary header that is corrupt while the
// backup is good...).
#pragma once

#include "block/block_device.h"
#include "common/error.h"

#include <cstdint>
#include <string>
#include <vector>

namespace p2vfs::guest {

// What inspection cannot read at all: "GPT at LBA 1: header CRC mismatch
// and the backup at LBA 0x3fffff is unreadable too".
class InspectError : public Error {
public:
    explicit InspectError(const std::string& what) : Error(what, EIO) {}
};

struct Partition {
    unsigned number = 0;       // as Linux names it: 1-4 primary, 5.. logical; GPT entry index + 1
    uint64_t offset = 0;       // bytes from the start of the disk
    // Bytes, never past the end of the disk: a partition the table says
    // reaches further is kept, cut to the disk (0 when it starts past the
    // end), and named in `problems` with its LBA range and the disk's size.
    uint64_t length = 0;
    std::string type;          // MBR: "0x83"; GPT: type GUID, lower case
    // "Linux", "Linux LVM", "EFI System", "Microsoft basic data", "extended"...;
    // empty for a type the parser does not know.
    std::string type_name;
    std::string guid;          // GPT unique partition GUID; empty for MBR
    std::string label;         // GPT partition name (UTF-16LE decoded); empty for MBR
    bool bootable = false;     // MBR active flag; GPT legacy BIOS bootable attribute
    bool logical = false;      // inside an extended partition
    bool extended = false;     // an MBR extended partition container (not a volume)
};

struct PartitionTable {
    std::string scheme;        // "mbr", "gpt" or "none"
    uint32_t sector_size = 512;
    std::string disk_id;       // MBR: "0x1234abcd"; GPT: disk GUID
    // GPT: which header was used ("primary" or "backup"), and the backup's LBA.
    std::string gpt_header_used;
    uint64_t gpt_backup_lba = 0;
    std::vector<Partition> partitions; // in number order; extended containers included
    std::vector<std::string> problems; // each a sentence naming what and where
};

// Reads the partition table of `disk`. Never reads past disk.size().
// `sector_size` is the disk's logical sector size: 512, 1024, 2048 or 4096
// (InvalidArgument otherwise). A sector 0 without the 0x55aa signature, or
// one that is a file system's boot sector rather than a table, gives scheme
// "none". A protective MBR (type 0xee) whose GPT has neither a usable
// primary nor a usable backup header throws InspectError naming both.
PartitionTable read_partition_table(BlockDevice& disk, uint32_t sector_size = 512);

// "7f3c...-..." from 16 bytes in GPT (mixed-endian) order.
std::string guid_text(const unsigned char* bytes);

} // namespace p2vfs::guest

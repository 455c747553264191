// CRC-32C (Castagnoli): the checksum of VHDX headers, region tables and log
// entries (MS-VHDX section 2), of iSCSI (RFC 3720, appendix B.4), ext4 and
// btrfs metadata.
//
// Reflected polynomial 0x82F63B78 (0x1EDC6F41 bit-reversed), initial value
// and final XOR 0xFFFFFFFF: crc32c("123456789") == 0xE3069283. On disk the
// value is stored little-endian.
#pragma once

#include <cstddef>
#include <cstdint>

namespace p2vfs {

// The CRC-32C of data[0..length). Pass the result of a previous call as
// `crc` to continue over more bytes: crc32c(b, nb, crc32c(a, na)) is the
// checksum of a followed by b. The checksum of no bytes is 0.
uint32_t crc32c(const void* data, size_t length, uint32_t crc = 0);

// The same, always by table look-ups (crc32c() uses the CPU's instruction
// where there is one); for tests that compare the two.
uint32_t crc32c_portable(const void* data, size_t length, uint32_t crc = 0);

} // namespace p2vfs

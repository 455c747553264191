// The table of formats. One line per format.
#include "formats/format.h"

namespace p2vfs {

extern const Format raw_format;
extern const Format qcow2_format;
extern const Format vdi_dynamic_format;
extern const Format vhd_dynamic_format;
extern const Format vhd_fixed_format;
extern const Format vhdx_dynamic_format;
extern const Format vhdx_fixed_format;
extern const Format vmdk_sparse_format;
extern const Format vmdk_flat_format;
extern const Format vmdk_stream_format;

const std::vector<const Format*>& format_table() {
    static const std::vector<const Format*> table{
        &raw_format,        &vhd_dynamic_format, &vhd_fixed_format, &vhdx_dynamic_format,
        &vhdx_fixed_format, &vmdk_sparse_format, &vmdk_flat_format, &vmdk_stream_format,
        &qcow2_format,      &vdi_dynamic_format,
    };
    return table;
}

} // namespace p2vfs

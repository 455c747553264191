// Reads an initramfs the way the kernel unpacks it (init/initramfs.c,
// unpack_to_rootfs): zero bytes between archives are skipped; "070701" or
// "070702" at a 4-byte aligned offset starts uncompressed cpio entries; any
// other byte starts a compressed stream whose output is itself a sequence of
// cpio archives. The kernel stops unpacking at the first error, keeping what
// it unpacked before, so this stops there too: the modules listed are the
// ones a boot of this image would have.
//
// Memory: decompressed bytes pass through one buffer per stream into a cpio
// state machine that keeps entry names and skips file contents, except the
// small modules.builtin list it reads.
#include "guest/initramfs.h"

#include "common/error.h"

#include <algorithm>
#include <cstring>
#include <lz4.h>
#include <lz4frame.h>
#include <lzma.h>
#include <memory>
#include <set>
#include <zlib.h>
#include <zstd.h>

namespace p2vfs::guest {
namespace {

constexpr size_t header_size = 110;      // newc/crc header: magic and 13 fields of 8 hex digits
constexpr uint64_t max_name_size = 4096; // PATH_MAX, the kernel's bound (do_header)
constexpr uint64_t max_builtin_list = 16 << 20; // a real modules.builtin is under 100 KiB
constexpr size_t out_chunk = 256 << 10;         // decompressed bytes handed to the parser at a time
constexpr uint64_t lzma_memory_limit = 256 << 20; // xz -9 needs 65 MiB; more is a hostile header

uint64_t align4(uint64_t v) {
    return (v + 3) & ~uint64_t{3};
}

bool starts_with(std::string_view s, std::string_view prefix) {
    return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}
bool ends_with(std::string_view s, std::string_view suffix) {
    return s.size() >= suffix.size() &&
           s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

uint32_t le32(const char* p) {
    const auto* b = reinterpret_cast<const unsigned char*>(p);
    return uint32_t{b[0]} | uint32_t{b[1]} << 8 | uint32_t{b[2]} << 16 | uint32_t{b[3]} << 24;
}

// "41 42 43" — bytes of data that is not what it should be, as a hex dump shows them.
std::string hex_bytes(std::string_view bytes, size_t max = 8) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string s;
    for (size_t i = 0; i < bytes.size() && i < max; ++i) {
        const auto b = static_cast<unsigned char>(bytes[i]);
        if (i)
            s += ' ';
        s += digits[b >> 4];
        s += digits[b & 15];
    }
    return s;
}

// A name from the image, safe to put in a one-line message.
std::string printable(std::string_view name) {
    std::string s;
    for (char c : name) {
        const auto b = static_cast<unsigned char>(c);
        if (b < 0x20 || b == 0x7f) {
            static constexpr char digits[] = "0123456789abcdef";
            s += "\\x";
            s += digits[b >> 4];
            s += digits[b & 15];
        } else {
            s += c;
        }
    }
    return s;
}

// "./lib/modules/..." and "/lib/modules/..." name the same file: cpio keeps
// whatever the archive was made from.
std::string_view relative(std::string_view path) {
    for (;;) {
        if (starts_with(path, "./"))
            path.remove_prefix(2);
        else if (starts_with(path, "/"))
            path.remove_prefix(1);
        else
            return path;
    }
}

// "kernel/drivers/ata/pata-acpi.ko.xz" -> "pata_acpi": the basename without
// the module suffix, with '-' as '_', as modprobe and /sys/module name it.
std::string module_name(std::string_view path) {
    std::string_view base = path.substr(path.find_last_of('/') + 1);
    for (std::string_view suffix : {".ko", ".ko.xz", ".ko.zst", ".ko.gz"}) {
        if (ends_with(base, suffix) && base.size() > suffix.size()) {
            std::string name(base.substr(0, base.size() - suffix.size()));
            std::replace(name.begin(), name.end(), '-', '_');
            return name;
        }
    }
    return {};
}

// lib/modules/VERSION/modules.builtin, or under usr/ (merged-/usr images).
bool is_builtin_list(std::string_view path) {
    if (starts_with(path, "usr/"))
        path.remove_prefix(4);
    constexpr std::string_view dir = "lib/modules/", file = "/modules.builtin";
    if (!starts_with(path, dir))
        return false;
    path.remove_prefix(dir.size());
    if (path.size() <= file.size() || !ends_with(path, file))
        return false;
    const std::string_view version = path.substr(0, path.size() - file.size());
    return version.find('/') == std::string_view::npos;
}

// What the archives hold, over all of them.
struct Findings {
    std::set<std::string> modules;
    std::set<std::string> builtin;
    uint64_t files = 0;
};

// The cpio "newc" (070701) and "crc" (070702) formats as the kernel reads
// them (Documentation/driver-api/early-userspace/buffer-format.rst): a
// 110-byte header of hex fields, the name (NUL included) padded so the
// data starts 4-byte aligned, the data padded to 4 bytes; zero bytes may
// separate entries and archives; "TRAILER!!!" ends an archive.
//
// Fed bytes in pieces of any size. Stops at the first error (error() says
// what and where); `raw` entries, read straight from the image, also stop
// after their TRAILER!!! or before a byte that starts no entry, and hand the
// rest of the image back.
class CpioReader {
public:
    // `room`: how many bytes of cpio data can still come (the rest of the
    // image, or what the output limit leaves), named by `room_name`; an entry
    // claiming more is refused at once rather than skipped through.
    CpioReader(Findings& findings, bool raw, uint64_t room, std::string room_name)
        : findings_(findings), raw_(raw), room_(room), room_name_(std::move(room_name)) {}

    // Consumes from `data`; returns how many bytes were used. Less than
    // `size` only when stopped: an error, or (raw) the end of the entries.
    size_t feed(const char* data, size_t size) {
        size_t i = 0;
        while (i < size && error_.empty() && state_ != State::Ended) {
            switch (state_) {
            case State::Between:
                while (i < size && data[i] == 0) {
                    ++i;
                    ++pos_;
                }
                if (i == size)
                    break;
                if (raw_ && data[i] != '0') {
                    state_ = State::Ended; // not an entry: the image goes on with something else
                    break;
                }
                if (pos_ % 4 != 0) {
                    fail("cpio entry at " + hex(pos_) + ": not 4-byte aligned (broken padding)");
                    break;
                }
                entry_ = pos_;
                header_.clear();
                state_ = State::Header;
                break;
            case State::Header: {
                const size_t n = std::min(size - i, header_size - header_.size());
                header_.append(data + i, n);
                i += n;
                pos_ += n;
                if (header_.size() >= 6 && header_.size() - n < 6 && !check_magic())
                    break;
                if (header_.size() == header_size)
                    parse_header();
                break;
            }
            case State::Name: {
                const size_t n = static_cast<size_t>(std::min<uint64_t>(size - i, left_));
                const size_t keep = static_cast<size_t>(std::min<uint64_t>(
                    n, name_size_ > name_.size() ? name_size_ - name_.size() : 0));
                name_.append(data + i, keep);
                i += n;
                pos_ += n;
                left_ -= n;
                if (left_ == 0)
                    got_name();
                break;
            }
            case State::Data: {
                const size_t n = static_cast<size_t>(std::min<uint64_t>(size - i, left_));
                if (capture_ && list_.size() < file_size_)
                    list_.append(data + i, static_cast<size_t>(
                                               std::min<uint64_t>(n, file_size_ - list_.size())));
                i += n;
                pos_ += n;
                left_ -= n;
                if (left_ == 0)
                    end_entry();
                break;
            }
            case State::Ended:
                break;
            }
        }
        return i;
    }

    // No more data comes. False (and error() set) if it stopped inside an entry.
    bool finish() {
        if (!error_.empty())
            return false;
        switch (state_) {
        case State::Between:
        case State::Ended:
            return true;
        case State::Header:
            fail("cpio entry at " + hex(entry_) + ": the data ends " +
                 std::to_string(header_.size()) + " bytes into its " + std::to_string(header_size) +
                 "-byte header");
            return false;
        case State::Name:
            fail("cpio entry at " + hex(entry_) + ": the data ends inside its name");
            return false;
        case State::Data:
            // The padding after the last entry's data may be missing; the kernel
            // does not need it either.
            if (left_ <= align4(file_size_) - file_size_) {
                end_entry();
                return true;
            }
            fail("cpio entry '" + printable(name_) + "' at " + hex(entry_) + ": the data ends " +
                 hex(file_size_ - (left_ - (align4(file_size_) - file_size_))) +
                 " bytes into its " + hex(file_size_) + " bytes of content");
            return false;
        }
        return true;
    }

    const std::string& error() const { return error_; }
    // Problems that did not stop the reading.
    std::vector<std::string>& notes() { return notes_; }

private:
    enum class State { Between, Header, Name, Data, Ended };

    void fail(std::string what) { error_ = std::move(what); }

    bool check_magic() {
        const std::string_view magic(header_.data(), 6);
        if (magic == "070701" || magic == "070702")
            return true;
        if (magic == "070707")
            fail("cpio entry at " + hex(entry_) +
                 ": old portable format (070707); the kernel reads only newc (070701) and crc "
                 "(070702)");
        else
            fail("cpio entry at " + hex(entry_) + ": no cpio magic (bytes " + hex_bytes(magic) +
                 ")");
        return false;
    }

    // Field `index` (0 = c_ino ... 12 = c_check) of the header.
    bool field(size_t index, const char* name, uint64_t& value) {
        value = 0;
        for (size_t k = 0; k < 8; ++k) {
            const char c = header_[6 + index * 8 + k];
            unsigned digit;
            if (c >= '0' && c <= '9')
                digit = static_cast<unsigned>(c - '0');
            else if (c >= 'a' && c <= 'f')
                digit = static_cast<unsigned>(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F')
                digit = static_cast<unsigned>(c - 'A' + 10);
            else {
                fail("cpio entry at " + hex(entry_) + ": field " + name +
                     " is not hexadecimal (\"" +
                     printable(std::string_view(header_).substr(6 + index * 8, 8)) + "\")");
                return false;
            }
            value = value << 4 | digit;
        }
        return true;
    }

    void parse_header() {
        uint64_t mode = 0;
        if (!field(1, "c_mode", mode) || !field(6, "c_filesize", file_size_) ||
            !field(11, "c_namesize", name_size_))
            return;
        regular_ = (mode & 0170000) == 0100000;
        if (name_size_ == 0) {
            fail("cpio entry at " + hex(entry_) + ": name size is 0");
            return;
        }
        if (name_size_ > max_name_size) {
            fail("cpio entry at " + hex(entry_) + ": name size " + hex(name_size_) +
                 " is over the " + std::to_string(max_name_size) + " bytes of PATH_MAX");
            return;
        }
        // Name and padding, so the data starts 4-byte aligned (the header starts so).
        left_ = align4(header_size + name_size_) - header_size;
        if (pos_ + left_ + file_size_ > room_) {
            fail("cpio entry at " + hex(entry_) + ": claims " + hex(file_size_) +
                 " bytes of content, past " + room_name_);
            return;
        }
        name_.clear();
        state_ = State::Name;
    }

    void got_name() {
        name_.resize(std::min(name_.size(), name_.find('\0')));
        trailer_ = name_ == "TRAILER!!!";
        capture_ = false;
        if (!trailer_) {
            ++findings_.files;
            const std::string_view path = relative(name_);
            if (regular_) {
                const std::string module = module_name(path);
                if (!module.empty())
                    findings_.modules.insert(module);
                if (is_builtin_list(path)) {
                    if (file_size_ <= max_builtin_list) {
                        capture_ = true;
                        list_.clear();
                    } else {
                        notes_.push_back("cpio entry '" + printable(name_) + "' at " + hex(entry_) +
                                         ": " + hex(file_size_) + " bytes, over the " +
                                         human_size(max_builtin_list) +
                                         " a list of built-in modules can be; not read");
                    }
                }
            }
        }
        left_ = align4(file_size_);
        state_ = State::Data;
        if (left_ == 0)
            end_entry();
    }

    void end_entry() {
        if (capture_) {
            std::string_view rest(list_);
            while (!rest.empty()) {
                const size_t eol = rest.find('\n');
                const std::string_view line = rest.substr(0, eol);
                const std::string module = module_name(line);
                if (!module.empty())
                    findings_.builtin.insert(module);
                rest.remove_prefix(eol == std::string_view::npos ? rest.size() : eol + 1);
            }
            capture_ = false;
            list_.clear();
        }
        left_ = 0;
        state_ = trailer_ && raw_ ? State::Ended : State::Between;
    }

    Findings& findings_;
    const bool raw_;
    const uint64_t room_;
    const std::string room_name_;
    State state_ = State::Between;
    uint64_t pos_ = 0;   // bytes of cpio data consumed
    uint64_t entry_ = 0; // where the current entry's header starts
    std::string header_;
    std::string name_;
    uint64_t name_size_ = 0;
    uint64_t file_size_ = 0;
    uint64_t left_ = 0; // of the name (with padding) or the data (with padding)
    bool regular_ = false;
    bool trailer_ = false;
    bool capture_ = false; // the data is a modules.builtin list, kept in list_
    std::string list_;
    std::string error_;
    std::vector<std::string> notes_;
};

// Where a decoder's output goes: the cpio reader, within the output limit.
class Output {
public:
    Output(CpioReader& cpio, uint64_t limit, std::string_view compression)
        : cpio_(cpio), limit_(limit), compression_(compression) {}

    // False once reading must stop: the cpio data is bad, or the limit is passed.
    bool write(const char* data, size_t size) {
        if (!stop_.empty())
            return false;
        const size_t allowed = static_cast<size_t>(std::min<uint64_t>(size, limit_ - produced_));
        produced_ += allowed;
        cpio_.feed(data, allowed);
        if (!cpio_.error().empty()) {
            stop_ = compression_ + " output: " + cpio_.error();
            return false;
        }
        if (allowed < size) {
            stop_ = compression_ + " output passes the " + human_size(limit_) +
                    " limit (max_output); stopped as a likely decompression bomb";
            return false;
        }
        return true;
    }

    uint64_t produced() const { return produced_; }
    // Why writing stopped; empty if it did not.
    const std::string& stopped() const { return stop_; }

private:
    CpioReader& cpio_;
    const uint64_t limit_;
    uint64_t produced_ = 0;
    const std::string compression_;
    std::string stop_;
};

// How a compressed stream ended: where (bytes of input used) and, if it
// could not be decoded to its end, why.
struct Decoded {
    size_t used = 0;
    std::string error;
};

constexpr std::string_view truncated = "the compressed data ends before the stream does";

bool is_zstd_frame(std::string_view in) {
    if (in.size() < 4)
        return false;
    const uint32_t magic = le32(in.data());
    // Skippable frames (0x184D2A50-5F) may sit between data frames.
    return magic == 0xfd2fb528 || (magic & 0xfffffff0) == 0x184d2a50;
}

Decoded decode_gzip(std::string_view in, Output& out) {
    z_stream z{};
    // 16 + MAX_WBITS: a gzip header and trailer, not zlib's.
    if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)
        return {0, "gzip: the decoder cannot be set up"};
    const std::unique_ptr<z_stream, int (*)(z_stream*)> end(&z, inflateEnd);
    std::vector<char> buf(out_chunk);
    size_t given = 0; // of `in`, handed to zlib (avail_in is 32 bits)
    for (;;) {
        if (z.avail_in == 0 && given < in.size()) {
            const size_t n = std::min<size_t>(in.size() - given, 1u << 30);
            z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data() + given));
            z.avail_in = static_cast<uInt>(n);
            given += n;
        }
        z.next_out = reinterpret_cast<Bytef*>(buf.data());
        z.avail_out = static_cast<uInt>(buf.size());
        const int ret = inflate(&z, Z_NO_FLUSH);
        const size_t used = given - z.avail_in;
        const size_t got = buf.size() - z.avail_out;
        if (got && !out.write(buf.data(), got))
            return {used, {}};
        if (ret == Z_STREAM_END) {
            // gzip -d reads members one after another as one stream.
            if (in.size() - used >= 2 && in[used] == '\x1f' && in[used + 1] == '\x8b') {
                inflateReset(&z);
                continue;
            }
            return {used, {}};
        }
        if (ret != Z_OK && ret != Z_BUF_ERROR)
            return {used, "gzip: " + std::string(z.msg ? z.msg : zError(ret))};
        // All input taken and the output buffer not filled: zlib wants more.
        if (z.avail_in == 0 && given == in.size() && got < buf.size())
            return {used, "gzip: " + std::string(truncated)};
        if (ret == Z_BUF_ERROR && z.avail_in != 0) // cannot happen with room in `buf`
            return {used, "gzip: the decoder made no progress"};
    }
}

Decoded decode_zstd(std::string_view in, Output& out) {
    const std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> d(ZSTD_createDCtx(), ZSTD_freeDCtx);
    if (!d)
        return {0, "zstd: the decoder cannot be set up"};
    std::vector<char> buf(out_chunk);
    ZSTD_inBuffer input{in.data(), in.size(), 0};
    for (;;) {
        ZSTD_outBuffer output{buf.data(), buf.size(), 0};
        const size_t ret = ZSTD_decompressStream(d.get(), &output, &input);
        if (ZSTD_isError(ret))
            return {input.pos, "zstd: " + std::string(ZSTD_getErrorName(ret))};
        if (output.pos && !out.write(buf.data(), output.pos))
            return {input.pos, {}};
        if (ret == 0) {
            // A frame ended; zstd -d goes on with the next frame as part of
            // the same output (pzstd and zstd -T write several).
            if (is_zstd_frame(in.substr(input.pos)))
                continue;
            return {input.pos, {}};
        }
        if (input.pos == input.size && output.pos < output.size)
            return {input.pos, "zstd: " + std::string(truncated)};
    }
}

std::string lzma_message(lzma_ret ret) {
    switch (ret) {
    case LZMA_MEM_ERROR:
        return "out of memory";
    case LZMA_MEMLIMIT_ERROR:
        return "the stream needs more than " + human_size(lzma_memory_limit) +
               " of memory to decode";
    case LZMA_FORMAT_ERROR:
        return "the header is not valid";
    case LZMA_OPTIONS_ERROR:
        return "the stream uses options this decoder does not support";
    case LZMA_DATA_ERROR:
        return "the compressed data is corrupt";
    case LZMA_BUF_ERROR:
        return std::string(truncated);
    case LZMA_UNSUPPORTED_CHECK:
        return "the integrity check type is not supported";
    default:
        return "error " + std::to_string(static_cast<int>(ret));
    }
}

constexpr std::string_view xz_magic("\xfd"
                                    "7zXZ\0",
                                    6);

// .xz (lzma_stream_decoder) or the older .lzma (lzma_alone_decoder).
Decoded decode_lzma(std::string_view in, Output& out, bool xz) {
    const std::string name = xz ? "xz" : "lzma";
    lzma_stream s = LZMA_STREAM_INIT;
    const std::unique_ptr<lzma_stream, void (*)(lzma_stream*)> end(&s, lzma_end);
    const auto start = [&] {
        return xz ? lzma_stream_decoder(&s, lzma_memory_limit, 0)
                  : lzma_alone_decoder(&s, lzma_memory_limit);
    };
    if (const lzma_ret ret = start(); ret != LZMA_OK)
        return {0, name + ": " + lzma_message(ret)};
    std::vector<char> buf(out_chunk);
    s.next_in = reinterpret_cast<const uint8_t*>(in.data());
    s.avail_in = in.size();
    for (;;) {
        s.next_out = reinterpret_cast<uint8_t*>(buf.data());
        s.avail_out = buf.size();
        const lzma_ret ret = lzma_code(&s, LZMA_RUN);
        const size_t used = in.size() - s.avail_in;
        const size_t got = buf.size() - s.avail_out;
        if (got && !out.write(buf.data(), got))
            return {used, {}};
        if (ret == LZMA_STREAM_END) {
            // xz -d reads concatenated streams as one.
            if (xz && starts_with(in.substr(used), xz_magic)) {
                if (const lzma_ret again = start(); again != LZMA_OK)
                    return {used, name + ": " + lzma_message(again)};
                continue;
            }
            return {used, {}};
        }
        if (ret != LZMA_OK)
            return {used, name + ": " + lzma_message(ret)};
        if (s.avail_in == 0 && s.avail_out > 0)
            return {used, name + ": " + std::string(truncated)};
    }
}

constexpr uint32_t lz4_frame_magic = 0x184d2204;
constexpr uint32_t lz4_legacy_magic = 0x184c2102;

Decoded decode_lz4_frame(std::string_view in, Output& out) {
    LZ4F_dctx* raw = nullptr;
    if (LZ4F_isError(LZ4F_createDecompressionContext(&raw, LZ4F_VERSION)))
        return {0, "lz4: the decoder cannot be set up"};
    const std::unique_ptr<LZ4F_dctx, LZ4F_errorCode_t (*)(LZ4F_dctx*)> ctx(
        raw, LZ4F_freeDecompressionContext);
    std::vector<char> buf(out_chunk);
    size_t pos = 0;
    for (;;) {
        size_t got = buf.size();
        size_t src = in.size() - pos;
        const size_t ret =
            LZ4F_decompress(ctx.get(), buf.data(), &got, in.data() + pos, &src, nullptr);
        pos += src;
        if (LZ4F_isError(ret))
            return {pos, "lz4: " + std::string(LZ4F_getErrorName(ret))};
        if (got && !out.write(buf.data(), got))
            return {pos, {}};
        if (ret == 0) {
            // The frame ended; lz4 -d goes on with a frame that follows.
            if (in.size() - pos >= 4 && le32(in.data() + pos) == lz4_frame_magic)
                continue;
            return {pos, {}};
        }
        if (src == 0 && got == 0)
            return {pos, pos == in.size() ? "lz4: " + std::string(truncated)
                                          : "lz4: the decoder made no progress"};
    }
}

std::string_view detect(std::string_view at);

// The legacy format the kernel's own build uses (lz4 -l): the magic, then
// blocks of at most 8 MiB of output, each a little-endian compressed size and
// the block. Nothing marks the end: the input ends, or zero padding or
// another archive follows.
Decoded decode_lz4_legacy(std::string_view in, Output& out) {
    constexpr int block_max = 8 << 20;
    const auto bound = static_cast<uint32_t>(LZ4_compressBound(block_max));
    std::vector<char> buf(block_max);
    size_t pos = 4;
    for (;;) {
        if (in.size() - pos < 4)
            return {pos, {}};
        const uint32_t size = le32(in.data() + pos);
        if (size == lz4_legacy_magic) { // lz4 -l output concatenated
            pos += 4;
            continue;
        }
        if (size == 0)
            return {pos, {}};
        if (size > bound) {
            if (!detect(in.substr(pos)).empty())
                return {pos, {}};
            return {pos, "lz4: block at " + hex(pos) + " of the stream claims " + hex(size) +
                             " bytes, more than an 8 MiB block can take"};
        }
        if (size > in.size() - pos - 4)
            return {in.size(), "lz4: " + std::string(truncated)};
        const int got =
            LZ4_decompress_safe(in.data() + pos + 4, buf.data(), static_cast<int>(size), block_max);
        if (got < 0)
            return {pos, "lz4: block at " + hex(pos) + " of the stream is corrupt"};
        pos += 4 + size;
        if (got && !out.write(buf.data(), static_cast<size_t>(got)))
            return {pos, {}};
    }
}

// The kind of archive starting at `at`: "cpio", a compression's name, or
// "" for none known. Magic numbers as the kernel's decompress_method()
// (lib/decompress.c) knows them.
std::string_view detect(std::string_view at) {
    const auto is = [&](std::string_view magic) { return starts_with(at, magic); };
    if (is("070701") || is("070702") || is("070707"))
        return "cpio";
    if (is("\x1f\x8b"))
        return "gzip";
    if (at.size() >= 4 && le32(at.data()) == 0xfd2fb528)
        return "zstd";
    if (is(xz_magic))
        return "xz";
    if (is(std::string_view("\x5d\x00\x00", 3)))
        return "lzma";
    if (at.size() >= 4 && le32(at.data()) == lz4_frame_magic)
        return "lz4";
    if (at.size() >= 4 && le32(at.data()) == lz4_legacy_magic)
        return "lz4-legacy";
    if (is("BZh"))
        return "bzip2";
    if (is("\x89LZO"))
        return "lzo";
    return {};
}

std::vector<std::string> sorted(const std::set<std::string>& names) {
    return {names.begin(), names.end()};
}

} // namespace

InitramfsContents read_initramfs(std::string_view image, uint64_t max_output) {
    InitramfsContents r;
    Findings found;
    uint64_t output_left = max_output;
    size_t pos = 0;
    unsigned number = 0;
    for (;;) {
        while (pos < image.size() && image[pos] == 0)
            ++pos;
        if (pos == image.size())
            break;
        ++number;
        const std::string where = "archive " + std::to_string(number) + " at " + hex(pos) + ": ";
        const std::string_view rest = image.substr(pos);
        const std::string_view kind = detect(rest);
        if (kind.empty()) {
            r.problems.push_back(where + "neither cpio nor a known compression (bytes " +
                                 hex_bytes(rest) + ")");
            break;
        }
        if (kind == "cpio") {
            // The kernel takes uncompressed entries only at aligned offsets.
            if (pos % 4 != 0) {
                r.problems.push_back(where + "a cpio archive must start 4-byte aligned");
                break;
            }
            r.compressions.push_back("none");
            CpioReader cpio(found, true, rest.size(), "the end of the image");
            const size_t used = cpio.feed(rest.data(), rest.size());
            for (const std::string& note : cpio.notes())
                r.problems.push_back(where + note);
            if (!cpio.error().empty() || (used == rest.size() && !cpio.finish())) {
                r.problems.push_back(where + cpio.error());
                break;
            }
            pos += used;
            continue;
        }
        const std::string compression(kind == "lz4-legacy" ? "lz4" : kind);
        r.compressions.push_back(compression);
        if (kind == "bzip2" || kind == "lzo") {
            r.problems.push_back(where + compression + " compression is not supported here");
            break;
        }
        CpioReader cpio(found, false, output_left,
                        "the " + human_size(max_output) + " output limit (max_output)");
        Output out(cpio, output_left, compression);
        Decoded d;
        if (kind == "gzip")
            d = decode_gzip(rest, out);
        else if (kind == "zstd")
            d = decode_zstd(rest, out);
        else if (kind == "xz" || kind == "lzma")
            d = decode_lzma(rest, out, kind == "xz");
        else if (kind == "lz4")
            d = decode_lz4_frame(rest, out);
        else
            d = decode_lz4_legacy(rest, out);
        output_left -= out.produced();
        for (const std::string& note : cpio.notes())
            r.problems.push_back(where + compression + " output: " + note);
        if (!out.stopped().empty()) {
            r.problems.push_back(where + out.stopped());
            break;
        }
        if (!d.error.empty()) {
            r.problems.push_back(where + d.error);
            break;
        }
        if (!cpio.finish()) {
            r.problems.push_back(where + compression + " output: " + cpio.error());
            break;
        }
        if (d.used == 0) { // a decoder that read nothing would loop here forever
            r.problems.push_back(where + compression + ": the stream is empty");
            break;
        }
        pos += d.used;
    }
    if (number == 0)
        r.problems.push_back(image.empty() ? "the image is empty"
                                           : "the image holds only zero bytes (" +
                                                 human_size(image.size()) + ")");
    r.modules = sorted(found.modules);
    r.builtin = sorted(found.builtin);
    r.files = found.files;
    return r;
}

} // namespace p2vfs::guest

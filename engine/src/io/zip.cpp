#include "io/zip.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "mambascope/error.h"

namespace mambascope::io {

namespace {

constexpr uint32_t kSigLocal = 0x04034b50;
constexpr uint32_t kSigCentral = 0x02014b50;
constexpr uint32_t kSigEnd = 0x06054b50;
constexpr uint32_t kSigEnd64 = 0x06064b50;
constexpr uint32_t kSigEnd64Locator = 0x07064b50;
constexpr size_t kEndSize = 22;
constexpr size_t kEnd64LocatorSize = 20;
constexpr size_t kEnd64Size = 56;
constexpr size_t kCentralSize = 46;
constexpr size_t kLocalSize = 30;
constexpr size_t kMaxComment = 65535;
constexpr uint16_t kExtraZip64 = 0x0001;

uint16_t rd16(const uint8_t* p) {
    return static_cast<uint16_t>(p[0] | (p[1] << 8));
}
uint32_t rd32(const uint8_t* p) {
    return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
           (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t rd64(const uint8_t* p) {
    return rd32(p) | (static_cast<uint64_t>(rd32(p + 4)) << 32);
}

[[noreturn]] void fail(const std::string& origin, const std::string& what) {
    throw Error(origin + ": not a valid zip archive: " + what,
                "the file is truncated or corrupt; re-download or re-save it with torch.save");
}

uint32_t crc32_of(const uint8_t* data, size_t n) {
    uLong crc = crc32(0L, Z_NULL, 0);
    while (n > 0) {
        const uInt chunk = static_cast<uInt>(std::min<size_t>(n, std::numeric_limits<uInt>::max()));
        crc = crc32(crc, data, chunk);
        data += chunk;
        n -= chunk;
    }
    return static_cast<uint32_t>(crc);
}

}  // namespace

ZipArchive::ZipArchive(std::shared_ptr<const MappedFile> file) : file_(std::move(file)) {
    origin_ = file_->path().string();
    const uint8_t* base = file_->data();
    const size_t fsize = file_->size();
    if (fsize < kEndSize) fail(origin_, "file is " + std::to_string(fsize) + " bytes, too small for a zip");

    // End of central directory: the last EOCD signature within the trailing comment window.
    size_t eocd = std::string::npos;
    const size_t lowest = fsize > kEndSize + kMaxComment ? fsize - kEndSize - kMaxComment : 0;
    for (size_t pos = fsize - kEndSize + 1; pos-- > lowest;) {
        if (rd32(base + pos) == kSigEnd && pos + kEndSize + rd16(base + pos + 20) <= fsize) {
            eocd = pos;
            break;
        }
    }
    if (eocd == std::string::npos) fail(origin_, "no end-of-central-directory record (truncated?)");

    uint64_t n_entries = rd16(base + eocd + 10);
    uint64_t cd_size = rd32(base + eocd + 12);
    uint64_t cd_offset = rd32(base + eocd + 16);
    if (rd16(base + eocd + 4) != 0 || rd16(base + eocd + 6) != 0)
        fail(origin_, "multi-disk archives are not supported");

    // ZIP64: the locator sits right before the EOCD.
    if (eocd >= kEnd64LocatorSize && rd32(base + eocd - kEnd64LocatorSize) == kSigEnd64Locator) {
        const uint64_t z64 = rd64(base + eocd - kEnd64LocatorSize + 8);
        if (z64 > fsize || fsize - z64 < kEnd64Size || rd32(base + z64) != kSigEnd64) {
            fail(origin_, "ZIP64 end record out of range");
        }
        n_entries = rd64(base + z64 + 32);
        cd_size = rd64(base + z64 + 40);
        cd_offset = rd64(base + z64 + 48);
    }
    if (n_entries > kZipMaxEntries) fail(origin_, "claims " + std::to_string(n_entries) + " entries");
    if (cd_offset > fsize || cd_size > fsize - cd_offset)
        fail(origin_, "central directory lies outside the file");

    entries_.reserve(static_cast<size_t>(n_entries));
    uint64_t pos = cd_offset;
    const uint64_t cd_end = cd_offset + cd_size;
    for (uint64_t i = 0; i < n_entries; ++i) {
        if (cd_end - pos < kCentralSize || rd32(base + pos) != kSigCentral) {
            fail(origin_, "central directory entry " + std::to_string(i) + " is malformed");
        }
        const uint8_t* h = base + pos;
        ZipEntry e;
        e.flags = rd16(h + 8);
        e.method = rd16(h + 10);
        e.crc32 = rd32(h + 16);
        e.compressed_size = rd32(h + 20);
        e.size = rd32(h + 24);
        const uint16_t name_len = rd16(h + 28), extra_len = rd16(h + 30), comment_len = rd16(h + 32);
        e.local_header_offset = rd32(h + 42);
        const uint64_t rec = kCentralSize + uint64_t{name_len} + extra_len + comment_len;
        if (cd_end - pos < rec)
            fail(origin_, "central directory entry " + std::to_string(i) + " is truncated");
        e.name.assign(reinterpret_cast<const char*>(h + kCentralSize), name_len);

        // ZIP64 extra field: 64-bit values for each 32-bit field that is 0xFFFFFFFF, in this order.
        const uint8_t* x = h + kCentralSize + name_len;
        const uint8_t* x_end = x + extra_len;
        while (x_end - x >= 4) {
            const uint16_t id = rd16(x), len = rd16(x + 2);
            if (x_end - x - 4 < len) fail(origin_, "extra field of '" + e.name + "' is truncated");
            if (id == kExtraZip64) {
                const uint8_t* v = x + 4;
                const uint8_t* v_end = v + len;
                auto take = [&](uint64_t& field) {
                    if (field != 0xFFFFFFFFu) return;
                    if (v_end - v < 8) fail(origin_, "ZIP64 extra field of '" + e.name + "' is truncated");
                    field = rd64(v);
                    v += 8;
                };
                take(e.size);
                take(e.compressed_size);
                take(e.local_header_offset);
            }
            x += 4 + len;
        }
        if (e.flags & 1u) fail(origin_, "entry '" + e.name + "' is encrypted");
        if (e.method != 0 && e.method != 8) {
            fail(origin_, "entry '" + e.name + "' uses compression method " + std::to_string(e.method) +
                              " (only stored and deflate are supported)");
        }
        entries_.push_back(std::move(e));
        pos += rec;
    }
}

const ZipEntry* ZipArchive::find(const std::string& name) const {
    for (const auto& e : entries_)
        if (e.name == name) return &e;
    return nullptr;
}

ZipBlob ZipArchive::read(const ZipEntry& e, bool verify_crc) const {
    const uint8_t* base = file_->data();
    const uint64_t fsize = file_->size();
    const uint64_t lh = e.local_header_offset;
    if (lh > fsize || fsize - lh < kLocalSize || rd32(base + lh) != kSigLocal) {
        fail(origin_, "local header of '" + e.name + "' is missing or out of range");
    }
    const uint64_t data_start = lh + kLocalSize + rd16(base + lh + 26) + rd16(base + lh + 28);
    if (data_start > fsize || e.compressed_size > fsize - data_start) {
        fail(origin_, "data of '" + e.name + "' (" + std::to_string(e.compressed_size) + " bytes at offset " +
                          std::to_string(data_start) + ") runs past the end of the file (" +
                          std::to_string(fsize) + " bytes)");
    }
    const uint8_t* src = base + data_start;
    ZipBlob blob;
    if (e.method == 0) {
        if (e.size != e.compressed_size)
            fail(origin_, "stored entry '" + e.name + "' has two different sizes");
        blob.data = src;
        blob.size = static_cast<size_t>(e.size);
        blob.owner = file_;
    } else {
        if (e.size / kZipMaxDeflateRatio > e.compressed_size + 1) {
            fail(origin_,
                 "deflated entry '" + e.name + "' claims an impossible size " + std::to_string(e.size));
        }
        auto buf = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(e.size));
        z_stream zs{};
        if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) throw Error("zlib inflateInit2 failed");
        uint64_t in_left = e.compressed_size, out_left = e.size;
        const uint8_t* in = src;
        uint8_t* out = buf->data();
        int rc = Z_OK;
        while (rc == Z_OK) {
            const uInt in_chunk = static_cast<uInt>(std::min<uint64_t>(in_left, 1u << 30));
            const uInt out_chunk = static_cast<uInt>(std::min<uint64_t>(out_left, 1u << 30));
            zs.next_in = const_cast<Bytef*>(in);
            zs.avail_in = in_chunk;
            zs.next_out = out;
            zs.avail_out = out_chunk;
            rc = inflate(&zs, Z_NO_FLUSH);
            const uInt used_in = in_chunk - zs.avail_in, used_out = out_chunk - zs.avail_out;
            in += used_in;
            in_left -= used_in;
            out += used_out;
            out_left -= used_out;
            if (rc == Z_OK && used_in == 0 && used_out == 0) rc = Z_BUF_ERROR;  // no progress
        }
        inflateEnd(&zs);
        if (rc != Z_STREAM_END || out_left != 0) {
            fail(origin_, "deflated entry '" + e.name + "' does not inflate to its declared " +
                              std::to_string(e.size) + " bytes");
        }
        blob.data = buf->data();
        blob.size = buf->size();
        blob.owner = std::move(buf);
        verify_crc = true;  // inflating already touched every byte; checking is cheap
    }
    if (verify_crc && crc32_of(blob.data, blob.size) != e.crc32)
        fail(origin_, "CRC mismatch in '" + e.name + "'");
    return blob;
}

}  // namespace mambascope::io

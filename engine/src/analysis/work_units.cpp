// Work units, LPT assignment, unit serialization and checkpoints; see mambascope/work_units.h.
#include "mambascope/work_units.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <numeric>

#include "mambascope/error.h"
#include "mambascope/sha256.h"

namespace mambascope {

void run_units_serially(UnitJob& job, const ProgressFn& progress) {
    const size_t n = job.unit_count();
    double total = 0;
    for (size_t u = 0; u < n; ++u) total += job.unit_cost(u);
    if (!(total > 0)) total = 1;
    double done = 0;
    for (size_t u = 0; u < n; ++u) {
        const double cost = job.unit_cost(u), base = done;
        const ProgressFn unit_progress = [&](double f, std::string_view stage) {
            return !progress || progress((base + f * cost) / total, stage);
        };
        job.reduce(u, job.compute_unit(u, unit_progress));
        done += cost;
    }
}

std::vector<std::vector<size_t>> assign_longest_first(std::span<const double> costs, int processes) {
    MS_CHECK(processes >= 1, "assign_longest_first: at least one process");
    for (double c : costs) MS_CHECK(std::isfinite(c) && c >= 0, "assign_longest_first: bad unit cost");
    std::vector<size_t> order(costs.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return costs[a] > costs[b]; });
    std::vector<std::vector<size_t>> plan(static_cast<size_t>(processes));
    std::vector<double> load(static_cast<size_t>(processes), 0.0);
    for (size_t u : order) {
        // the least loaded process; min_element keeps the first (lowest) on ties
        const size_t p = static_cast<size_t>(std::min_element(load.begin(), load.end()) - load.begin());
        plan[p].push_back(u);
        load[p] += costs[u];
    }
    return plan;
}

// ---- bytes -----------------------------------------------------------------------------------------------

void ByteWriter::i64(int64_t v) {
    const uint64_t x = static_cast<uint64_t>(v);
    for (int i = 0; i < 8; ++i) out_ += static_cast<char>((x >> (8 * i)) & 0xff);
}

void ByteWriter::f64(double v) {
    uint64_t x = 0;
    std::memcpy(&x, &v, sizeof x);
    i64(static_cast<int64_t>(x));
}

void ByteWriter::str(std::string_view s) {
    i64(static_cast<int64_t>(s.size()));
    out_.append(s);
}

void ByteWriter::f64s(std::span<const double> v) {
    i64(static_cast<int64_t>(v.size()));
    for (double x : v) f64(x);
}

void ByteReader::need(size_t n) const {
    if (in_.size() - pos_ < n) throw Error("a unit result is truncated or malformed");
}

int64_t ByteReader::i64() {
    need(8);
    uint64_t x = 0;
    for (int i = 0; i < 8; ++i)
        x |= static_cast<uint64_t>(static_cast<unsigned char>(in_[pos_ + i])) << (8 * i);
    pos_ += 8;
    return static_cast<int64_t>(x);
}

double ByteReader::f64() {
    const uint64_t x = static_cast<uint64_t>(i64());
    double v = 0;
    std::memcpy(&v, &x, sizeof v);
    return v;
}

std::string ByteReader::str() {
    const int64_t n = i64();
    if (n < 0) throw Error("a unit result is malformed (negative length)");
    need(static_cast<size_t>(n));
    std::string s(in_.substr(pos_, static_cast<size_t>(n)));
    pos_ += static_cast<size_t>(n);
    return s;
}

std::vector<double> ByteReader::f64s() {
    const int64_t n = i64();
    if (n < 0 || static_cast<uint64_t>(n) > (in_.size() - pos_) / 8)
        throw Error("a unit result is malformed (bad array length)");
    std::vector<double> v(static_cast<size_t>(n));
    for (double& x : v) x = f64();
    return v;
}

// ---- checkpoints
// ---------------------------------------------------------------------------------------------

namespace {

// FNV-1a, 64 bit: detects a torn or damaged record (not an adversary).
constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
constexpr uint64_t kFnvPrime = 0x100000001b3ULL;

uint64_t fnv1a(uint64_t h, std::string_view bytes) {
    for (unsigned char c : bytes) h = (h ^ c) * kFnvPrime;
    return h;
}

std::string le64(uint64_t x) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; ++i) s[static_cast<size_t>(i)] = static_cast<char>((x >> (8 * i)) & 0xff);
    return s;
}

uint64_t read_le64(std::string_view s, size_t at) {
    uint64_t x = 0;
    for (int i = 0; i < 8; ++i) x |= static_cast<uint64_t>(static_cast<unsigned char>(s[at + i])) << (8 * i);
    return x;
}

std::string header_bytes(const std::string& job_hash, uint64_t unit_count) {
    MS_CHECK(job_hash.size() == 64, "checkpoint: the job hash must be 64 hex characters");
    return std::string(kCheckpointMagic, 8) + job_hash + le64(unit_count);
}

uint64_t record_checksum(uint64_t unit, std::string_view payload) {
    uint64_t h = fnv1a(kFnvOffset, le64(unit));
    h = fnv1a(h, le64(payload.size()));
    return fnv1a(h, payload);
}

}  // namespace

std::string checkpoint_job_hash(const std::string& fingerprint) {
    return sha256_hex(fingerprint);
}

CheckpointContents read_checkpoint(const std::filesystem::path& file, const std::string& job_hash,
                                   uint64_t unit_count) {
    std::ifstream f(file, std::ios::binary);
    if (!f) throw Error("cannot read checkpoint '" + file.string() + "'", "check the --resume path");
    std::error_code ec;
    const uint64_t size = std::filesystem::file_size(file, ec);
    if (ec) throw Error("cannot read checkpoint '" + file.string() + "': " + ec.message());
    CheckpointContents out;
    if (size < kCheckpointHeaderBytes) return out;  // killed before the header was complete
    std::string header(kCheckpointHeaderBytes, '\0');
    if (!f.read(header.data(), static_cast<std::streamsize>(header.size())))
        throw Error("cannot read checkpoint '" + file.string() + "'");
    if (header.compare(0, 8, kCheckpointMagic) != 0)
        throw Error("'" + file.string() + "' is not a Mambascope checkpoint",
                    "pass another --resume FILE, or remove this one");
    if (header.compare(8, 64, job_hash) != 0 || read_le64(header, 72) != unit_count)
        throw Error(
            "checkpoint '" + file.string() + "' belongs to another job (other inputs or parameters)",
            "resume with the command line that wrote it, or remove the FILE.rank* files to start over");
    uint64_t at = kCheckpointHeaderBytes;
    out.valid_bytes = at;
    std::vector<char> block(kSha256FileBlockBytes);
    std::string head(16, '\0'), tail(8, '\0');
    while (size - at >= 16 + 8) {
        if (!f.read(head.data(), 16)) break;
        const uint64_t unit = read_le64(head, 0), n = read_le64(head, 8);
        if (unit >= unit_count || n > size - at - 16 - 8) break;  // damaged, or cut short
        // the payload, hashed block by block
        uint64_t h = fnv1a(fnv1a(kFnvOffset, le64(unit)), le64(n));
        bool ok = true;
        for (uint64_t left = n; left > 0 && ok;) {
            const size_t k = static_cast<size_t>(std::min<uint64_t>(left, block.size()));
            ok = static_cast<bool>(f.read(block.data(), static_cast<std::streamsize>(k)));
            h = fnv1a(h, std::string_view(block.data(), k));
            left -= k;
        }
        if (!ok || !f.read(tail.data(), 8) || read_le64(tail, 0) != h) break;
        out.units[static_cast<size_t>(unit)] = {file, at + 16, n};
        at += 16 + n + 8;
        out.valid_bytes = at;
    }
    return out;
}

UnitResult read_checkpoint_unit(const CheckpointRecord& record) {
    std::ifstream f(record.file, std::ios::binary);
    UnitResult r(static_cast<size_t>(record.bytes), '\0');
    if (!f || !f.seekg(static_cast<std::streamoff>(record.offset)) ||
        !f.read(r.data(), static_cast<std::streamsize>(r.size())))
        throw Error("cannot read a unit from checkpoint '" + record.file.string() + "'",
                    "was it changed or removed while the job ran?");
    return r;
}

std::filesystem::path checkpoint_file(const std::filesystem::path& base, int rank) {
    return std::filesystem::path(base.string() + ".rank" + std::to_string(rank));
}

std::vector<std::filesystem::path> checkpoint_files(const std::filesystem::path& base) {
    namespace fs = std::filesystem;
    const fs::path dir = base.has_parent_path() ? base.parent_path() : fs::path(".");
    const std::string prefix = base.filename().string() + ".rank";
    std::vector<std::pair<long long, fs::path>> found;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
        const std::string name = e.path().filename().string();
        if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
        const std::string digits = name.substr(prefix.size());
        if (digits.size() > 9 ||
            !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
            continue;
        found.emplace_back(std::stoll(digits), e.path());
    }
    std::sort(found.begin(), found.end());
    std::vector<fs::path> out;
    for (auto& [r, p] : found) out.push_back(std::move(p));
    return out;
}

CheckpointWriter::CheckpointWriter(const std::filesystem::path& file, const std::string& job_hash,
                                   uint64_t unit_count)
    : file_(file) {
    uint64_t keep = 0;
    if (std::filesystem::exists(file)) keep = read_checkpoint(file, job_hash, unit_count).valid_bytes;
    if (keep == 0) {
        f_ = std::fopen(file.string().c_str(), "wb");
        if (!f_) throw Error("cannot create checkpoint '" + file.string() + "': " + std::strerror(errno));
        const std::string h = header_bytes(job_hash, unit_count);
        if (std::fwrite(h.data(), 1, h.size(), f_) != h.size() || std::fflush(f_) != 0)
            throw Error("cannot write checkpoint '" + file.string() + "': " + std::strerror(errno));
        return;
    }
    // cut a torn last record off, then append after the readable prefix
    std::error_code ec;
    std::filesystem::resize_file(file, keep, ec);
    if (ec) throw Error("cannot repair checkpoint '" + file.string() + "': " + ec.message());
    f_ = std::fopen(file.string().c_str(), "ab");
    if (!f_) throw Error("cannot open checkpoint '" + file.string() + "': " + std::strerror(errno));
}

CheckpointWriter::~CheckpointWriter() {
    if (f_) std::fclose(f_);
}

void CheckpointWriter::append(size_t unit, const UnitResult& result) {
    const std::string rec = le64(unit) + le64(result.size()) + result + le64(record_checksum(unit, result));
    if (std::fwrite(rec.data(), 1, rec.size(), f_) != rec.size() || std::fflush(f_) != 0 ||
        ::fdatasync(::fileno(f_)) != 0)
        throw Error("cannot append to checkpoint '" + file_.string() + "': " + std::strerror(errno),
                    "check free disk space");
}

}  // namespace mambascope

// Work units (mambascope/work_units.h): the longest-first plan, unit results as bytes, reduction in unit
// order equal to the one-process functions bit for bit whatever order the units were computed in, and
// checkpoints (a torn last record is ignored, another job's checkpoint refused). The MPI runs of the CLI are
// tests/mpi.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "engine/tiny_model.h"
#include "mambascope/calibration.h"
#include "mambascope/error.h"
#include "mambascope/ppl_sweep.h"
#include "mambascope/retrieval.h"
#include "mambascope/tokenizer.h"
#include "mambascope/work_units.h"

using namespace mambascope;
namespace fs = std::filesystem;

namespace {

std::vector<int32_t> random_ids(int64_t n, int64_t vocab, uint32_t seed) {
    std::vector<int32_t> ids(static_cast<size_t>(n), 0);
    uint32_t x = seed;
    for (auto& id : ids) x = x * 1664525u + 1013904223u, id = int32_t((x >> 8) % uint32_t(vocab));
    return ids;
}

// Every unit computed in reverse order (as other processes might), then reduced in unit order.
void compute_backwards_then_reduce(UnitJob& job) {
    std::vector<UnitResult> results(job.unit_count());
    for (size_t u = job.unit_count(); u-- > 0;) results[u] = job.compute_unit(u, {});
    for (size_t u = 0; u < results.size(); ++u) job.reduce(u, results[u]);
}

fs::path temp_dir(const std::string& name) {
    const fs::path d =
        fs::temp_directory_path() / ("mambascope_units_" + std::to_string(::getpid()) + "_" + name);
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
}

double load_of(const std::vector<size_t>& units, const std::vector<double>& costs) {
    double s = 0;
    for (size_t u : units) s += costs[u];
    return s;
}

}  // namespace

TEST(DistPlan, LongestFirstIsDeterministicCompleteAndBalanced) {
    // the example: a 64k window costs 32× a 2k one
    std::vector<double> costs;
    for (int i = 0; i < 32; ++i) costs.push_back(1.0);
    costs.push_back(32.0);
    for (int i = 0; i < 4; ++i) costs.push_back(8.0);
    const auto plan = assign_longest_first(costs, 2);
    EXPECT_EQ(plan, assign_longest_first(costs, 2));  // the same plan on every rank
    std::vector<int> seen(costs.size(), 0);
    for (const auto& units : plan)
        for (size_t u : units) ++seen[u];
    EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int s) { return s == 1; }));
    // 96 units of cost: 48 each
    EXPECT_DOUBLE_EQ(load_of(plan[0], costs), 48.0);
    EXPECT_DOUBLE_EQ(load_of(plan[1], costs), 48.0);
    EXPECT_EQ(plan[0].front(), 32u);  // the longest unit first, on rank 0
    for (const auto& units : plan)    // each rank computes its units longest first
        for (size_t i = 1; i < units.size(); ++i) EXPECT_GE(costs[units[i - 1]], costs[units[i]]);
    // three ranks, uneven: LPT's bound max ≤ 4/3 · optimum
    const auto plan3 = assign_longest_first(costs, 3);
    double mx = 0;
    for (const auto& units : plan3) mx = std::max(mx, load_of(units, costs));
    EXPECT_LE(mx, 4.0 / 3.0 * 32.0 + 1e-9);
    // more ranks than units: the extra ranks get nothing
    const auto plan8 = assign_longest_first(std::vector<double>{3, 2}, 8);
    EXPECT_EQ(plan8[0], std::vector<size_t>{0});
    EXPECT_EQ(plan8[1], std::vector<size_t>{1});
    EXPECT_TRUE(plan8[7].empty());
}

TEST(DistBytes, ValuesRoundTripExactly) {
    ByteWriter w;
    w.i64(-5);
    w.f64(0.1);
    w.f64(-0.0);
    w.f64(std::nextafter(1.0, 2.0));
    w.str(std::string("a\0b", 3));
    w.f64s(std::vector<double>{1e-300, -INFINITY, 3.5});
    const std::string bytes = w.take();
    ByteReader r(bytes);
    EXPECT_EQ(r.i64(), -5);
    EXPECT_EQ(r.f64(), 0.1);
    const double z = r.f64();
    EXPECT_TRUE(z == 0.0 && std::signbit(z));
    EXPECT_EQ(r.f64(), std::nextafter(1.0, 2.0));
    EXPECT_EQ(r.str(), std::string("a\0b", 3));
    EXPECT_EQ(r.f64s(), (std::vector<double>{1e-300, -INFINITY, 3.5}));
    EXPECT_TRUE(r.done());
    EXPECT_THROW(r.i64(), Error);  // nothing left
    ByteReader cut(std::string_view(bytes).substr(0, 12));
    cut.i64();
    EXPECT_THROW(cut.f64(), Error);
}

TEST(DistBytes, RetrievalRowRoundTrips) {
    RetrievalRow row;
    row.method = Method::DeciMamba;
    row.length = 4096;
    row.depth_index = 3;
    row.depth = 0.75;
    row.sample = 2;
    row.key = "12345";
    row.needle_begin = 1234;
    row.tf = {4, 5};
    row.generated = " 1234\xff";
    row.generated_correct = true;
    row.generate_ran = true;
    row.seconds = 1.25;
    ByteWriter w;
    write_retrieval_row(w, row);
    const std::string bytes = w.take();
    ByteReader r(bytes);
    const RetrievalRow back = read_retrieval_row(r);
    EXPECT_TRUE(r.done());
    EXPECT_EQ(back.method, row.method);
    EXPECT_EQ(back.length, row.length);
    EXPECT_EQ(back.depth_index, row.depth_index);
    EXPECT_EQ(back.depth, row.depth);
    EXPECT_EQ(back.sample, row.sample);
    EXPECT_EQ(back.key, row.key);
    EXPECT_EQ(back.needle_begin, row.needle_begin);
    EXPECT_EQ(back.tf.correct, 4);
    EXPECT_EQ(back.tf.total, 5);
    EXPECT_EQ(back.generated, row.generated);
    EXPECT_TRUE(back.generated_correct);
    EXPECT_TRUE(back.generate_ran);
    EXPECT_EQ(back.seconds, row.seconds);
}

TEST(DistReduce, CalibrationUnitsInAnyOrderEqualCalibrate) {
    for (Arch arch : {Arch::Mamba1, Arch::Mamba2})
        for (Aggregate how : {Aggregate::Mean, Aggregate::Max}) {
            auto m = random_model(test::tiny(arch), 31);
            const std::vector<int32_t> stream = random_ids(500, 37, 7);
            CalibrationParams p;
            p.samples = 4;
            p.lengths = {32, 64, 128};
            p.aggregate = how;
            const Calibration ref = calibrate(*m, stream, p);
            CalibrationJob job(*m, stream, p);
            ASSERT_EQ(job.unit_count(), 4u);
            compute_backwards_then_reduce(job);
            const Calibration got = job.result();
            EXPECT_EQ(got.samples_used, ref.samples_used);
            // bit for bit (== on doubles, NaN-free here)
            EXPECT_EQ(got.log_decay, ref.log_decay);
            EXPECT_EQ(got.delta_sum, ref.delta_sum);
            EXPECT_EQ(got.thresholds, ref.thresholds);
            EXPECT_EQ(got.alpha, ref.alpha);
        }
}

TEST(DistReduce, PplSweepUnitsInAnyOrderEqualRunPplSweep) {
    auto m = random_model(test::tiny(Arch::Mamba1), 32);
    const std::vector<int32_t> doc = random_ids(400, 37, 8);
    PplSweepParams p;
    p.lengths = {40, 90, 200};
    p.windows = 3;
    p.predict = 20;
    p.methods = {Method::Vanilla, Method::DeciMamba};
    p.deci.L_base = 30;
    const auto ref = run_ppl_sweep(*m, doc, p);
    PplSweepJob job(*m, doc, p);
    ASSERT_EQ(job.unit_count(), 3u * 2 * 3);
    EXPECT_EQ(job.unit_cost(0), 40.0);
    EXPECT_EQ(job.unit_cost(job.unit_count() - 1), 200.0);
    compute_backwards_then_reduce(job);
    const auto got = job.result();
    ASSERT_EQ(got.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i) {
        EXPECT_EQ(got[i].length, ref[i].length);
        EXPECT_EQ(got[i].method, ref[i].method);
        EXPECT_EQ(got[i].windows, ref[i].windows);
        EXPECT_EQ(got[i].tokens_scored, ref[i].tokens_scored);
        EXPECT_EQ(got[i].mean_nll, ref[i].mean_nll);  // bit for bit
        EXPECT_EQ(got[i].perplexity, ref[i].perplexity);
        EXPECT_EQ(got[i].window_nll, ref[i].window_nll);
    }
}

TEST(DistReduce, RetrievalUnitsInAnyOrderEqualRunRetrieval) {
    ModelConfig c = test::tiny(Arch::Mamba2);
    c.vocab_size = 256;
    auto m = random_model(c, 33);
    PromptTemplate t = standard_passkey_template();
    t.prefix.clear();
    HaystackBuilder hb(
        make_byte_tokenizer(),
        "Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy disposition.", t);
    RetrievalRequest req;
    req.lengths = {120, 160};
    req.depths = {0.0, 1.0};
    req.samples = 2;
    req.methods = {Method::Vanilla, Method::DeciMamba};
    req.deci.L_base = 50;
    const RetrievalResult ref = run_retrieval(*m, hb, req);
    RetrievalJob job(*m, hb, req);
    ASSERT_EQ(job.unit_count(), 2u * 2 * 2);
    compute_backwards_then_reduce(job);
    const RetrievalResult got = job.result();
    ASSERT_EQ(got.rows.size(), ref.rows.size());
    for (size_t i = 0; i < ref.rows.size(); ++i) {
        const auto &a = got.rows[i], &b = ref.rows[i];
        EXPECT_EQ(a.method, b.method);
        EXPECT_EQ(a.length, b.length);
        EXPECT_EQ(a.depth_index, b.depth_index);
        EXPECT_EQ(a.sample, b.sample);
        EXPECT_EQ(a.key, b.key);
        EXPECT_EQ(a.tf.correct, b.tf.correct);
        EXPECT_EQ(a.generated, b.generated);
        EXPECT_EQ(a.generated_correct, b.generated_correct);
    }
    // the file's text equals once the timings are equal
    RetrievalResult a = got, b = ref;
    for (auto& r : a.rows) r.seconds = 0;
    for (auto& r : b.rows) r.seconds = 0;
    EXPECT_EQ(retrieval_json_text(a), retrieval_json_text(b));
}

TEST(DistCheckpoint, TornLastRecordIsIgnoredAndCutBeforeAppending) {
    const fs::path dir = temp_dir("torn");
    const fs::path base = dir / "job.ckpt", file = checkpoint_file(base, 0);
    const std::string hash = checkpoint_job_hash("job A");
    {
        CheckpointWriter w(file, hash, 10);
        w.append(3, "three");
        w.append(7, std::string("se\0ven", 6));
    }
    const uint64_t full = fs::file_size(file);
    {  // a record cut short by a kill: its header and half its payload
        std::ofstream f(file, std::ios::binary | std::ios::app);
        const char partial[] = {5, 0, 0, 0, 0, 0, 0, 0, 100, 0, 0, 0, 0, 0, 0, 0, 'x', 'y'};
        f.write(partial, sizeof partial);
    }
    CheckpointContents c = read_checkpoint(file, hash, 10);
    ASSERT_EQ(c.units.size(), 2u);
    EXPECT_EQ(read_checkpoint_unit(c.units.at(3)), "three");
    EXPECT_EQ(read_checkpoint_unit(c.units.at(7)), std::string("se\0ven", 6));
    EXPECT_EQ(c.valid_bytes, full);
    {  // a damaged payload fails its checksum: it and what follows are ignored
        std::string bytes(static_cast<size_t>(full), '\0');
        std::ifstream(file, std::ios::binary).read(bytes.data(), static_cast<std::streamsize>(full));
        bytes[kCheckpointHeaderBytes + 16] ^= 1;  // first payload byte of unit 3
        const fs::path bad = dir / "bad.rank0";
        std::ofstream(bad, std::ios::binary) << bytes;
        EXPECT_TRUE(read_checkpoint(bad, hash, 10).units.empty());
    }
    {  // reopening cuts the torn tail, then appends
        CheckpointWriter w(file, hash, 10);
        w.append(5, "five");
    }
    c = read_checkpoint(file, hash, 10);
    EXPECT_EQ(c.units.size(), 3u);
    EXPECT_EQ(read_checkpoint_unit(c.units.at(5)), "five");
    EXPECT_EQ(c.valid_bytes, fs::file_size(file));
    // a file killed before its header was complete holds nothing
    std::ofstream(checkpoint_file(base, 1), std::ios::binary) << "MSCKPT";
    EXPECT_TRUE(read_checkpoint(checkpoint_file(base, 1), hash, 10).units.empty());
    // every rank's file is found, in rank order, and nothing else
    std::ofstream(dir / "job.ckpt.rank12x") << "x";
    std::ofstream(checkpoint_file(base, 10)) << "";
    const auto files = checkpoint_files(base);
    ASSERT_EQ(files.size(), 3u);
    EXPECT_EQ(files[0], checkpoint_file(base, 0));
    EXPECT_EQ(files[2], checkpoint_file(base, 10));
    fs::remove_all(dir);
}

TEST(DistCheckpoint, AnotherJobsCheckpointIsRefused) {
    const fs::path dir = temp_dir("other");
    const fs::path file = checkpoint_file(dir / "job.ckpt", 0);
    {
        CheckpointWriter w(file, checkpoint_job_hash("job A"), 10);
        w.append(1, "one");
    }
    try {
        read_checkpoint(file, checkpoint_job_hash("job B"), 10);
        FAIL() << "another job's checkpoint was accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("belongs to another job"), std::string::npos) << e.what();
    }
    EXPECT_THROW(read_checkpoint(file, checkpoint_job_hash("job A"), 11), Error);  // another unit count
    EXPECT_THROW(CheckpointWriter(file, checkpoint_job_hash("job B"), 10), Error);
    std::ofstream(dir / "junk.rank0") << "not a checkpoint at all, but long enough to hold a header ....... "
                                         "......................";
    EXPECT_THROW(read_checkpoint(dir / "junk.rank0", checkpoint_job_hash("job A"), 10), Error);
    fs::remove_all(dir);
}

TEST(DistCheckpoint, JobFingerprintsSeparateJobs) {
    auto m = random_model(test::tiny(Arch::Mamba1), 34);
    const std::vector<int32_t> doc = random_ids(400, 37, 9);
    PplSweepParams p;
    p.lengths = {40, 90};
    p.windows = 2;
    p.predict = 20;
    p.methods = {Method::Vanilla};
    const std::string a = PplSweepJob(*m, doc, p).fingerprint();
    EXPECT_EQ(a, PplSweepJob(*m, doc, p).fingerprint());
    p.windows = 3;
    EXPECT_NE(a, PplSweepJob(*m, doc, p).fingerprint());
    p.windows = 2;
    std::vector<int32_t> doc2 = doc;
    doc2[5] = (doc2[5] + 1) % 37;
    EXPECT_NE(a, PplSweepJob(*m, doc2, p).fingerprint());
}

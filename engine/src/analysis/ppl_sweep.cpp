// Perplexity vs context length; see mambascope/ppl_sweep.h.
#include "mambascope/ppl_sweep.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

#include "mambascope/atomic_file.h"
#include "mambascope/error.h"
#include "mambascope/forward.h"
#include "mambascope/sha256.h"

namespace mambascope {

std::vector<int64_t> sweep_window_starts(int64_t doc_tokens, int64_t length, int windows) {
    if (length < 2) throw Error("context length must be at least 2 tokens, got " + std::to_string(length));
    if (windows < 1) throw Error("windows must be at least 1");
    if (doc_tokens < length)
        throw Error("the document has " + std::to_string(doc_tokens) +
                        " tokens, fewer than the context length " + std::to_string(length),
                    "use a longer document or smaller --lengths");
    std::vector<int64_t> starts;
    const int64_t span = doc_tokens - length;
    for (int i = 0; i < windows; ++i)
        starts.push_back(windows == 1 ? 0 : static_cast<int64_t>(double(span) * i / (windows - 1)));
    return starts;
}

PplSweepJob::PplSweepJob(const Model& model, std::span<const int32_t> doc, const PplSweepParams& p)
    : model_(model), doc_(doc), p_(p) {
    if (p.lengths.empty()) throw Error("no context lengths given");
    if (p.methods.empty()) throw Error("no methods given");
    if (p.predict < 1) throw Error("predict must be at least 1 token");
    check_ids(model, doc);
    for (Method m : p.methods)
        if (m == Method::LongMamba) {
            if (!p.calibration)
                throw Error("LongMamba needs a calibration",
                            "pass --calibration CAL.h5 (mambascope-cli calibrate)");
            check_calibration_matches(*p.calibration, model.config);
        }
    for (int64_t L : p.lengths)
        if (L <= p.predict)
            throw Error("context length " + std::to_string(L) + " must exceed the scored tail (" +
                        std::to_string(p.predict) + " tokens)");
    for (int64_t L : p.lengths)
        starts_.push_back(sweep_window_starts(static_cast<int64_t>(doc.size()), L, p.windows));
}

size_t PplSweepJob::unit_count() const {
    return p_.lengths.size() * p_.methods.size() * static_cast<size_t>(p_.windows);
}

PplSweepJob::Cell PplSweepJob::cell(size_t u) const {
    MS_CHECK(u < unit_count(), "ppl-sweep: unit index out of range");
    const size_t W = static_cast<size_t>(p_.windows), M = p_.methods.size();
    return {u / (M * W), (u / W) % M, u % W};
}

double PplSweepJob::unit_cost(size_t u) const {
    return static_cast<double>(p_.lengths[cell(u).length_index]);
}

std::string PplSweepJob::unit_name(size_t u) const {
    const Cell c = cell(u);
    return std::string(method_name(p_.methods[c.method_index])) + " at " +
           std::to_string(p_.lengths[c.length_index]) + " tokens, window " + std::to_string(c.window + 1) +
           "/" + std::to_string(p_.windows) + " at token " +
           std::to_string(starts_[c.length_index][c.window]);
}

std::string PplSweepJob::fingerprint() const {
    std::string f = "ppl-sweep\nmodel " + model_.name + " " + arch_name(model_.config.arch) + " " +
                    std::to_string(model_.config.n_layer) + "x" + std::to_string(model_.config.channels()) +
                    "\nlengths";
    for (int64_t L : p_.lengths) (f += ' ') += std::to_string(L);
    f += "\nwindows " + std::to_string(p_.windows) + "\npredict " + std::to_string(p_.predict) + "\nmethods";
    for (Method m : p_.methods) f += std::string(" ") + method_name(m);
    char buf[160];
    std::snprintf(buf, sizeof buf, "\nfilter %.17g %.17g %lld\ndeci %lld %.17g", p_.filter.c, p_.filter.b,
                  static_cast<long long>(p_.filter.activate_above), static_cast<long long>(p_.deci.L_base),
                  p_.deci.beta);
    f += buf;
    f += "\ndeci_layers";
    for (int l : p_.deci.layers) (f += ' ') += std::to_string(l);
    if (p_.calibration) {  // the calibration's content, through its thresholds and decays
        ByteWriter w;
        w.f64s(p_.calibration->thresholds);
        w.f64s(p_.calibration->log_decay);
        f += "\ncalibration " + sha256_hex(w.take());
    }
    f += "\ndevice " + std::to_string(static_cast<int>(p_.device)) + "\ndoc " +
         sha256_hex(std::string_view(reinterpret_cast<const char*>(doc_.data()), doc_.size_bytes()));
    return f;
}

UnitResult PplSweepJob::compute_unit(size_t u, const ProgressFn& progress) const {
    const Cell c = cell(u);
    const int64_t L = p_.lengths[c.length_index];
    const Method m = p_.methods[c.method_index];
    const auto t0 = std::chrono::steady_clock::now();
    auto window =
        doc_.subspan(static_cast<size_t>(starts_[c.length_index][c.window]), static_cast<size_t>(L));
    // Positions L−predict−1 .. L−2 predict the last `predict` tokens.
    HeadRequest head;
    for (int64_t q = L - p_.predict - 1; q <= L - 2; ++q) head.logits_positions.push_back(q);
    double wsum = 0;
    int64_t wcount = 0;
    head.logits_sink = [&](int64_t pos, const float* row, int64_t V) {
        const int32_t target = window[static_cast<size_t>(pos + 1)];
        float mx = row[0];
        for (int64_t v = 1; v < V; ++v) mx = std::max(mx, row[v]);
        double se = 0;
        for (int64_t v = 0; v < V; ++v) se += std::exp(double(row[v] - mx));
        wsum += std::log(se) + mx - row[target];
        ++wcount;
    };
    auto sub = [&](double f, std::string_view) { return !progress || progress(f, "ppl-sweep"); };
    if (m == Method::DeciMamba) {
        DeciParams d = p_.deci;
        d.resp_len = p_.predict + 1;  // the scored tail and the position before it are always kept
        run_decimamba(model_, window, resolve_deci_params(model_.config, d), head, sub);
    } else {
        ForwardOptions opt;
        opt.progress = sub;
        opt.device = p_.device;
        DeltaFilter filter;
        if (m == Method::LongMamba) {
            filter = make_longmamba_filter(*p_.calibration, p_.filter, L);
            opt.filter = &filter;
        }
        run_forward(model_, window, opt, head);
    }
    if (wcount != p_.predict)
        throw Error("internal: scored " + std::to_string(wcount) + " tokens instead of " +
                    std::to_string(p_.predict));
    ByteWriter w;
    w.f64(wsum);
    w.i64(wcount);
    w.f64(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return w.take();
}

void PplSweepJob::reduce(size_t u, const UnitResult& result) {
    MS_CHECK(u == reduced_, "ppl-sweep: units must be reduced in order");
    const Cell c = cell(u);
    ByteReader r(result);
    const double wsum = r.f64();
    const int64_t wcount = r.i64();
    const double seconds = r.f64();
    if (!r.done() || wcount < 1) throw Error("ppl-sweep: a window's result is malformed");
    if (c.window == 0) {
        PplPoint pt;
        pt.length = p_.lengths[c.length_index];
        pt.method = p_.methods[c.method_index];
        points_.push_back(pt);
        nll_sum_.push_back(0.0);
    }
    PplPoint& pt = points_.back();
    pt.window_nll.push_back(wsum / double(wcount));
    nll_sum_.back() += wsum;
    pt.tokens_scored += wcount;
    pt.seconds += seconds;
    if (c.window + 1 == static_cast<size_t>(p_.windows)) {
        pt.windows = static_cast<int>(starts_[c.length_index].size());
        pt.mean_nll = nll_sum_.back() / double(pt.tokens_scored);
        pt.perplexity = std::exp(pt.mean_nll);
    }
    ++reduced_;
}

std::vector<PplPoint> PplSweepJob::result() const {
    MS_CHECK(reduced_ == unit_count(), "ppl-sweep: result() before every window was reduced");
    return points_;
}

std::vector<PplPoint> run_ppl_sweep(const Model& model, std::span<const int32_t> doc, const PplSweepParams& p,
                                    const ProgressFn& progress) {
    PplSweepJob job(model, doc, p);
    run_units_serially(job, progress);
    report_progress(progress, 1.0, "ppl-sweep");
    return job.result();
}

void write_ppl_csv(const std::filesystem::path& path, const std::vector<PplPoint>& points) {
    std::ostringstream s;
    s << "length,method,windows,tokens_scored,mean_nll,perplexity,seconds\n";
    s.precision(9);
    for (const auto& p : points)
        s << p.length << ',' << method_name(p.method) << ',' << p.windows << ',' << p.tokens_scored << ','
          << p.mean_nll << ',' << p.perplexity << ',' << p.seconds << '\n';
    write_file_atomic(path, s.str());
}

std::vector<PplPoint> read_ppl_csv(const std::filesystem::path& path) {
    std::ifstream f(path);
    if (!f) throw Error("cannot open " + path.string());
    std::string line;
    if (!std::getline(f, line) || line.rfind("length,method,", 0) != 0)
        throw Error(path.string() + " is not a ppl-sweep CSV (header 'length,method,...' expected)");
    std::vector<PplPoint> out;
    int lineno = 1;
    while (std::getline(f, line)) {
        ++lineno;
        if (line.empty()) continue;
        std::stringstream ss(line);
        std::string cell[7];
        for (auto& c : cell)
            if (!std::getline(ss, c, ','))
                throw Error(path.string() + ":" + std::to_string(lineno) + ": expected 7 columns");
        try {
            PplPoint p;
            p.length = std::stoll(cell[0]);
            p.method = parse_method(cell[1]);
            p.windows = std::stoi(cell[2]);
            p.tokens_scored = std::stoll(cell[3]);
            p.mean_nll = std::stod(cell[4]);
            p.perplexity = std::stod(cell[5]);
            p.seconds = std::stod(cell[6]);
            out.push_back(p);
        } catch (const std::logic_error&) {
            throw Error(path.string() + ":" + std::to_string(lineno) + ": not a number in '" + line + "'");
        }
    }
    return out;
}

std::string format_ppl_table(const std::vector<PplPoint>& points) {
    std::vector<Method> methods;
    std::map<int64_t, std::map<Method, double>> rows;
    for (const auto& p : points) {
        if (std::find(methods.begin(), methods.end(), p.method) == methods.end()) methods.push_back(p.method);
        rows[p.length][p.method] = p.perplexity;
    }
    std::ostringstream s;
    char buf[64];
    s << "context";
    for (Method m : methods) {
        std::snprintf(buf, sizeof buf, "%14s", method_name(m));
        s << buf;
    }
    s << "\n";
    for (const auto& [L, vals] : rows) {
        std::snprintf(buf, sizeof buf, "%7lld", (long long)L);
        s << buf;
        for (Method m : methods) {
            auto it = vals.find(m);
            if (it == vals.end())
                std::snprintf(buf, sizeof buf, "%14s", "-");
            else
                std::snprintf(buf, sizeof buf, "%14.3f", it->second);
            s << buf;
        }
        s << "\n";
    }
    return s.str();
}

}  // namespace mambascope

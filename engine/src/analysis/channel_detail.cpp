// Channel detail on demand (channel_detail.h): run_analysis again on the run's recorded input, with the
// run's recorded parameters and only the asked-for channels as probes, and merge the new traces in.
#include "mambascope/channel_detail.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "mambascope/error.h"

namespace mambascope {
namespace {

double param_or(const MethodResult& m, const std::string& key, double fallback) {
    auto it = m.params.find(key);
    return it != m.params.end() && std::isfinite(it->second) ? it->second : fallback;
}

bool traces(const MethodResult& m, const ChannelRef& ref) {
    return std::any_of(m.channels.begin(), m.channels.end(),
                       [&](const ChannelTrace& t) { return t.ref == ref; });
}

}  // namespace

AnalysisRequest channel_detail_request(const RunResult& run, const std::vector<ChannelRef>& channels) {
    AnalysisRequest req;
    req.methods.clear();
    for (const auto& m : run.methods) {
        req.methods.push_back(m.method);
        req.c = param_or(m, "c", req.c);
        if (m.method == Method::LongMamba) {
            req.b = param_or(m, "b", req.b);
            req.activate_above = int64_t(param_or(m, "activate_above", double(req.activate_above)));
        }
        if (m.method == Method::DeciMamba) {
            req.deci.L_base = int64_t(param_or(m, "L_base", double(req.deci.L_base)));
            req.deci.beta = param_or(m, "beta", req.deci.beta);
            req.deci.min_seq_len = int64_t(param_or(m, "min_seq_len", double(req.deci.min_seq_len)));
            req.deci.resp_len = int64_t(param_or(m, "resp_len", double(req.deci.resp_len)));
            for (int k = 0; m.params.count("deci_layer_" + std::to_string(k)); ++k)
                req.deci.layers.push_back(int(m.params.at("deci_layer_" + std::to_string(k))));
        }
        req.rf_epsilon = param_or(m, "rf_epsilon", req.rf_epsilon);
    }
    if (run.calibration_path) req.calibration_path = *run.calibration_path;
    if (run.find(Method::LongMamba) && req.calibration_path.empty())
        throw Error("the run's LongMamba detail needs its calibration, and the run names none",
                    "open the trace written with the calibration, or run the analysis again");
    req.channels = channels;
    req.window_begin = run.window_begin;
    req.window_end = run.window_end > run.window_begin ? run.window_end : -1;
    req.rf_positions = run.rf_positions;
    req.nll = false;
    // The attention window and normalisation of the maps the run has; none recorded: no attention.
    req.attention = false;
    for (const auto& m : run.methods)
        for (const auto& a : m.attention)
            if (a.alpha.shape.size() == 2 && a.alpha.shape[0] > 0) {
                req.attention = true;
                req.attention_begin = a.begin;
                req.attention_tokens = a.alpha.shape[0];
                req.attention_norm = a.norm;
                req.attention_log_floor = a.log_floor;
            }
    return req;
}

RunResult add_channel_detail(const Model& model, const RunResult& run,
                             const std::vector<ChannelRef>& channels, const ProgressFn& progress) {
    if (run.input.ids.empty())
        throw Error("the run records no input tokens, so its channels cannot be traced again",
                    "open a trace written by mambascope-cli analyze or the app (they record /input/ids)");
    if (model.config.n_layer != run.n_layer || model.config.channels() != run.channels)
        throw Error("the model (" + std::to_string(model.config.n_layer) + " layers × " +
                        std::to_string(model.config.channels()) + " channels) is not the run's (" +
                        std::to_string(run.n_layer) + " × " + std::to_string(run.channels) + ")",
                    "choose the model the trace was written with in the run panel");
    std::vector<ChannelRef> todo;
    for (const auto& ref : channels) {
        if (ref.layer < 0 || ref.layer >= run.n_layer || ref.channel < 0 || ref.channel >= run.channels)
            throw Error("channel " + std::to_string(ref.layer) + ":" + std::to_string(ref.channel) +
                        " does not exist in this run");
        const bool have = std::all_of(run.methods.begin(), run.methods.end(),
                                      [&](const MethodResult& m) { return traces(m, ref); });
        if (!have && std::find(todo.begin(), todo.end(), ref) == todo.end()) todo.push_back(ref);
    }
    RunResult out = run;
    if (todo.empty()) return out;
    const RunResult extra = run_analysis(model, run.input, channel_detail_request(run, todo), progress);
    for (auto& m : out.methods) {
        const MethodResult* e = extra.find(m.method);
        if (!e) continue;
        for (const auto& t : e->channels)
            if (!traces(m, t.ref)) m.channels.push_back(t);
        for (const auto& a : e->attention)
            if (std::none_of(m.attention.begin(), m.attention.end(),
                             [&](const AttentionMap& x) { return x.ref == a.ref; }))
                m.attention.push_back(a);
    }
    return out;
}

}  // namespace mambascope

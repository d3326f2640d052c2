// Fuzz target: a calibration HDF5 file (load_calibration on a temp file made from the bytes). A calibration
// that loads is then used as the analysis uses it: shape check against a model config, global mask, every
// threshold (ASan catches arrays shorter than the dimensions say), LongMamba's filter at a long prefill.
#include "fuzz_common.h"
#include "mambascope/calibration.h"
#include "mambascope/config.h"
#include "mambascope/longmamba.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const auto path = fuzz::write_temp("calibration.h5", data, size);
    try {
        const mambascope::Calibration cal = mambascope::load_calibration(path);
        double acc = 0.0;
        for (int64_t l = 0; l < cal.n_layer; ++l)
            for (int64_t li = 0; li < cal.n_lengths(); ++li)
                for (int64_t c = 0; c < cal.channels; ++c) acc += cal.threshold(l, li, c);
        const std::vector<uint8_t> mask = mambascope::global_mask(cal, 0.05);
        for (uint8_t m : mask) acc += m;
        const int64_t longest = cal.lengths.empty() ? 0 : cal.lengths.back();
        const int64_t S = std::max<int64_t>(cal.params.train_len, longest) + 1;
        if (S > 0 && S < (int64_t{1} << 40)) {
            const mambascope::DeltaFilter f =
                mambascope::make_longmamba_filter(cal, mambascope::FilterParams{}, S);
            for (const auto& row : f.threshold) acc += row.size();
        }
        fuzz_keep(acc);
        mambascope::ModelConfig cfg;
        cfg.arch = mambascope::Arch::Mamba2;
        cfg.n_layer = 2;
        cfg.d_inner = 64;
        cfg.head_dim = 8;
        cfg.n_heads = 8;
        mambascope::check_calibration_matches(cal, cfg);
    } catch (const mambascope::Error& e) {
        fuzz::keep_probe_crash(path, e);
    }
    return 0;
}

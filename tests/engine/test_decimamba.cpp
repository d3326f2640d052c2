// DeciMamba selection (method doc §4, §8.8).
#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "mambascope/decimamba.h"
#include "mambascope/error.h"

using namespace mambascope;

TEST(DeciMamba, KeepCountFollowsTheSchedule) {
    EXPECT_EQ(decimation_keep_count(10000, 2000, 0.5, 0, 20), 2000);  // L_base·β^0
    EXPECT_EQ(decimation_keep_count(10000, 2000, 0.5, 2, 20), 500);   // L_base·β^2
    EXPECT_EQ(decimation_keep_count(1000, 2000, 1.0, 0, 20), 1000);   // capped at T_dec: nothing dropped
    EXPECT_EQ(decimation_keep_count(10000, 10, 1.0, 0, 20), 20);      // min_seq_len
    EXPECT_EQ(decimation_keep_count(5, 10, 1.0, 0, 20), 5);           // min_seq_len above T_dec: all
}

TEST(DeciMamba, SelectsTopKWithTiesToEarlierAndKeepsResponseTokens) {
    // 10 positions (original ids 100..109); last 3 are response tokens; K = 3 among the first 7.
    std::vector<int64_t> pos(10);
    std::iota(pos.begin(), pos.end(), 100);
    const std::vector<double> s = {0.1, 5.0, 2.0, 2.0, 0.3, 2.0, 9.0, /*resp*/ 0.0, 0.0, 0.0};
    const std::vector<int64_t> kept = select_decimated(pos, s, 3, 3, 1.0, 0, 0);
    // top-3: 9.0 (106), 5.0 (101), then the tie at 2.0 → earliest (102); sorted; plus 107..109
    EXPECT_EQ(kept, (std::vector<int64_t>{101, 102, 106, 107, 108, 109}));
}

TEST(DeciMamba, ResponseLongerThanInputKeepsEverything) {
    const std::vector<int64_t> pos = {0, 3, 7};
    const std::vector<double> s = {1, 2, 3};
    EXPECT_EQ(select_decimated(pos, s, 100, 1, 1.0, 0, 0), pos);
}

TEST(DeciMamba, DefaultsAdaptToTheModel) {
    ModelConfig cfg;
    cfg.n_layer = 24;
    cfg.train_len = 2048;
    const DeciParams p = resolve_deci_params(cfg, DeciParams{});
    EXPECT_EQ(p.layers, (std::vector<int>{12}));
    EXPECT_EQ(p.L_base, 2048);
    DeciParams bad;
    bad.layers = {5, 3};
    EXPECT_THROW(resolve_deci_params(cfg, bad), Error);
    bad.layers = {24};
    EXPECT_THROW(resolve_deci_params(cfg, bad), Error);
}

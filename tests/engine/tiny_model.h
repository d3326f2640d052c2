// tiny_model.h: the small random-weight model shape the engine tests share: 3 layers, d_model 24, d_inner 48,
// vocab 37, conv width 3, trained at 64 tokens. Mamba-1: d_state 5, dt_rank 3; Mamba-2: 6 heads of 8, 2
// groups, d_state 4. Every code path runs, each forward takes milliseconds, and odd sizes catch stride
// mistakes.
#pragma once

#include "mambascope/config.h"

namespace mambascope::test {

inline ModelConfig tiny(Arch arch) {
    ModelConfig c;
    c.arch = arch;
    c.d_model = 24;
    c.n_layer = 3;
    c.vocab_size = 37;
    c.d_conv = 3;
    c.train_len = 64;
    c.d_inner = 48;
    if (arch == Arch::Mamba1) {
        c.d_state = 5;
        c.dt_rank = 3;
    } else {
        c.n_heads = 6;
        c.head_dim = 8;
        c.n_groups = 2;
        c.d_state = 4;
    }
    return c;
}

}  // namespace mambascope::test

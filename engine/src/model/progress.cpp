#include "mambascope/progress.h"

#include "mambascope/error.h"

namespace mambascope {

void report_progress(const ProgressFn& fn, double fraction, std::string_view stage) {
    if (fn && !fn(fraction, stage)) throw Cancelled();
}

}  // namespace mambascope

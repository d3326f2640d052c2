// Built only when no engine source defines run_analysis (the trace branch not merged yet): keeps the app
// linkable and makes the Run button report a clear error instead of failing to build. CMake drops this file
// as soon as the engine provides the real function.
#include "mambascope/analysis.h"
#include "mambascope/error.h"

namespace mambascope {

RunResult run_analysis(const Model&, const RunInput&, const AnalysisRequest&, const ProgressFn&) {
    throw Error("run_analysis is not part of this engine build",
                "rebuild Mambascope from a tree that includes the analysis runner (branch trace2), or open a "
                "saved trace with File > Open trace");
}

}  // namespace mambascope

#include "analysis_worker.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "mambascope/calibration.h"
#include "mambascope/error.h"
#include "mambascope/model.h"
#include "mambascope/tokenizer.h"

namespace mambascope::gui {

AnalysisWorker::AnalysisWorker(QObject* parent)
    : QObject(parent),
      run_fn_(&run_analysis),
      answer_fn_(&answer_haystack),
      job_(this, {.progress =
                      [this](double f, std::string_view stage, double elapsed) {
                          const double remaining = f > 0.01 ? elapsed * (1 - f) / f : -1;
                          emit progress(f, QString::fromUtf8(stage.data(), qsizetype(stage.size())), elapsed,
                                        remaining);
                      },
                  .finished = [this](RunResultPtr result) { emit finished(result); },
                  .failed = [this](const QString& message) { emit failed(message); },
                  .cancelled = [this] { emit cancelled(); }}) {
    qRegisterMetaType<RunResultPtr>("mambascope::gui::RunResultPtr");
}

AnalysisWorker::~AnalysisWorker() {
    job_.stop();
}

bool AnalysisWorker::start(const AnalysisJob& job) {
    if (job_.busy()) return false;
    auto cached = job_.cachedModel(job.model_dir);
    RunFn fn = run_fn_;
    AnswerFn answer = answer_fn_;
    last_job_ = job;
    return job_.start([job, cached, fn, answer](JobOutcome& out, const ProgressFn& progress) {
        if (job.model_dir.empty())
            throw Error("no model chosen",
                        "pick a model folder (config.json + weights) or use the demo model");
        std::shared_ptr<const Model> model = cached ? cached : load_model(job.model_dir);
        RunInput input;
        std::map<std::string, std::string> haystack_prov;
        Haystack haystack;
        if (job.isHaystack()) {
            report_progress(progress, 0.0, "building the haystack");
            input = session_haystack_input(job.haystack, *model, &haystack, &haystack_prov);
        } else {
            std::string text = job.text;
            if (text.empty()) {
                std::ifstream in(job.text_path, std::ios::binary);
                if (!in)
                    throw Error("cannot open text file '" + job.text_path + "'", "choose a UTF-8 text file");
                std::stringstream ss;
                ss << in.rdbuf();
                text = ss.str();
            }
            report_progress(progress, 0.0, "tokenising");
            input = make_run_input(*model, text, job.text.empty() ? job.text_path : "", job.max_tokens);
        }
        if (input.ids.size() < 2) throw Error("the input has fewer than 2 tokens", "give a longer text");
        auto result = std::make_shared<RunResult>(fn(*model, input, job.request, progress));
        if (!result->provenance.count("model")) result->provenance["model"] = model->name;
        // Where the model is: a channel the run did not trace is computed later with it.
        if (!model->dir.empty())
            result->provenance["model_path"] = std::filesystem::absolute(model->dir).string();
        if (!result->provenance.count("model_name")) result->provenance["model_name"] = model->name;
        if (job.isHaystack()) {
            for (const auto& [k, v] : haystack_prov) result->provenance[k] = v;
            // The session's cell, so the retrieval view can mark it ("L:DI:S" as the CLI's --trace-cell).
            const auto& hs = job.haystack.haystack;
            result->provenance["haystack.cell"] = std::to_string(hs.length) + ":" +
                                                  std::to_string(hs.depth_index) + ":" +
                                                  std::to_string(hs.sample);
            if (answer)
                for (const auto& [k, v] : answer(*model, haystack, job.request, progress))
                    result->provenance[k] = v;
        }
        out.result = result;
        out.model = model;  // kept for the next run (a run that failed or was cancelled keeps none)
        out.model_dir = job.model_dir;
    });
}

}  // namespace mambascope::gui

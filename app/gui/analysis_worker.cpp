#include "analysis_worker.h"

#include <QtConcurrent/QtConcurrent>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <optional>

#include "mambascope/calibration.h"
#include "mambascope/error.h"
#include "mambascope/model.h"
#include "mambascope/tokenizer.h"

namespace mambascope::gui {

AnalysisWorker::AnalysisWorker(QObject* parent)
    : QObject(parent), run_fn_(&run_analysis), answer_fn_(&answer_haystack) {
    qRegisterMetaType<RunResultPtr>("mambascope::gui::RunResultPtr");
    watcher_ = new QFutureWatcher<Outcome>(this);
    connect(watcher_, &QFutureWatcher<Outcome>::finished, this, &AnalysisWorker::onDone);
}

AnalysisWorker::~AnalysisWorker() {
    cancel_ = true;
    watcher_->waitForFinished();
}

bool AnalysisWorker::start(const AnalysisJob& job) {
    if (busy_) return false;
    busy_ = true;
    cancel_ = false;
    clock_.start();
    auto cached = model_;
    const bool reuse = cached && model_dir_ == job.model_dir;
    RunFn fn = run_fn_;
    AnswerFn answer = answer_fn_;
    last_job_ = job;
    auto future = QtConcurrent::run([this, job, cached, reuse, fn, answer]() -> Outcome {
        Outcome out;
        const ProgressFn progress = [this](double f, std::string_view stage) {
            const double el = clock_.elapsed() / 1000.0;
            const double rem = f > 0.01 ? el * (1 - f) / f : -1;
            emit this->progress(f, QString::fromUtf8(stage.data(), qsizetype(stage.size())), el, rem);
            return !cancel_.load();
        };
        try {
            if (job.model_dir.empty())
                throw Error("no model chosen",
                            "pick a model folder (config.json + weights) or use the demo model");
            std::shared_ptr<const Model> model = reuse ? cached : load_model(job.model_dir);
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
                        throw Error("cannot open text file '" + job.text_path + "'",
                                    "choose a UTF-8 text file");
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
            QMetaObject::invokeMethod(this, [this, model, dir = job.model_dir] {
                model_ = model;
                model_dir_ = dir;
            });
        } catch (const Cancelled&) {
            out.cancelled = true;
        } catch (const Error& e) {
            out.error = QString::fromStdString(describe(e));
        } catch (const std::exception& e) {
            out.error = QString::fromUtf8(e.what());
        }
        return out;
    });
    watcher_->setFuture(future);
    return true;
}

void AnalysisWorker::wait() {
    if (!busy_) return;
    watcher_->waitForFinished();
    QCoreApplication::processEvents();
    if (busy_) onDone();
}

void AnalysisWorker::onDone() {
    if (!busy_) return;
    busy_ = false;
    const Outcome out = watcher_->result();
    if (out.cancelled)
        emit cancelled();
    else if (out.result)
        emit finished(out.result);
    else
        emit failed(out.error);
}

}  // namespace mambascope::gui

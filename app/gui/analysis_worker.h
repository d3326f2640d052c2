// analysis_worker.h: runs load_model → tokenise (or build the session's passkey haystack) → run_analysis
// (→ each method's answer to the haystack's question) off the GUI thread and reports back.
//
// Design decision: the engine's ProgressFn (a plain function) is the only bridge (background_job.h): it emits
// a queued progress signal and returns false once Cancel was pressed, so the engine throws Cancelled at its
// next safe point. The run function is injectable so tests can drive cancellation without a long real run.
#pragma once

#include <QObject>
#include <functional>
#include <map>
#include <string>

#include "background_job.h"
#include "gui_util.h"

#include "mambascope/analysis.h"
#include "mambascope/retrieval.h"
#include "mambascope/session.h"

namespace mambascope::gui {

struct AnalysisJob {
    std::string model_dir;
    std::string text_path;  // used when text is empty
    std::string text;       // pasted text (wins over text_path)
    int64_t max_tokens = 16384;
    AnalysisRequest request;
    // When haystack.haystack.length > 0 the input is that passkey haystack (session_haystack_input: the
    // session gives the cell, the filler and the template), not the text; its "haystack.*" provenance and
    // each method's answer are added to the result.
    Session haystack;
    bool isHaystack() const { return haystack.haystack.length > 0; }
};

class AnalysisWorker : public QObject {
    Q_OBJECT
  public:
    using RunFn =
        std::function<RunResult(const Model&, const RunInput&, const AnalysisRequest&, const ProgressFn&)>;
    using AnswerFn = std::function<std::map<std::string, std::string>(
        const Model&, const Haystack&, const AnalysisRequest&, const ProgressFn&)>;
    explicit AnalysisWorker(QObject* parent = nullptr);
    ~AnalysisWorker() override;
    bool busy() const { return job_.busy(); }
    void setRunFunction(RunFn fn) { run_fn_ = std::move(fn); }
    // Answers a haystack run's question after the run (default answer_haystack; tests inject a fake).
    void setAnswerFunction(AnswerFn fn) { answer_fn_ = std::move(fn); }
    // The job of the latest start() (tests, and the status line of a haystack run).
    const AnalysisJob& lastJob() const { return last_job_; }
    // Starts a run; returns false (and does nothing) while one is in flight.
    bool start(const AnalysisJob& job);
    // Blocks until the current run ends (headless use and tests).
    void wait() { job_.wait(); }

  public slots:
    void cancel() { job_.cancel(); }

  signals:
    void progress(double fraction, const QString& stage, double elapsedSeconds, double remainingSeconds);
    void finished(mambascope::gui::RunResultPtr result);
    void failed(const QString& message);
    void cancelled();

  private:
    RunFn run_fn_;
    AnswerFn answer_fn_;
    AnalysisJob last_job_;
    // Keeps the last model loaded (reloading a 100 MB model per run would dominate short runs).
    BackgroundJob job_;
};

}  // namespace mambascope::gui

Q_DECLARE_METATYPE(mambascope::gui::RunResultPtr)

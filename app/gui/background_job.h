// background_job.h: the thread, progress, cancel and wait plumbing of the GUI's background workers
// (AnalysisWorker, DetailWorker): one engine job at a time on Qt's thread pool, its outcome handed back on
// the GUI thread, and the model it used kept for the next job with the same model folder.
//
// Design decision: the engine's ProgressFn (a plain function) is the only bridge: the job's progress handler
// runs on the pool thread and the ProgressFn returns false once cancel() was called, so the engine throws
// Cancelled at its next safe point. Exceptions become the outcome (Cancelled → cancelled, Error → its
// describe() text), so a worker only says what its job computes and what its signals carry.
#pragma once

#include <QElapsedTimer>
#include <QFutureWatcher>
#include <QObject>
#include <QString>
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "gui_util.h"
#include "mambascope/analysis.h"

namespace mambascope::gui {

// What a job leaves for the GUI thread. The job's work sets `result` (success) and, to have the model kept,
// `model` and `model_dir`; BackgroundJob sets `error` or `cancelled` from what the work threw.
struct JobOutcome {
    RunResultPtr result;
    QString error;
    bool cancelled = false;
    std::shared_ptr<const Model> model;  // the model the job used, kept for the next job from model_dir
    std::string model_dir;
};

class BackgroundJob {
  public:
    // The owner's reactions. `progress` runs on the pool thread; exactly one of the others runs on the GUI
    // thread when a job ends.
    struct Handlers {
        std::function<void(double fraction, std::string_view stage, double elapsed_seconds)> progress;
        std::function<void(RunResultPtr result)> finished;
        std::function<void(const QString& message)> failed;
        std::function<void()> cancelled;
    };
    // The job itself, run on the pool thread; it may throw (Cancelled, Error, std::exception).
    using Work = std::function<void(JobOutcome& out, const ProgressFn& progress)>;

    // `owner` is the QObject whose thread receives the outcome (the worker that holds this job).
    BackgroundJob(QObject* owner, Handlers handlers);
    ~BackgroundJob() { stop(); }
    BackgroundJob(const BackgroundJob&) = delete;
    BackgroundJob& operator=(const BackgroundJob&) = delete;

    bool busy() const { return busy_; }
    // Starts `work`; returns false (and does nothing) while a job is in flight.
    bool start(Work work);
    void cancel() { cancel_ = true; }
    // Blocks until the current job ends and its handler ran (headless use and tests).
    void wait();
    // Cancels a job in flight and blocks until its work returned, without running a handler: a worker's
    // destructor calls it so that no handler runs in a half-destroyed worker.
    void stop();
    // The model kept from the last job that set one, if it came from `model_dir`; null otherwise.
    std::shared_ptr<const Model> cachedModel(const std::string& model_dir) const {
        return model_ && model_dir == model_dir_ ? model_ : nullptr;
    }

  private:
    void onDone();
    Handlers handlers_;
    std::atomic<bool> cancel_{false};
    bool busy_ = false;
    QElapsedTimer clock_;  // since the current job's start()
    QFutureWatcher<JobOutcome> watcher_;
    std::shared_ptr<const Model> model_;  // cache: the last model a job kept, from model_dir_
    std::string model_dir_;
};

}  // namespace mambascope::gui

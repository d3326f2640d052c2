// detail_worker.h: computes the detail of a channel the run did not trace (channel_detail.h) off the GUI
// thread, with progress and cancellation, for the channel detail, attention and tokens views.
//
// Design decision: the result is a new immutable RunResult (the old one plus the channel's traces); the
// window swaps it in, so views never see a half-filled run. The model is loaded once per folder and kept.
// The compute function is injectable so tests can check the wiring without a model.
#pragma once

#include <QObject>
#include <functional>
#include <string>
#include <vector>

#include "background_job.h"
#include "gui_util.h"
#include "mambascope/analysis.h"

namespace mambascope::gui {

class DetailWorker : public QObject {
    Q_OBJECT
  public:
    using DetailFn = std::function<RunResult(const Model&, const RunResult&, const std::vector<ChannelRef>&,
                                             const ProgressFn&)>;
    explicit DetailWorker(QObject* parent = nullptr);
    ~DetailWorker() override;
    void setDetailFunction(DetailFn fn) { fn_ = std::move(fn); }
    bool busy() const { return job_.busy(); }
    ChannelRef channel() const { return channel_; }  // of the job in flight (or the last one)
    // Starts computing `ref` for `run` with the model in `model_dir`; false while a job is in flight.
    bool start(RunResultPtr run, const std::string& model_dir, ChannelRef ref);
    void wait() { job_.wait(); }  // blocks until the job ends (tests, headless use)

  public slots:
    void cancel() { job_.cancel(); }

  signals:
    void progress(double fraction);
    void finished(mambascope::gui::RunResultPtr result, mambascope::ChannelRef ref);
    void failed(const QString& message, mambascope::ChannelRef ref);
    void cancelled(mambascope::ChannelRef ref);

  private:
    DetailFn fn_;
    ChannelRef channel_;
    BackgroundJob job_;  // keeps the last model loaded
};

}  // namespace mambascope::gui

Q_DECLARE_METATYPE(mambascope::ChannelRef)

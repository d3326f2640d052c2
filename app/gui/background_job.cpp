#include "background_job.h"

#include <QCoreApplication>
#include <QtConcurrent/QtConcurrent>
#include <exception>

#include "mambascope/error.h"

namespace mambascope::gui {

BackgroundJob::BackgroundJob(QObject* owner, Handlers handlers) : handlers_(std::move(handlers)) {
    QObject::connect(&watcher_, &QFutureWatcher<JobOutcome>::finished, owner, [this] { onDone(); });
}

bool BackgroundJob::start(Work work) {
    if (busy_) return false;
    busy_ = true;
    cancel_ = false;
    clock_.start();
    watcher_.setFuture(QtConcurrent::run([this, work = std::move(work)]() -> JobOutcome {
        JobOutcome out;
        const ProgressFn progress = [this](double fraction, std::string_view stage) {
            handlers_.progress(fraction, stage, clock_.elapsed() / 1000.0);
            return !cancel_.load();
        };
        try {
            work(out, progress);
        } catch (const Cancelled&) {
            out.cancelled = true;
        } catch (const Error& e) {
            out.error = QString::fromStdString(describe(e));
        } catch (const std::exception& e) {
            out.error = QString::fromUtf8(e.what());
        }
        return out;
    }));
    return true;
}

void BackgroundJob::wait() {
    if (!busy_) return;
    watcher_.waitForFinished();
    QCoreApplication::processEvents();
    if (busy_) onDone();
}

void BackgroundJob::stop() {
    cancel_ = true;
    watcher_.waitForFinished();
}

void BackgroundJob::onDone() {
    if (!busy_) return;
    busy_ = false;
    const JobOutcome out = watcher_.result();
    if (out.model) model_ = out.model, model_dir_ = out.model_dir;
    if (out.cancelled)
        handlers_.cancelled();
    else if (out.result)
        handlers_.finished(out.result);
    else
        handlers_.failed(out.error);
}

}  // namespace mambascope::gui

#include "detail_worker.h"

#include <QtConcurrent/QtConcurrent>

#include "mambascope/channel_detail.h"
#include "mambascope/error.h"
#include "mambascope/model.h"

namespace mambascope::gui {

DetailWorker::DetailWorker(QObject* parent) : QObject(parent), fn_(&add_channel_detail) {
    qRegisterMetaType<RunResultPtr>("mambascope::gui::RunResultPtr");
    qRegisterMetaType<ChannelRef>("mambascope::ChannelRef");
    watcher_ = new QFutureWatcher<Outcome>(this);
    connect(watcher_, &QFutureWatcher<Outcome>::finished, this, &DetailWorker::onDone);
}

DetailWorker::~DetailWorker() {
    cancel_ = true;
    watcher_->waitForFinished();
}

bool DetailWorker::start(RunResultPtr run, const std::string& model_dir, ChannelRef ref) {
    if (busy_ || !run) return false;
    busy_ = true;
    cancel_ = false;
    channel_ = ref;
    auto cached = model_dir == model_dir_ ? model_ : nullptr;
    DetailFn fn = fn_;
    watcher_->setFuture(QtConcurrent::run([this, run, model_dir, ref, cached, fn]() -> Outcome {
        Outcome out;
        const ProgressFn progress = [this](double f, std::string_view) {
            emit this->progress(f);
            return !cancel_.load();
        };
        try {
            if (model_dir.empty())
                throw Error("no model to compute this channel's detail with",
                            "choose the model the trace was written with in the run panel");
            out.model = cached ? cached : load_model(model_dir);
            out.result = std::make_shared<RunResult>(fn(*out.model, *run, {ref}, progress));
        } catch (const Cancelled&) {
            out.cancelled = true;
        } catch (const Error& e) {
            out.error = QString::fromStdString(describe(e));
        } catch (const std::exception& e) {
            out.error = QString::fromUtf8(e.what());
        }
        return out;
    }));
    job_dir_ = model_dir;
    return true;
}

void DetailWorker::wait() {
    if (!busy_) return;
    watcher_->waitForFinished();
    QCoreApplication::processEvents();
    if (busy_) onDone();
}

void DetailWorker::onDone() {
    if (!busy_) return;
    busy_ = false;
    const Outcome out = watcher_->result();
    if (out.model) model_ = out.model, model_dir_ = job_dir_;
    if (out.cancelled)
        emit cancelled(channel_);
    else if (out.result)
        emit finished(out.result, channel_);
    else
        emit failed(out.error, channel_);
}

}  // namespace mambascope::gui

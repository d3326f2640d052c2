#include "detail_worker.h"

#include "mambascope/channel_detail.h"
#include "mambascope/error.h"
#include "mambascope/model.h"

namespace mambascope::gui {

DetailWorker::DetailWorker(QObject* parent)
    : QObject(parent),
      fn_(&add_channel_detail),
      job_(this, {.progress = [this](double f, std::string_view, double) { emit progress(f); },
                  .finished = [this](RunResultPtr result) { emit finished(result, channel_); },
                  .failed = [this](const QString& message) { emit failed(message, channel_); },
                  .cancelled = [this] { emit cancelled(channel_); }}) {
    qRegisterMetaType<RunResultPtr>("mambascope::gui::RunResultPtr");
    qRegisterMetaType<ChannelRef>("mambascope::ChannelRef");
}

DetailWorker::~DetailWorker() {
    job_.stop();
}

bool DetailWorker::start(RunResultPtr run, const std::string& model_dir, ChannelRef ref) {
    if (job_.busy() || !run) return false;
    channel_ = ref;
    auto cached = job_.cachedModel(model_dir);
    DetailFn fn = fn_;
    return job_.start([run, model_dir, ref, cached, fn](JobOutcome& out, const ProgressFn& progress) {
        if (model_dir.empty())
            throw Error("no model to compute this channel's detail with",
                        "choose the model the trace was written with in the run panel");
        out.model = cached ? cached : load_model(model_dir);
        out.model_dir = model_dir;
        out.result = std::make_shared<RunResult>(fn(*out.model, *run, {ref}, progress));
    });
}

}  // namespace mambascope::gui

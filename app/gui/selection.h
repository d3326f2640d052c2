// selection.h: the one shared selection (layer, channel, token) that links every view.
//
// Design decision: views never talk to each other; they set and observe this object. Setters emit only on a
// real change, so a view reacting to a signal by setting the same value cannot loop.
#pragma once

#include <QObject>
#include <QString>
#include <cstdint>
#include <set>

#include "mambascope/analysis.h"

namespace mambascope::gui {

class Selection : public QObject {
    Q_OBJECT
  public:
    using QObject::QObject;
    int layer() const { return layer_; }
    qint64 channel() const { return channel_; }
    qint64 token() const { return token_; }

  public slots:
    void setChannel(int layer, qint64 channel) {
        if (layer == layer_ && channel == channel_) return;
        layer_ = layer;
        channel_ = channel;
        emit channelChanged(layer_, channel_);
    }
    void setToken(qint64 token) {
        if (token == token_) return;
        token_ = token;
        emit tokenChanged(token_);
    }

    // Detail of the selected channel when the run did not trace it (computed on demand by the window): what
    // the detail views say instead of plots, and the progress. An empty note: nothing pending.
    QString detailNote() const { return detailNote_; }
    double detailProgress() const { return detailProgress_; }  // in [0, 1]; < 0: no progress to show
    void setDetailStatus(const QString& note, double progress = -1) {
        if (note == detailNote_ && progress == detailProgress_) return;
        detailNote_ = note;
        detailProgress_ = progress;
        emit detailStatusChanged();
    }
    void requestDetailCancel() { emit detailCancelRequested(); }
    // Methods hidden in every view (a legend click or a map's check box hides a method everywhere).
    bool methodShown(Method m) const { return !hidden_.count(m); }
    const std::set<Method>& hiddenMethods() const { return hidden_; }
    void setMethodShown(Method m, bool shown) {
        if (shown == methodShown(m)) return;
        if (shown)
            hidden_.erase(m);
        else
            hidden_.insert(m);
        emit methodsShownChanged();
    }

  signals:
    void channelChanged(int layer, qint64 channel);
    void tokenChanged(qint64 token);
    void detailStatusChanged();
    void detailCancelRequested();
    void methodsShownChanged();

  private:
    int layer_ = 0;
    qint64 channel_ = 0;
    qint64 token_ = -1;
    QString detailNote_;
    double detailProgress_ = -1;
    std::set<Method> hidden_;
};

}  // namespace mambascope::gui

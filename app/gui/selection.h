// selection.h: the one shared selection (layer, channel, token) that links every view.
//
// Design decision: views never talk to each other; they set and observe this object. Setters emit only on a
// real change, so a view reacting to a signal by setting the same value cannot loop.
#pragma once

#include <QObject>
#include <cstdint>

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

  signals:
    void channelChanged(int layer, qint64 channel);
    void tokenChanged(qint64 token);

  private:
    int layer_ = 0;
    qint64 channel_ = 0;
    qint64 token_ = -1;
};

}  // namespace mambascope::gui

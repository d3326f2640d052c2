#include "views.h"

#include <QApplication>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QPdfWriter>
#include <QTextBlock>
#include <QToolTip>
#include <QVBoxLayout>
#include <algorithm>
#include <cmath>
#include <limits>

#include "mambascope/error.h"

namespace mambascope::gui {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// Tokens shown at once in the Tokens view (the rest of a 128k input is not laid out).
constexpr qint64 kTokenViewSpan = 3000;
// Markers for global channels are skipped above this count (they would hide the map).
constexpr qint64 kMaxGlobalMarkers = 20000;

QCustomPlot* new_plot(QWidget* parent) {
    auto* p = new QCustomPlot(parent);
    p->setInteractions(QCP::iRangeDrag | QCP::iRangeZoom);
    p->setMinimumSize(200, 160);
    p->setNoAntialiasingOnDrag(true);
    return p;
}

const ChannelTrace* find_trace(const MethodResult& m, int layer, qint64 channel) {
    for (const auto& t : m.channels)
        if (t.ref.layer == layer && t.ref.channel == channel) return &t;
    return nullptr;
}

void set_graph(QCPGraph* g, const QVector<double>& x, const QVector<double>& y) {
    QVector<double> dx, dy;
    decimate_min_max(x, y, kMaxPlotPoints, dx, dy);
    g->setData(dx, dy, true);
}

}  // namespace

// ---- Channel map ------------------------------------------------------------------------------------------

ChannelMapView::ChannelMapView(Selection* selection, QWidget* parent) : ResultView(selection, parent) {
    auto* lay = new QVBoxLayout(this);
    auto* top = new QHBoxLayout;
    top->addWidget(new QLabel("Statistic:"));
    stat_ = new QComboBox;
    stat_->addItem("log decay  A·ΣΔ (§8.2)", LogDecay);
    stat_->addItem("Σ Δ over the input", DeltaSum);
    stat_->addItem("critical-token count (§8.6)", CriticalCount);
    stat_->addItem("receptive field, last position (tokens, §8.7)", ReceptiveField);
    stat_->setToolTip(
        "The per-channel summary drawn as colour. Global channels (LongMamba §8.4) are marked ×.");
    top->addWidget(stat_);
    top->addStretch();
    lay->addLayout(top);
    plotsHost_ = new QWidget;
    new QHBoxLayout(plotsHost_);
    lay->addWidget(plotsHost_, 1);
    connect(stat_, &QComboBox::currentIndexChanged, this, [this] { rebuild(); });
    connect(sel_, &Selection::channelChanged, this, [this] { updateMarker(); });
}

void ChannelMapView::setStatistic(Statistic s) {
    stat_->setCurrentIndex(stat_->findData(int(s)));
}

double ChannelMapView::value(Method method, int l, qint64 c) const {
    if (!result_) return kNaN;
    const MethodResult* m = result_->find(method);
    if (!m) return kNaN;
    auto ok2 = [&](const auto& a) { return a.shape.size() == 2 && l < a.shape[0] && c < a.shape[1]; };
    switch (Statistic(stat_->currentData().toInt())) {
        case LogDecay:
            return ok2(m->log_decay) ? m->log_decay.at2(l, c) : kNaN;
        case DeltaSum:
            return ok2(m->delta_sum) ? m->delta_sum.at2(l, c) : kNaN;
        case CriticalCount:
            return ok2(m->critical_count) ? double(m->critical_count.at2(l, c)) : kNaN;
        case ReceptiveField: {
            const auto& a = m->receptive_field;
            if (a.shape.size() != 3 || l >= a.shape[0] || c >= a.shape[2] || a.shape[1] == 0) return kNaN;
            const int64_t P = a.shape[1];
            return double(a.data[size_t((l * P + P - 1) * a.shape[2] + c)]);
        }
    }
    return kNaN;
}

void ChannelMapView::setResult(RunResultPtr result) {
    result_ = std::move(result);
    rebuild();
}

void ChannelMapView::rebuild() {
    for (auto* p : plots_) p->deleteLater();
    plots_.clear();
    maps_.clear();
    markers_.clear();
    methods_.clear();
    scale_ = nullptr;
    if (!result_) return;
    const int L = result_->n_layer;
    const qint64 C = result_->channels;
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (const auto& mr : result_->methods) {
        auto* plot = new_plot(plotsHost_);
        plotsHost_->layout()->addWidget(plot);
        plot->plotLayout()->insertRow(0);
        plot->plotLayout()->addElement(
            0, 0, new QCPTextElement(plot, method_label(mr.method), QFont("sans", 10, QFont::Bold)));
        plot->xAxis->setLabel("channel");
        plot->yAxis->setLabel("layer");
        auto* map = new QCPColorMap(plot->xAxis, plot->yAxis);
        map->data()->setSize(int(C), L);
        map->data()->setRange(QCPRange(0, double(C - 1)), QCPRange(0, L - 1));
        for (int l = 0; l < L; ++l)
            for (qint64 c = 0; c < C; ++c) {
                const double v = value(mr.method, l, c);
                map->data()->setCell(int(c), l, v);
                // The shared scale is vanilla's and LongMamba's (DeciMamba's decays are far larger and
                // would wash out the comparison; its map saturates instead).
                const bool in_scale = mr.method != Method::DeciMamba || result_->methods.size() == 1;
                if (in_scale && std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
            }
        map->setGradient(QCPColorGradient::gpThermal);
        map->setInterpolate(false);
        // Global channels (§8.4)
        QVector<double> gx, gy;
        if (mr.global_mask.shape.size() == 2 && mr.global_mask.shape[0] == L && mr.global_mask.shape[1] == C)
            for (int l = 0; l < L && gx.size() < kMaxGlobalMarkers; ++l)
                for (qint64 c = 0; c < C; ++c)
                    if (mr.global_mask.at2(l, c)) gx << double(c), gy << double(l);
        auto* g = plot->addGraph();
        g->setName("global channels");
        g->setLineStyle(QCPGraph::lsNone);
        g->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCross, QPen(Qt::white), Qt::NoBrush, 4));
        g->setData(gx, gy);
        auto* marker = plot->addGraph();
        marker->setLineStyle(QCPGraph::lsNone);
        marker->setScatterStyle(
            QCPScatterStyle(QCPScatterStyle::ssSquare, QPen(Qt::cyan, 2), Qt::NoBrush, 9));
        plots_.push_back(plot);
        maps_.push_back(map);
        markers_.push_back(marker);
        methods_.push_back(mr.method);
        const Method method = mr.method;
        connect(plot, &QCustomPlot::mouseMove, this, [this, plot, map, method](QMouseEvent* ev) {
            int c = 0, l = 0;
            map->data()->coordToCell(plot->xAxis->pixelToCoord(ev->pos().x()),
                                     plot->yAxis->pixelToCoord(ev->pos().y()), &c, &l);
            if (c < 0 || l < 0 || c >= map->data()->keySize() || l >= map->data()->valueSize()) return;
            QToolTip::showText(ev->globalPosition().toPoint(),
                               QString("%1 · layer %2, channel %3\n%4 = %5")
                                   .arg(method_label(method))
                                   .arg(l)
                                   .arg(c)
                                   .arg(stat_->currentText())
                                   .arg(value(method, l, c), 0, 'g', 5),
                               plot);
        });
        auto press = std::make_shared<QPoint>();
        connect(plot, &QCustomPlot::mousePress, this, [press](QMouseEvent* ev) { *press = ev->pos(); });
        connect(plot, &QCustomPlot::mouseRelease, this, [this, plot, map, press](QMouseEvent* ev) {
            if ((ev->pos() - *press).manhattanLength() > 4) return;  // a drag, not a click
            int c = 0, l = 0;
            map->data()->coordToCell(plot->xAxis->pixelToCoord(ev->pos().x()),
                                     plot->yAxis->pixelToCoord(ev->pos().y()), &c, &l);
            if (c >= 0 && l >= 0 && c < map->data()->keySize() && l < map->data()->valueSize())
                selectCell(l, c);
        });
    }
    if (!maps_.empty()) {
        scale_ = new QCPColorScale(plots_.back());
        plots_.back()->plotLayout()->addElement(1, 1, scale_);
        scale_->axis()->setLabel(stat_->currentText());
        scale_->setGradient(QCPColorGradient::gpThermal);
        maps_.back()->setColorScale(scale_);
        const QCPRange range(std::isfinite(lo) ? lo : 0, std::isfinite(hi) && hi > lo ? hi : lo + 1);
        for (size_t i = 0; i < maps_.size(); ++i) {
            maps_[i]->setDataRange(range);  // one colour scale for every method
            plots_[i]->rescaleAxes();
            plots_[i]->xAxis->setRange(-0.5, double(C) - 0.5);
            plots_[i]->yAxis->setRange(-0.5, L - 0.5);
        }
    }
    updateMarker();
}

void ChannelMapView::updateMarker() {
    for (size_t i = 0; i < plots_.size(); ++i) {
        markers_[i]->setData(QVector<double>{double(sel_->channel())},
                             QVector<double>{double(sel_->layer())});
        plots_[i]->replot(QCustomPlot::rpQueuedReplot);
    }
}

// ---- Channel detail ---------------------------------------------------------------------------------------

ChannelDetailView::ChannelDetailView(Selection* selection, QWidget* parent) : ResultView(selection, parent) {
    auto* lay = new QVBoxLayout(this);
    auto* top = new QHBoxLayout;
    top->addWidget(new QLabel("Traced channel:"));
    traced_ = new QComboBox;
    traced_->setToolTip("Channels whose per-token Δ the run recorded (AnalysisRequest::channels).");
    top->addWidget(traced_);
    info_ = new QLabel;
    top->addWidget(info_, 1);
    lay->addLayout(top);
    delta_ = new_plot(this);
    delta_->xAxis->setLabel("token position");
    delta_->yAxis->setLabel("Δ (after softplus)");
    delta_->legend->setVisible(true);
    decay_ = new_plot(this);
    decay_->xAxis->setLabel("token position");
    decay_->yAxis->setLabel("cumulative log decay Σ A·Δ (nats)");
    decay_->legend->setVisible(true);
    lay->addWidget(delta_, 1);
    lay->addWidget(decay_, 1);
    connect(traced_, &QComboBox::activated, this, [this](int i) {
        const QPoint lc = traced_->itemData(i).toPoint();
        sel_->setChannel(lc.x(), lc.y());
    });
    connect(sel_, &Selection::channelChanged, this, [this] { redraw(); });
}

QCPGraph* ChannelDetailView::deltaGraph(Method m) const {
    auto it = deltaGraphs_.find(m);
    return it == deltaGraphs_.end() ? nullptr : it->second;
}
QCPGraph* ChannelDetailView::decayGraph(Method m) const {
    auto it = decayGraphs_.find(m);
    return it == decayGraphs_.end() ? nullptr : it->second;
}

void ChannelDetailView::setResult(RunResultPtr result) {
    result_ = std::move(result);
    traced_->clear();
    if (result_ && !result_->methods.empty()) {
        for (const auto& t : result_->methods.front().channels)
            traced_->addItem(QString("layer %1, channel %2").arg(t.ref.layer).arg(t.ref.channel),
                             QPoint(t.ref.layer, int(t.ref.channel)));
    }
    redraw();
}

void ChannelDetailView::redraw() {
    delta_->clearGraphs();
    decay_->clearGraphs();
    deltaGraphs_.clear();
    decayGraphs_.clear();
    target_ = nullptr;
    if (!result_) {
        info_->setText("no run yet");
        return;
    }
    const int layer = sel_->layer();
    const qint64 channel = sel_->channel();
    const int idx = traced_->findData(QPoint(layer, int(channel)));
    if (idx >= 0) traced_->setCurrentIndex(idx);
    bool any = false;
    const MethodResult* vanilla = result_->find(Method::Vanilla);
    for (const auto& mr : result_->methods) {
        const ChannelTrace* t = find_trace(mr, layer, channel);
        if (!t) continue;
        any = true;
        const QColor col = method_color(mr.method);
        QVector<double> x(qsizetype(t->delta_raw.size())), y(x.size());
        for (qsizetype i = 0; i < x.size(); ++i)
            x[i] = double(result_->window_begin + i), y[i] = t->delta_raw[size_t(i)];
        auto* g = delta_->addGraph();
        g->setName(method_label(mr.method) + " Δ");
        g->setPen(QPen(col, 1));
        set_graph(g, x, y);
        deltaGraphs_[mr.method] = g;
        if (mr.method == Method::LongMamba) {
            if (std::isfinite(t->threshold) && !x.isEmpty()) {
                auto* th = delta_->addGraph();
                th->setName(QString("threshold b·θ = %1 (§8.5)").arg(t->threshold, 0, 'g', 4));
                th->setPen(QPen(Qt::black, 1, Qt::DashLine));
                th->setData(QVector<double>{x.front(), x.back()},
                            QVector<double>{t->threshold, t->threshold});
            }
            QVector<double> cx, cy;
            for (qsizetype i = 0; i < x.size() && i < qsizetype(t->critical.size()); ++i)
                if (t->critical[size_t(i)]) cx << x[i], cy << y[i];
            const qsizetype stride = std::max<qsizetype>(1, cx.size() / kMaxPlotPoints);
            QVector<double> sx, sy;
            for (qsizetype i = 0; i < cx.size(); i += stride) sx << cx[i], sy << cy[i];
            auto* cg = delta_->addGraph();
            cg->setName(QString("critical tokens (%1, §8.6)").arg(cx.size()));
            cg->setLineStyle(QCPGraph::lsNone);
            cg->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCircle, col, 4));
            cg->setPen(QPen(col));
            cg->setData(sx, sy, true);
        }
        QVector<double> dx(qsizetype(t->cum_log_decay.size())), dy(dx.size());
        for (qsizetype i = 0; i < dx.size(); ++i) dx[i] = double(i), dy[i] = t->cum_log_decay[size_t(i)];
        auto* dg = decay_->addGraph();
        dg->setName(method_label(mr.method));
        dg->setPen(QPen(col, 1.5));
        set_graph(dg, dx, dy);
        decayGraphs_[mr.method] = dg;
    }
    // Alignment target (see docs/user-guide.md): the decay vanilla reaches over the training window,
    // spread over the whole input: target(t) = t/T · cum_vanilla(train_len − 1).
    if (vanilla) {
        const ChannelTrace* vt = find_trace(*vanilla, layer, channel);
        const qint64 T = vt ? qint64(vt->cum_log_decay.size()) : 0;
        if (vt && T > 1 && result_->train_len > 0) {
            const double train_decay = vt->cum_log_decay[size_t(std::min<qint64>(T, result_->train_len) - 1)];
            target_ = decay_->addGraph();
            target_->setName("alignment target t/T·decay(train_len)");
            target_->setPen(QPen(Qt::darkGray, 1.5, Qt::DashLine));
            target_->setData(QVector<double>{0, double(T - 1)},
                             QVector<double>{0, train_decay * double(T - 1) / double(T)});
        }
    }
    info_->setText(any ? QString("layer %1, channel %2").arg(layer).arg(channel)
                       : QString("layer %1, channel %2 was not traced in this run; pick a traced channel")
                             .arg(layer)
                             .arg(channel));
    delta_->rescaleAxes();
    decay_->rescaleAxes();
    delta_->replot(QCustomPlot::rpQueuedReplot);
    decay_->replot(QCustomPlot::rpQueuedReplot);
}

// ---- Perplexity -------------------------------------------------------------------------------------------

PerplexityView::PerplexityView(Selection* selection, QWidget* parent) : ResultView(selection, parent) {
    auto* lay = new QVBoxLayout(this);
    info_ = new QLabel;
    lay->addWidget(info_);
    plot_ = new_plot(this);
    plot_->xAxis->setLabel("position (predicting the next token)");
    plot_->yAxis->setLabel(QString("NLL, moving average of %1 (nats)").arg(kNllSmoothingTokens));
    plot_->legend->setVisible(true);
    lay->addWidget(plot_, 1);
    connect(sel_, &Selection::tokenChanged, this, [this] { updateCursor(); });
    connect(plot_, &QCustomPlot::mouseDoubleClick, this, [this](QMouseEvent* ev) {
        sel_->setToken(qint64(std::llround(plot_->xAxis->pixelToCoord(ev->pos().x()))));
    });
}

QCPGraph* PerplexityView::nllGraph(Method m) const {
    auto it = graphs_.find(m);
    return it == graphs_.end() ? nullptr : it->second;
}

void PerplexityView::setResult(RunResultPtr result) {
    result_ = std::move(result);
    plot_->clearGraphs();
    plot_->clearItems();
    graphs_.clear();
    cursor_ = nullptr;
    if (!result_) return;
    QStringList parts;
    for (const auto& mr : result_->methods) {
        if (mr.nll.empty()) continue;
        QVector<double> x(qsizetype(mr.nll.size())), y(x.size());
        double sum = 0;
        for (qsizetype i = 0; i < x.size(); ++i) {
            x[i] = i < qsizetype(mr.nll_positions.size()) ? double(mr.nll_positions[size_t(i)]) : double(i);
            y[i] = mr.nll[size_t(i)];
            sum += y[i];
        }
        auto* g = plot_->addGraph();
        g->setName(method_label(mr.method));
        g->setPen(QPen(method_color(mr.method), 1.2));
        set_graph(g, x, moving_average(y, kNllSmoothingTokens));
        graphs_[mr.method] = g;
        const double mean = sum / double(x.size());
        parts << QString("%1: mean NLL %2 nats, ppl %3")
                     .arg(method_label(mr.method))
                     .arg(mean, 0, 'f', 4)
                     .arg(std::exp(mean), 0, 'f', 3);
    }
    if (result_->train_len > 0) {
        auto* line = new QCPItemStraightLine(plot_);
        line->point1->setCoords(double(result_->train_len), 0);
        line->point2->setCoords(double(result_->train_len), 1);
        line->setPen(QPen(Qt::darkGray, 1, Qt::DashLine));
    }
    cursor_ = new QCPItemStraightLine(plot_);
    cursor_->setPen(QPen(QColor(0, 150, 150), 1));
    info_->setText(parts.join("   ·   ") +
                   QString("   (dashed: training length %1)").arg(result_->train_len));
    plot_->rescaleAxes();
    updateCursor();
}

void PerplexityView::updateCursor() {
    if (cursor_) {
        const double t = double(std::max<qint64>(0, sel_->token()));
        cursor_->point1->setCoords(t, 0);
        cursor_->point2->setCoords(t, 1);
        cursor_->setVisible(sel_->token() >= 0);
    }
    plot_->replot(QCustomPlot::rpQueuedReplot);
}

// ---- Receptive fields -------------------------------------------------------------------------------------

ReceptiveFieldView::ReceptiveFieldView(Selection* selection, QWidget* parent)
    : ResultView(selection, parent) {
    auto* lay = new QVBoxLayout(this);
    plot_ = new_plot(this);
    plot_->xAxis->setLabel("layer");
    plot_->yAxis->setLabel("receptive field at the last position (tokens, §8.7)");
    plot_->yAxis->setScaleType(QCPAxis::stLogarithmic);
    plot_->yAxis->setTicker(QSharedPointer<QCPAxisTickerLog>(new QCPAxisTickerLog));
    plot_->legend->setVisible(true);
    lay->addWidget(plot_, 1);
}

QCPGraph* ReceptiveFieldView::rfGraph(Method m) const {
    auto it = graphs_.find(m);
    return it == graphs_.end() ? nullptr : it->second;
}

void ReceptiveFieldView::setResult(RunResultPtr result) {
    result_ = std::move(result);
    plot_->clearGraphs();
    plot_->clearItems();
    graphs_.clear();
    if (!result_) return;
    int k = 0;
    const int nm = int(result_->methods.size());
    for (const auto& mr : result_->methods) {
        const auto& a = mr.receptive_field;
        if (a.shape.size() != 3 || a.shape[1] == 0) continue;
        const int64_t L = a.shape[0], P = a.shape[1], C = a.shape[2];
        QVector<double> x, y;
        const double off = (k - (nm - 1) / 2.0) * 0.2;
        // Jitter within ±0.08 of the method's lane so overlapping channels stay visible (display only).
        for (int64_t l = 0; l < L; ++l)
            for (int64_t c = 0; c < C; ++c) {
                x << double(l) + off + 0.08 * (double(c % 17) / 8.0 - 1.0);
                y << std::max(1.0, double(a.data[size_t((l * P + P - 1) * C + c)]));
            }
        auto* g = plot_->addGraph();
        g->setName(method_label(mr.method));
        g->setLineStyle(QCPGraph::lsNone);
        const QColor col = method_color(mr.method);
        g->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssDisc, col, 3));
        g->setPen(QPen(col));
        g->setData(x, y);
        graphs_[mr.method] = g;
        ++k;
    }
    const qint64 T = qint64(result_->input.ids.size());
    auto hline = [&](double v, const QString& name, QColor col) {
        auto* g = plot_->addGraph();
        g->setName(name);
        g->setPen(QPen(col, 1.5, Qt::DashLine));
        g->setData(QVector<double>{-0.5, double(result_->n_layer) - 0.5}, QVector<double>{v, v});
    };
    if (result_->train_len > 0)
        hline(double(result_->train_len), QString("training length %1").arg(result_->train_len),
              Qt::darkGray);
    if (T > 0) hline(double(T), QString("input length %1").arg(T), Qt::black);
    plot_->rescaleAxes();
    plot_->xAxis->setRange(-0.5, result_->n_layer - 0.5);
    plot_->replot(QCustomPlot::rpQueuedReplot);
}

// ---- Hidden attention -------------------------------------------------------------------------------------

AttentionView::AttentionView(Selection* selection, QWidget* parent) : ResultView(selection, parent) {
    auto* lay = new QVBoxLayout(this);
    info_ = new QLabel;
    lay->addWidget(info_);
    host_ = new QWidget;
    new QHBoxLayout(host_);
    lay->addWidget(host_, 1);
    connect(sel_, &Selection::channelChanged, this, [this] { redraw(); });
}

void AttentionView::setResult(RunResultPtr result) {
    result_ = std::move(result);
    redraw();
}

void AttentionView::redraw() {
    for (auto* p : plots_) p->deleteLater();
    plots_.clear();
    maps_.clear();
    if (!result_) return;
    int shown = 0;
    for (const auto& mr : result_->methods) {
        for (const auto& am : mr.attention) {
            if (am.ref.layer != sel_->layer() || am.ref.channel != sel_->channel()) continue;
            if (am.alpha.shape.size() != 2) continue;
            const int W = int(am.alpha.shape[0]);
            auto* plot = new_plot(host_);
            host_->layout()->addWidget(plot);
            plot->plotLayout()->insertRow(0);
            plot->plotLayout()->addElement(
                0, 0, new QCPTextElement(plot, method_label(mr.method), QFont("sans", 10, QFont::Bold)));
            plot->xAxis->setLabel("source token j");
            plot->yAxis->setLabel("target token i");
            plot->yAxis->setRangeReversed(true);
            auto* map = new QCPColorMap(plot->xAxis, plot->yAxis);
            map->data()->setSize(W, W);
            map->data()->setRange(QCPRange(double(am.begin), double(am.begin + W - 1)),
                                  QCPRange(double(am.begin), double(am.begin + W - 1)));
            for (int i = 0; i < W; ++i)
                for (int j = 0; j < W; ++j) map->data()->setCell(j, i, am.alpha.at2(i, j));
            map->setGradient(QCPColorGradient::gpHot);
            map->rescaleDataRange();
            plot->rescaleAxes();
            plots_.push_back(plot);
            maps_.push_back(map);
            ++shown;
        }
    }
    info_->setText(
        shown
            ? QString("hidden attention α(i, j) of layer %1, channel %2 (method doc §5), normalised per map")
                  .arg(sel_->layer())
                  .arg(sel_->channel())
            : QString("no attention map recorded for layer %1, channel %2")
                  .arg(sel_->layer())
                  .arg(sel_->channel()));
    for (auto* p : plots_) p->replot(QCustomPlot::rpQueuedReplot);
}

// ---- Tokens -----------------------------------------------------------------------------------------------

TokensView::TokensView(Selection* selection, QWidget* parent) : ResultView(selection, parent) {
    auto* lay = new QVBoxLayout(this);
    auto* top = new QHBoxLayout;
    top->addWidget(new QLabel("Colour:"));
    mode_ = new QComboBox;
    mode_->addItem("critical tokens of the selected channel (LongMamba §8.6)", Critical);
    mode_->addItem("NLL change LongMamba − vanilla (red: worse, green: better)", NllChange);
    top->addWidget(mode_);
    info_ = new QLabel;
    top->addWidget(info_, 1);
    lay->addLayout(top);
    text_ = new QPlainTextEdit;
    text_->setReadOnly(true);
    text_->setFont(QFont("DejaVu Sans Mono", 10));
    lay->addWidget(text_, 1);
    connect(mode_, &QComboBox::currentIndexChanged, this, [this] { redraw(); });
    connect(sel_, &Selection::channelChanged, this, [this] { redraw(); });
    connect(sel_, &Selection::tokenChanged, this, [this](qint64 t) {
        if (t < first_ || t >= first_ + qint64(starts_.size())) redraw();
    });
    connect(text_, &QPlainTextEdit::cursorPositionChanged, this, [this] {
        if (text_->textCursor().hasSelection()) return;
        const qint64 t = tokenAtTextPosition(text_->textCursor().position());
        if (t >= 0 && !signalsBlocked()) sel_->setToken(t);
    });
}

void TokensView::setResult(RunResultPtr result) {
    result_ = std::move(result);
    redraw();
}

qint64 TokensView::tokenAtTextPosition(int pos) const {
    if (starts_.empty()) return -1;
    auto it = std::upper_bound(starts_.begin(), starts_.end(), pos);
    if (it == starts_.begin()) return -1;
    return first_ + qint64(it - starts_.begin() - 1);
}

void TokensView::redraw() {
    const QSignalBlocker block(this);
    const QSignalBlocker blockText(text_);
    text_->clear();
    starts_.clear();
    highlighted_ = 0;
    if (!result_) return;
    const auto& in = result_->input;
    const qint64 T = qint64(in.ids.size());
    const qint64 centre = sel_->token() >= 0 ? sel_->token() : result_->window_begin;
    first_ = std::clamp<qint64>(centre - kTokenViewSpan / 2, 0, std::max<qint64>(0, T - kTokenViewSpan));
    const qint64 last = std::min(T, first_ + kTokenViewSpan);
    const Mode mode = Mode(mode_->currentData().toInt());
    const ChannelTrace* trace = nullptr;
    if (const MethodResult* lm = result_->find(Method::LongMamba))
        trace = find_trace(*lm, sel_->layer(), sel_->channel());
    // NLL change per predicted token (position p predicts token p+1).
    std::vector<double> dnll;
    const MethodResult* van = result_->find(Method::Vanilla);
    const MethodResult* lm = result_->find(Method::LongMamba);
    if (mode == NllChange && van && lm && van->nll.size() == lm->nll.size()) {
        dnll.assign(size_t(T), kNaN);
        for (size_t i = 0; i < van->nll.size(); ++i) {
            const int64_t p = i < van->nll_positions.size() ? van->nll_positions[i] : int64_t(i);
            if (p + 1 < T) dnll[size_t(p + 1)] = double(lm->nll[i]) - double(van->nll[i]);
        }
    }
    QTextCursor cur(text_->document());
    QTextCharFormat plain;
    for (qint64 t = first_; t < last; ++t) {
        starts_.push_back(cur.position());
        QString s = size_t(t) < in.token_strings.size() ? QString::fromUtf8(in.token_strings[size_t(t)])
                                                        : QString("[%1]").arg(in.ids[size_t(t)]);
        if (s.isEmpty()) s = QString(QChar(0x00B7));
        QTextCharFormat f = plain;
        if (mode == Critical && trace) {
            const qint64 w = t - result_->window_begin;
            if (w >= 0 && w < qint64(trace->critical.size()) && trace->critical[size_t(w)]) {
                f.setBackground(QColor(255, 214, 102));
                ++highlighted_;
            }
        } else if (mode == NllChange && !dnll.empty() && std::isfinite(dnll[size_t(t)])) {
            const double d = std::clamp(dnll[size_t(t)], -2.0, 2.0) / 2.0;
            const int a = int(std::abs(d) * 160);
            f.setBackground(d > 0 ? QColor(255, 0, 0, a) : QColor(0, 170, 0, a));
            if (a > 8) ++highlighted_;
        }
        if (t == sel_->token()) {
            f.setFontUnderline(true);
            f.setFontWeight(QFont::Bold);
        }
        cur.insertText(s, f);
    }
    info_->setText(QString("tokens %1–%2 of %3%4")
                       .arg(first_)
                       .arg(last - 1)
                       .arg(T)
                       .arg(mode == Critical && !trace ? " · selected channel not traced" : ""));
}

// ---- Comparison composite and export ----------------------------------------------------------------------

ComparisonWidget::ComparisonWidget(RunResultPtr result, Selection* selection, QWidget* parent)
    : QWidget(parent) {
    auto* grid = new QGridLayout(this);
    auto* title = new QLabel(QString("<b>Mambascope</b> · %1 · %2 tokens · train length %3")
                                 .arg(result && result->provenance.count("model")
                                          ? QString::fromStdString(result->provenance.at("model"))
                                          : QString("run"))
                                 .arg(result ? qint64(result->input.ids.size()) : 0)
                                 .arg(result ? result->train_len : 0));
    grid->addWidget(title, 0, 0, 1, 2);
    ResultView* views[] = {new ChannelMapView(selection), new ReceptiveFieldView(selection),
                           new ChannelDetailView(selection), new PerplexityView(selection)};
    for (int i = 0; i < 4; ++i) {
        views[i]->setResult(result);
        grid->addWidget(views[i], 1 + i / 2, i % 2);
    }
    grid->setRowStretch(1, 1);
    grid->setRowStretch(2, 1);
    resize(1600, 1000);
}

static QImage render_widget(QWidget* w, double scale) {
    const bool wasVisible = w->isVisible();
    if (!wasVisible) {
        w->setAttribute(Qt::WA_DontShowOnScreen);
        w->show();
    }
    QCoreApplication::processEvents();
    for (auto* p : w->findChildren<QCustomPlot*>()) p->replot(QCustomPlot::rpImmediateRefresh);
    // Below 1× QWidget::render ignores the device pixel ratio: render at 1× and shrink.
    const double r = std::max(1.0, scale);
    QImage img(w->size() * r, QImage::Format_ARGB32);
    img.setDevicePixelRatio(r);
    img.fill(w->palette().color(QPalette::Window));
    w->render(&img);
    if (!wasVisible) w->hide();
    if (scale < 1.0) {
        img.setDevicePixelRatio(1.0);
        img = img.scaled(w->size() * scale, Qt::KeepAspectRatio, Qt::SmoothTransformation);
    }
    return img;
}

QImage ComparisonWidget::render(double scale) {
    return render_widget(this, scale);
}

void export_widget(QWidget* w, const QString& path, double scale) {
    if (path.endsWith(".pdf", Qt::CaseInsensitive)) {
        QPdfWriter pdf(path);
        pdf.setPageSize(QPageSize(QSizeF(w->size()), QPageSize::Point));
        pdf.setPageMargins(QMarginsF(0, 0, 0, 0));
        pdf.setResolution(144);
        const QImage img = render_widget(w, scale);
        QPainter p;
        if (!p.begin(&pdf))
            throw Error("cannot write " + path.toStdString(), "check that the folder is writable");
        const QRect page = p.viewport();
        p.drawImage(page, img);
        p.end();
        return;
    }
    const QImage img = render_widget(w, scale);
    if (!img.save(path))
        throw Error("cannot write image " + path.toStdString(),
                    "use a .png or .pdf name in a writable folder");
}

}  // namespace mambascope::gui

#include "views.h"

#include <QAbstractTextDocumentLayout>
#include <QApplication>
#include <QFileDialog>
#include <QFileInfo>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QMessageBox>
#include <QPainter>
#include <QPdfWriter>
#include <QTextBlock>
#include <QTextDocument>
#include <QTextLayout>
#include <QToolTip>
#include <QVBoxLayout>
#include <algorithm>
#include <cmath>
#include <limits>

#include "mambascope/error.h"
#include "retrieval_view.h"

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
    style_plot(p);
    return p;
}

// Removes plots at once from the widget tree (findChildren, layouts) and deletes them later (one of them
// may be delivering the event that led here).
template <class Plots>
void discard_plots(Plots& plots) {
    for (auto* p : plots) {
        p->hide();
        p->setParent(nullptr);
        p->deleteLater();
    }
    plots.clear();
}

double stat_value(const RunResult& r, const MethodResult& m, ChannelMapView::Statistic s, int l, qint64 c) {
    (void)r;
    auto ok2 = [&](const auto& a) { return a.shape.size() == 2 && l < a.shape[0] && c < a.shape[1]; };
    switch (s) {
        case ChannelMapView::LogDecay:
            return ok2(m.log_decay) ? m.log_decay.at2(l, c) : kNaN;
        case ChannelMapView::DeltaSum:
            return ok2(m.delta_sum) ? m.delta_sum.at2(l, c) : kNaN;
        case ChannelMapView::CriticalCount:
            return ok2(m.critical_count) ? double(m.critical_count.at2(l, c)) : kNaN;
        case ChannelMapView::ReceptiveField: {
            const auto& a = m.receptive_field;
            if (a.shape.size() != 3 || l >= a.shape[0] || c >= a.shape[2] || a.shape[1] == 0) return kNaN;
            const int64_t P = a.shape[1];
            return double(a.data[size_t((l * P + P - 1) * a.shape[2] + c)]);
        }
    }
    return kNaN;
}

// Colour-map cells built on the thread pool; each QCPColorMapData is handed to its map once (setData takes
// ownership), whatever was not handed over is freed with the last copy.
struct OwnedMapData {
    std::vector<QCPColorMapData*> data;
    ~OwnedMapData() {
        for (auto* d : data) delete d;
    }
    QCPColorMapData* take(size_t i) {
        QCPColorMapData* d = data[i];
        data[i] = nullptr;
        return d;
    }
};

const ChannelTrace* find_trace(const MethodResult& m, int layer, qint64 channel) {
    for (const auto& t : m.channels)
        if (t.ref.layer == layer && t.ref.channel == channel) return &t;
    return nullptr;
}

// Above this many points a series is drawn with a 1-pixel cosmetic pen: QPainter strokes wider pens as filled
// polygons, which for a jagged 4096-point NLL curve of a 128k-token run costs ~0.3 s per replot.
constexpr int kThinPenPoints = 1000;

void set_graph(QCPGraph* g, const QVector<double>& x, const QVector<double>& y) {
    QVector<double> dx, dy;
    decimate_min_max(x, y, kMaxPlotPoints, dx, dy);
    if (dx.size() > kThinPenPoints) {
        QPen pen = g->pen();
        pen.setWidthF(1.0);
        pen.setCosmetic(true);
        g->setPen(pen);
    }
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
    status_ = new QLabel;
    top->addWidget(status_);
    top->addStretch();
    lay->addLayout(top);
    plotsHost_ = new QWidget;
    new QHBoxLayout(plotsHost_);
    lay->addWidget(plotsHost_, 1);
    connect(stat_, &QComboBox::currentIndexChanged, this, [this] { rebuild(); });
    connect(sel_, &Selection::channelChanged, this, [this] { updateMarker(); });
}

static const char* const kStatisticKeys[] = {"log_decay", "delta_sum", "critical_count", "receptive_field"};
static const char* const kModeKeys[] = {"critical", "nll_change", "global_keep"};

QString ChannelMapView::statisticKey() const {
    return kStatisticKeys[std::clamp(stat_->currentData().toInt(), 0, 3)];
}

void ChannelMapView::setStatisticKey(const QString& key) {
    for (int i = 0; i < 4; ++i)
        if (key == kStatisticKeys[i]) setStatistic(Statistic(i));
}

QString TokensView::modeKey() const {
    return kModeKeys[std::clamp(mode_->currentData().toInt(), 0, 2)];
}

void TokensView::setModeKey(const QString& key) {
    for (int i = 0; i < 3; ++i)
        if (key == kModeKeys[i]) setMode(Mode(i));
}

void ChannelMapView::setStatistic(Statistic s) {
    stat_->setCurrentIndex(stat_->findData(int(s)));
}

double ChannelMapView::value(Method method, int l, qint64 c) const {
    if (!result_) return kNaN;
    const MethodResult* m = result_->find(method);
    if (!m) return kNaN;
    return stat_value(*result_, *m, Statistic(stat_->currentData().toInt()), l, c);
}

struct ChannelMapView::Built {
    bool stale = false;
    std::vector<Method> methods;
    std::shared_ptr<OwnedMapData> maps = std::make_shared<OwnedMapData>();
    std::vector<QVector<double>> gx, gy;  // global-channel markers per map
    double lo = std::numeric_limits<double>::infinity(), hi = -std::numeric_limits<double>::infinity();
};

void ChannelMapView::setResult(RunResultPtr result) {
    result_ = std::move(result);
    rebuild();
}

void ChannelMapView::clearPlots() {
    discard_plots(plots_);
    maps_.clear();
    markers_.clear();
    methods_.clear();
    scale_ = nullptr;
}

void ChannelMapView::rebuild() {
    clearPlots();
    if (!result_) {
        build_.cancel();
        status_->clear();
        return;
    }
    status_->setText("building heatmaps…");
    const RunResultPtr run = result_;
    const Statistic stat = Statistic(stat_->currentData().toInt());
    build_.start<Built>(
        [run, stat](const auto& stale) {
            Built b;
            const int L = run->n_layer;
            const qint64 C = run->channels;
            for (const auto& mr : run->methods) {
                auto* data = new QCPColorMapData(int(C), L, QCPRange(0, double(C - 1)), QCPRange(0, L - 1));
                b.maps->data.push_back(data);
                b.methods.push_back(mr.method);
                // The shared scale is vanilla's and LongMamba's (DeciMamba's decays are far larger and
                // would wash out the comparison; its map saturates instead).
                const bool in_scale = mr.method != Method::DeciMamba || run->methods.size() == 1;
                for (int l = 0; l < L; ++l) {
                    if (stale()) {
                        b.stale = true;
                        return b;
                    }
                    for (qint64 c = 0; c < C; ++c) {
                        const double v = stat_value(*run, mr, stat, l, c);
                        data->setCell(int(c), l, v);
                        if (in_scale && std::isfinite(v)) b.lo = std::min(b.lo, v), b.hi = std::max(b.hi, v);
                    }
                }
                // Global channels (§8.4)
                QVector<double> gx, gy;
                if (mr.global_mask.shape.size() == 2 && mr.global_mask.shape[0] == L &&
                    mr.global_mask.shape[1] == C)
                    for (int l = 0; l < L && gx.size() < kMaxGlobalMarkers; ++l)
                        for (qint64 c = 0; c < C; ++c)
                            if (mr.global_mask.at2(l, c)) gx << double(c), gy << double(l);
                b.gx.push_back(gx);
                b.gy.push_back(gy);
            }
            return b;
        },
        [this](Built& b) { apply(b); });
}

void ChannelMapView::apply(Built& b) {
    status_->clear();
    if (b.stale || !result_) return;
    clearPlots();
    const int L = result_->n_layer;
    const qint64 C = result_->channels;
    for (size_t i = 0; i < b.methods.size(); ++i) {
        const Method method = b.methods[i];
        auto* plot = new_plot(plotsHost_);
        plotsHost_->layout()->addWidget(plot);
        plot->plotLayout()->insertRow(0);
        auto* title = new QCPTextElement(plot, method_label(method), QFont("sans", 10, QFont::Bold));
        plot->plotLayout()->addElement(0, 0, title);
        plot->xAxis->setLabel("channel");
        plot->yAxis->setLabel("layer");
        // Whole channels and layers only, spaced so that labels of a narrow map never overlap.
        for (auto [axis, n] : {std::pair{plot->xAxis, double(C)}, std::pair{plot->yAxis, double(L)}}) {
            QSharedPointer<QCPAxisTickerFixed> ticker(new QCPAxisTickerFixed);
            ticker->setTickStep(std::max(1.0, std::pow(2.0, std::floor(std::log2(std::max(1.0, n / 4))))));
            ticker->setScaleStrategy(QCPAxisTickerFixed::ssMultiples);
            axis->setTicker(ticker);
        }
        style_plot(plot);
        auto* map = new QCPColorMap(plot->xAxis, plot->yAxis);
        map->setData(b.maps->take(i), false);
        map->setGradient(QCPColorGradient::gpThermal);
        map->setInterpolate(false);
        auto* g = plot->addGraph();
        g->setName("global channels");
        g->setLineStyle(QCPGraph::lsNone);
        g->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCross, QPen(Qt::white), Qt::NoBrush, 4));
        g->setData(b.gx[i], b.gy[i]);
        auto* marker = plot->addGraph();
        marker->setLineStyle(QCPGraph::lsNone);
        marker->setScatterStyle(
            QCPScatterStyle(QCPScatterStyle::ssSquare, QPen(Qt::cyan, 2), Qt::NoBrush, 9));
        plots_.push_back(plot);
        maps_.push_back(map);
        markers_.push_back(marker);
        methods_.push_back(method);
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
        style_plot(plots_.back());
        const double lo = b.lo, hi = b.hi;
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
                set_reference_pen(th, RefTone::Strong, 1, Qt::DashLine);
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
            set_reference_pen(target_, RefTone::Muted, 1.5, Qt::DashLine);
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
    info_->setWordWrap(true);  // three methods' numbers must not widen the composite
    lay->addWidget(info_);
    plot_ = new_plot(this);
    plot_->xAxis->setLabel("position (predicting the next token)");
    plot_->yAxis->setLabel(QString("NLL, moving average of %1 (nats)").arg(kNllSmoothingTokens));
    plot_->legend->setVisible(true);
    lay->addWidget(plot_, 1);
    auto* sweepBar = new QHBoxLayout;
    loadSweep_ = new QPushButton("Load sweep CSV…");
    loadSweep_->setToolTip(
        "Perplexity against context length from `mambascope-cli ppl-sweep --out FILE.csv` (method doc §6, "
        "§7).");
    sweepBar->addWidget(loadSweep_);
    sweepInfo_ = new QLabel("no sweep loaded");
    sweepBar->addWidget(sweepInfo_, 1);
    lay->addLayout(sweepBar);
    sweepPlot_ = new_plot(this);
    sweepPlot_->xAxis->setLabel("context length (tokens)");
    sweepPlot_->yAxis->setLabel("perplexity");
    sweepPlot_->xAxis->setScaleType(QCPAxis::stLogarithmic);
    sweepPlot_->xAxis->setTicker(QSharedPointer<QCPAxisTickerLog>(new QCPAxisTickerLog));
    sweepPlot_->legend->setVisible(false);  // shown once a sweep is loaded
    lay->addWidget(sweepPlot_, 1);
    connect(loadSweep_, &QPushButton::clicked, this, [this] {
        const QString p = QFileDialog::getOpenFileName(this, "Load perplexity sweep", sweepPath_,
                                                       "Sweep CSV (*.csv);;All files (*)");
        if (p.isEmpty()) return;
        try {
            loadSweep(p);
        } catch (const Error& e) {
            QMessageBox::warning(this, "Cannot load sweep", QString::fromStdString(describe(e)));
        }
    });
    connect(sweepPlot_, &QCustomPlot::mouseMove, this, [this](QMouseEvent* ev) {
        // The sweep point nearest the cursor (in pixels), with every method's perplexity at that length.
        double best = 1e18;
        int64_t len = -1;
        for (const auto& pt : sweep_) {
            const double dx = sweepPlot_->xAxis->coordToPixel(double(pt.length)) - ev->pos().x();
            const double dy = sweepPlot_->yAxis->coordToPixel(pt.perplexity) - ev->pos().y();
            if (dx * dx + dy * dy < best) best = dx * dx + dy * dy, len = pt.length;
        }
        if (len < 0 || best > 30 * 30) {
            QToolTip::hideText();
            return;
        }
        QStringList lines{QString("context length %1").arg(len)};
        for (const auto& pt : sweep_)
            if (pt.length == len)
                lines << QString("%1: ppl %2 (mean NLL %3, %4 windows)")
                             .arg(method_label(pt.method))
                             .arg(pt.perplexity, 0, 'f', 3)
                             .arg(pt.mean_nll, 0, 'f', 4)
                             .arg(pt.windows);
        QToolTip::showText(ev->globalPosition().toPoint(), lines.join("\n"), sweepPlot_);
    });
    connect(sel_, &Selection::tokenChanged, this, [this] { updateCursor(); });
    connect(plot_, &QCustomPlot::mouseDoubleClick, this, [this](QMouseEvent* ev) {
        sel_->setToken(qint64(std::llround(plot_->xAxis->pixelToCoord(ev->pos().x()))));
    });
}

QCPGraph* PerplexityView::sweepGraph(Method m) const {
    auto it = sweepGraphs_.find(m);
    return it == sweepGraphs_.end() ? nullptr : it->second;
}

void PerplexityView::loadSweep(const QString& path) {
    std::vector<PplPoint> pts = read_ppl_csv(path.toStdString());  // Error on a bad file: nothing changes
    if (pts.empty())
        throw Error("no sweep points in " + path.toStdString(),
                    "write the CSV with `mambascope-cli ppl-sweep --out FILE.csv`");
    sweep_ = std::move(pts);
    sweepPath_ = path;
    drawSweep();
}

void PerplexityView::drawSweep() {
    sweepPlot_->clearGraphs();
    sweepPlot_->clearItems();
    sweepGraphs_.clear();
    sweepTrain_ = nullptr;
    sweepPlot_->legend->setVisible(!sweep_.empty());  // no empty legend box before a sweep is loaded
    sweepPlot_->setVisible(!sweep_.empty());          // nor an empty plot (the run's NLL gets the room)
    if (sweep_.empty()) {
        sweepPlot_->replot(QCustomPlot::rpQueuedReplot);
        return;
    }
    std::map<Method, std::vector<const PplPoint*>> by;
    for (const auto& pt : sweep_) by[pt.method].push_back(&pt);
    for (auto& [m, pts] : by) {
        std::stable_sort(pts.begin(), pts.end(),
                         [](const PplPoint* a, const PplPoint* b) { return a->length < b->length; });
        QVector<double> x, y;
        for (const auto* pt : pts) x << double(pt->length), y << pt->perplexity;
        auto* g = sweepPlot_->addGraph();
        g->setName(method_label(m));
        const QColor col = method_color(m);
        g->setPen(QPen(col, 1.5));
        g->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssDisc, col, 6));
        g->setData(x, y, true);
        sweepGraphs_[m] = g;
    }
    sweepPlot_->rescaleAxes();
    QCPRange xr = sweepPlot_->xAxis->range();
    if (result_ && result_->train_len > 0) xr.expand(double(result_->train_len));  // keep the mark visible
    sweepPlot_->xAxis->setRange(xr.lower / 1.3, xr.upper * 1.3);
    const QCPRange yr = sweepPlot_->yAxis->range();
    sweepPlot_->yAxis->setRange(std::max(0.0, yr.lower - 0.05 * yr.size()),
                                yr.upper + 0.05 * yr.size() + 1e-9);
    if (result_ && result_->train_len > 0) {
        sweepTrain_ = new QCPItemStraightLine(sweepPlot_);
        sweepTrain_->point1->setCoords(double(result_->train_len), 0);
        sweepTrain_->point2->setCoords(double(result_->train_len), 1);
        set_reference_pen(sweepTrain_, RefTone::Muted, 1, Qt::DashLine);
    }
    sweepInfo_->setText(
        QString("%1 · %2 points%3")
            .arg(QFileInfo(sweepPath_).fileName())
            .arg(qint64(sweep_.size()))
            .arg(sweepTrain_ ? QString(" · dashed: training length %1").arg(result_->train_len) : QString()));
    sweepPlot_->replot(QCustomPlot::rpQueuedReplot);
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
    if (!result_) {
        info_->clear();
        plot_->replot(QCustomPlot::rpQueuedReplot);
        drawSweep();
        return;
    }
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
        set_reference_pen(line, RefTone::Muted, 1, Qt::DashLine);
    }
    cursor_ = new QCPItemStraightLine(plot_);
    cursor_->setPen(QPen(QColor(0, 150, 150), 1));
    info_->setText(parts.join("   ·   ") +
                   QString("   (dashed: training length %1)").arg(result_->train_len));
    plot_->rescaleAxes();
    updateCursor();
    drawSweep();  // the training-length mark follows the run; the sweep itself does not
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

// ---- Global ratio -----------------------------------------------------------------------------------------

GlobalRatioView::GlobalRatioView(Selection* selection, QWidget* parent) : ResultView(selection, parent) {
    auto* lay = new QVBoxLayout(this);
    info_ = new QLabel;
    info_->setWordWrap(true);
    lay->addWidget(info_);
    layers_ = new_plot(this);
    layers_->xAxis->setLabel("layer");
    layers_->yAxis->setLabel("global channels (%), log decay > ln c (§8.4)");
    layers_->legend->setVisible(true);
    layers_->setToolTip("Click a layer to select it (the channel is kept).");
    overall_ = new_plot(this);
    overall_->xAxis->setLabel("c");
    overall_->yAxis->setLabel("global channels, all layers (%)");
    overall_->xAxis->setScaleType(QCPAxis::stLogarithmic);
    auto ticker = QSharedPointer<QCPAxisTickerLog>(new QCPAxisTickerLog);
    ticker->setLogBase(10);
    ticker->setSubTickCount(0);
    overall_->xAxis->setTicker(ticker);
    overall_->xAxis->setNumberFormat("eb");
    overall_->xAxis->setNumberPrecision(0);
    overall_->legend->setVisible(true);
    lay->addWidget(layers_, 1);
    lay->addWidget(overall_, 1);
    connect(sel_, &Selection::channelChanged, this, [this] { updateLayerMarker(); });
    connect(layers_, &QCustomPlot::mouseMove, this, [this](QMouseEvent* ev) {
        const int l = layerAtPixel(ev->pos().x());
        if (l < 0 || layerGraphs_.empty()) {
            QToolTip::hideText();
            return;
        }
        QStringList lines{QString("layer %1").arg(l)};
        for (size_t i = 0; i < cs_.size(); ++i) {
            const auto* d = layerGraphs_[i]->data().data();
            if (l < d->size())
                lines << QString("c = %1%2: %3 % global")
                             .arg(cs_[i], 0, 'g', 3)
                             .arg(cs_[i] == runC_ ? " (run)" : "")
                             .arg(d->at(l)->value, 0, 'f', 2);
        }
        QToolTip::showText(ev->globalPosition().toPoint(), lines.join("\n"), layers_);
    });
    auto press = std::make_shared<QPoint>();
    connect(layers_, &QCustomPlot::mousePress, this, [press](QMouseEvent* ev) { *press = ev->pos(); });
    connect(layers_, &QCustomPlot::mouseRelease, this, [this, press](QMouseEvent* ev) {
        if ((ev->pos() - *press).manhattanLength() > 4) return;
        const int l = layerAtPixel(ev->pos().x());
        if (l >= 0) selectLayer(l);
    });
    connect(overall_, &QCustomPlot::mouseMove, this, [this](QMouseEvent* ev) {
        if (!overallGraph_ || overallGraph_->data()->isEmpty()) return;
        const double c = overall_->xAxis->pixelToCoord(ev->pos().x());
        auto it = overallGraph_->data()->findBegin(c);  // nearest sampled c at or below the cursor
        if (it == overallGraph_->data()->constEnd()) return;
        QString text = QString("c = %1: %2 % global").arg(it->key, 0, 'g', 3).arg(it->value, 0, 'f', 2);
        if (runMarker_ && !runMarker_->data()->isEmpty())
            text += QString("\nrun's c = %1: %2 %")
                        .arg(runMarker_->data()->at(0)->key, 0, 'g', 3)
                        .arg(runMarker_->data()->at(0)->value, 0, 'f', 2);
        QToolTip::showText(ev->globalPosition().toPoint(), text, overall_);
    });
}

QCPGraph* GlobalRatioView::layerGraph(double c) const {
    for (size_t i = 0; i < cs_.size(); ++i)
        if (cs_[i] == c) return layerGraphs_[i];
    return nullptr;
}

int GlobalRatioView::layerAtPixel(double x) const {
    if (!result_ || layerGraphs_.empty()) return -1;
    const int l = int(std::lround(layers_->xAxis->pixelToCoord(x)));
    return l >= 0 && l < result_->n_layer ? l : -1;
}

void GlobalRatioView::selectLayer(int layer) {
    sel_->setChannel(layer, sel_->channel());
}

void GlobalRatioView::updateLayerMarker() {
    if (layerLine_) {
        layerLine_->point1->setCoords(double(sel_->layer()), 0);
        layerLine_->point2->setCoords(double(sel_->layer()), 1);
    }
    layers_->replot(QCustomPlot::rpQueuedReplot);
}

void GlobalRatioView::setResult(RunResultPtr result) {
    result_ = std::move(result);
    layers_->clearGraphs();
    layers_->clearItems();
    overall_->clearGraphs();
    overall_->clearItems();
    cs_.clear();
    layerGraphs_.clear();
    overallGraph_ = runMarker_ = nullptr;
    runLine_ = layerLine_ = nullptr;
    runC_ = kNaN;
    const auto replot = [this] {
        layers_->replot(QCustomPlot::rpQueuedReplot);
        overall_->replot(QCustomPlot::rpQueuedReplot);
    };
    if (!result_) {
        info_->setText("no run yet");
        replot();
        return;
    }
    const Array<double>& ld = result_->calibration_log_decay;
    if (ld.shape.size() != 2 || ld.data.empty() || ld.numel() != qint64(ld.data.size())) {
        info_->setText(
            "no calibration in this run: the global-channel ratio needs the calibration's log decay "
            "(run with a calibration, or open a trace written with one)");
        replot();
        return;
    }
    const int L = int(ld.shape[0]);
    for (const auto& mr : result_->methods)
        if (auto it = mr.params.find("c"); it != mr.params.end() && it->second > 0 && it->second < 1) {
            runC_ = it->second;
            break;
        }
    cs_ = referenceCs();
    if (std::isfinite(runC_) && std::find(cs_.begin(), cs_.end(), runC_) == cs_.end()) cs_.push_back(runC_);
    // Plot 1: % global per layer, one curve per c; the run's c thick.
    QVector<double> layerX;
    for (int l = 0; l < L; ++l) layerX << double(l);
    static const QColor kCurve[] = {QColor(148, 103, 189), QColor(23, 190, 207), QColor(255, 127, 14),
                                    QColor(44, 160, 44), QColor(140, 86, 75)};
    for (size_t i = 0; i < cs_.size(); ++i) {
        const double c = cs_[i];
        const std::vector<double> r = global_ratio_per_layer(ld, c);
        auto* g = layers_->addGraph();
        const bool run = c == runC_;
        g->setName(QString("c = %1%2").arg(c, 0, 'g', 3).arg(run ? " (this run)" : ""));
        const QColor col = run ? method_color(Method::LongMamba) : kCurve[i % 5];
        g->setPen(QPen(col, run ? 3.0 : 1.3));
        g->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssDisc, col, run ? 7 : 4));
        g->setData(layerX, QVector<double>(r.begin(), r.end()), true);
        layerGraphs_.push_back(g);
    }
    layerLine_ = new QCPItemStraightLine(layers_);
    set_reference_pen(layerLine_, RefTone::Muted, 1, Qt::DotLine);
    layers_->xAxis->setRange(-0.5, L - 0.5);
    layers_->yAxis->setRange(0, 105);
    layers_->xAxis->ticker()->setTickStepStrategy(QCPAxisTicker::tssReadability);
    // Plot 2: overall % global vs c on a log axis, from one sorted copy of the log decays:
    // #(log_decay > ln c) = n − upper_bound(ln c).
    std::vector<double> sorted = ld.data;
    std::sort(sorted.begin(), sorted.end());
    const double n = double(sorted.size());
    auto overall = [&](double c) {
        const auto above = sorted.end() - std::upper_bound(sorted.begin(), sorted.end(), std::log(c));
        return 100.0 * double(above) / n;
    };
    QVector<double> cx, cy;
    const double a = std::log(kOverallMinC), b = std::log(kOverallMaxC);
    for (int i = 0; i < kOverallPoints; ++i) {
        const double c = std::exp(a + (b - a) * double(i) / double(kOverallPoints - 1));
        cx << c, cy << overall(c);
    }
    overallGraph_ = overall_->addGraph();
    overallGraph_->setName("all layers");
    overallGraph_->setPen(QPen(method_color(Method::Vanilla), 1.8));
    overallGraph_->setData(cx, cy, true);
    if (std::isfinite(runC_)) {
        runMarker_ = overall_->addGraph();
        runMarker_->setName(QString("this run: c = %1").arg(runC_, 0, 'g', 3));
        runMarker_->setLineStyle(QCPGraph::lsNone);
        const QColor col = method_color(Method::LongMamba);
        runMarker_->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssDisc, col, 9));
        runMarker_->setPen(QPen(col));
        runMarker_->setData(QVector<double>{runC_}, QVector<double>{overall(runC_)});
        runLine_ = new QCPItemStraightLine(overall_);
        runLine_->point1->setCoords(runC_, 0);
        runLine_->point2->setCoords(runC_, 1);
        runLine_->setPen(QPen(col, 1, Qt::DashLine));
    }
    overall_->xAxis->setRange(kOverallMinC / 3, 1.0);
    overall_->yAxis->setRange(0, 105);
    info_->setText(
        QString("Global channels (method doc §8.4): log decay of the calibration > ln c, %1 layers × %2 "
                "channels%3. Click a layer to select it.")
            .arg(L)
            .arg(ld.shape[1])
            .arg(std::isfinite(runC_) ? QString("; this run's c = %1: %2 % global overall")
                                            .arg(runC_, 0, 'g', 3)
                                            .arg(overall(runC_), 0, 'f', 2)
                                      : QString()));
    style_plot(layers_);
    style_plot(overall_);
    updateLayerMarker();
    replot();
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
    // The legend is a row under the axes: inside it would hide the longest fields (global channels at the
    // input length, top right).
    plot_->legend->setVisible(true);
    plot_->axisRect()->insetLayout()->take(plot_->legend);
    auto* below = new QCPLayoutGrid;  // margins keep the legend frame inside the widget
    plot_->plotLayout()->addElement(1, 0, below);
    plot_->plotLayout()->setRowStretchFactor(1, 0.001);
    below->setMargins(QMargins(6, 0, 6, 6));
    below->addElement(0, 0, plot_->legend);
    plot_->legend->setFillOrder(QCPLayoutGrid::foColumnsFirst);
    plot_->legend->setWrap(3);
    plot_->legend->setMargins(QMargins(6, 2, 6, 2));
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
    globalGraphs_.clear();
    if (!result_) return;
    int k = 0;
    struct Rings {
        Method m;
        QVector<double> x, y;
    };
    std::vector<Rings> rings;
    const int nm = int(result_->methods.size());
    for (const auto& mr : result_->methods) {
        const auto& a = mr.receptive_field;
        if (a.shape.size() != 3 || a.shape[1] == 0) continue;
        const int64_t L = a.shape[0], P = a.shape[1], C = a.shape[2];
        QVector<double> x, y, gx, gy;
        const double off = (k - (nm - 1) / 2.0) * 0.2;
        const auto& gm = mr.global_mask;
        const bool hasGlobal = gm.shape.size() == 2 && gm.shape[0] == L && gm.shape[1] == C;
        // Jitter within ±0.08 of the method's lane so overlapping channels stay visible (display only).
        for (int64_t l = 0; l < L; ++l)
            for (int64_t c = 0; c < C; ++c) {
                x << double(l) + off + 0.08 * (double(c % 17) / 8.0 - 1.0);
                y << std::max(1.0, double(a.data[size_t((l * P + P - 1) * C + c)]));
                if (hasGlobal && gm.at2(l, c)) gx << x.back(), gy << y.back();
            }
        auto* g = plot_->addGraph();
        g->setName(method_label(mr.method));
        g->setLineStyle(QCPGraph::lsNone);
        const QColor col = method_color(mr.method);
        g->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssDisc, col, 3));
        g->setPen(QPen(col));
        g->setData(x, y);
        graphs_[mr.method] = g;
        if (!gx.isEmpty()) rings.push_back({mr.method, gx, gy});
        ++k;
    }
    // Global channels (§8.4) ringed, on top of every dot: theirs are the receptive fields that must reach
    // the input length. One legend entry for all methods.
    for (const auto& [m, gx, gy] : rings) {
        auto* gg = plot_->addGraph();
        gg->setName("global channels (ringed, §8.4)");
        gg->setLineStyle(QCPGraph::lsNone);
        gg->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCircle, QPen(method_color(m).darker(150), 1.3),
                                            Qt::NoBrush, 8));
        gg->setData(gx, gy);
        globalGraphs_[m] = gg;
        if (&m != &rings.front().m) gg->removeFromLegend();
    }
    const qint64 T = qint64(result_->input.ids.size());
    auto hline = [&](double v, const QString& name, RefTone tone) {
        auto* g = plot_->addGraph();
        g->setName(name);
        set_reference_pen(g, tone, 1.5, Qt::DashLine);
        g->setData(QVector<double>{-0.5, double(result_->n_layer) - 0.5}, QVector<double>{v, v});
    };
    if (result_->train_len > 0)
        hline(double(result_->train_len), QString("training length %1").arg(result_->train_len),
              RefTone::Muted);
    if (T > 0) hline(double(T), QString("input length %1").arg(T), RefTone::Strong);
    plot_->rescaleAxes();
    plot_->xAxis->setRange(-0.5, result_->n_layer - 0.5);
    // Log-axis headroom: points at the input length (censored fields) and at 1 token stay off the frame.
    const QCPRange yr = plot_->yAxis->range();
    if (yr.lower > 0) plot_->yAxis->setRange(yr.lower / 1.6, yr.upper * 1.6);
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

struct AttentionView::Built {
    bool stale = false;
    int layer = 0;
    qint64 channel = 0;
    std::vector<Method> methods;
    std::shared_ptr<OwnedMapData> maps = std::make_shared<OwnedMapData>();
};

void AttentionView::redraw() {
    discard_plots(plots_);
    maps_.clear();
    if (!result_) {
        build_.cancel();
        info_->clear();
        return;
    }
    info_->setText("building attention maps…");
    const RunResultPtr run = result_;
    const int layer = sel_->layer();
    const qint64 channel = sel_->channel();
    build_.start<Built>(
        [run, layer, channel](const auto& stale) {
            Built b;
            b.layer = layer;
            b.channel = channel;
            for (const auto& mr : run->methods) {
                for (const auto& am : mr.attention) {
                    if (am.ref.layer != layer || am.ref.channel != channel) continue;
                    if (am.alpha.shape.size() != 2) continue;
                    if (stale()) {
                        b.stale = true;
                        return b;
                    }
                    const int W = int(am.alpha.shape[0]);
                    auto* data =
                        new QCPColorMapData(W, W, QCPRange(double(am.begin), double(am.begin + W - 1)),
                                            QCPRange(double(am.begin), double(am.begin + W - 1)));
                    b.maps->data.push_back(data);
                    b.methods.push_back(mr.method);
                    for (int i = 0; i < W; ++i)
                        for (int j = 0; j < W; ++j) data->setCell(j, i, am.alpha.at2(i, j));
                }
            }
            return b;
        },
        [this](Built& b) { apply(b); });
}

void AttentionView::apply(Built& b) {
    if (b.stale || !result_) return;
    discard_plots(plots_);
    maps_.clear();
    for (size_t k = 0; k < b.methods.size(); ++k) {
        auto* plot = new_plot(host_);
        host_->layout()->addWidget(plot);
        plot->plotLayout()->insertRow(0);
        plot->plotLayout()->addElement(
            0, 0, new QCPTextElement(plot, method_label(b.methods[k]), QFont("sans", 10, QFont::Bold)));
        plot->xAxis->setLabel("source token j");
        plot->yAxis->setLabel("target token i");
        plot->yAxis->setRangeReversed(true);
        style_plot(plot);
        auto* map = new QCPColorMap(plot->xAxis, plot->yAxis);
        map->setData(b.maps->take(k), false);
        map->setGradient(QCPColorGradient::gpHot);
        map->rescaleDataRange();
        plot->rescaleAxes();
        plots_.push_back(plot);
        maps_.push_back(map);
    }
    info_->setText(
        !maps_.empty()
            ? QString("hidden attention α(i, j) of layer %1, channel %2 (method doc §5), normalised per map")
                  .arg(b.layer)
                  .arg(b.channel)
            : QString("no attention map recorded for layer %1, channel %2").arg(b.layer).arg(b.channel));
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
    mode_->addItem("global channels keeping each token (LongMamba §8.6; deeper blue: fewer)", GlobalKeep);
    mode_->setToolTip(
        "Critical: tokens whose Δ passed the selected channel's threshold. NLL change: per-token NLL of "
        "LongMamba minus vanilla. Global keep: in how many global channels (all layers) the token entered "
        "the "
        "state; unfiltered tokens are kept by every global channel (docs/user-guide.md).");
    top->addWidget(mode_);
    info_ = new QLabel;
    info_->setWordWrap(true);
    top->addWidget(info_, 1);
    lay->addLayout(top);
    text_ = new QPlainTextEdit;
    text_->setReadOnly(true);
    text_->setFont(QFont("DejaVu Sans Mono", 10));
    text_->viewport()->installEventFilter(this);  // tooltips of the needle and answer tokens
    lay->addWidget(text_, 1);
    connect(mode_, &QComboBox::currentIndexChanged, this, [this] { redraw(); });
    connect(sel_, &Selection::channelChanged, this, [this] { redraw(); });
    connect(sel_, &Selection::tokenChanged, this, [this](qint64 t) {
        if (t < first_ || t >= first_ + qint64(starts_.size()) || mode_->currentData().toInt() == GlobalKeep)
            redraw();
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

void TokensView::setMode(Mode m) {
    mode_->setCurrentIndex(mode_->findData(int(m)));
}

qint64 TokensView::keepCount(qint64 t) const {
    const MethodResult* lm = result_ ? result_->find(Method::LongMamba) : nullptr;
    if (!lm || t < 0 || t >= qint64(lm->global_keep_count.size())) return -1;
    return lm->global_keep_count[size_t(t)];
}

qint64 TokensView::globalChannels() const {
    const MethodResult* lm = result_ ? result_->find(Method::LongMamba) : nullptr;
    if (!lm) return 0;
    return qint64(std::count_if(lm->global_mask.data.begin(), lm->global_mask.data.end(),
                                [](uint8_t v) { return v != 0; }));
}

qint64 TokensView::tokenAtTextPosition(int pos) const {
    if (starts_.empty()) return -1;
    auto it = std::upper_bound(starts_.begin(), starts_.end(), pos);
    if (it == starts_.begin()) return -1;
    return first_ + qint64(it - starts_.begin() - 1);
}

namespace {
qint64 provenance_int(const RunResult& r, const char* key) {
    auto it = r.provenance.find(key);
    if (it == r.provenance.end()) return -1;
    bool ok = false;
    const qint64 v = QString::fromStdString(it->second).trimmed().toLongLong(&ok);
    return ok ? v : -1;
}
}  // namespace

TokensView::Mark TokensView::markAt(qint64 t) const {
    const QTextCharFormat f = formatAt(t);
    return f.hasProperty(kMarkProperty) ? Mark(f.intProperty(kMarkProperty)) : NoMark;
}

QString TokensView::toolTipAt(qint64 t) const {
    return formatAt(t).toolTip();
}

QTextCharFormat TokensView::formatAt(qint64 t) const {
    if (t < first_ || t >= first_ + qint64(starts_.size())) return {};
    QTextCursor c(text_->document());
    c.setPosition(starts_[size_t(t - first_)] + 1);  // the format of the token's first character
    return c.charFormat();
}

bool TokensView::eventFilter(QObject* watched, QEvent* event) {
    if (watched == text_->viewport() && event->type() == QEvent::ToolTip) {
        auto* he = static_cast<QHelpEvent*>(event);
        const qint64 t = tokenAtTextPosition(text_->cursorForPosition(he->pos()).position());
        const QString tip = t >= 0 ? toolTipAt(t) : QString();
        if (tip.isEmpty())
            QToolTip::hideText();
        else
            QToolTip::showText(he->globalPos(), QString("token %1: %2").arg(t).arg(tip), text_);
        return true;
    }
    return ResultView::eventFilter(watched, event);
}

TokenSpan haystack_marks(const RunResult& r) {
    TokenSpan s;
    const qint64 T = qint64(r.input.ids.size());
    s.needle_begin = provenance_int(r, "haystack.needle_begin");
    s.needle_end = provenance_int(r, "haystack.needle_end");
    if (s.needle_begin < 0 || s.needle_end <= s.needle_begin || s.needle_begin >= T)
        s.needle_begin = s.needle_end = -1;
    s.needle_end = std::min(s.needle_end, T);
    s.answer_begin = provenance_int(r, "haystack.answer_begin");
    if (s.answer_begin >= T) s.answer_begin = -1;
    if (auto it = r.provenance.find("haystack.key"); it != r.provenance.end())
        s.key = QString::fromStdString(it->second);
    return s;
}

TokenSpan write_tokens(QTextCursor& cur, const RunResult& r, qint64 first, qint64 last,
                       const TokenColouring& c) {
    TokenSpan span = haystack_marks(r);
    const auto& in = r.input;
    const qint64 T = qint64(in.ids.size());
    first = std::clamp<qint64>(first, 0, T);
    last = std::clamp<qint64>(last, first, T);
    const auto mode = c.mode;
    // NLL change per predicted token (position p predicts token p+1).
    std::vector<double> dnll;
    const MethodResult* van = r.find(Method::Vanilla);
    const MethodResult* lm = r.find(Method::LongMamba);
    if (mode == TokensView::NllChange && van && lm && van->nll.size() == lm->nll.size()) {
        dnll.assign(size_t(T), kNaN);
        for (size_t i = 0; i < van->nll.size(); ++i) {
            const int64_t p = i < van->nll_positions.size() ? van->nll_positions[i] : int64_t(i);
            if (p + 1 < T) dnll[size_t(p + 1)] = double(lm->nll[i]) - double(van->nll[i]);
        }
    }
    const MethodResult* keep = c.keep;
    if (keep) {
        span.n_global = qint64(std::count_if(keep->global_mask.data.begin(), keep->global_mask.data.end(),
                                             [](uint8_t v) { return v != 0; }));
        if (!keep->global_keep_count.empty()) {
            const auto [lo, hi] =
                std::minmax_element(keep->global_keep_count.begin(), keep->global_keep_count.end());
            span.keep_lo = *lo, span.keep_hi = *hi;
        }
    }
    const auto keepCount = [keep](qint64 t) -> qint64 {
        if (!keep || t < 0 || t >= qint64(keep->global_keep_count.size())) return -1;
        return keep->global_keep_count[size_t(t)];
    };
    const auto* trace = c.trace;
    QTextCharFormat plain;
    cur.beginEditBlock();  // one layout for the whole span, not one per token
    for (qint64 t = first; t < last; ++t) {
        span.starts.push_back(cur.position());
        QString s = size_t(t) < in.token_strings.size() ? QString::fromUtf8(in.token_strings[size_t(t)])
                                                        : QString("[%1]").arg(in.ids[size_t(t)]);
        if (s.isEmpty()) s = QString(QChar(0x00B7));
        QTextCharFormat f = plain;
        if (mode == TokensView::Critical && trace) {
            const qint64 w = t - r.window_begin;
            if (w >= 0 && w < qint64(trace->critical.size()) && trace->critical[size_t(w)]) {
                f.setBackground(QColor(255, 214, 102));
                ++span.highlighted;
            }
        } else if (mode == TokensView::GlobalKeep && span.n_global > 0 && keepCount(t) >= 0) {
            // Shade by where the count sits between the input's most- and least-kept tokens (a share of all
            // global channels would paint a filtered input one uniform colour: most tokens enter few).
            const double dropped = span.keep_hi > span.keep_lo ? double(span.keep_hi - keepCount(t)) /
                                                                     double(span.keep_hi - span.keep_lo)
                                                               : 0.0;
            const int a = int(std::clamp(dropped, 0.0, 1.0) * 200);
            f.setBackground(QColor(40, 110, 255, a));
            if (keepCount(t) < span.n_global) ++span.highlighted;
        } else if (mode == TokensView::NllChange && !dnll.empty() && std::isfinite(dnll[size_t(t)])) {
            const double d = std::clamp(dnll[size_t(t)], -2.0, 2.0) / 2.0;
            const int a = int(std::abs(d) * 160);
            f.setBackground(d > 0 ? QColor(255, 0, 0, a) : QColor(0, 170, 0, a));
            if (a > 8) ++span.highlighted;
        }
        // Needle and answer: text colour, weight and underline only, so the mode's background (critical
        // tokens, NLL change, global keep) stays what the reader sees on them.
        const QString& key = span.key;
        if (span.needle_begin >= 0 && t >= span.needle_begin && t < span.needle_end) {
            f.setForeground(QColor(176, 0, 128));
            f.setFontWeight(QFont::Bold);
            f.setFontUnderline(true);
            f.setUnderlineColor(QColor(176, 0, 128));
            f.setToolTip(key.isEmpty() ? QString("needle") : QString("needle (key %1)").arg(key));
            f.setProperty(TokensView::kMarkProperty, int(TokensView::NeedleMark));
        } else if (span.answer_begin >= 0 && t >= span.answer_begin) {
            f.setForeground(QColor(0, 120, 60));
            f.setFontWeight(QFont::Bold);
            f.setUnderlineStyle(QTextCharFormat::DashUnderline);
            f.setUnderlineColor(QColor(0, 120, 60));
            f.setToolTip(key.isEmpty() ? QString("answer (teacher-forced)")
                                       : QString("answer: the key %1 (teacher-forced)").arg(key));
            f.setProperty(TokensView::kMarkProperty, int(TokensView::AnswerMark));
        }
        if (t == c.selected) {
            f.setFontUnderline(true);
            f.setFontWeight(QFont::Bold);
        }
        cur.insertText(s, f);
    }
    cur.endEditBlock();
    return span;
}

void TokensView::redraw() {
    const QSignalBlocker block(this);
    const QSignalBlocker blockText(text_);
    text_->clear();
    starts_.clear();
    highlighted_ = 0;
    needle_begin_ = needle_end_ = answer_begin_ = -1;
    key_.clear();
    if (!result_) return;
    const qint64 T = qint64(result_->input.ids.size());
    // A haystack run: where the needle and the answer are (positions in the teacher-forced input).
    const TokenSpan marks = haystack_marks(*result_);
    // Without a selected token a haystack opens on its needle: that is where the filter must keep tokens.
    const qint64 centre = sel_->token() >= 0        ? sel_->token()
                          : marks.needle_begin >= 0 ? (marks.needle_begin + marks.needle_end) / 2
                                                    : result_->window_begin;
    first_ = std::clamp<qint64>(centre - kTokenViewSpan / 2, 0, std::max<qint64>(0, T - kTokenViewSpan));
    const qint64 last = std::min(T, first_ + kTokenViewSpan);
    const Mode mode = Mode(mode_->currentData().toInt());
    TokenColouring colouring;
    colouring.mode = mode;
    colouring.selected = sel_->token();
    colouring.keep = result_->find(Method::LongMamba);
    if (colouring.keep) colouring.trace = find_trace(*colouring.keep, sel_->layer(), sel_->channel());
    const ChannelTrace* trace = colouring.trace;
    QTextCursor cur(text_->document());
    TokenSpan span = write_tokens(cur, *result_, first_, last, colouring);
    starts_ = std::move(span.starts);
    highlighted_ = span.highlighted;
    needle_begin_ = span.needle_begin, needle_end_ = span.needle_end, answer_begin_ = span.answer_begin;
    key_ = span.key;
    const qint64 n_global = span.n_global, keep_lo = span.keep_lo, keep_hi = span.keep_hi;
    QString extra;
    if (mode == Critical && !trace) extra = " · selected channel not traced";
    if (mode == GlobalKeep) {
        if (n_global == 0 || keepCount(0) < 0)
            extra = " · no LongMamba run with global channels";
        else {
            extra = QString(" · kept by %1 (deepest blue) to %2 (white) of %3 global channels")
                        .arg(keep_lo)
                        .arg(keep_hi)
                        .arg(n_global);
            if (sel_->token() >= 0 && keepCount(sel_->token()) >= 0)
                extra += QString(" · token %1 kept by %2 of %3")
                             .arg(sel_->token())
                             .arg(keepCount(sel_->token()))
                             .arg(n_global);
        }
    }
    if (needle_begin_ >= 0)
        extra += QString(" · needle (magenta, underlined) at tokens %1–%2%3")
                     .arg(needle_begin_)
                     .arg(needle_end_ - 1)
                     .arg(key_.isEmpty() ? QString() : QString(", key %1").arg(key_));
    if (answer_begin_ >= 0) extra += QString(" · answer (green) from token %1").arg(answer_begin_);
    info_->setText(QString("tokens %1–%2 of %3%4").arg(first_).arg(last - 1).arg(T).arg(extra));
}

// ---- Needle strip of the composite ------------------------------------------------------------------------

// Paints the strip's document: whole lines only, as many as fit, the needle's lines centred.
class NeedleTokensStrip::Pane : public QWidget {
  public:
    Pane(QTextDocument* doc, int needle_from, int needle_to, QWidget* parent)
        : QWidget(parent), doc_(doc), needle_from_(needle_from), needle_to_(needle_to) {}
    struct Line {
        qreal top, height;
        int from, to;  // document positions [from, to)
    };
    // Lays the document out at the pane's width; returns the lines drawn.
    std::vector<Line> shownLines() {
        doc_->setTextWidth(std::max(50, width()));
        (void)doc_->size();  // lays the whole document out now
        std::vector<Line> all;
        for (QTextBlock b = doc_->begin(); b.isValid(); b = b.next()) {
            QTextLayout* tl = b.layout();
            if (!tl) continue;
            for (int i = 0; i < tl->lineCount(); ++i) {
                const QTextLine l = tl->lineAt(i);
                all.push_back({tl->position().y() + l.y(), l.height(), b.position() + l.textStart(),
                               b.position() + l.textStart() + l.textLength()});
            }
        }
        if (all.empty()) return all;
        const qreal lh = std::max<qreal>(1.0, all.front().height);
        const int n = std::clamp(int(std::floor(height() / lh)), 1, int(all.size()));
        auto line_of = [&](int pos) {
            for (size_t i = 0; i < all.size(); ++i)
                if (pos < all[i].to || i + 1 == all.size()) return int(i);
            return 0;
        };
        const int l0 = needle_from_ >= 0 ? line_of(needle_from_) : 0;
        const int l1 = needle_to_ > needle_from_ ? line_of(needle_to_ - 1) : l0;
        int first = l1 - l0 + 1 >= n ? l0 : (l0 + l1 + 1) / 2 - n / 2;
        first = std::clamp(first, 0, int(all.size()) - n);
        return {all.begin() + first, all.begin() + first + n};
    }

  protected:
    void paintEvent(QPaintEvent*) override {
        const auto lines = shownLines();
        if (lines.empty()) return;
        QPainter p(this);
        const qreal top = lines.front().top, bottom = lines.back().top + lines.back().height;
        p.translate(0, -top);
        QAbstractTextDocumentLayout::PaintContext ctx;
        ctx.clip = QRectF(0, top, width(), bottom - top);
        ctx.palette = palette();
        ctx.palette.setColor(QPalette::Text, palette().color(QPalette::WindowText));
        p.setClipRect(ctx.clip);
        doc_->documentLayout()->draw(&p, ctx);
    }

  private:
    QTextDocument* doc_;
    int needle_from_, needle_to_;
};

NeedleTokensStrip::NeedleTokensStrip(const RunResult& r, QWidget* parent) : QFrame(parent) {
    setFrameShape(QFrame::StyledPanel);
    const TokenSpan marks = haystack_marks(r);
    // The method with critical tokens (LongMamba), else the first with a global keep count.
    const MethodResult* keep = r.find(Method::LongMamba);
    if (!keep || keep->global_keep_count.empty())
        for (const auto& m : r.methods)
            if (!m.global_keep_count.empty()) {
                keep = &m;
                break;
            }
    if (keep) method_ = keep->method;
    const qint64 T = qint64(r.input.ids.size());
    const qint64 nb = std::max<qint64>(0, marks.needle_begin), ne = std::max(nb, marks.needle_end);
    first_ = std::clamp<qint64>(nb - kContext, 0, T);
    last_ = std::clamp<qint64>(ne + kContext, first_, T);
    doc_ = new QTextDocument(this);
    doc_->setDefaultFont(QFont("DejaVu Sans Mono", 9));
    doc_->setDocumentMargin(2);
    QTextOption opt = doc_->defaultTextOption();
    opt.setWrapMode(QTextOption::WrapAtWordBoundaryOrAnywhere);
    doc_->setDefaultTextOption(opt);
    TokenColouring colouring;
    colouring.mode = TokensView::GlobalKeep;
    colouring.keep = keep;
    QTextCursor cur(doc_);
    span_ = write_tokens(cur, r, first_, last_, colouring);
    const auto pos = [&](qint64 t) {
        return t >= first_ && t < last_ ? span_.starts[size_t(t - first_)] : t >= last_ ? cur.position() : -1;
    };
    const int nfrom = marks.needle_begin >= 0 ? pos(marks.needle_begin) : -1;
    const int nto = marks.needle_begin >= 0 ? pos(marks.needle_end) : -1;

    auto* lay = new QVBoxLayout(this);
    lay->setContentsMargins(6, 3, 6, 3);
    lay->setSpacing(2);
    const QString who = keep ? method_label(method_) : QString("no method");
    QString colour;
    if (keep && span_.n_global > 0 && !keep->global_keep_count.empty())
        colour = QString(
                     "background = global channels that keep the token, deeper blue: fewer "
                     "(%1 to %2 of %3), §8.6")
                     .arg(span_.keep_lo)
                     .arg(span_.keep_hi)
                     .arg(span_.n_global);
    else
        colour = "no global channels: no critical-token colouring";
    caption_ = new QLabel(
        QString("<b>Tokens around the needle</b> (%1: %2; needle <span style='color:#b00080'><b><u>magenta, "
                "underlined</u></b></span> at tokens %3–%4%5)")
            .arg(who.toHtmlEscaped(), colour)
            .arg(marks.needle_begin)
            .arg(marks.needle_end - 1)
            .arg(marks.key.isEmpty() ? QString() : QString(", key %1").arg(marks.key.toHtmlEscaped())));
    caption_->setTextFormat(Qt::RichText);
    lay->addWidget(caption_);
    pane_ = new Pane(doc_, nfrom, nto, this);
    const int line = QFontMetrics(doc_->defaultFont()).height();
    pane_->setFixedHeight(kLines * line + 4);
    lay->addWidget(pane_);
    setSizePolicy(QSizePolicy::Preferred, QSizePolicy::Fixed);
}

QString NeedleTokensStrip::caption() const {
    return caption_->text();
}

QString NeedleTokensStrip::plainText() const {
    return doc_->toPlainText();
}

QTextCharFormat NeedleTokensStrip::formatAt(qint64 t) const {
    if (t < first_ || t >= last_ || size_t(t - first_) >= span_.starts.size()) return {};
    QTextCursor c(doc_);
    c.setPosition(span_.starts[size_t(t - first_)] + 1);
    return c.charFormat();
}

TokensView::Mark NeedleTokensStrip::markAt(qint64 t) const {
    const QTextCharFormat f = formatAt(t);
    return f.hasProperty(TokensView::kMarkProperty)
               ? TokensView::Mark(f.intProperty(TokensView::kMarkProperty))
               : TokensView::NoMark;
}

QColor NeedleTokensStrip::backgroundAt(qint64 t) const {
    const QTextCharFormat f = formatAt(t);
    return f.hasProperty(QTextFormat::BackgroundBrush) ? f.background().color() : QColor();
}

std::pair<qint64, qint64> NeedleTokensStrip::shownTokens() {
    const auto lines = pane_->shownLines();
    if (lines.empty()) return {first_, first_};
    const int from = lines.front().from, to = lines.back().to;
    qint64 a = last_, b = first_;
    for (size_t i = 0; i < span_.starts.size(); ++i) {
        const int s = span_.starts[i];
        const int e = i + 1 < span_.starts.size() ? span_.starts[i + 1] : doc_->characterCount() - 1;
        if (s >= from && e <= to)
            a = std::min(a, first_ + qint64(i)), b = std::max(b, first_ + qint64(i) + 1);
    }
    return {a, std::max(a, b)};
}

// ---- Comparison composite and export ----------------------------------------------------------------------

ComparisonWidget::ComparisonWidget(RunResultPtr result, Selection* selection, QWidget* parent,
                                   std::shared_ptr<const RetrievalResult> retrieval)
    : QWidget(parent) {
    auto* grid = new QGridLayout(this);
    auto* title = new QLabel(QString("<b>Mambascope</b> · %1 · %2 tokens · train length %3")
                                 .arg(result && result->provenance.count("model")
                                          ? QString::fromStdString(result->provenance.at("model"))
                                      : result && result->provenance.count("model_name")
                                          ? QString::fromStdString(result->provenance.at("model_name"))
                                          : QString("run"))
                                 .arg(result ? qint64(result->input.ids.size()) : 0)
                                 .arg(result ? result->train_len : 0));
    grid->addWidget(title, 0, 0, 1, 2);
    int row = 1, height = 1000;
    // A haystack run: what each method answered, first, in the colours a reader expects (green right).
    if (const QString h = result ? haystack_summary(*result, true) : QString(); !h.isEmpty()) {
        header_ = new QLabel(h);
        header_->setTextFormat(Qt::RichText);
        header_->setWordWrap(true);
        QFont f = header_->font();
        f.setPointSizeF(f.pointSizeF() * 1.15);
        header_->setFont(f);
        header_->setFrameShape(QFrame::StyledPanel);
        header_->setContentsMargins(8, 4, 8, 4);
        grid->addWidget(header_, row++, 0, 1, 2);
        height += 50;
        // …and the needle in the text, in the critical-token colouring (global channels keeping each token).
        if (result && haystack_marks(*result).needle_begin >= 0) {
            strip_ = new NeedleTokensStrip(*result);
            grid->addWidget(strip_, row++, 0, 1, 2);
            height += strip_->sizeHint().height() + 6;
        }
    }
    ResultView* views[] = {new ChannelMapView(selection), new ReceptiveFieldView(selection),
                           new ChannelDetailView(selection), new PerplexityView(selection)};
    for (int i = 0; i < 4; ++i) {
        views[i]->setResult(result);
        grid->addWidget(views[i], row + i / 2, i % 2);
    }
    grid->setRowStretch(row, 1);
    grid->setRowStretch(row + 1, 1);
    row += 2;
    if (retrieval) {
        auto* rv = new RetrievalView(selection);
        rv->setCompact(true);
        rv->setRetrieval(std::move(retrieval));
        rv->setResult(result);
        grid->addWidget(rv, row, 0, 1, 2);
        grid->setRowStretch(row, 1);
        height += 480;
    }
    resize(1600, height);
}

void wait_for_builds(QWidget* w) {
    if (auto* v = qobject_cast<ResultView*>(w)) v->waitForBuild();
    for (auto* v : w->findChildren<ResultView*>()) v->waitForBuild();
}

static QImage render_widget(QWidget* w, double scale) {
    wait_for_builds(w);
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

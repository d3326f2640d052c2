#include "views.h"

#include <QAbstractButton>
#include <QAbstractSpinBox>
#include <QAbstractTextDocumentLayout>
#include <QApplication>
#include <QBuffer>
#include <QFileDialog>
#include <QFileInfo>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QLineEdit>
#include <QMessageBox>
#include <QPainter>
#include <QPdfWriter>
#include <QScrollBar>
#include <QSvgGenerator>
#include <QTabBar>
#include <QTextBlock>
#include <QTextDocument>
#include <QTextLayout>
#include <QToolTip>
#include <QVBoxLayout>
#include <algorithm>
#include <cmath>
#include <limits>

#include "mambascope/atomic_file.h"
#include "mambascope/error.h"
#include "plot_tools.h"
#include "retrieval_view.h"

namespace mambascope::gui {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// Tokens shown at once in the Tokens view (the rest of a 128k input is not laid out).
constexpr qint64 kTokenViewSpan = 3000;
// Markers for global channels are skipped above this count (they would hide the map).
constexpr qint64 kMaxGlobalMarkers = 20000;
// PDF and SVG exports: one point per widget pixel.
constexpr int kPdfDpi = 72;
// Property of QLabels that only name a control ("Statistic:"): left out of figures with the control.
constexpr const char* kControlLabel = "mambascope_control_label";
// Background of a critical token in the Tokens view.
const QColor kCriticalHighlight(255, 214, 102);

// Sequence plots zoom and pan along x only; maps and scatter plots along both axes.
QCustomPlot* new_plot(QWidget* parent, ZoomAxes axes = ZoomAxes::X) {
    auto* p = new QCustomPlot(parent);
    make_interactive(p, axes);
    p->setMinimumSize(200, 160);
    p->setNoAntialiasingOnDrag(true);
    style_plot(p);
    return p;
}

// The name of a control: left out of figures with it.
QLabel* control_label(const QString& text) {
    auto* l = new QLabel(text);
    l->setProperty(kControlLabel, true);
    return l;
}

// Check boxes that show/hide each method in every view (Selection::setMethodShown), for the map views, whose
// legends hold no method entries.
void add_method_toggles(QBoxLayout* bar, Selection* sel) {
    for (Method m : {Method::Vanilla, Method::LongMamba, Method::DeciMamba}) {
        auto* box = new QCheckBox(method_label(m));
        box->setChecked(sel->methodShown(m));
        box->setToolTip("Show or hide this method's map (in every view).");
        QObject::connect(box, &QCheckBox::toggled, sel, [sel, m](bool on) { sel->setMethodShown(m, on); });
        QObject::connect(sel, &Selection::methodsShownChanged, box, [box, sel, m] {
            const QSignalBlocker block(box);
            box->setChecked(sel->methodShown(m));
        });
        bar->addWidget(box);
    }
}

// A blue–white–red gradient for signed differences (white = no change).
QCPColorGradient diverging_gradient() {
    QCPColorGradient g;
    g.clearColorStops();
    g.setColorStopAt(0.0, QColor(33, 102, 172));
    g.setColorStopAt(0.5, QColor(247, 247, 247));
    g.setColorStopAt(1.0, QColor(178, 24, 43));
    return g;
}

// Black or white, whichever reads on `bg` (text on highlighted tokens in either palette).
QColor readable_on(const QColor& bg) {
    return bg.lightnessF() > 0.55 ? QColor(20, 20, 20) : QColor(240, 240, 240);
}

bool dark_palette() {
    return QApplication::palette().color(QPalette::Base).lightness() < 128;
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
    if (x.size() > kThinPenPoints) {
        QPen pen = g->pen();
        pen.setWidthF(1.0);
        pen.setCosmetic(true);
        g->setPen(pen);
    }
    set_lod_data(g, x, y);  // thinned per pixel column, again on every zoom (plot_tools.h)
}

// Rescales y to the data (the thinned points hold every column's extremes) and remembers the home view.
void rescale_home(QCustomPlot* p, double xLower, double xUpper) {
    p->xAxis->setRange(xLower, xUpper);
    p->yAxis->rescale(true);
    const QCPRange y = p->yAxis->range();
    const double pad = y.size() > 0 ? 0.05 * y.size() : 0.5;
    p->yAxis->setRange(y.lower - pad, y.upper + pad);
    set_home(p);
}

}  // namespace

void ResultView::applyMethodVisibility(QCustomPlot* p) {
    for (Method m : {Method::Vanilla, Method::LongMamba, Method::DeciMamba})
        set_method_visible(p, m, sel_->methodShown(m));
}

// ---- Channel map ------------------------------------------------------------------------------------------

ChannelMapView::ChannelMapView(Selection* selection, QWidget* parent) : ResultView(selection, parent) {
    auto* lay = new QVBoxLayout(this);
    auto* top = new QHBoxLayout;
    top->addWidget(control_label("Statistic:"));
    stat_ = new QComboBox;
    stat_->addItem("log decay  A·ΣΔ (§8.2)", LogDecay);
    stat_->addItem("Σ Δ over the input", DeltaSum);
    stat_->addItem("critical-token count (§8.6)", CriticalCount);
    stat_->addItem("receptive field, last position (tokens, §8.7)", ReceptiveField);
    stat_->setToolTip(
        "The per-channel summary drawn as colour. Global channels (LongMamba §8.4) are marked ×.");
    top->addWidget(stat_);
    diff_ = new QCheckBox("LongMamba − vanilla");
    diff_->setToolTip(
        "A fourth map: the statistic of LongMamba minus vanilla per channel (blue: lower, red: higher, "
        "white: unchanged), on its own symmetric colour scale.");
    top->addWidget(diff_);
    add_method_toggles(top, sel_);
    status_ = new QLabel;
    top->addWidget(status_);
    top->addStretch();
    lay->addLayout(top);
    plotsHost_ = new QWidget;
    new QHBoxLayout(plotsHost_);
    lay->addWidget(plotsHost_, 1);
    connect(stat_, &QComboBox::currentIndexChanged, this, [this] { rebuild(); });
    connect(diff_, &QCheckBox::toggled, this, [this] { rebuild(); });
    connect(sel_, &Selection::channelChanged, this, [this] { updateMarker(); });
    connect(sel_, &Selection::methodsShownChanged, this, [this] { updateVisibility(); });
}

ResultView::Ranges ChannelMapView::viewRanges() const {
    if (plots_.empty()) return pendingRanges_;
    const QCPRange x = plots_.front()->xAxis->range(), y = plots_.front()->yAxis->range();
    return {{"x", {x.lower, x.upper}}, {"y", {y.lower, y.upper}}};
}

void ChannelMapView::setViewRanges(const Ranges& ranges) {
    pendingRanges_ = ranges;
    if (plots_.empty()) return;  // applied when the build is
    auto* p = plots_.front();    // the others follow (linked)
    if (auto it = ranges.find("x"); it != ranges.end()) p->xAxis->setRange(it->second[0], it->second[1]);
    if (auto it = ranges.find("y"); it != ranges.end()) p->yAxis->setRange(it->second[0], it->second[1]);
    p->replot(QCustomPlot::rpQueuedReplot);
}

void ChannelMapView::updateVisibility() {
    for (size_t i = 0; i < plots_.size(); ++i)
        if (i < methods_.size()) plots_[i]->setVisible(sel_->methodShown(methods_[i]));
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
    QCPColorMapData* diff = nullptr;  // LongMamba − vanilla (owned by `maps` too)
    double diffAbs = 0;               // max |difference|: the symmetric scale
};

void ChannelMapView::setResult(RunResultPtr result) {
    result_ = std::move(result);
    pendingRanges_.clear();  // a new run opens unzoomed
    if (!plots_.empty()) discard_plots(plots_), maps_.clear(), markers_.clear(), methods_.clear();
    rebuild();
}

void ChannelMapView::clearPlots() {
    if (!plots_.empty()) pendingRanges_ = viewRanges();  // a new statistic keeps the zoom
    discard_plots(plots_);
    diffMap_ = nullptr;
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
    const bool wantDiff = diff_->isChecked();
    build_.start<Built>(
        [run, stat, wantDiff](const auto& stale) {
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
            const MethodResult* van = run->find(Method::Vanilla);
            const MethodResult* lm = run->find(Method::LongMamba);
            if (wantDiff && van && lm) {
                b.diff = new QCPColorMapData(int(C), L, QCPRange(0, double(C - 1)), QCPRange(0, L - 1));
                b.maps->data.push_back(b.diff);
                for (int l = 0; l < L; ++l)
                    for (qint64 c = 0; c < C; ++c) {
                        const double d =
                            stat_value(*run, *lm, stat, l, c) - stat_value(*run, *van, stat, l, c);
                        b.diff->setCell(int(c), l, d);
                        if (std::isfinite(d)) b.diffAbs = std::max(b.diffAbs, std::abs(d));
                    }
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
    const Statistic stat = Statistic(stat_->currentData().toInt());
    // Receptive fields span 1 … T tokens: a log colour scale, or every short field is one colour.
    const bool logScale = stat == ReceptiveField;
    // A map per method, then the difference map (titled, no method).
    const size_t n = b.methods.size() + (b.diff ? 1 : 0);
    for (size_t i = 0; i < n; ++i) {
        const bool isDiff = i >= b.methods.size();
        const Method method = isDiff ? Method::LongMamba : b.methods[i];
        auto* plot = new_plot(plotsHost_, ZoomAxes::XY);
        plotsHost_->layout()->addWidget(plot);
        plot->plotLayout()->insertRow(0);
        auto* title = new QCPTextElement(plot, isDiff ? QString("LongMamba − vanilla") : method_label(method),
                                         QFont("sans", 10, QFont::Bold));
        plot->plotLayout()->addElement(0, 0, title);
        plot->xAxis->setLabel("channel");
        plot->yAxis->setLabel("layer");
        set_integer_ticks(plot->xAxis);  // whole channels and layers at any zoom
        set_integer_ticks(plot->yAxis);
        auto* map = new QCPColorMap(plot->xAxis, plot->yAxis);
        map->setData(b.maps->take(isDiff ? b.maps->data.size() - 1 : i), false);
        map->setInterpolate(false);
        map->removeFromLegend();
        if (isDiff) {
            map->setGradient(diverging_gradient());
            const double a = b.diffAbs > 0 ? b.diffAbs : 1;
            map->setDataRange(QCPRange(-a, a));
            auto* scale = new QCPColorScale(plot);
            plot->plotLayout()->addElement(1, 1, scale);
            scale->axis()->setLabel("LongMamba − vanilla");
            scale->setGradient(diverging_gradient());
            map->setColorScale(scale);
            scale->setDataRange(QCPRange(-a, a));
            diffMap_ = map;
        } else {
            map->setGradient(QCPColorGradient::gpThermal);
            if (logScale) map->setDataScaleType(QCPAxis::stLogarithmic);
        }
        // Global channels (§8.4): green crosses, a colour the thermal scale never takes.
        auto* g = plot->addGraph();
        g->setName("global channel (§8.4)");
        g->setLineStyle(QCPGraph::lsNone);
        g->setScatterStyle(
            QCPScatterStyle(QCPScatterStyle::ssCross, QPen(QColor(0, 200, 80), 1.2), Qt::NoBrush, 5));
        if (!isDiff) g->setData(b.gx[i], b.gy[i]);
        auto* marker = plot->addGraph();
        marker->setName("selected channel");
        marker->setLineStyle(QCPGraph::lsNone);
        marker->setScatterStyle(
            QCPScatterStyle(QCPScatterStyle::ssSquare, QPen(Qt::cyan, 2), Qt::NoBrush, 9));
        legend_below(plot, 1);  // under every map, so that the maps stay the same height
        style_plot(plot);
        plots_.push_back(plot);
        markers_.push_back(marker);
        if (!isDiff) {
            maps_.push_back(map);
            methods_.push_back(method);
        }
        connect(plot, &QCustomPlot::mouseMove, this, [this, plot, map, method, isDiff](QMouseEvent* ev) {
            int c = 0, l = 0;
            map->data()->coordToCell(plot->xAxis->pixelToCoord(ev->pos().x()),
                                     plot->yAxis->pixelToCoord(ev->pos().y()), &c, &l);
            if (c < 0 || l < 0 || c >= map->data()->keySize() || l >= map->data()->valueSize()) return;
            QToolTip::showText(ev->globalPosition().toPoint(),
                               QString("%1 · layer %2, channel %3\n%4 = %5")
                                   .arg(isDiff ? QString("LongMamba − vanilla") : method_label(method))
                                   .arg(l)
                                   .arg(c)
                                   .arg(stat_->currentText())
                                   .arg(map->data()->cell(c, l), 0, 'g', 5),
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
        // One colour scale for every method, drawn beside the last method's map.
        QCustomPlot* last = plots_[maps_.size() - 1];
        scale_ = new QCPColorScale(last);
        last->plotLayout()->addElement(1, 1, scale_);
        scale_->axis()->setLabel(stat_->currentText());
        scale_->setGradient(QCPColorGradient::gpThermal);
        if (logScale) scale_->setDataScaleType(QCPAxis::stLogarithmic);
        maps_.back()->setColorScale(scale_);
        style_plot(last);
        double lo = b.lo, hi = b.hi;
        if (logScale) lo = std::max(lo, 1.0);
        const QCPRange range(std::isfinite(lo) ? lo : 0, std::isfinite(hi) && hi > lo ? hi : lo + 1);
        for (auto* m : maps_) m->setDataRange(range);  // one colour scale for every method
        scale_->setDataRange(range);
        for (auto* p : plots_) {
            p->xAxis->setRange(-0.5, double(C) - 0.5);
            p->yAxis->setRange(-0.5, L - 0.5);
            set_home(p);
        }
        link_axes(plots_, ZoomAxes::XY);  // zooming one map zooms all
    }
    updateVisibility();
    if (!pendingRanges_.empty()) setViewRanges(pendingRanges_);
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
    top->addWidget(control_label("Channel:"));
    traced_ = new QComboBox;
    traced_->setToolTip(
        "Channels with detail in this run: traced up front (the run panel's channels) or computed since. "
        "Any other channel of the channel map gets its detail computed on demand.");
    top->addWidget(traced_);
    info_ = new QLabel;
    info_->setWordWrap(true);
    top->addWidget(info_, 1);
    lay->addLayout(top);
    // What the view says instead of plots when the channel has no detail (yet): computing, cancelled,
    // unavailable (no model), failed.
    auto* status = new QHBoxLayout;
    note_ = new QLabel;
    note_->setWordWrap(true);
    note_->setAlignment(Qt::AlignCenter);
    QFont f = note_->font();
    f.setPointSizeF(f.pointSizeF() * 1.2);
    note_->setFont(f);
    progress_ = new QProgressBar;
    progress_->setRange(0, 1000);
    progress_->setMaximumWidth(240);
    cancel_ = new QPushButton("Cancel");
    cancel_->setToolTip("Stop computing this channel's detail.");
    status->addWidget(note_, 1);
    status->addWidget(progress_);
    status->addWidget(cancel_);
    lay->addLayout(status);
    delta_ = new_plot(this);
    delta_->xAxis->setLabel("token position");
    delta_->yAxis->setLabel("Δ (after softplus)");
    legend_below(delta_, 4, [this](Method m) { toggleMethod(m); });
    decay_ = new_plot(this);
    decay_->xAxis->setLabel("token position");
    decay_->yAxis->setLabel("cum. log decay ΣA·Δ (nats)");
    legend_below(decay_, 4, [this](Method m) { toggleMethod(m); });
    new Crosshair(delta_);
    new Crosshair(decay_);
    link_axes({delta_, decay_}, ZoomAxes::X);  // one token axis for both
    lay->addWidget(delta_, 1);
    lay->addWidget(decay_, 1);
    connect(traced_, &QComboBox::activated, this, [this](int i) {
        const QPoint lc = traced_->itemData(i).toPoint();
        sel_->setChannel(lc.x(), lc.y());
    });
    connect(cancel_, &QPushButton::clicked, sel_, &Selection::requestDetailCancel);
    connect(sel_, &Selection::channelChanged, this, [this] { redraw(); });
    connect(sel_, &Selection::detailStatusChanged, this, [this] { updateStatus(); });
    connect(sel_, &Selection::methodsShownChanged, this, [this] {
        applyMethodVisibility(delta_);
        applyMethodVisibility(decay_);
    });
    updateStatus();
}

ResultView::Ranges ChannelDetailView::viewRanges() const {
    const QCPRange x = delta_->xAxis->range();
    return {{"x", {x.lower, x.upper}}};
}

void ChannelDetailView::setViewRanges(const Ranges& ranges) {
    if (auto it = ranges.find("x"); it != ranges.end()) delta_->xAxis->setRange(it->second[0], it->second[1]);
    delta_->replot(QCustomPlot::rpQueuedReplot);
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

void ChannelDetailView::updateStatus() {
    const bool shown = !delta_->isHidden();
    const double f = sel_->detailProgress();
    progress_->setVisible(!shown && f >= 0);
    cancel_->setVisible(!shown && f >= 0);
    if (f >= 0) progress_->setValue(int(f * 1000));
    note_->setVisible(!shown);
    if (!shown && result_)
        info_->setText(sel_->detailNote().isEmpty()
                           ? QString("layer %1, channel %2 was not traced in this run")
                                 .arg(sel_->layer())
                                 .arg(sel_->channel())
                           : sel_->detailNote());
    if (!shown) note_->setText(message());
}

void ChannelDetailView::redraw() {
    delta_->clearGraphs();
    decay_->clearGraphs();
    delta_->clearItems();
    decay_->clearItems();
    deltaGraphs_.clear();
    decayGraphs_.clear();
    target_ = critical_ = nullptr;
    const int layer = sel_->layer();
    const qint64 channel = sel_->channel();
    bool any = false;
    const MethodResult* vanilla = result_ ? result_->find(Method::Vanilla) : nullptr;
    if (result_) {
        const int idx = traced_->findData(QPoint(layer, int(channel)));
        if (idx >= 0) traced_->setCurrentIndex(idx);
        for (const auto& mr : result_->methods) any = any || find_trace(mr, layer, channel);
    }
    const qint64 T = result_ ? qint64(result_->input.ids.size()) : 0;
    if (any) {
        // One token axis for both plots (they are linked): the whole input.
        delta_->xAxis->setRange(0, double(std::max<qint64>(1, T - 1)));
    }
    static const std::vector<MethodResult> kNone;
    for (const auto& mr : any ? result_->methods : kNone) {
        const ChannelTrace* t = find_trace(mr, layer, channel);
        if (!t) continue;
        const QColor col = method_color(mr.method);
        QVector<double> x(qsizetype(t->delta_raw.size())), y(x.size());
        for (qsizetype i = 0; i < x.size(); ++i)
            x[i] = double(result_->window_begin + i), y[i] = t->delta_raw[size_t(i)];
        auto* g = delta_->addGraph();
        g->setName(method_label(mr.method) + " Δ");
        g->setPen(QPen(col, 1));
        tag_method(g, mr.method);
        set_graph(g, x, y);
        deltaGraphs_[mr.method] = g;
        if (mr.method == Method::LongMamba) {
            if (std::isfinite(t->threshold) && !x.isEmpty()) {
                auto* th = delta_->addGraph();
                th->setName(QString("threshold b·θ = %1 (§8.5)").arg(t->threshold, 0, 'g', 4));
                set_reference_pen(th, RefTone::Strong, 1, Qt::DashLine);
                tag_method(th, Method::LongMamba);
                th->setData(QVector<double>{x.front(), x.back()},
                            QVector<double>{t->threshold, t->threshold});
            }
            QVector<double> cx, cy;
            for (qsizetype i = 0; i < x.size() && i < qsizetype(t->critical.size()); ++i)
                if (t->critical[size_t(i)]) cx << x[i], cy << y[i];
            critical_ = delta_->addGraph();
            critical_->setName(QString("critical tokens (%1, §8.6)").arg(cx.size()));
            critical_->setLineStyle(QCPGraph::lsNone);
            critical_->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCircle, col, 4));
            critical_->setPen(QPen(col));
            tag_method(critical_, Method::LongMamba);
            set_lod_data(critical_, cx, cy);  // per pixel column too: a marker stays on its token
        }
        QVector<double> dx(qsizetype(t->cum_log_decay.size())), dy(dx.size());
        for (qsizetype i = 0; i < dx.size(); ++i) dx[i] = double(i), dy[i] = t->cum_log_decay[size_t(i)];
        auto* dg = decay_->addGraph();
        dg->setName(method_label(mr.method));
        dg->setPen(QPen(col, 1.5));
        tag_method(dg, mr.method);
        set_graph(dg, dx, dy);
        decayGraphs_[mr.method] = dg;
    }
    // Alignment target (see docs/user-guide.md): the decay vanilla reaches over the training window,
    // spread over the whole input: target(t) = t/T · cum_vanilla(train_len − 1).
    if (any && vanilla) {
        const ChannelTrace* vt = find_trace(*vanilla, layer, channel);
        const qint64 Tv = vt ? qint64(vt->cum_log_decay.size()) : 0;
        if (vt && Tv > 1 && result_->train_len > 0) {
            const double train_decay =
                vt->cum_log_decay[size_t(std::min<qint64>(Tv, result_->train_len) - 1)];
            target_ = decay_->addGraph();
            target_->setName("alignment target t/T·decay(train_len)");
            set_reference_pen(target_, RefTone::Muted, 1.5, Qt::DashLine);
            target_->setData(QVector<double>{0, double(Tv - 1)},
                             QVector<double>{0, train_decay * double(Tv - 1) / double(Tv)});
        }
    }
    // Δ is recorded over a window of at most kMaxWindowTokens tokens: past it the plot says so.
    if (any && result_->window_end < T) {
        auto* past = new QCPItemRect(delta_);
        past->topLeft->setTypeY(QCPItemPosition::ptAxisRectRatio);
        past->bottomRight->setTypeY(QCPItemPosition::ptAxisRectRatio);
        past->topLeft->setCoords(double(result_->window_end), 0);
        past->bottomRight->setCoords(double(T - 1), 1);
        QColor shade = reference_color(RefTone::Muted);
        shade.setAlpha(40);
        past->setBrush(shade);
        past->setPen(Qt::NoPen);
        auto* note = new QCPItemText(delta_);
        note->position->setTypeY(QCPItemPosition::ptAxisRectRatio);
        note->position->setCoords(double(result_->window_end), 0.5);
        note->setPositionAlignment(Qt::AlignLeft | Qt::AlignVCenter);
        note->setText(QString("  Δ recorded for tokens %1–%2 only\n  (at most %3 tokens per trace)")
                          .arg(result_->window_begin)
                          .arg(result_->window_end - 1)
                          .arg(kMaxWindowTokens));
        note->setColor(QApplication::palette().color(QPalette::Text));
    }
    if (!result_)
        info_->setText("no run yet");
    else if (any)
        info_->setText(QString("layer %1, channel %2%3")
                           .arg(layer)
                           .arg(channel)
                           .arg(find_trace(result_->methods.front(), layer, channel) &&
                                        find_trace(result_->methods.front(), layer, channel)->global
                                    ? " (global, §8.4)"
                                    : ""));
    else
        info_->setText(
            sel_->detailNote().isEmpty()
                ? QString("layer %1, channel %2 was not traced in this run").arg(layer).arg(channel)
                : sel_->detailNote());
    // No detail: no plots (an empty plot with the previous channel's axes would look like data).
    delta_->setVisible(any);
    decay_->setVisible(any);
    if (any) {
        applyMethodVisibility(delta_);
        applyMethodVisibility(decay_);
        const double hi = double(std::max<qint64>(1, T - 1));
        rescale_home(delta_, 0, hi);
        rescale_home(decay_, 0, hi);
    }
    updateStatus();
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
    legend_below(plot_, 4, [this](Method m) { toggleMethod(m); });
    new Crosshair(plot_);
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
    // Ticks at the measured lengths (drawSweep): a log ticker labels only powers of ten, often none.
    sweepPlot_->xAxis->setTicker(QSharedPointer<QCPAxisTickerText>(new QCPAxisTickerText));
    legend_below(sweepPlot_, 4, [this](Method m) { toggleMethod(m); });
    sweepPlot_->legend->setVisible(false);  // shown once a sweep is loaded
    new Crosshair(sweepPlot_);
    make_interactive(sweepPlot_, ZoomAxes::XY);
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
    connect(sel_, &Selection::methodsShownChanged, this, [this] {
        applyMethodVisibility(plot_);
        applyMethodVisibility(sweepPlot_);
    });
    // A click (not a drag) selects the token; double-click resets the zoom (as in every plot).
    auto press = std::make_shared<QPoint>();
    connect(plot_, &QCustomPlot::mousePress, this, [press](QMouseEvent* ev) { *press = ev->pos(); });
    connect(plot_, &QCustomPlot::mouseRelease, this, [this, press](QMouseEvent* ev) {
        if ((ev->pos() - *press).manhattanLength() > 4 || !plot_->axisRect()->rect().contains(ev->pos()))
            return;
        sel_->setToken(qint64(std::llround(plot_->xAxis->pixelToCoord(ev->pos().x()))));
    });
}

ResultView::Ranges PerplexityView::viewRanges() const {
    const QCPRange x = plot_->xAxis->range();
    return {{"x", {x.lower, x.upper}}};
}

void PerplexityView::setViewRanges(const Ranges& ranges) {
    if (auto it = ranges.find("x"); it != ranges.end()) plot_->xAxis->setRange(it->second[0], it->second[1]);
    plot_->replot(QCustomPlot::rpQueuedReplot);
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
        tag_method(g, m);
        const QColor col = method_color(m);
        g->setPen(QPen(col, 1.5));
        g->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssDisc, col, 6));
        g->setData(x, y, true);
        sweepGraphs_[m] = g;
    }
    {
        auto ticker = qSharedPointerCast<QCPAxisTickerText>(sweepPlot_->xAxis->ticker());
        ticker->clear();
        for (const auto& pt : sweep_) {
            const double len = double(pt.length);
            ticker->addTick(len, len >= 1024 && pt.length % 1024 == 0 ? QString("%1k").arg(pt.length / 1024)
                                                                      : QString::number(pt.length));
        }
    }
    applyMethodVisibility(sweepPlot_);
    sweepPlot_->rescaleAxes();
    QCPRange xr = sweepPlot_->xAxis->range();
    if (result_ && result_->train_len > 0) xr.expand(double(result_->train_len));  // keep the mark visible
    sweepPlot_->xAxis->setRange(xr.lower / 1.3, xr.upper * 1.3);
    const QCPRange yr = sweepPlot_->yAxis->range();
    sweepPlot_->yAxis->setRange(std::max(0.0, yr.lower - 0.05 * yr.size()),
                                yr.upper + 0.05 * yr.size() + 1e-9);
    set_home(sweepPlot_);
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

void PerplexityView::setCompact(bool compact) {
    loadSweep_->setVisible(!compact);
    sweepInfo_->setVisible(!compact && !sweep_.empty());
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
    const qint64 T = qint64(result_->input.ids.size());
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
        tag_method(g, mr.method);
        set_graph(g, x, moving_average(y, kNllSmoothingTokens));
        graphs_[mr.method] = g;
        const double mean = sum / double(x.size());
        // DeciMamba scores only the positions that survived decimation: say over how many.
        const QString over =
            qint64(x.size()) < T - 1
                ? QString(" over %1 of %2 positions (the kept ones)").arg(x.size()).arg(T - 1)
                : QString();
        parts << QString("%1: mean NLL %2 nats, ppl %3%4")
                     .arg(method_label(mr.method))
                     .arg(mean, 0, 'f', 4)
                     .arg(std::exp(mean), 0, 'f', 3)
                     .arg(over);
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
    applyMethodVisibility(plot_);
    rescale_home(plot_, 0, double(std::max<qint64>(1, T - 1)));
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
    legend_below(layers_, 3);
    set_integer_ticks(layers_->xAxis);
    new Crosshair(layers_, [this](double x) {
        const int l = int(std::lround(x));
        if (!result_ || l < 0 || l >= result_->n_layer || layerGraphs_.empty()) return QString();
        QStringList lines{QString("layer %1").arg(l)};
        for (size_t i = 0; i < cs_.size(); ++i) {
            const auto* d = layerGraphs_[i]->data().data();
            if (l < d->size())
                lines << QString("c = %1: %2 %").arg(cs_[i], 0, 'g', 3).arg(d->at(l)->value, 0, 'f', 2);
        }
        return lines.join("\n");
    });
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
    legend_below(overall_, 3);
    new Crosshair(overall_, [this](double c) {
        if (!overallGraph_ || overallGraph_->data()->isEmpty()) return QString();
        auto it = overallGraph_->data()->findBegin(c);
        if (it == overallGraph_->data()->constEnd()) return QString();
        return QString("c = %1: %2 % global").arg(it->key, 0, 'g', 3).arg(it->value, 0, 'f', 2);
    });
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
    set_home(layers_);
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
    set_home(overall_);
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
    plot_ = new_plot(this, ZoomAxes::XY);
    plot_->xAxis->setLabel("layer");
    set_integer_ticks(plot_->xAxis);
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
    legend_below(plot_, 3, [this](Method m) { toggleMethod(m); });  // click an entry: hide the method
    lay->addWidget(plot_, 1);
    connect(sel_, &Selection::methodsShownChanged, this, [this] { applyMethodVisibility(plot_); });
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
        tag_method(g, mr.method);
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
        tag_method(gg, m);
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
    set_home(plot_);
    applyMethodVisibility(plot_);
    plot_->replot(QCustomPlot::rpQueuedReplot);
}

// ---- Hidden attention -------------------------------------------------------------------------------------

AttentionView::AttentionView(Selection* selection, QWidget* parent) : ResultView(selection, parent) {
    auto* lay = new QVBoxLayout(this);
    auto* top = new QHBoxLayout;
    info_ = new QLabel;
    info_->setWordWrap(true);
    top->addWidget(info_, 1);
    add_method_toggles(top, sel_);
    lay->addLayout(top);
    host_ = new QWidget;
    new QHBoxLayout(host_);
    lay->addWidget(host_, 1);
    connect(sel_, &Selection::channelChanged, this, [this] { redraw(); });
    connect(sel_, &Selection::detailStatusChanged, this, [this] {
        if (maps_.empty() && result_ && !building() && !sel_->detailNote().isEmpty())
            info_->setText(sel_->detailNote());
    });
    connect(sel_, &Selection::methodsShownChanged, this, [this] {
        for (size_t i = 0; i < plots_.size(); ++i) plots_[i]->setVisible(sel_->methodShown(methods_[i]));
    });
}

QString AttentionView::readoutAt(int i, QPoint pixel) const {
    if (i < 0 || i >= int(maps_.size())) return {};
    QCustomPlot* plot = plots_[size_t(i)];
    QCPColorMap* map = maps_[size_t(i)];
    int key = 0, value = 0;
    map->data()->coordToCell(plot->xAxis->pixelToCoord(pixel.x()), plot->yAxis->pixelToCoord(pixel.y()), &key,
                             &value);
    if (key < 0 || value < 0 || key >= map->data()->keySize() || value >= map->data()->valueSize()) return {};
    double j = 0, ti = 0;
    map->data()->cellToCoord(key, value, &j, &ti);
    const bool deci = methods_[size_t(i)] == Method::DeciMamba;
    return QString("%1 · %2 i = %3, j = %4\nα = %5")
        .arg(method_label(methods_[size_t(i)]))
        .arg(deci ? "kept token" : "token")
        .arg(qint64(ti))
        .arg(qint64(j))
        .arg(map->data()->cell(key, value), 0, 'g', 4);
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
    methods_.clear();
    scale_ = nullptr;
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
                    // DeciMamba's rows are the window's tokens that survived decimation, not consecutive
                    // positions: its axes count kept tokens 0 … W−1.
                    const double lo = mr.method == Method::DeciMamba ? 0.0 : double(am.begin);
                    auto* data =
                        new QCPColorMapData(W, W, QCPRange(lo, lo + W - 1), QCPRange(lo, lo + W - 1));
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
    methods_.clear();
    scale_ = nullptr;
    // One colour range for every map, so their shades compare.
    QCPRange range;
    bool first = true;
    for (auto* d : b.maps->data) {
        if (!d) continue;
        d->recalculateDataBounds();
        range = first ? d->dataBounds()
                      : QCPRange(std::min(range.lower, d->dataBounds().lower),
                                 std::max(range.upper, d->dataBounds().upper));
        first = false;
    }
    if (!(range.size() > 0)) range = QCPRange(range.lower, range.lower + 1);
    for (size_t k = 0; k < b.methods.size(); ++k) {
        const Method method = b.methods[k];
        auto* plot = new_plot(host_, ZoomAxes::XY);
        host_->layout()->addWidget(plot);
        plot->plotLayout()->insertRow(0);
        plot->plotLayout()->addElement(
            0, 0, new QCPTextElement(plot, method_label(method), QFont("sans", 10, QFont::Bold)));
        const bool deci = method == Method::DeciMamba;
        plot->xAxis->setLabel(deci ? "source: kept token j" : "source token j");
        plot->yAxis->setLabel(deci ? "target: kept token i" : "target token i");
        set_integer_ticks(plot->xAxis);
        set_integer_ticks(plot->yAxis);
        plot->yAxis->setRangeReversed(true);
        auto* map = new QCPColorMap(plot->xAxis, plot->yAxis);
        map->setData(b.maps->take(k), false);
        map->setGradient(QCPColorGradient::gpHot);
        map->setDataRange(range);
        plot->rescaleAxes();
        set_home(plot);
        plot->setVisible(sel_->methodShown(method));
        connect(plot, &QCustomPlot::mouseMove, this, [this, k](QMouseEvent* ev) {
            const QString text = readoutAt(int(k), ev->pos());
            if (text.isEmpty())
                QToolTip::hideText();
            else
                QToolTip::showText(ev->globalPosition().toPoint(), text, plots_[k]);
        });
        plots_.push_back(plot);
        maps_.push_back(map);
        methods_.push_back(method);
    }
    if (!plots_.empty()) {
        scale_ = new QCPColorScale(plots_.back());
        plots_.back()->plotLayout()->addElement(1, 1, scale_);
        scale_->setGradient(QCPColorGradient::gpHot);
        scale_->setDataRange(range);
        scale_->axis()->setLabel("α (one scale for all maps)");
        for (auto* p : plots_) style_plot(p);
        // Same-method windows of one shape: zoom together (DeciMamba's kept-token axes differ in meaning).
        std::vector<QCustomPlot*> linked;
        for (size_t k = 0; k < plots_.size(); ++k)
            if (methods_[k] != Method::DeciMamba) linked.push_back(plots_[k]);
        if (linked.size() > 1) link_axes(linked, ZoomAxes::XY);
    }
    QString norm = "the engine's normalisation";
    for (const auto& mr : result_->methods)
        for (const auto& am : mr.attention)
            if (am.ref.layer == b.layer && am.ref.channel == b.channel) norm = attention_norm_name(am.norm);
    info_->setText(
        !maps_.empty()
            ? QString(
                  "hidden attention α(i, j) of layer %1, channel %2 (method doc §5); each map as the engine "
                  "recorded it (normalisation: %3), all on one colour scale")
                  .arg(b.layer)
                  .arg(b.channel)
                  .arg(norm)
        : !sel_->detailNote().isEmpty()
            ? sel_->detailNote()
            : QString("no attention map recorded for layer %1, channel %2").arg(b.layer).arg(b.channel));
    for (auto* p : plots_) p->replot(QCustomPlot::rpQueuedReplot);
}

// ---- Tokens -----------------------------------------------------------------------------------------------

TokensView::TokensView(Selection* selection, QWidget* parent) : ResultView(selection, parent) {
    auto* lay = new QVBoxLayout(this);
    auto* top = new QHBoxLayout;
    top->addWidget(control_label("Colour:"));
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

QString TokensView::hoverText(qint64 t) const {
    if (!result_ || t < 0 || t >= qint64(result_->input.ids.size())) return {};
    const auto& in = result_->input;
    QString s =
        size_t(t) < in.token_strings.size() ? QString::fromUtf8(in.token_strings[size_t(t)]) : QString();
    s.replace('\n', "\\n");
    QStringList lines{QString("token %1 \"%2\" (id %3)").arg(t).arg(s).arg(in.ids[size_t(t)])};
    // NLL of predicting this token (position t − 1 predicts t), per method.
    for (const auto& mr : result_->methods) {
        auto it = std::lower_bound(mr.nll_positions.begin(), mr.nll_positions.end(), t - 1);
        if (it != mr.nll_positions.end() && *it == t - 1 &&
            size_t(it - mr.nll_positions.begin()) < mr.nll.size())
            lines << QString("%1 NLL %2 nats")
                         .arg(method_label(mr.method))
                         .arg(mr.nll[size_t(it - mr.nll_positions.begin())], 0, 'f', 3);
    }
    if (const MethodResult* lm = result_->find(Method::LongMamba)) {
        if (const ChannelTrace* tr = find_trace(*lm, sel_->layer(), sel_->channel())) {
            const qint64 w = t - result_->window_begin;
            if (w >= 0 && w < qint64(tr->critical.size()))
                lines << QString("layer %1 channel %2: Δ %3, %4")
                             .arg(sel_->layer())
                             .arg(sel_->channel())
                             .arg(tr->delta_raw[size_t(w)], 0, 'g', 4)
                             .arg(tr->critical[size_t(w)] ? "critical (kept)" : "filtered");
        }
        if (keepCount(t) >= 0)
            lines << QString("kept by %1 of %2 global channels").arg(keepCount(t)).arg(globalChannels());
    }
    if (const QString mark = toolTipAt(t); !mark.isEmpty()) lines << mark;
    return lines.join("\n");
}

bool TokensView::eventFilter(QObject* watched, QEvent* event) {
    if (watched == text_->viewport() && event->type() == QEvent::ToolTip) {
        auto* he = static_cast<QHelpEvent*>(event);
        const qint64 t = tokenAtTextPosition(text_->cursorForPosition(he->pos()).position());
        const QString tip = hoverText(t);
        if (tip.isEmpty())
            QToolTip::hideText();
        else
            QToolTip::showText(he->globalPos(), tip, text_);
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
    const bool dark = dark_palette();
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
                f.setBackground(kCriticalHighlight);
                f.setForeground(readable_on(kCriticalHighlight));  // dark text on yellow in either palette
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
        // Lighter marks on a dark background.
        const QColor needle = dark ? QColor(255, 120, 220) : QColor(176, 0, 128);
        const QColor answer = dark ? QColor(100, 230, 150) : QColor(0, 120, 60);
        if (span.needle_begin >= 0 && t >= span.needle_begin && t < span.needle_end) {
            f.setForeground(needle);
            f.setFontWeight(QFont::Bold);
            f.setFontUnderline(true);
            f.setUnderlineColor(needle);
            f.setToolTip(key.isEmpty() ? QString("needle") : QString("needle (key %1)").arg(key));
            f.setProperty(TokensView::kMarkProperty, int(TokensView::NeedleMark));
        } else if (span.answer_begin >= 0 && t >= span.answer_begin) {
            f.setForeground(answer);
            f.setFontWeight(QFont::Bold);
            f.setUnderlineStyle(QTextCharFormat::DashUnderline);
            f.setUnderlineColor(answer);
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

QString figure_caption(const RunResult& r) {
    auto prov = [&](const char* key) {
        auto it = r.provenance.find(key);
        return it == r.provenance.end() ? QString() : QString::fromStdString(it->second);
    };
    QString model = prov("model_name");
    if (model.isEmpty()) model = prov("model");
    if (model.isEmpty()) model = QFileInfo(prov("model_path")).fileName();
    if (model.isEmpty()) model = "unknown model";
    QString input;
    if (!prov("haystack.length").isEmpty())
        input = QString("passkey haystack, depth %1").arg(prov("haystack.depth").toDouble(), 0, 'g', 3);
    else if (!r.input.text_path.empty())
        input = QFileInfo(QString::fromStdString(r.input.text_path)).fileName();
    else
        input = "pasted text";
    QStringList parts{model, input};
    for (const auto& m : r.methods)
        if (m.method == Method::LongMamba) {
            if (auto it = m.params.find("c"); it != m.params.end())
                parts << QString("c = %1").arg(it->second);
            if (auto it = m.params.find("b"); it != m.params.end())
                parts << QString("b = %1").arg(it->second);
        }
    parts << QString("%1 tokens").arg(qint64(r.input.ids.size()));
    return parts.join(" · ");
}

namespace {

QString model_title(const RunResult* r) {
    if (!r) return "no run";
    for (const char* key : {"model_name", "model"})
        if (auto it = r->provenance.find(key); it != r->provenance.end() && !it->second.empty())
            return QString::fromStdString(it->second);
    if (auto it = r->provenance.find("model_path"); it != r->provenance.end())
        return QFileInfo(QString::fromStdString(it->second)).fileName();
    return "unknown model";
}

// Widgets that are the user's controls, not part of a figure.
bool is_control(const QWidget* w) {
    return qobject_cast<const QComboBox*>(w) || qobject_cast<const QAbstractButton*>(w) ||
           qobject_cast<const QProgressBar*>(w) || qobject_cast<const QLineEdit*>(w) ||
           qobject_cast<const QAbstractSpinBox*>(w) || qobject_cast<const QScrollBar*>(w) ||
           qobject_cast<const QTabBar*>(w) || w->property(kControlLabel).toBool();
}

// Paints the children of `w` at `offset`: plots through QCustomPlot's own painter (vector lines and text),
// text views through their viewport, every other widget by its own paint event; controls are left out.
void paint_children(QWidget* w, QCPPainter& p, QPoint offset) {
    for (QObject* o : w->children()) {
        auto* c = qobject_cast<QWidget*>(o);
        if (!c || c->isHidden() || c->isWindow() || is_control(c)) continue;
        const QPoint at = offset + c->pos();
        p.save();
        p.translate(at);
        if (auto* plot = qobject_cast<QCustomPlot*>(c)) {
            plot->toPainter(&p, plot->width(), plot->height());
        } else if (auto* area = qobject_cast<QAbstractScrollArea*>(c)) {
            p.translate(area->viewport()->pos());
            area->viewport()->render(&p, QPoint(), QRegion(), QWidget::DrawWindowBackground);
        } else {
            c->render(&p, QPoint(), QRegion(), QWidget::RenderFlags());
        }
        p.restore();
        if (!qobject_cast<QCustomPlot*>(c) && !qobject_cast<QAbstractScrollArea*>(c))
            paint_children(c, p, at);
    }
}

// Lays `w` out (shown offscreen if needed), waits for its heatmap builds and relays out every plot.
struct Prepared {
    QWidget* w;
    bool wasVisible;
    explicit Prepared(QWidget* widget) : w(widget), wasVisible(widget->isVisible()) {
        wait_for_builds(w);
        if (!wasVisible) {
            w->setAttribute(Qt::WA_DontShowOnScreen);
            w->show();
        }
        QCoreApplication::processEvents();
        for (auto* p : w->findChildren<QCustomPlot*>()) p->replot(QCustomPlot::rpImmediateRefresh);
    }
    ~Prepared() {
        if (!wasVisible) w->hide();
    }
};

constexpr int kCaptionHeightPx = 16;  // the caption stamp's strip under an exported figure
constexpr double kCaptionPointSize = 7.5;

// The figure (and its caption stamp under it) into an active painter; `size` is the page in widget pixels.
void paint_figure(QWidget* w, QCPPainter& p, const QString& caption, bool vector) {
    if (vector) p.setMode(QCPPainter::pmVectorized);
    const QPalette pal = w->palette();
    const QSize page = w->size() + QSize(0, caption.isEmpty() ? 0 : kCaptionHeightPx);
    p.fillRect(QRect(QPoint(), page), pal.color(QPalette::Window));
    paint_children(w, p, QPoint());
    if (!caption.isEmpty()) {
        QFont f = p.font();
        f.setPointSizeF(kCaptionPointSize);
        p.setFont(f);
        p.setPen(reference_color(RefTone::Muted));
        p.drawText(QRect(6, w->height(), w->width() - 12, kCaptionHeightPx),
                   Qt::AlignRight | Qt::AlignVCenter, "Mambascope · " + caption);
    }
}

QImage figure_image(QWidget* w, double scale, const QString& caption) {
    const QSize page = w->size() + QSize(0, caption.isEmpty() ? 0 : kCaptionHeightPx);
    // Below 1× paint at 1× and shrink (a fractional device pixel ratio blurs text).
    const double r = std::max(1.0, scale);
    QImage img(page * r, QImage::Format_ARGB32);
    img.setDevicePixelRatio(r);
    {
        QCPPainter p(&img);
        p.setRenderHint(QPainter::Antialiasing);
        p.setRenderHint(QPainter::TextAntialiasing);
        paint_figure(w, p, caption, false);
    }
    if (scale < 1.0) {
        img.setDevicePixelRatio(1.0);
        img = img.scaled(page * scale, Qt::KeepAspectRatio, Qt::SmoothTransformation);
    }
    return img;
}

}  // namespace

ComparisonWidget::ComparisonWidget(RunResultPtr result, Selection* selection, QWidget* parent,
                                   std::shared_ptr<const RetrievalResult> retrieval)
    : QWidget(parent), caption_(result ? figure_caption(*result) : QString()) {
    auto* grid = new QGridLayout(this);
    grid->setContentsMargins(10, 8, 10, 4);
    auto* title = new QLabel(QString("<b>Mambascope</b> · %1 · %2 tokens · train length %3")
                                 .arg(model_title(result.get()).toHtmlEscaped())
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
    auto* ppl = new PerplexityView(selection);
    ppl->setCompact(true);  // no sweep controls; the sweep itself only when one is loaded
    ResultView* views[] = {new ChannelMapView(selection), new ReceptiveFieldView(selection),
                           new ChannelDetailView(selection), ppl};
    for (int i = 0; i < 4; ++i) {
        views[i]->setResult(result);
        grid->addWidget(views[i], row + i / 2, i % 2);
    }
    // A figure has no controls: they are hidden, so they take no room either.
    for (auto* c : findChildren<QWidget*>())
        if (is_control(c) && !qobject_cast<QScrollBar*>(c)) c->hide();
    grid->setRowStretch(row, 1);
    grid->setRowStretch(row + 1, 1);
    grid->setColumnStretch(0, 1);  // two equal columns, whatever each view's minimum width
    grid->setColumnStretch(1, 1);
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

QImage ComparisonWidget::render(double scale) {
    Prepared prepared(this);
    return figure_image(this, scale, caption_);
}

void ComparisonWidget::save(const QString& path, double scale) {
    Prepared prepared(this);
    export_figure(this, path, scale, caption_);
}

void export_figure(QWidget* w, const QString& path, double scale, const QString& caption) {
    Prepared prepared(w);
    const QSize page = w->size() + QSize(0, caption.isEmpty() ? 0 : kCaptionHeightPx);
    QBuffer buffer;
    buffer.open(QIODevice::WriteOnly);
    if (path.endsWith(".pdf", Qt::CaseInsensitive)) {
        // One PDF point per widget pixel: lines and text stay vectors (QCustomPlot paints them itself).
        QPdfWriter pdf(&buffer);
        pdf.setResolution(kPdfDpi);
        pdf.setPageSize(QPageSize(QSizeF(page), QPageSize::Point));
        pdf.setPageMargins(QMarginsF(0, 0, 0, 0));
        pdf.setCreator("Mambascope");
        QCPPainter p;
        if (!p.begin(&pdf)) throw Error("cannot render the PDF of " + path.toStdString());
        paint_figure(w, p, caption, true);
        p.end();
    } else if (path.endsWith(".svg", Qt::CaseInsensitive)) {
        QSvgGenerator svg;
        svg.setOutputDevice(&buffer);
        svg.setSize(page);
        svg.setViewBox(QRect(QPoint(), page));
        svg.setResolution(kPdfDpi);
        svg.setTitle("Mambascope");
        QCPPainter p;
        if (!p.begin(&svg)) throw Error("cannot render the SVG of " + path.toStdString());
        paint_figure(w, p, caption, true);
        p.end();
    } else if (path.endsWith(".png", Qt::CaseInsensitive)) {
        if (!figure_image(w, scale, caption).save(&buffer, "PNG"))
            throw Error("cannot encode " + path.toStdString() + " as PNG");
    } else {
        throw Error("cannot export to " + path.toStdString() + ": unknown format",
                    "use a .png, .pdf or .svg file name");
    }
    write_file_atomic(path.toStdString(), std::string_view(buffer.data().constData(), size_t(buffer.size())));
}

void export_widget(QWidget* w, const QString& path, double scale) {
    QString caption;
    if (auto* v = qobject_cast<ResultView*>(w); v && v->result()) caption = figure_caption(*v->result());
    export_figure(w, path, scale, caption);
}

}  // namespace mambascope::gui

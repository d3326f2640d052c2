#include "plot_tools.h"

#include <QApplication>
#include <QKeyEvent>
#include <algorithm>
#include <cmath>
#include <limits>

#include "gui_util.h"

namespace mambascope::gui {

namespace {

constexpr const char* kHomeProperty = "mambascope_home";      // QVariantList of 4 doubles: x lo/hi, y lo/hi
constexpr const char* kLinkedProperty = "mambascope_linked";  // the plots zoomed together with this one
constexpr const char* kMethodProperty = "mambascope_method";  // Method of a plottable (int)
constexpr const char* kOverlayLayer = "crosshair";
// Ticks on an integer axis: at least this many pixels between labels.
constexpr double kIntegerTickSpacingPx = 40;
// An axis shorter than this has not been laid out yet; ticks are then spaced for kUnlaidOutPx pixels.
constexpr int kMinLaidOutPx = 50;
constexpr double kUnlaidOutPx = 400;

// Resets the view on double-click or Home and refreshes level-of-detail graphs after a resize.
class PlotEvents : public QObject {
  public:
    using QObject::QObject;

  protected:
    bool eventFilter(QObject* watched, QEvent* event) override {
        auto* plot = qobject_cast<QCustomPlot*>(watched);
        if (!plot) return false;
        if (event->type() == QEvent::KeyPress && static_cast<QKeyEvent*>(event)->key() == Qt::Key_Home) {
            reset_view(plot);
            return true;
        }
        if (event->type() == QEvent::MouseButtonDblClick) reset_view(plot);  // and the plot still sees it
        if (event->type() == QEvent::Resize) {
            for (int i = 0; i < plot->graphCount(); ++i)
                if (auto* lod = lod_series(plot->graph(i))) lod->refresh();
        }
        if (event->type() == QEvent::Leave)
            if (auto* ch = Crosshair::of(plot)) ch->moveTo(-1, -1);
        return false;
    }
};

QList<QCustomPlot*> linked_plots(QCustomPlot* p) {
    QList<QCustomPlot*> out;
    for (const QVariant& v : p->property(kLinkedProperty).toList())
        if (auto* q = qobject_cast<QCustomPlot*>(v.value<QObject*>())) out << q;
    return out;
}

}  // namespace

void lod_min_max(const QVector<double>& x, const QVector<double>& y, double lower, double upper, int columns,
                 QVector<double>& out_x, QVector<double>& out_y) {
    out_x.clear();
    out_y.clear();
    const qsizetype n = std::min(x.size(), y.size());
    if (n == 0) return;
    columns = std::max(1, columns);
    // [first, last) = the visible points plus one neighbour outside on either side.
    qsizetype first = std::lower_bound(x.begin(), x.begin() + n, lower) - x.begin();
    qsizetype last = std::upper_bound(x.begin(), x.begin() + n, upper) - x.begin();
    first = std::max<qsizetype>(0, first - 1);
    last = std::min<qsizetype>(n, last + 1);
    if (last - first <= qsizetype(kLodPointsPerColumn) * columns) {
        out_x = x.mid(first, last - first);
        out_y = y.mid(first, last - first);
        return;
    }
    out_x.reserve(2 * columns + 4);
    out_y.reserve(2 * columns + 4);
    const double width = (upper - lower) / columns;
    auto column_of = [&](double v) {
        return std::clamp<qsizetype>(qsizetype(std::floor((v - lower) / width)), -1, columns);
    };
    qsizetype i = first;
    while (i < last) {
        // One column (the outside neighbours form columns −1 and `columns` of their own).
        const qsizetype col = column_of(x[i]);
        qsizetype lo = i, hi = i, j = i;
        for (; j < last && column_of(x[j]) == col; ++j) {
            if (y[j] < y[lo]) lo = j;
            if (y[j] > y[hi]) hi = j;
        }
        const qsizetype a = std::min(lo, hi), b = std::max(lo, hi);
        out_x << x[a];
        out_y << y[a];
        if (b != a) out_x << x[b], out_y << y[b];
        i = j;
    }
}

LodSeries::LodSeries(QCPGraph* graph, QVector<double> x, QVector<double> y)
    : QObject(graph), graph_(graph), x_(std::move(x)), y_(std::move(y)) {
    connect(graph->keyAxis(), qOverload<const QCPRange&>(&QCPAxis::rangeChanged), this,
            [this] { refresh(); });
    // The axis rect's width is known only after a layout pass: thin again when it changed (first show,
    // resize), before anything is drawn.
    connect(graph->parentPlot(), &QCustomPlot::afterLayout, this, [this] {
        if (graph_->keyAxis()->axisRect()->width() != columns_) refresh();
    });
    refresh();
}

bool LodSeries::nearest(double key, double* outKey, double* outValue) const {
    if (x_.isEmpty()) return false;
    qsizetype i = std::lower_bound(x_.begin(), x_.end(), key) - x_.begin();
    if (i == x_.size() || (i > 0 && key - x_[i - 1] < x_[i] - key)) --i;
    *outKey = x_[i];
    *outValue = y_[i];
    return true;
}

void LodSeries::refresh() {
    const QCPRange r = graph_->keyAxis()->range();
    const int w = graph_->keyAxis()->axisRect()->width();
    columns_ = w;
    const int columns = w > 10 ? w : kLodFallbackColumns;
    QVector<double> dx, dy;
    lod_min_max(x_, y_, r.lower, r.upper, columns, dx, dy);
    graph_->setData(dx, dy, true);
}

void set_lod_data(QCPGraph* g, QVector<double> x, QVector<double> y) {
    delete lod_series(g);
    new LodSeries(g, std::move(x), std::move(y));
}

LodSeries* lod_series(const QCPGraph* g) {
    return g ? g->findChild<LodSeries*>(QString(), Qt::FindDirectChildrenOnly) : nullptr;
}

void make_interactive(QCustomPlot* p, ZoomAxes axes) {
    p->setInteractions(QCP::iRangeDrag | QCP::iRangeZoom);
    const Qt::Orientations o = axes == ZoomAxes::X ? Qt::Horizontal : (Qt::Horizontal | Qt::Vertical);
    p->axisRect()->setRangeDrag(o);
    p->axisRect()->setRangeZoom(o);
    p->setFocusPolicy(Qt::ClickFocus);  // Home reaches the plot after a click
    if (!p->property("mambascope_events").toBool()) {
        p->setProperty("mambascope_events", true);
        p->installEventFilter(new PlotEvents(p));
    }
}

void set_home(QCustomPlot* p) {
    const QCPRange x = p->xAxis->range(), y = p->yAxis->range();
    p->setProperty(kHomeProperty, QVariantList{x.lower, x.upper, y.lower, y.upper});
}

void reset_view(QCustomPlot* p) {
    const QVariantList h = p->property(kHomeProperty).toList();
    if (h.size() != 4) return;
    p->xAxis->setRange(h[0].toDouble(), h[1].toDouble());
    p->yAxis->setRange(h[2].toDouble(), h[3].toDouble());
    p->replot(QCustomPlot::rpQueuedReplot);
    for (auto* q : linked_plots(p)) {  // linked axes followed; their own home y returns too
        const QVariantList hq = q->property(kHomeProperty).toList();
        if (hq.size() == 4) q->yAxis->setRange(hq[2].toDouble(), hq[3].toDouble());
        q->replot(QCustomPlot::rpQueuedReplot);
    }
}

void link_axes(const std::vector<QCustomPlot*>& plots, ZoomAxes axes) {
    for (auto* p : plots) {
        QVariantList others;
        for (auto* q : plots)
            if (q != p) others << QVariant::fromValue<QObject*>(q);
        p->setProperty(kLinkedProperty, others);
        for (auto* q : plots) {
            if (q == p) continue;
            // setRange emits only on a real change, so the ring of connections settles after one round.
            QObject::connect(p->xAxis, qOverload<const QCPRange&>(&QCPAxis::rangeChanged), q,
                             [q](const QCPRange& r) {
                                 q->xAxis->setRange(r);
                                 q->replot(QCustomPlot::rpQueuedReplot);
                             });
            if (axes == ZoomAxes::XY)
                QObject::connect(p->yAxis, qOverload<const QCPRange&>(&QCPAxis::rangeChanged), q,
                                 [q](const QCPRange& r) {
                                     q->yAxis->setRange(r);
                                     q->replot(QCustomPlot::rpQueuedReplot);
                                 });
        }
    }
}

// Integer ticks whose step (1, 2, 5 × 10^k) keeps labels kIntegerTickSpacingPx apart at the current zoom.
class IntegerTicker : public QCPAxisTicker {
  public:
    explicit IntegerTicker(QCPAxis* axis) : axis_(axis) {}

  protected:
    double getTickStep(const QCPRange& range) override {
        const int len = axis_ ? (axis_->orientation() == Qt::Horizontal ? axis_->axisRect()->width()
                                                                        : axis_->axisRect()->height())
                              : 0;
        const double px = len > kMinLaidOutPx ? len : kUnlaidOutPx;  // before the first layout: a guess
        const double want = range.size() * kIntegerTickSpacingPx / px;
        double step = 1;
        while (step < want) step *= (QString::number(step).startsWith('2') ? 2.5 : 2);
        return std::max(1.0, std::round(step));
    }
    int getSubTickCount(double) override { return 0; }

  private:
    QPointer<QCPAxis> axis_;
};

void set_integer_ticks(QCPAxis* axis) {
    axis->setTicker(QSharedPointer<QCPAxisTicker>(new IntegerTicker(axis)));
    axis->setNumberFormat("f");
    axis->setNumberPrecision(0);
}

void legend_below(QCustomPlot* p, int columns, std::function<void(Method)> onMethodClick) {
    p->legend->setVisible(true);
    if (p->axisRect()->insetLayout()->elements(false).contains(p->legend)) {
        p->axisRect()->insetLayout()->take(p->legend);
        p->axisRect()->insetLayout()->simplify();
        auto* below = new QCPLayoutGrid;  // margins keep the legend frame inside the widget
        const int row = p->plotLayout()->rowCount();
        p->plotLayout()->addElement(row, 0, below);
        p->plotLayout()->setRowStretchFactor(row, 0.001);
        below->setMargins(QMargins(6, 0, 6, 4));
        below->addElement(0, 0, p->legend);
    }
    p->legend->setWrap(columns);  // before the fill order: setFillOrder rearranges with the current wrap
    p->legend->setFillOrder(QCPLayoutGrid::foColumnsFirst, true);
    p->legend->setMargins(QMargins(6, 2, 6, 2));
    p->legend->setSelectableParts(QCPLegend::spNone);
    if (!p->property("mambascope_legend_toggle").toBool()) {
        p->setProperty("mambascope_legend_toggle", true);
        QObject::connect(p, &QCustomPlot::legendClick, p,
                         [p, onMethodClick](QCPLegend*, QCPAbstractLegendItem* item, QMouseEvent*) {
                             auto* pi = qobject_cast<QCPPlottableLegendItem*>(item);
                             if (!pi) return;
                             const QVariant m = pi->plottable()->property(kMethodProperty);
                             if (m.isValid() && onMethodClick)
                                 onMethodClick(Method(m.toInt()));
                             else if (m.isValid())
                                 set_method_visible(p, Method(m.toInt()), !pi->plottable()->visible());
                             else {
                                 pi->plottable()->setVisible(!pi->plottable()->visible());
                                 style_plot(p);
                             }
                         });
    }
}

void tag_method(QCPAbstractPlottable* plottable, Method m) {
    plottable->setProperty(kMethodProperty, int(m));
}

void set_method_visible(QCustomPlot* p, Method m, bool visible) {
    for (int i = 0; i < p->plottableCount(); ++i) {
        QCPAbstractPlottable* pl = p->plottable(i);
        const QVariant v = pl->property(kMethodProperty);
        if (v.isValid() && v.toInt() == int(m)) pl->setVisible(visible);
    }
    style_plot(p);  // greys the legend entries of hidden plottables
}

bool method_visible(const QCustomPlot* cp, Method m) {
    auto* p = const_cast<QCustomPlot*>(cp);  // QCustomPlot::plottable() is not const
    bool any = false;
    for (int i = 0; i < p->plottableCount(); ++i) {
        QCPAbstractPlottable* pl = p->plottable(i);
        const QVariant v = pl->property(kMethodProperty);
        if (v.isValid() && v.toInt() == int(m)) {
            any = true;
            if (pl->visible()) return true;
        }
    }
    return !any;
}

Crosshair::Crosshair(QCustomPlot* plot, Readout readout)
    : QObject(plot), plot_(plot), readout_(std::move(readout)) {
    setObjectName("crosshair");
    if (!plot->layer(kOverlayLayer)) {
        plot->addLayer(kOverlayLayer, plot->layer("legend"), QCustomPlot::limAbove);
        plot->layer(kOverlayLayer)->setMode(QCPLayer::lmBuffered);
    }
    ensureItems();
    plot->setMouseTracking(true);
    connect(plot, &QCustomPlot::mouseMove, this,
            [this](QMouseEvent* ev) { moveTo(ev->position().x(), ev->position().y()); });
    make_interactive(plot, ZoomAxes::X);  // installs the Leave handler (no-op when already interactive)
}

void Crosshair::ensureItems() {
    if (!line_) {
        line_ = new QCPItemStraightLine(plot_);
        line_->setLayer(kOverlayLayer);
        line_->setVisible(false);
        line_->setSelectable(false);
    }
    if (!label_) {
        label_ = new QCPItemText(plot_);
        label_->setLayer(kOverlayLayer);
        label_->setVisible(false);
        label_->setSelectable(false);
        label_->setPositionAlignment(Qt::AlignLeft | Qt::AlignTop);
        label_->position->setType(QCPItemPosition::ptAxisRectRatio);
        label_->setTextAlignment(Qt::AlignLeft);
        label_->setPadding(QMargins(4, 2, 4, 2));
        label_->setClipToAxisRect(false);
    }
}

Crosshair* Crosshair::of(const QCustomPlot* p) {
    return p ? p->findChild<Crosshair*>("crosshair", Qt::FindDirectChildrenOnly) : nullptr;
}

QString Crosshair::defaultReadout(double x) const {
    const QString what = plot_->xAxis->label().isEmpty() ? QString("x") : plot_->xAxis->label();
    QStringList lines{QString("%1: %2").arg(what).arg(x, 0, 'g', 6)};
    for (int i = 0; i < plot_->graphCount(); ++i) {
        QCPGraph* g = plot_->graph(i);
        if (!g->visible() || g->name().isEmpty()) continue;
        double k = 0, v = 0;
        if (auto* lod = lod_series(g)) {
            if (!lod->nearest(x, &k, &v)) continue;
        } else {
            if (g->data()->isEmpty() || g->lineStyle() == QCPGraph::lsNone) continue;  // markers, not series
            auto it = g->data()->findBegin(x, false);
            if (it == g->data()->constEnd()) continue;
            k = it->key, v = it->value;
        }
        lines << QString("%1: %2").arg(g->name()).arg(v, 0, 'g', 5);
    }
    return lines.join("\n");
}

void Crosshair::moveTo(double pixelX, double pixelY) {
    ensureItems();
    const QRect r = plot_->axisRect()->rect();
    const bool inside = r.contains(QPoint(int(pixelX), int(pixelY)));
    if (!inside && !line_->visible()) return;
    line_->setVisible(inside);
    label_->setVisible(inside);
    if (inside) {
        const double x = plot_->xAxis->pixelToCoord(pixelX);
        line_->point1->setCoords(x, 0);
        line_->point2->setCoords(x, 1);
        const QPalette pal = QApplication::palette();
        line_->setPen(QPen(pal.color(QPalette::Text), 1, Qt::DotLine));
        label_->setColor(pal.color(QPalette::Text));
        QColor bg = pal.color(QPalette::Base);
        bg.setAlpha(225);
        label_->setBrush(bg);
        label_->setPen(QPen(pal.color(QPalette::Mid)));
        label_->setText(readout_ ? readout_(x) : defaultReadout(x));
        // The box sits on the side of the line away from the cursor's half, so it never hides the point.
        const bool left = pixelX > r.center().x();
        label_->setPositionAlignment(Qt::AlignTop | (left ? Qt::AlignRight : Qt::AlignLeft));
        label_->position->setCoords(double(pixelX - r.left() + (left ? -8 : 8)) / std::max(1, r.width()),
                                    0.02);
    }
    plot_->layer(kOverlayLayer)->replot();
}

}  // namespace mambascope::gui

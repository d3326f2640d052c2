// plot_tools.h: how every plot of the app behaves: level-of-detail thinning of long series, x-only zoom and
// pan with a home view, linked axes, integer layer ticks, legends outside the data that show/hide a method
// on click, and a crosshair readout. The views call these; nothing here knows about a RunResult.
//
// Design decision (level of detail): a graph keeps its whole series (LodSeries, a child object of the
// QCPGraph) and QCustomPlot receives, on every change of the x range or the plot's width, the minimum and
// the maximum point of each pixel column of the visible range at their own x. So at any zoom every spike
// is drawn at its true token, a plot never holds more than ~2 points per pixel column, and zooming in
// refines down to the raw samples (PlotJuggler does the same). Readouts use the whole series.
#pragma once

#include <qcustomplot.h>

#include <QObject>
#include <QPointer>
#include <QVector>
#include <functional>
#include <vector>

#include "mambascope/analysis.h"

namespace mambascope::gui {

// Below this many visible points per pixel column a graph gets the raw points.
constexpr int kLodPointsPerColumn = 2;
// Pixel columns assumed before a plot has been laid out (the thinning is redone once it has a width).
constexpr int kLodFallbackColumns = 2048;

// Min/max per pixel column: the points of (x, y) (x ascending) with x in [lower, upper] split into `columns`
// equal columns; each column contributes its minimum and its maximum point, in x order, with their own x.
// The nearest point outside the range on either side is kept so lines run to the frame. When the range holds
// at most kLodPointsPerColumn · columns points they are returned unchanged.
void lod_min_max(const QVector<double>& x, const QVector<double>& y, double lower, double upper, int columns,
                 QVector<double>& out_x, QVector<double>& out_y);

// A graph's whole series; redrawn per pixel column whenever its key axis range or the plot's size changes.
class LodSeries : public QObject {
    Q_OBJECT
  public:
    LodSeries(QCPGraph* graph, QVector<double> x, QVector<double> y);
    const QVector<double>& x() const { return x_; }
    const QVector<double>& y() const { return y_; }
    // The sample nearest `key` (false when empty).
    bool nearest(double key, double* outKey, double* outValue) const;
    // Thins again for the current range and width (does not replot).
    void refresh();

  private:
    QCPGraph* graph_;
    QVector<double> x_, y_;
    int columns_ = -1;  // the axis rect width the data was last thinned for
};

// Gives `g` the whole series (x ascending) and draws it per pixel column from now on.
void set_lod_data(QCPGraph* g, QVector<double> x, QVector<double> y);
LodSeries* lod_series(const QCPGraph* g);  // nullptr for graphs set directly

enum class ZoomAxes { X, XY };
// Wheel zoom and drag pan on `axes` (sequence plots: X); double-click or Home resets to the home view.
void make_interactive(QCustomPlot* p, ZoomAxes axes);
// The current axis ranges become the home view (call after rescaling to the data).
void set_home(QCustomPlot* p);
void reset_view(QCustomPlot* p);  // back to the home view (and every plot linked to it)

// Zooming or panning one plot moves the others: x axes for stacked plots, x and y for maps of one shape.
void link_axes(const std::vector<QCustomPlot*>& plots, ZoomAxes axes);

// Ticks only at whole numbers (layers, channels), spaced so that labels do not overlap.
void set_integer_ticks(QCPAxis* axis);

// The legend as a row under the axes (it covers no data), `columns` entries per row. Clicking an entry of a
// method's plottable calls `onMethodClick` (the views hide the method everywhere); other entries toggle their
// own plottable.
void legend_below(QCustomPlot* p, int columns = 4, std::function<void(Method)> onMethodClick = {});
// Tags a plottable with its method (for the legend toggle and set_method_visible).
void tag_method(QCPAbstractPlottable* plottable, Method m);
void set_method_visible(QCustomPlot* p, Method m, bool visible);
bool method_visible(const QCustomPlot* p, Method m);  // false when every tagged plottable is hidden

// A vertical line under the mouse with a text box of the values there. `readout` gives the text for x; by
// default each visible graph's nearest value. Lives on a buffered layer: a hover replots only that layer.
class Crosshair : public QObject {
    Q_OBJECT
  public:
    using Readout = std::function<QString(double x)>;
    Crosshair(QCustomPlot* plot, Readout readout = {});
    // Moves the crosshair to pixel x (what a mouse move does); hides it outside the axis rect.
    void moveTo(double pixelX, double pixelY);
    QString text() const { return label_ ? label_->text() : QString(); }
    bool shown() const { return line_ && line_->visible(); }
    static Crosshair* of(const QCustomPlot* p);  // nullptr when the plot has none

  private:
    QString defaultReadout(double x) const;
    void ensureItems();  // (re)creates the items: a view's clearItems() deletes them with its own
    QCustomPlot* plot_;
    Readout readout_;
    QPointer<QCPItemStraightLine> line_;
    QPointer<QCPItemText> label_;
};

}  // namespace mambascope::gui

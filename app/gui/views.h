// views.h: the result views. Each draws one aspect of a RunResult and follows the shared Selection.
//
// Design decision: a view owns no data beyond a shared_ptr to the immutable RunResult; setResult() rebuilds
// the plots, selection changes only redraw what depends on the selection. Long series are decimated
// (gui_util.h) before they reach QCustomPlot. Accessors for the plotted objects exist for the tests.
#pragma once

#include <qcustomplot.h>
#include <QComboBox>
#include <QLabel>
#include <QPlainTextEdit>
#include <QWidget>

#include "gui_util.h"
#include "selection.h"

namespace mambascope::gui {

class ResultView : public QWidget {
    Q_OBJECT
  public:
    ResultView(Selection* selection, QWidget* parent = nullptr) : QWidget(parent), sel_(selection) {}
    virtual void setResult(RunResultPtr result) = 0;
    virtual QString title() const = 0;
    virtual QString key() const = 0;  // stable name in session files ("channel_map", ...)
    RunResultPtr result() const { return result_; }

  protected:
    Selection* sel_;
    RunResultPtr result_;
};

// Layers × channels heatmap of a statistic, one map per method, one shared colour scale.
class ChannelMapView : public ResultView {
    Q_OBJECT
  public:
    enum Statistic { LogDecay, DeltaSum, CriticalCount, ReceptiveField };
    explicit ChannelMapView(Selection* selection, QWidget* parent = nullptr);
    void setResult(RunResultPtr result) override;
    QString title() const override { return "Channel map"; }
    QString key() const override { return "channel_map"; }
    void setStatistic(Statistic s);
    int mapCount() const { return int(maps_.size()); }
    QCPColorMap* colorMap(int i) const { return maps_[size_t(i)]; }
    Method mapMethod(int i) const { return methods_[size_t(i)]; }
    // Value shown at (layer, channel) for `m` under the current statistic (NaN when absent).
    double value(Method m, int layer, qint64 channel) const;

  public slots:
    void selectCell(int layer, qint64 channel) { sel_->setChannel(layer, channel); }

  private:
    void rebuild();
    void updateMarker();
    QComboBox* stat_;
    QWidget* plotsHost_;
    std::vector<QCustomPlot*> plots_;
    std::vector<QCPColorMap*> maps_;
    std::vector<QCPGraph*> markers_;
    std::vector<Method> methods_;
    QCPColorScale* scale_ = nullptr;
};

// Δ over the window for the selected channel (threshold, critical tokens) and cumulative log decay.
class ChannelDetailView : public ResultView {
    Q_OBJECT
  public:
    explicit ChannelDetailView(Selection* selection, QWidget* parent = nullptr);
    void setResult(RunResultPtr result) override;
    QString title() const override { return "Channel detail"; }
    QString key() const override { return "channel_detail"; }
    QCustomPlot* deltaPlot() const { return delta_; }
    QCustomPlot* decayPlot() const { return decay_; }
    QCPGraph* deltaGraph(Method m) const;  // nullptr when the method does not trace the selected channel
    QCPGraph* decayGraph(Method m) const;
    QCPGraph* targetGraph() const { return target_; }
    QString message() const { return info_->text(); }

  private:
    void redraw();
    QComboBox* traced_;
    QLabel* info_;
    QCustomPlot* delta_;
    QCustomPlot* decay_;
    std::map<Method, QCPGraph*> deltaGraphs_, decayGraphs_;
    QCPGraph* target_ = nullptr;
};

// Per-position NLL (moving average) per method.
class PerplexityView : public ResultView {
    Q_OBJECT
  public:
    explicit PerplexityView(Selection* selection, QWidget* parent = nullptr);
    void setResult(RunResultPtr result) override;
    QString title() const override { return "Perplexity"; }
    QString key() const override { return "perplexity"; }
    QCustomPlot* plot() const { return plot_; }
    QCPGraph* nllGraph(Method m) const;

  private:
    void updateCursor();
    QLabel* info_;
    QCustomPlot* plot_;
    std::map<Method, QCPGraph*> graphs_;
    QCPItemStraightLine* cursor_ = nullptr;
};

// Receptive-field lengths per layer (scatter), vanilla vs LongMamba, training and input length marked.
class ReceptiveFieldView : public ResultView {
    Q_OBJECT
  public:
    explicit ReceptiveFieldView(Selection* selection, QWidget* parent = nullptr);
    void setResult(RunResultPtr result) override;
    QString title() const override { return "Receptive fields"; }
    QString key() const override { return "receptive_fields"; }
    QCustomPlot* plot() const { return plot_; }
    QCPGraph* rfGraph(Method m) const;

  private:
    QCustomPlot* plot_;
    std::map<Method, QCPGraph*> graphs_;
};

// Hidden attention of the selected channel, one map per method.
class AttentionView : public ResultView {
    Q_OBJECT
  public:
    explicit AttentionView(Selection* selection, QWidget* parent = nullptr);
    void setResult(RunResultPtr result) override;
    QString title() const override { return "Hidden attention"; }
    QString key() const override { return "attention"; }
    int mapCount() const { return int(maps_.size()); }
    QCPColorMap* colorMap(int i) const { return maps_[size_t(i)]; }

  private:
    void redraw();
    QLabel* info_;
    QWidget* host_;
    std::vector<QCustomPlot*> plots_;
    std::vector<QCPColorMap*> maps_;
};

// The input text around the selected token; critical tokens of the selected channel or NLL change
// highlighted.
class TokensView : public ResultView {
    Q_OBJECT
  public:
    enum Mode { Critical, NllChange };
    explicit TokensView(Selection* selection, QWidget* parent = nullptr);
    void setResult(RunResultPtr result) override;
    QString title() const override { return "Tokens"; }
    QString key() const override { return "tokens"; }
    QPlainTextEdit* text() const { return text_; }
    qint64 firstToken() const { return first_; }
    qint64 highlightedCount() const { return highlighted_; }
    qint64 tokenAtTextPosition(int pos) const;

  private:
    void redraw();
    QComboBox* mode_;
    QLabel* info_;
    QPlainTextEdit* text_;
    std::vector<int> starts_;  // text position of each shown token
    qint64 first_ = 0;
    qint64 highlighted_ = 0;
};

// All views of a result in one grid (vanilla vs LongMamba side by side): the comparison screenshot.
class ComparisonWidget : public QWidget {
    Q_OBJECT
  public:
    ComparisonWidget(RunResultPtr result, Selection* selection, QWidget* parent = nullptr);
    // Renders at `scale`× device pixels (offscreen-safe).
    QImage render(double scale = 2.0);
};

// Saves a widget as PNG (scale× pixels) or PDF (vector where the widget paints vectors). Error on failure.
void export_widget(QWidget* w, const QString& path, double scale = 2.0);

}  // namespace mambascope::gui

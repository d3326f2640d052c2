// views.h: the result views. Each draws one aspect of a RunResult and follows the shared Selection.
//
// Design decision: a view owns no data beyond a shared_ptr to the immutable RunResult; setResult() rebuilds
// the plots, selection changes only redraw what depends on the selection. Long series are thinned per pixel
// column on every zoom and plots behave alike (plot_tools.h). Export paints the view as a figure (vector PDF
// / SVG, or PNG) without its controls. Accessors for the plotted objects exist for the tests.
#pragma once

#include <qcustomplot.h>
#include <QCheckBox>
#include <QComboBox>
#include <QLabel>
#include <QPlainTextEdit>
#include <QProgressBar>
#include <QPushButton>
#include <QWidget>
#include <array>
#include <limits>
#include <map>
#include <string>

#include "async_build.h"
#include "gui_util.h"
#include "mambascope/ppl_sweep.h"
#include "selection.h"

namespace mambascope {
struct RetrievalResult;  // retrieval.h
}

namespace mambascope::gui {

class ResultView : public QWidget {
    Q_OBJECT
  public:
    ResultView(Selection* selection, QWidget* parent = nullptr) : QWidget(parent), sel_(selection) {}
    virtual void setResult(RunResultPtr result) = 0;
    virtual QString title() const = 0;
    virtual QString key() const = 0;  // stable name in session files ("channel_map", ...)
    RunResultPtr result() const { return result_; }
    // Views that build plot data off the GUI thread: true while a build is pending; waitForBuild() blocks
    // until it is applied (tests, headless screenshots, export).
    virtual bool building() const { return false; }
    virtual void waitForBuild() {}
    // The zoom of the view's plots for sessions: "<axis>" ("x", "y") → [lower, upper]; a view that is still
    // building keeps ranges set now and applies them when its plots exist.
    using Ranges = std::map<std::string, std::array<double, 2>>;
    virtual Ranges viewRanges() const { return {}; }
    virtual void setViewRanges(const Ranges&) {}
    // The result changed only by added channel detail (DetailWorker): views that do not draw channel detail
    // keep their plots and zoom.
    virtual void addDetail(RunResultPtr result) { setResult(std::move(result)); }

  protected:
    // Shows or hides each method's plottables in `p` as the selection says (Selection::methodShown).
    void applyMethodVisibility(QCustomPlot* p);
    void toggleMethod(Method m) { sel_->setMethodShown(m, !sel_->methodShown(m)); }
    Selection* sel_;
    RunResultPtr result_;
};

// Layers × channels heatmap of a statistic, one map per method, one shared colour scale. The cells are
// computed on the thread pool (async_build.h); the plots appear when the build is applied.
class ChannelMapView : public ResultView {
    Q_OBJECT
  public:
    enum Statistic { LogDecay, DeltaSum, CriticalCount, ReceptiveField };
    explicit ChannelMapView(Selection* selection, QWidget* parent = nullptr);
    void setResult(RunResultPtr result) override;
    QString title() const override { return "Channel map"; }
    QString key() const override { return "channel_map"; }
    void setStatistic(Statistic s);
    // The statistic by its session name (Session::channel_map_statistic); unknown names are ignored.
    QString statisticKey() const;
    void setStatisticKey(const QString& key);
    int mapCount() const { return int(maps_.size()); }
    QCPColorMap* colorMap(int i) const { return maps_[size_t(i)]; }
    Method mapMethod(int i) const { return methods_[size_t(i)]; }
    // Value shown at (layer, channel) for `m` under the current statistic (NaN when absent).
    double value(Method m, int layer, qint64 channel) const;
    bool building() const override { return build_.building(); }
    void waitForBuild() override { build_.wait(); }
    void addDetail(RunResultPtr result) override { result_ = std::move(result); }  // maps are unchanged
    Ranges viewRanges() const override;
    void setViewRanges(const Ranges& ranges) override;
    QCustomPlot* plot(int i) const { return plots_[size_t(i)]; }  // the map plots, then the difference
    int plotCount() const { return int(plots_.size()); }
    // The LongMamba − vanilla map (a fourth plot with its own diverging scale), when both methods ran.
    void setDifferenceShown(bool shown) { diff_->setChecked(shown); }
    bool differenceShown() const { return diff_->isChecked(); }
    QCPColorMap* differenceMap() const { return diffMap_; }  // nullptr when not shown

  public slots:
    void selectCell(int layer, qint64 channel) { sel_->setChannel(layer, channel); }

  private:
    struct Built;
    void rebuild();
    void apply(Built& built);
    void clearPlots();
    void updateMarker();
    void updateVisibility();
    AsyncBuild build_{this};
    QComboBox* stat_;
    QCheckBox* diff_;
    QLabel* status_;
    QCPColorMap* diffMap_ = nullptr;
    Ranges pendingRanges_;
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
    QCPGraph* criticalGraph() const { return critical_; }  // LongMamba's critical tokens (nullptr: none)
    QString message() const { return info_->text(); }
    // True while the plots are shown (the selected channel has detail); otherwise the view says why.
    bool plotsShown() const { return !delta_->isHidden(); }
    Ranges viewRanges() const override;
    void setViewRanges(const Ranges& ranges) override;

  private:
    void redraw();
    void updateStatus();
    QComboBox* traced_;
    QLabel* info_;
    QLabel* note_;
    QProgressBar* progress_;
    QPushButton* cancel_;
    QCustomPlot* delta_;
    QCustomPlot* decay_;
    QCPGraph* critical_ = nullptr;
    std::map<Method, QCPGraph*> deltaGraphs_, decayGraphs_;
    QCPGraph* target_ = nullptr;
};

// Per-position NLL (moving average) per method, and a perplexity-vs-context-length sweep (a CSV of
// `mambascope-cli ppl-sweep`, independent of the run result).
class PerplexityView : public ResultView {
    Q_OBJECT
  public:
    explicit PerplexityView(Selection* selection, QWidget* parent = nullptr);
    void setResult(RunResultPtr result) override;
    QString title() const override { return "Perplexity"; }
    QString key() const override { return "perplexity"; }
    QCustomPlot* plot() const { return plot_; }
    QCPGraph* nllGraph(Method m) const;

    // Loads a sweep CSV (read_ppl_csv) and draws it; Error on a bad file (the previous sweep stays).
    void loadSweep(const QString& path);
    QString sweepPath() const { return sweepPath_; }
    const std::vector<PplPoint>& sweepPoints() const { return sweep_; }
    QCustomPlot* sweepPlot() const { return sweepPlot_; }
    QCPGraph* sweepGraph(Method m) const;  // perplexity vs context length; nullptr if absent
    QCPItemStraightLine* sweepTrainLine() const { return sweepTrain_; }  // nullptr without a run
    Ranges viewRanges() const override;
    void setViewRanges(const Ranges& ranges) override;
    // The composite leaves out the sweep's controls, and the sweep itself when none is loaded.
    void setCompact(bool compact);

  private:
    void updateCursor();
    void drawSweep();
    QLabel* info_;
    QCustomPlot* plot_;
    std::map<Method, QCPGraph*> graphs_;
    QCPItemStraightLine* cursor_ = nullptr;
    QPushButton* loadSweep_;
    QLabel* sweepInfo_;
    QCustomPlot* sweepPlot_;
    QString sweepPath_;
    std::vector<PplPoint> sweep_;
    std::map<Method, QCPGraph*> sweepGraphs_;
    QCPItemStraightLine* sweepTrain_ = nullptr;
};

// The paper's "global-channel ratio (%) per layer for several c" figure (method doc §6 fig. 4, §8.4), from
// the run's calibration log decay: plot 1 % global per layer for a few c and the run's c (thick); plot 2
// overall % global against c (log axis) with the run's c marked. Clicking a layer selects it (the channel is
// kept).
class GlobalRatioView : public ResultView {
    Q_OBJECT
  public:
    explicit GlobalRatioView(Selection* selection, QWidget* parent = nullptr);
    void setResult(RunResultPtr result) override;
    QString title() const override { return "Global ratio"; }
    QString key() const override { return "global_ratio"; }
    static std::vector<double> referenceCs() { return {1e-30, 1e-10, 1e-4, 5e-2}; }
    static constexpr int kOverallPoints = 200;
    static constexpr double kOverallMinC = 1e-40, kOverallMaxC = 0.99;

    QCustomPlot* layerPlot() const { return layers_; }
    QCustomPlot* overallPlot() const { return overall_; }
    QString message() const { return info_->text(); }
    bool hasCalibration() const { return !cs_.empty(); }
    const std::vector<double>& curveCs() const { return cs_; }  // plotted c values (reference + run's)
    QCPGraph* layerGraph(double c) const;                       // nullptr when that c is not plotted
    double runC() const { return runC_; }                       // NaN when no method records c
    QCPGraph* runGraph() const { return layerGraph(runC_); }
    QCPGraph* overallGraph() const { return overallGraph_; }
    QCPGraph* runMarker() const { return runMarker_; }  // one point: (run's c, overall % at it)
    // Layer under a pixel x of the layer plot (-1 outside).
    int layerAtPixel(double x) const;

  public slots:
    void selectLayer(int layer);

  private:
    void updateLayerMarker();
    QLabel* info_;
    QCustomPlot* layers_;
    QCustomPlot* overall_;
    std::vector<double> cs_;
    std::vector<QCPGraph*> layerGraphs_;
    QCPGraph* overallGraph_ = nullptr;
    QCPGraph* runMarker_ = nullptr;
    QCPItemStraightLine* runLine_ = nullptr;
    QCPItemStraightLine* layerLine_ = nullptr;
    double runC_ = std::numeric_limits<double>::quiet_NaN();
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
    // The global channels' points of rfGraph(m) (ringed); nullptr without a global mask.
    QCPGraph* rfGlobalGraph(Method m) const {
        auto it = globalGraphs_.find(m);
        return it == globalGraphs_.end() ? nullptr : it->second;
    }

  private:
    QCustomPlot* plot_;
    std::map<Method, QCPGraph*> graphs_, globalGraphs_;
};

// Hidden attention of the selected channel, one map per method (cells built off the GUI thread).
class AttentionView : public ResultView {
    Q_OBJECT
  public:
    explicit AttentionView(Selection* selection, QWidget* parent = nullptr);
    void setResult(RunResultPtr result) override;
    QString title() const override { return "Hidden attention"; }
    QString key() const override { return "attention"; }
    int mapCount() const { return int(maps_.size()); }
    QCPColorMap* colorMap(int i) const { return maps_[size_t(i)]; }
    QCustomPlot* plot(int i) const { return plots_[size_t(i)]; }
    QCPColorScale* colorScale() const { return scale_; }  // one scale for every map (nullptr: no maps)
    // The hover readout at a pixel of map i ("" outside the map).
    QString readoutAt(int i, QPoint pixel) const;
    bool building() const override { return build_.building(); }
    void waitForBuild() override { build_.wait(); }
    QString message() const { return info_->text(); }

  private:
    struct Built;
    void redraw();
    void apply(Built& built);
    AsyncBuild build_{this};
    QCPColorScale* scale_ = nullptr;
    std::vector<Method> methods_;
    QLabel* info_;
    QWidget* host_;
    std::vector<QCustomPlot*> plots_;
    std::vector<QCPColorMap*> maps_;
};

// The input text around the selected token; critical tokens of the selected channel, the NLL change, or how
// many global channels keep each token highlighted.
class TokensView : public ResultView {
    Q_OBJECT
  public:
    enum Mode { Critical, NllChange, GlobalKeep };
    explicit TokensView(Selection* selection, QWidget* parent = nullptr);
    void setMode(Mode m);
    // The colouring by its session name (Session::tokens_colour); unknown names are ignored.
    QString modeKey() const;
    void setModeKey(const QString& key);
    // LongMamba: how many global channels kept token t (-1 when the run has no such count), and how many
    // global channels there are (the count of an unfiltered token).
    qint64 keepCount(qint64 t) const;
    qint64 globalChannels() const;
    QString message() const { return info_->text(); }
    void setResult(RunResultPtr result) override;
    QString title() const override { return "Tokens"; }
    QString key() const override { return "tokens"; }
    QPlainTextEdit* text() const { return text_; }
    qint64 firstToken() const { return first_; }
    qint64 highlightedCount() const { return highlighted_; }
    qint64 tokenAtTextPosition(int pos) const;
    // Haystack runs (provenance haystack.needle_begin/end, haystack.answer_begin): the needle's tokens
    // [needleBegin, needleEnd) and the answer's [answerBegin, T) are marked in every colouring mode (text
    // colour, bold, underline; the background stays the mode's colouring). -1 when the run has none.
    enum Mark { NoMark = 0, NeedleMark = 1, AnswerMark = 2 };
    static constexpr int kMarkProperty = QTextFormat::UserProperty + 1;  // Mark of each shown character
    qint64 needleBegin() const { return needle_begin_; }
    qint64 needleEnd() const { return needle_end_; }
    qint64 answerBegin() const { return answer_begin_; }
    QString needleKey() const { return key_; }
    // The mark and the tooltip drawn on token t (NoMark / empty when t is not shown).
    Mark markAt(qint64 t) const;
    QString toolTipAt(qint64 t) const;
    // The hover readout of token t: its text and id, each method's NLL, the selected channel's Δ and whether
    // it is critical, its global keep count and its mark ("" outside the input).
    QString hoverText(qint64 t) const;

  protected:
    bool eventFilter(QObject* watched, QEvent* event) override;

  private:
    void redraw();
    QTextCharFormat formatAt(qint64 t) const;
    qint64 needle_begin_ = -1, needle_end_ = -1, answer_begin_ = -1;
    QString key_;
    QComboBox* mode_;
    QLabel* info_;
    QPlainTextEdit* text_;
    std::vector<int> starts_;  // text position of each shown token
    qint64 first_ = 0;
    qint64 highlighted_ = 0;
};

// The Tokens view's text and colouring of tokens [first, last) of a run, written at `cur` (shared by
// TokensView and the composite's needle strip, so both colour alike).
struct TokenColouring {
    TokensView::Mode mode = TokensView::Critical;
    const ChannelTrace* trace = nullptr;  // Critical: the channel whose critical tokens are highlighted
    const MethodResult* keep = nullptr;   // GlobalKeep: the method whose global_keep_count shades tokens
    qint64 selected = -1;                 // the selected token (bold, underlined)
};
struct TokenSpan {
    std::vector<int> starts;                        // text position of each written token
    qint64 highlighted = 0;                         // tokens with a highlight of the mode
    qint64 n_global = 0, keep_lo = 0, keep_hi = 0;  // GlobalKeep: global channels, range of the count
    qint64 needle_begin = -1, needle_end = -1, answer_begin = -1;  // haystack marks; -1 when none
    QString key;
};
TokenSpan write_tokens(QTextCursor& cur, const RunResult& r, qint64 first, qint64 last,
                       const TokenColouring& colouring);
// Haystack runs: the needle [begin, end), the answer's begin and the key from the provenance (-1 / empty).
TokenSpan haystack_marks(const RunResult& r);

// Composite strip of a haystack run: the Tokens view's text around the needle (the kLines whole lines centred
// on the needle's: ≈1500 characters at 1600 px, out of kContext tokens written either side) in the
// global-keep colouring of the method with critical tokens (LongMamba; else the first with
// global_keep_count), under a one-line caption.
class NeedleTokensStrip : public QFrame {
    Q_OBJECT
  public:
    static constexpr qint64 kContext = 1500;  // tokens written either side of the needle
    static constexpr int kLines = 7;          // lines drawn
    NeedleTokensStrip(const RunResult& r, QWidget* parent = nullptr);
    QString caption() const;
    QString plainText() const;  // all written tokens (the lines shown are a centred subset)
    Method method() const { return method_; }
    qint64 firstToken() const { return first_; }
    qint64 lastToken() const { return last_; }  // exclusive
    TokensView::Mark markAt(qint64 t) const;
    QColor backgroundAt(qint64 t) const;
    // Tokens fully inside the lines drawn at the current width: [first, last).
    std::pair<qint64, qint64> shownTokens();
    const TokenSpan& span() const { return span_; }

  private:
    QTextCharFormat formatAt(qint64 t) const;
    QLabel* caption_;
    class Pane;
    Pane* pane_;
    QTextDocument* doc_;
    TokenSpan span_;
    Method method_ = Method::LongMamba;
    qint64 first_ = 0, last_ = 0;
};

// All views of a result in one grid (vanilla vs LongMamba side by side): the comparison screenshot.
class ComparisonWidget : public QWidget {
    Q_OBJECT
  public:
    // `retrieval` (optional): a loaded retrieval result, drawn as a row of heatmaps and accuracy vs length.
    // A haystack run gets a header row with each method's answer.
    ComparisonWidget(RunResultPtr result, Selection* selection, QWidget* parent = nullptr,
                     std::shared_ptr<const RetrievalResult> retrieval = {});
    // Renders at `scale`× device pixels (offscreen-safe), with the caption stamp under it.
    QImage render(double scale = 2.0);
    // Saves the composite as .png (scale×), or vector .pdf / .svg (Error on failure; atomic).
    void save(const QString& path, double scale = 2.0);
    QString caption() const { return caption_; }
    QLabel* haystackHeader() const { return header_; }         // nullptr unless a haystack run
    NeedleTokensStrip* needleStrip() const { return strip_; }  // nullptr unless a haystack run

  private:
    QString caption_;
    QLabel* header_ = nullptr;
    NeedleTokensStrip* strip_ = nullptr;
};

// Blocks until every ResultView in `w` (and `w` itself) has applied its off-thread build.
void wait_for_builds(QWidget* w);

// The caption stamp of a figure: model, input, LongMamba's c and b, length in tokens.
QString figure_caption(const RunResult& r);

// Saves a widget as a figure: .png (scale× pixels), or .pdf / .svg as vectors (plots are painted by
// QCustomPlot itself: lines and text stay vectors, heatmaps are images); controls (combo boxes, buttons,
// check boxes) are left out; `caption` (if any) is stamped under it. Written atomically; Error on failure.
void export_figure(QWidget* w, const QString& path, double scale, const QString& caption);
// export_figure of a view with its result's caption.
void export_widget(QWidget* w, const QString& path, double scale = 2.0);

}  // namespace mambascope::gui

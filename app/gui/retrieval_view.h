// retrieval_view.h: the passkey-retrieval result (`mambascope-cli retrieval --json`, method doc §10) as one
// length × depth heatmap of teacher-forced answer accuracy per method and one accuracy-vs-length plot, plus
// the haystack header of a haystack run (which answer each method gave).
//
// Design decision: the view shows a RetrievalResult, which is independent of the run result (like the
// perplexity sweep); the run result only marks which cell the current run is. Cells are drawn on index axes
// (length index × depth index, labelled with the real values) so every cell is one flat block whatever the
// spacing of the grid, and a click maps back to exact grid values, never to an interpolated length or depth.
// The view computes nothing: every number is RetrievalResult::cell_accuracy / length_accuracy.
#pragma once

#include <QLabel>
#include <memory>

#include "mambascope/retrieval.h"
#include "views.h"

namespace mambascope::gui {

using RetrievalPtr = std::shared_ptr<const RetrievalResult>;

// Teacher-forced accuracy of one digit when guessing: 1 of 10 digits.
constexpr double kRetrievalChance = 0.1;

class RetrievalView : public ResultView {
    Q_OBJECT
  public:
    explicit RetrievalView(Selection* selection, QWidget* parent = nullptr);
    void setResult(RunResultPtr result) override;  // marks the run's haystack cell, if any
    QString title() const override { return "Retrieval"; }
    QString key() const override { return "retrieval"; }

    // Reads a retrieval JSON (read_retrieval_json); Error on a bad file, the previous result stays.
    void loadRetrieval(const QString& path);
    void setRetrieval(RetrievalPtr r, const QString& path = {});
    RetrievalPtr retrieval() const { return retrieval_; }
    QString retrievalPath() const { return path_; }
    QString message() const { return info_->text(); }
    // Composite layout: the heatmaps and the line plot side by side in one row, no controls.
    void setCompact(bool compact);

    // Plotted objects (tests). Heatmap i belongs to heatmapMethod(i); cell (length index, depth index) has
    // the value cellValue(i, li, di) (NaN: no data, drawn blank).
    int heatmapCount() const { return int(maps_.size()); }
    QCustomPlot* heatmapPlot(int i) const { return plots_[size_t(i)]; }
    QCPColorMap* heatmap(int i) const { return maps_[size_t(i)]; }
    Method heatmapMethod(int i) const { return methods_[size_t(i)]; }
    double cellValue(int i, int length_index, int depth_index) const;
    QCustomPlot* linePlot() const { return line_; }
    // Accuracy against length (x: tokens) of one method; generated: greedy exact match. nullptr if absent.
    QCPGraph* lineGraph(Method m, bool generated = false) const;
    QCPGraph* chanceGraph() const { return chance_; }
    // The current run's haystack cell on heatmap i (a frame, hidden when the run is not a cell of this grid).
    QCPItemRect* currentCellMarker(int i) const { return markers_[size_t(i)]; }
    const std::vector<int64_t>& lengths() const { return lengths_; }  // x of the heatmaps, by index
    const std::vector<double>& depths() const { return depths_; }     // y of the heatmaps, by index
    // Pixel centre of a cell in heatmapPlot(i) (widget coordinates; valid once the plot is laid out).
    QPointF cellCentre(int i, int length_index, int depth_index) const;

  public slots:
    // The click handler: emits cellClicked for the cell of heatmap i under `pixel`; false outside the grid.
    bool clickAt(int i, const QPointF& pixel);

  signals:
    // A heatmap cell was clicked: rebuild and run that haystack (MainWindow::runHaystackCell).
    void cellClicked(mambascope::Method method, qint64 length, int depthIndex, double depth);

  private:
    void rebuild();
    void updateMarkers();
    bool cellAt(int i, const QPointF& pixel, int* length_index, int* depth_index) const;
    QString cellTip(Method m, int li, int di) const;
    QLabel* info_;
    QPushButton* open_;
    QWidget* mapsHost_;
    QCustomPlot* line_;
    RetrievalPtr retrieval_;
    QString path_;
    bool compact_ = false;
    std::vector<QCustomPlot*> plots_;
    std::vector<QCPColorMap*> maps_;
    std::vector<QCPItemRect*> markers_;
    std::vector<int64_t> lengths_;
    std::vector<double> depths_;
    QBoxLayout* body_;
    std::vector<Method> methods_;
    std::map<std::pair<Method, bool>, QCPGraph*> lines_;
    QCPGraph* chance_ = nullptr;
};

// The methods a retrieval result has rows for, in the request's order.
std::vector<Method> retrieval_methods(const RetrievalResult& r);

// One line for a haystack run: key, then per method the greedy answer and whether it is right (HTML with
// green/red marks when `html`); empty when the run is not a haystack run.
QString haystack_summary(const RunResult& r, bool html);

}  // namespace mambascope::gui

// main_window.h: the Mambascope window: run panel (model, input, methods, parameters, Run/Cancel with
// progress), the linked result views in tabs, export, sessions, themes and settings.
//
// Design decision: the window holds the current RunResult (shared, immutable) and a Selection; it hands both
// to every view and never computes anything from the model itself. Everything the menus do is also a public
// method so that the headless path and the tests drive the same code.
#pragma once

#include <QCheckBox>
#include <QComboBox>
#include <QDockWidget>
#include <QDoubleSpinBox>
#include <QFrame>
#include <QLabel>
#include <QLineEdit>
#include <QMainWindow>
#include <QPlainTextEdit>
#include <QProgressBar>
#include <QPushButton>
#include <QSpinBox>
#include <QTabWidget>

#include "analysis_worker.h"
#include "detail_worker.h"
#include "mambascope/session.h"
#include "retrieval_view.h"
#include "selection.h"
#include "views.h"

namespace mambascope::gui {

class MainWindow : public QMainWindow {
    Q_OBJECT
  public:
    explicit MainWindow(QWidget* parent = nullptr);
    ~MainWindow() override;

    Selection* selection() const { return selection_; }
    AnalysisWorker* worker() const { return worker_; }
    RunResultPtr result() const { return result_; }
    const std::vector<ResultView*>& views() const { return views_; }
    ResultView* view(const QString& key) const;
    QTabWidget* tabs() const { return tabs_; }
    bool running() const { return worker_->busy(); }

    Session session() const;               // the panel's state as a session
    void applySession(const Session& s);   // fills the panel and selection
    AnalysisJob job() const;               // what Run would start
    void showResult(RunResultPtr result);  // draws a result (from a run or a trace)

    void saveSession(const QString& path);  // Error on failure
    // Error on failure. A session with a trace opens it and shows exactly the saved view: tab, selection,
    // zoom, statistic, colouring, hidden methods.
    void loadSession(const QString& path);
    void openTrace(const QString& path);              // Error on failure (or when trace support is not built)
    QString tracePath() const { return tracePath_; }  // the trace shown ("" after a run)
    void exportTrace(const QString& path);            // Error on failure
    void exportCurrentView(const QString& path);      // .png (2×), or vector .pdf / .svg
    void exportComparison(const QString& path);       // the composite: .png (2×), .pdf, .svg
    // Errors the user must see (start-up files, failed loads and runs): a banner above the views (and a
    // dialog on a real display). The banner stays until closed or the next result is shown.
    void reportError(const QString& title, const QString& message);
    // Opens the command line's files (each may be empty) and returns one line per failure; failures are also
    // shown in the banner (no dialog: the caller decides), so the window never just says "No run yet".
    QStringList openFiles(const QString& session, const QString& trace, const QString& retrieval);
    bool bannerShown() const { return !banner_->isHidden(); }
    QString bannerText() const { return bannerText_->text(); }
    // Detail of the selected channel when the run did not trace it (DetailWorker).
    DetailWorker* detailWorker() const { return detailWorker_; }
    void waitForDetail();  // blocks until a pending detail job is applied (headless, tests)
    // Retrieval result (mambascope-cli retrieval --json) shown in the Retrieval view and the composite; Error
    // on a bad file (the previous result stays).
    void loadRetrieval(const QString& path);
    RetrievalView* retrievalView() const { return retrievalView_; }
    RetrievalPtr retrieval() const { return retrievalView_->retrieval(); }
    // The session's haystack (length 0: the input is the text).
    const SessionHaystack& haystack() const { return haystack_; }
    void setHaystack(const SessionHaystack& h);
    QImage comparisonImage(double scale = 2.0);
    static bool traceSupport();
    // Headless runs (screenshots, scripts) neither read nor write the user's window layout, palette and
    // recent files: the picture depends only on the command line. Resets the palette to light.
    void setPersistSettings(bool persist) {
        persist_ = persist;
        if (!persist) setDark(false);
    }

  public slots:
    bool startRun();
    // A retrieval cell clicked: run sample 0 of that haystack (the result's seed; filler and template from
    // the current session). False when a run is in flight or the job cannot be built (message shown).
    bool runHaystackCell(mambascope::Method method, qint64 length, int depthIndex, double depth);
    void cancelRun();
    void setDark(bool dark);

  signals:
    void runFinished(bool ok);

  private:
    QWidget* buildRunPanel();
    void buildMenus();
    void requestDetail();
    std::string detailModelDir() const;
    void applyViewState(const Session& s);
    void setIdle(bool idle);
    void showError(const QString& title, const QString& message);
    void addRecent(const QString& path);
    void browse(QLineEdit* edit, const QString& caption, const QString& filter, bool dir);
    void loadSessionRetrieval(const Session& s);

    Selection* selection_;
    AnalysisWorker* worker_;
    DetailWorker* detailWorker_;
    RunResultPtr detailBase_;     // the result a detail job started from
    bool detailPending_ = false;  // the selection moved while a job ran: start again when it ends
    QString tracePath_;
    QFrame* banner_;
    QLabel* bannerText_;
    QDockWidget* dock_;
    QLineEdit* channels_;
    RunResultPtr result_;
    std::vector<ResultView*> views_;
    QTabWidget* tabs_;
    QLineEdit* model_;
    QLineEdit* textPath_;
    QPlainTextEdit* paste_;
    QSpinBox* maxTokens_;
    QCheckBox* mVanilla_;
    QCheckBox* mLong_;
    QCheckBox* mDeci_;
    QLineEdit* calibration_;
    QDoubleSpinBox* c_;
    QDoubleSpinBox* b_;
    QSpinBox* activate_;
    QLineEdit* deciLayers_;
    QSpinBox* deciBase_;
    QDoubleSpinBox* deciBeta_;
    QComboBox* device_;
    QPushButton* run_;
    QPushButton* cancel_;
    QProgressBar* progress_;
    QLabel* status_;
    QLabel* haystackInfo_;
    QPushButton* haystackClear_;
    RetrievalView* retrievalView_;
    SessionHaystack haystack_;
    std::string retrievalSpec_;  // the session's "retrieval" as written ("demo" stays "demo")
    QMenu* recent_;
    bool dark_ = false;
    bool persist_ = true;
};

}  // namespace mambascope::gui

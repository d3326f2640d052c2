#include "main_window.h"

#include <QAction>
#include <QApplication>
#include <QCloseEvent>
#include <QDir>
#include <QDockWidget>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QMenuBar>
#include <QMessageBox>
#include <QRegularExpression>
#include <QScreen>
#include <QScrollArea>
#include <QScrollBar>
#include <QSettings>
#include <QStatusBar>
#include <QStyleFactory>
#include <QVBoxLayout>

#include <algorithm>
#include <filesystem>
#include <utility>

#include "mambascope/error.h"
#include "plot_tools.h"

#if __has_include("mambascope/trace.h")
#include "mambascope/trace.h"
#define MAMBASCOPE_GUI_HAVE_TRACE 1
#endif

namespace mambascope::gui {

namespace {
constexpr int kMaxRecentFiles = 8;
constexpr int kDefaultMaxTokens = int(kDefaultSessionMaxTokens);
// The window on first launch (no remembered geometry), capped by the screen.
constexpr QSize kFirstLaunchSize(1440, 900);

bool has_detail(const RunResult& r, ChannelRef ref) {
    return !r.methods.empty() && std::all_of(r.methods.begin(), r.methods.end(), [&](const MethodResult& m) {
        return std::any_of(m.channels.begin(), m.channels.end(),
                           [&](const ChannelTrace& t) { return t.ref == ref; });
    });
}

// "3:0, 3:17" → channels; Error on anything else.
std::vector<ChannelRef> parse_channels(const QString& text) {
    std::vector<ChannelRef> out;
    for (const QString& part : text.split(',', Qt::SkipEmptyParts)) {
        const QStringList lc = part.trimmed().split(':');
        bool okL = false, okC = false;
        const int l = lc.size() == 2 ? lc[0].trimmed().toInt(&okL) : -1;
        const qint64 c = lc.size() == 2 ? lc[1].trimmed().toLongLong(&okC) : -1;
        if (!okL || !okC || l < 0 || c < 0)
            throw Error("detail channel '" + part.trimmed().toStdString() + "' is not LAYER:CHANNEL",
                        "write e.g. 3:0, 3:17 (layer and channel numbers from the channel map)");
        out.push_back({l, c});
    }
    return out;
}
}  // namespace

bool MainWindow::traceSupport() {
#ifdef MAMBASCOPE_GUI_HAVE_TRACE
    return true;
#else
    return false;
#endif
}

MainWindow::MainWindow(QWidget* parent) : QMainWindow(parent) {
    setWindowTitle("Mambascope");
    selection_ = new Selection(this);
    worker_ = new AnalysisWorker(this);
    tabs_ = new QTabWidget;
    views_ = {new ChannelMapView(selection_), new ChannelDetailView(selection_),
              new PerplexityView(selection_), new ReceptiveFieldView(selection_),
              new TokensView(selection_),     new AttentionView(selection_),
              new GlobalRatioView(selection_)};
    retrievalView_ = new RetrievalView(selection_);
    views_.push_back(retrievalView_);
    for (auto* v : views_) tabs_->addTab(v, v->title());
    connect(retrievalView_, &RetrievalView::cellClicked, this, &MainWindow::runHaystackCell);
    // Errors the user must see sit in a banner above the views.
    auto* central = new QWidget;
    auto* cl = new QVBoxLayout(central);
    cl->setContentsMargins(0, 0, 0, 0);
    cl->setSpacing(0);
    banner_ = new QFrame;
    banner_->setObjectName("errorBanner");
    banner_->setStyleSheet(
        "#errorBanner { background: #f8d7da; border-bottom: 1px solid #c06070; }"
        "#errorBanner QLabel { color: #58151c; }");
    auto* bl = new QHBoxLayout(banner_);
    bannerText_ = new QLabel;
    bannerText_->setWordWrap(true);
    bannerText_->setTextInteractionFlags(Qt::TextSelectableByMouse);
    auto* close = new QPushButton("Close");
    connect(close, &QPushButton::clicked, banner_, &QWidget::hide);
    bl->addWidget(bannerText_, 1);
    bl->addWidget(close);
    banner_->hide();
    cl->addWidget(banner_);
    cl->addWidget(tabs_, 1);
    setCentralWidget(central);
    dock_ = new QDockWidget("Run", this);
    dock_->setObjectName("runDock");
    auto* scroll = new QScrollArea;
    scroll->setWidgetResizable(true);
    scroll->setWidget(buildRunPanel());
    // Wide enough for the panel's fields without a horizontal scroll bar.
    scroll->setMinimumWidth(scroll->widget()->sizeHint().width() +
                            scroll->verticalScrollBar()->sizeHint().width() + 4);
    dock_->setWidget(scroll);
    addDockWidget(Qt::LeftDockWidgetArea, dock_);
    detailWorker_ = new DetailWorker(this);
    buildMenus();
    setHaystack({});
    statusBar()->showMessage("No run yet: press Run (Ctrl+R) or open a trace.");
    // A channel picked anywhere shows its detail: traced, or computed now.
    connect(selection_, &Selection::channelChanged, this, [this](int l, qint64 c) {
        statusBar()->showMessage(QString("selected layer %1, channel %2").arg(l).arg(c), 4000);
        requestDetail();
    });
    connect(selection_, &Selection::detailCancelRequested, detailWorker_, &DetailWorker::cancel);
    connect(detailWorker_, &DetailWorker::progress, this, [this](double f) {
        if (detailWorker_->busy()) selection_->setDetailStatus(selection_->detailNote(), f);
    });
    connect(detailWorker_, &DetailWorker::finished, this, [this](RunResultPtr r, ChannelRef ref) {
        if (result_ && result_ == detailBase_) {  // still the run it was computed for
            result_ = r;
            for (auto* v : views_) v->addDetail(r);
            statusBar()->showMessage(
                QString("computed the detail of layer %1, channel %2").arg(ref.layer).arg(ref.channel), 6000);
        }
        selection_->setDetailStatus({});
        if (std::exchange(detailPending_, false)) requestDetail();
    });
    connect(detailWorker_, &DetailWorker::failed, this, [this](const QString& msg, ChannelRef ref) {
        if (result_ != detailBase_) return selection_->setDetailStatus({});  // for a result no longer shown
        selection_->setDetailStatus(QString("Cannot compute the detail of layer %1, channel %2: %3")
                                        .arg(ref.layer)
                                        .arg(ref.channel)
                                        .arg(msg));
        if (std::exchange(detailPending_, false)) requestDetail();
    });
    connect(detailWorker_, &DetailWorker::cancelled, this, [this](ChannelRef ref) {
        if (result_ != detailBase_) return selection_->setDetailStatus({});  // a new result replaced it
        selection_->setDetailStatus(
            QString("Computing the detail of layer %1, channel %2 was cancelled; select the channel again to "
                    "compute it.")
                .arg(ref.layer)
                .arg(ref.channel));
        if (std::exchange(detailPending_, false)) requestDetail();
    });
    connect(
        worker_, &AnalysisWorker::progress, this,
        [this](double f, const QString& stage, double el, double rem) {
            progress_->setValue(int(f * 1000));
            status_->setText(QString("%1 · %2 s elapsed%3")
                                 .arg(stage)
                                 .arg(el, 0, 'f', 1)
                                 .arg(rem >= 0 ? QString(" · ~%1 s left").arg(rem, 0, 'f', 1) : QString()));
        });
    connect(worker_, &AnalysisWorker::finished, this, [this](RunResultPtr r) {
        setIdle(true);
        tracePath_.clear();  // a session saved now describes the run, not a trace
        showResult(r);
        QStringList where;
        for (const auto& m : r->methods)
            where << QString("%1 on %2").arg(method_label(m.method), QString::fromStdString(m.backend));
        QString msg = "done · " + where.join(", ");
        if (auto it = r->provenance.find("device_note"); it != r->provenance.end())
            msg += "\n" + QString::fromStdString(it->second);
        status_->setText(msg);
        emit runFinished(true);
    });
    connect(worker_, &AnalysisWorker::failed, this, [this](const QString& msg) {
        setIdle(true);
        status_->setText("failed");
        showError("Run failed", msg);
        emit runFinished(false);
    });
    connect(worker_, &AnalysisWorker::cancelled, this, [this] {
        setIdle(true);
        status_->setText("cancelled");
        emit runFinished(false);
    });
    QSettings st;
    if (!restoreGeometry(st.value("window/geometry").toByteArray())) {
        // First launch: most of the screen, at least the size the views are laid out for.
        const QRect avail = screen() ? screen()->availableGeometry() : QRect(0, 0, 1600, 1000);
        const QSize want(
            std::min(avail.width(), std::max(kFirstLaunchSize.width(), avail.width() * 4 / 5)),
            std::min(avail.height(), std::max(kFirstLaunchSize.height(), avail.height() * 4 / 5)));
        resize(want);
        move(avail.center() - rect().center());
    }
    restoreState(st.value("window/state").toByteArray());
    setDark(st.value("view/dark", false).toBool());
    setIdle(true);
}

MainWindow::~MainWindow() {
    if (persist_) {
        QSettings st;
        st.setValue("window/geometry", saveGeometry());
        st.setValue("window/state", saveState());
        st.setValue("view/dark", dark_);
    }
    worker_->cancel();
}

ResultView* MainWindow::view(const QString& key) const {
    for (auto* v : views_)
        if (v->key() == key) return v;
    return nullptr;
}

QWidget* MainWindow::buildRunPanel() {
    auto* panel = new QWidget;
    auto* lay = new QVBoxLayout(panel);
    auto row = [](QLineEdit* e, QPushButton* b) {
        auto* w = new QWidget;
        auto* h = new QHBoxLayout(w);
        h->setContentsMargins(0, 0, 0, 0);
        h->addWidget(e, 1);
        h->addWidget(b);
        return w;
    };
    // Model
    auto* gm = new QGroupBox("Model");
    auto* fm = new QFormLayout(gm);
    model_ = new QLineEdit("demo");
    model_->setToolTip(
        "A model folder (config.json + safetensors/bin), or \"demo\" for the bundled byte-level "
        "Mamba-1 demo model (resources/models/demo-mamba1).");
    auto* bm = new QPushButton("…");
    connect(bm, &QPushButton::clicked, this, [this] { browse(model_, "Model folder", {}, true); });
    fm->addRow("Folder", row(model_, bm));
    lay->addWidget(gm);
    // Input
    auto* gi = new QGroupBox("Input");
    auto* fi = new QFormLayout(gi);
    textPath_ = new QLineEdit("demo");
    textPath_->setToolTip("A UTF-8 text file, or \"demo\" for resources/text/demo.txt.");
    auto* bt = new QPushButton("…");
    connect(bt, &QPushButton::clicked, this,
            [this] { browse(textPath_, "Open text", "Text (*.txt *.md);;All files (*)", false); });
    fi->addRow("Text file", row(textPath_, bt));
    paste_ = new QPlainTextEdit;
    paste_->setPlaceholderText("…or paste text here (used instead of the file when not empty)");
    paste_->setMaximumHeight(80);
    fi->addRow(paste_);
    maxTokens_ = new QSpinBox;
    maxTokens_->setRange(2, 1 << 20);
    maxTokens_->setValue(kDefaultMaxTokens);
    maxTokens_->setToolTip("The input is cut to this many tokens (length limit).");
    fi->addRow("Max tokens", maxTokens_);
    // A haystack (from a retrieval cell or the session) replaces the text as the input until cleared.
    haystackInfo_ = new QLabel;
    haystackInfo_->setWordWrap(true);
    haystackClear_ = new QPushButton("Use the text instead");
    haystackClear_->setToolTip(
        "Forget the passkey haystack: Run uses the text file or the pasted text again.");
    connect(haystackClear_, &QPushButton::clicked, this, [this] { setHaystack({}); });
    fi->addRow(haystackInfo_);
    fi->addRow(haystackClear_);
    lay->addWidget(gi);
    // Methods
    auto* gme = new QGroupBox("Methods");
    auto* vm = new QVBoxLayout(gme);
    mVanilla_ = new QCheckBox("vanilla");
    mVanilla_->setToolTip("The unmodified model (method doc §2).");
    mLong_ = new QCheckBox("LongMamba");
    mLong_->setToolTip("Global channels filter their Δ to the critical tokens (LongMamba §8.4–§8.6).");
    mDeci_ = new QCheckBox("DeciMamba");
    mDeci_->setToolTip("Token decimation in chosen layers (method doc §4, §8.8).");
    for (auto* c : {mVanilla_, mLong_, mDeci_}) c->setChecked(true), vm->addWidget(c);
    lay->addWidget(gme);
    // Parameters
    auto* gp = new QGroupBox("Parameters");
    auto* fp = new QFormLayout(gp);
    calibration_ = new QLineEdit("demo");
    calibration_->setToolTip(
        "Calibration file (.h5, from mambascope-cli calibrate): θ and the training-window "
        "decays (LongMamba §8.3). \"demo\": the demo model's; empty: none (no LongMamba).");
    auto* bc = new QPushButton("…");
    connect(bc, &QPushButton::clicked, this,
            [this] { browse(calibration_, "Calibration", "HDF5 (*.h5);;All files (*)", false); });
    fp->addRow("Calibration", row(calibration_, bc));
    c_ = new QDoubleSpinBox;
    c_->setDecimals(4);
    c_->setRange(0.0001, 0.9999);
    c_->setSingleStep(0.01);
    c_->setValue(0.05);
    c_->setToolTip(
        "c: a channel is global if its decay over the training window exceeds c (LongMamba §8.4).");
    fp->addRow("c", c_);
    b_ = new QDoubleSpinBox;
    b_->setDecimals(3);
    b_->setRange(0.001, 1000);
    b_->setValue(1.0);
    b_->setToolTip("b: threshold multiplier; a token is critical when Δ > b·θ (LongMamba §8.5).");
    fp->addRow("b", b_);
    activate_ = new QSpinBox;
    activate_->setRange(-1, 1 << 30);
    activate_->setValue(-1);
    activate_->setSpecialValueText("train length");
    activate_->setToolTip(
        "Filter only when the input is longer than this (tokens); -1: the calibration's "
        "training length (LongMamba §8.5).");
    fp->addRow("Activate above", activate_);
    deciLayers_ = new QLineEdit;
    deciLayers_->setPlaceholderText("n_layer/2");
    deciLayers_->setToolTip("DeciMamba decimation layers, comma separated; empty: the middle layer (§8.8).");
    fp->addRow("Deci layers", deciLayers_);
    deciBase_ = new QSpinBox;
    deciBase_->setRange(-1, 1 << 30);
    deciBase_->setValue(-1);
    deciBase_->setSpecialValueText("train length");
    deciBase_->setToolTip(
        "DeciMamba L_base: tokens kept in the decimation layer (§8.8); -1: training length.");
    fp->addRow("Deci budget", deciBase_);
    deciBeta_ = new QDoubleSpinBox;
    deciBeta_->setRange(0.01, 10);
    deciBeta_->setValue(1.0);
    deciBeta_->setToolTip("DeciMamba β: decay of the budget over later layers (§8.8).");
    fp->addRow("Deci β", deciBeta_);
    lay->addWidget(gp);
    // Device
    auto* gd = new QGroupBox("Device");
    auto* fd = new QFormLayout(gd);
    device_ = new QComboBox;
    device_->addItem("CPU", int(Device::Cpu));
    device_->addItem("CUDA GPU", int(Device::Cuda));
    device_->addItem("auto (GPU when usable)", int(Device::Auto));
    {
        std::string why;
        const bool gpu = cuda_usable(&why);
        device_->setToolTip(
            QString("Where vanilla and LongMamba run; the filter and probes are the same on both "
                    "(docs/cuda.md). DeciMamba's selection runs on the CPU. Without a usable GPU a CUDA run "
                    "falls back to the CPU and says so.\nThis machine: %1")
                .arg(gpu ? QString("a usable GPU") : QString::fromStdString(why)));
    }
    fd->addRow("Run on", device_);
    lay->addWidget(gd);
    // Probes
    auto* gc = new QGroupBox("Detail channels");
    auto* fc = new QFormLayout(gc);
    channels_ = new QLineEdit;
    channels_->setPlaceholderText("automatic (a global and a local channel)");
    channels_->setToolTip(
        "Channels whose Δ, critical tokens, decay and hidden attention the run records up front, as "
        "LAYER:CHANNEL, comma separated (e.g. 3:0, 3:17). Any other channel clicked later is computed on "
        "demand by re-running the model on the input.");
    fc->addRow("Channels", channels_);
    lay->addWidget(gc);
    // Run
    auto* hr = new QHBoxLayout;
    run_ = new QPushButton("Run");
    run_->setToolTip("Run every checked method on the input (Ctrl+R).");
    cancel_ = new QPushButton("Cancel");
    cancel_->setToolTip("Stop the run at the next safe point (Esc).");
    hr->addWidget(run_);
    hr->addWidget(cancel_);
    lay->addLayout(hr);
    progress_ = new QProgressBar;
    progress_->setRange(0, 1000);
    lay->addWidget(progress_);
    status_ = new QLabel("idle");
    status_->setWordWrap(true);
    lay->addWidget(status_);
    lay->addStretch();
    connect(run_, &QPushButton::clicked, this, &MainWindow::startRun);
    connect(cancel_, &QPushButton::clicked, this, &MainWindow::cancelRun);
    return panel;
}

void MainWindow::buildMenus() {
    auto guarded = [this](const QString& title, auto fn) {
        return [this, title, fn] {
            try {
                fn();
            } catch (const Error& e) {
                showError(title, QString::fromStdString(describe(e)));
            } catch (const std::exception& e) {
                showError(title, QString::fromUtf8(e.what()));
            }
        };
    };
    auto* file = menuBar()->addMenu("&File");
    file->addAction("Open &text…", QKeySequence::Open, this,
                    [this] { browse(textPath_, "Open text", "Text (*.txt *.md);;All files (*)", false); });
    file->addAction("Open t&race…", this, guarded("Open trace", [this] {
                        const QString p =
                            QFileDialog::getOpenFileName(this, "Open trace", {}, "Trace (*.h5)");
                        if (!p.isEmpty()) openTrace(p);
                    }));
    file->addAction("Open retrieval &result…", this, guarded("Open retrieval result", [this] {
                        const QString p = QFileDialog::getOpenFileName(this, "Open retrieval result", {},
                                                                       "Retrieval JSON (*.json)");
                        if (!p.isEmpty()) loadRetrieval(p);
                    }));
    file->addAction("Open &session…", this, guarded("Open session", [this] {
                        const QString p =
                            QFileDialog::getOpenFileName(this, "Open session", {}, "Session (*.json)");
                        if (!p.isEmpty()) loadSession(p);
                    }));
    file->addAction("&Save session…", QKeySequence::Save, this, guarded("Save session", [this] {
                        const QString p = QFileDialog::getSaveFileName(this, "Save session", "session.json",
                                                                       "Session (*.json)");
                        if (!p.isEmpty()) saveSession(p);
                    }));
    recent_ = file->addMenu("Recent");
    auto fillRecent = [this, guarded] {
        recent_->clear();
        for (const QString& p : QSettings().value("recent").toStringList())
            recent_->addAction(p, this, guarded("Open", [this, p] {
                                   if (p.endsWith(".json"))
                                       loadSession(p);
                                   else if (p.endsWith(".h5"))
                                       openTrace(p);
                                   else
                                       textPath_->setText(p);
                               }));
    };
    connect(recent_, &QMenu::aboutToShow, this, fillRecent);
    file->addSeparator();
    file->addAction("Export trace (HDF5)…", this, guarded("Export trace", [this] {
                        const QString p =
                            QFileDialog::getSaveFileName(this, "Export trace", "run.h5", "Trace (*.h5)");
                        if (!p.isEmpty()) exportTrace(p);
                    }));
    // Exports suggest "<view>-<model>.pdf" in the last export folder and say where they wrote.
    auto exportName = [this](const QString& what) {
        QString model = result_ ? QString::fromStdString(result_->provenance.count("model_name")
                                                             ? result_->provenance.at("model_name")
                                                         : result_->provenance.count("model")
                                                             ? result_->provenance.at("model")
                                                             : std::string())
                                : QString();
        model.replace(QRegularExpression("[^A-Za-z0-9_.-]+"), "-");
        const QString dir = QSettings().value("export/dir", QDir::currentPath()).toString();
        return QDir(dir).filePath(model.isEmpty() ? what + ".pdf" : what + "-" + model + ".pdf");
    };
    auto exported = [this](const QString& p) {
        if (persist_) QSettings().setValue("export/dir", QFileInfo(p).absolutePath());
        statusBar()->showMessage("wrote " + QDir::toNativeSeparators(p), 10000);
    };
    const QString kFigureFilter = "PDF, vector (*.pdf);;SVG, vector (*.svg);;PNG, 2x (*.png)";
    file->addAction("&Export view (PDF/SVG/PNG)…", QKeySequence("Ctrl+E"), this,
                    guarded("Export view", [this, exportName, exported, kFigureFilter] {
                        const QString key = tabs_->currentWidget()
                                                ? static_cast<ResultView*>(tabs_->currentWidget())->key()
                                                : "view";
                        const QString p =
                            QFileDialog::getSaveFileName(this, "Export view", exportName(key), kFigureFilter);
                        if (p.isEmpty()) return;
                        exportCurrentView(p);
                        exported(p);
                    }));
    file->addAction("Export &comparison figure…", QKeySequence("Ctrl+Shift+E"), this,
                    guarded("Export comparison figure", [this, exportName, exported, kFigureFilter] {
                        const QString p = QFileDialog::getSaveFileName(
                            this, "Comparison figure", exportName("comparison"), kFigureFilter);
                        if (p.isEmpty()) return;
                        exportComparison(p);
                        exported(p);
                    }));
    file->addSeparator();
    file->addAction("&Quit", QKeySequence::Quit, this, &QWidget::close);
    auto* run = menuBar()->addMenu("&Run");
    run->addAction("&Run", QKeySequence("Ctrl+R"), this, &MainWindow::startRun);
    run->addAction("&Cancel", QKeySequence(Qt::Key_Escape), this, &MainWindow::cancelRun);
    auto* viewMenu = menuBar()->addMenu("&View");
    QAction* panel = dock_->toggleViewAction();
    panel->setText("&Run panel");
    panel->setShortcut(QKeySequence("Ctrl+Shift+R"));
    viewMenu->addAction(panel);
    viewMenu->addAction("Reset &layout", this, [this] {
        dock_->setFloating(false);
        addDockWidget(Qt::LeftDockWidgetArea, dock_);
        dock_->show();
    });
    viewMenu->addAction("Reset &zoom", QKeySequence(Qt::CTRL | Qt::Key_0), this, [this] {
        if (auto* v = tabs_->currentWidget())
            for (auto* p : v->findChildren<QCustomPlot*>()) reset_view(p);
    });
    viewMenu->addSeparator();
    auto* dark = viewMenu->addAction("&Dark palette");
    dark->setCheckable(true);
    dark->setChecked(dark_);
    connect(dark, &QAction::toggled, this, &MainWindow::setDark);
    auto* help = menuBar()->addMenu("&Help");
    help->addAction("&About Mambascope", this, [this] {
        QMessageBox::about(this, "About Mambascope",
                           QString("<b>Mambascope</b> %1<br>Instrumented Mamba / Mamba-2 scans and LongMamba "
                                   "(arXiv 2504.16053).<br><br>Qt %2 · QCustomPlot %3 · engine %4")
                               .arg(MAMBASCOPE_VERSION)
                               .arg(qVersion())
                               .arg(QCUSTOMPLOT_VERSION_STR)
                               .arg(MAMBASCOPE_VERSION));
    });
}

void MainWindow::browse(QLineEdit* edit, const QString& caption, const QString& filter, bool dir) {
    const QString p = dir ? QFileDialog::getExistingDirectory(this, caption)
                          : QFileDialog::getOpenFileName(this, caption, {}, filter);
    if (!p.isEmpty()) {
        edit->setText(p);
        addRecent(p);
    }
}

void MainWindow::addRecent(const QString& path) {
    if (!persist_) return;
    QSettings st;
    QStringList l = st.value("recent").toStringList();
    l.removeAll(path);
    l.prepend(path);
    while (l.size() > kMaxRecentFiles) l.removeLast();
    st.setValue("recent", l);
}

void MainWindow::showError(const QString& title, const QString& message) {
    reportError(title, message);
}

QStringList MainWindow::openFiles(const QString& session, const QString& trace, const QString& retrieval) {
    QStringList errors;
    auto attempt = [&](const QString& what, const QString& path, auto fn) {
        if (path.isEmpty()) return;
        try {
            fn(path);
        } catch (const Error& e) {
            errors << QString("Cannot open %1 %2: %3").arg(what, path, QString::fromStdString(describe(e)));
        } catch (const std::exception& e) {
            errors << QString("Cannot open %1 %2: %3").arg(what, path, QString::fromUtf8(e.what()));
        }
    };
    attempt("session", session, [this](const QString& p) { loadSession(p); });
    attempt("trace", trace, [this](const QString& p) { openTrace(p); });
    attempt("retrieval result", retrieval, [this](const QString& p) { loadRetrieval(p); });
    if (!errors.isEmpty()) {
        statusBar()->showMessage("Start-up failed: see the message above the views");
        bannerText_->setText(
            QString("<b>Start-up</b>: %1").arg(errors.join("\n").toHtmlEscaped().replace('\n', "<br>")));
        banner_->show();
    }
    return errors;
}

void MainWindow::reportError(const QString& title, const QString& message) {
    statusBar()->showMessage(title + ": " + message.section('\n', 0, 0), 10000);
    bannerText_->setText(
        QString("<b>%1</b>: %2").arg(title.toHtmlEscaped(), message.toHtmlEscaped()).replace('\n', "<br>"));
    banner_->show();
    if (QGuiApplication::platformName() == "offscreen") return;  // headless: no modal dialogs
    QMessageBox::critical(this, title, message);
}

void MainWindow::setIdle(bool idle) {
    run_->setEnabled(idle);
    cancel_->setEnabled(!idle);
    if (idle) progress_->setValue(progress_->value() >= 1000 ? 1000 : 0);
}

Session MainWindow::session() const {
    Session s;
    s.model = model_->text().trimmed().toStdString();
    s.text = textPath_->text().trimmed().toStdString();
    s.calibration = calibration_->text().trimmed().toStdString();
    s.methods.clear();
    if (mVanilla_->isChecked()) s.methods.push_back(Method::Vanilla);
    if (mLong_->isChecked()) s.methods.push_back(Method::LongMamba);
    if (mDeci_->isChecked()) s.methods.push_back(Method::DeciMamba);
    s.c = c_->value();
    s.b = b_->value();
    s.activate_above = activate_->value();
    for (const QString& part : deciLayers_->text().split(',', Qt::SkipEmptyParts)) {
        bool ok = false;
        const int l = part.trimmed().toInt(&ok);
        if (ok) s.deci.layers.push_back(l);
    }
    s.deci.L_base = deciBase_->value();
    s.deci.beta = deciBeta_->value();
    s.max_tokens = maxTokens_->value();
    s.input_text = paste_->toPlainText().toStdString();
    if (auto* ppl = dynamic_cast<PerplexityView*>(view("perplexity")))
        s.sweep = ppl->sweepPath().toStdString();
    s.device = Device(device_->currentData().toInt());
    s.selected_layer = selection_->layer();
    s.selected_channel = selection_->channel();
    s.selected_token = selection_->token();
    if (auto* v = dynamic_cast<ResultView*>(tabs_->currentWidget())) s.view = v->key().toStdString();
    if (auto* cm = dynamic_cast<ChannelMapView*>(view("channel_map")))
        s.channel_map_statistic = cm->statisticKey().toStdString();
    if (auto* tv = dynamic_cast<TokensView*>(view("tokens"))) s.tokens_colour = tv->modeKey().toStdString();
    s.haystack = haystack_;
    s.retrieval = retrievalView_->retrieval() ? retrievalSpec_ : std::string();
    try {
        s.detail_channels = parse_channels(channels_->text());
    } catch (const Error&) {  // job() reports it; a session keeps what parses
    }
    // What is shown: the trace, every view's zoom, hidden methods, the difference map.
    s.trace = tracePath_.toStdString();
    if (result_)
        for (auto* v : views_)
            for (const auto& [axis, range] : v->viewRanges())
                s.view_ranges[v->key().toStdString() + "." + axis] = range;
    for (Method m : selection_->hiddenMethods()) s.hidden_methods.push_back(method_name(m));
    if (auto* cm = dynamic_cast<ChannelMapView*>(view("channel_map")))
        s.difference_map = cm->differenceShown();
    return s;
}

void MainWindow::applyViewState(const Session& s) {
    for (auto* v : views_) {
        ResultView::Ranges r;
        const std::string prefix = v->key().toStdString() + ".";
        for (const auto& [key, range] : s.view_ranges)
            if (key.rfind(prefix, 0) == 0) r[key.substr(prefix.size())] = range;
        if (!r.empty()) v->setViewRanges(r);
    }
}

std::string MainWindow::detailModelDir() const {
    // The model the run was made with, when the run names it and it is here; else the run panel's model
    // (add_channel_detail checks that its shape is the run's).
    if (result_)
        if (auto it = result_->provenance.find("model_path"); it != result_->provenance.end())
            if (std::filesystem::is_directory(it->second)) return it->second;
    try {
        const Session s = session();
        return s.model.empty() ? std::string() : resolve_model_path(s).string();
    } catch (const std::exception&) {
        return {};
    }
}

void MainWindow::requestDetail() {
    const ChannelRef ref{selection_->layer(), selection_->channel()};
    if (!result_ || has_detail(*result_, ref)) {
        selection_->setDetailStatus({});
        return;
    }
    if (ref.layer < 0 || ref.layer >= result_->n_layer || ref.channel < 0 ||
        ref.channel >= result_->channels) {
        selection_->setDetailStatus(
            QString("layer %1, channel %2 is not in this run (%3 layers × %4 channels)")
                .arg(ref.layer)
                .arg(ref.channel)
                .arg(result_->n_layer)
                .arg(result_->channels));
        return;
    }
    if (detailWorker_->busy()) {  // one job at a time: stop it, and start this one when it ends
        if (!(detailWorker_->channel() == ref && detailBase_ == result_)) {
            detailPending_ = true;
            detailWorker_->cancel();
        }
        return;
    }
    const std::string dir = detailModelDir();
    if (dir.empty() || !std::filesystem::exists(dir)) {
        selection_->setDetailStatus(
            QString("Layer %1, channel %2 was not traced, and its detail needs the model (to run it again on "
                    "the trace's input): no model is available. Choose the model folder in the run panel.")
                .arg(ref.layer)
                .arg(ref.channel));
        return;
    }
    selection_->setDetailStatus(
        QString("Computing the detail of layer %1, channel %2: running %3 again on the "
                "run's %4 tokens…")
            .arg(ref.layer)
            .arg(ref.channel)
            .arg(QFileInfo(QString::fromStdString(dir)).fileName())
            .arg(qint64(result_->input.ids.size())),
        0.0);
    detailBase_ = result_;
    detailWorker_->start(result_, dir, ref);
}

void MainWindow::waitForDetail() {
    while (detailWorker_->busy()) {
        detailWorker_->wait();
        QCoreApplication::processEvents();
    }
}

void MainWindow::setHaystack(const SessionHaystack& h) {
    haystack_ = h;
    const bool on = h.length > 0;
    haystackInfo_->setVisible(on);
    haystackClear_->setVisible(on);
    if (on)
        haystackInfo_->setText(
            QString("<b>Input: passkey haystack</b> of %1 tokens, needle depth %2 (grid index "
                    "%3), sample %4, seed %5, filler %6, %7 template")
                .arg(h.length)
                .arg(h.depth, 0, 'g', 3)
                .arg(h.depth_index)
                .arg(h.sample)
                .arg(qulonglong(h.seed))
                .arg(QString::fromStdString(h.filler).toHtmlEscaped(),
                     QString::fromStdString(h.prompt).toHtmlEscaped()));
}

void MainWindow::loadRetrieval(const QString& path) {
    retrievalView_->loadRetrieval(path);  // Error: nothing changes
    retrievalSpec_ = path.toStdString();
    addRecent(path);
    statusBar()->showMessage(QString("retrieval result %1: %2 rows")
                                 .arg(QFileInfo(path).fileName())
                                 .arg(qint64(retrievalView_->retrieval()->rows.size())),
                             6000);
}

void MainWindow::loadSessionRetrieval(const Session& s) {
    if (s.retrieval.empty()) return;
    try {
        const QString p = QString::fromStdString(resolve_retrieval_path(s).string());
        retrievalView_->loadRetrieval(p);
        retrievalSpec_ = s.retrieval == "demo" ? s.retrieval : p.toStdString();  // relative → absolute
    } catch (const Error& e) {  // the rest of the session still applies
        showError("Cannot load the session's retrieval result", QString::fromStdString(describe(e)));
    } catch (const std::exception& e) {
        showError("Cannot load the session's retrieval result", QString::fromUtf8(e.what()));
    }
}

bool MainWindow::runHaystackCell(Method method, qint64 length, int depthIndex, double depth) {
    if (worker_->busy()) {
        statusBar()->showMessage("a run is in progress: cancel it or wait before opening another haystack",
                                 6000);
        return false;
    }
    const RetrievalPtr r = retrievalView_->retrieval();
    SessionHaystack h;
    h.length = length;
    h.depth = depth;
    h.depth_index = depthIndex;
    h.sample = 0;
    h.seed = r ? r->request.seed : 0;
    // Filler and template are the session's (a retrieval JSON records its filler only as a description).
    h.filler = haystack_.filler.empty() ? "demo" : haystack_.filler;
    h.prompt = haystack_.prompt.empty() ? "model" : haystack_.prompt;
    setHaystack(h);
    // The clicked method must be part of the run.
    auto& box = method == Method::Vanilla ? mVanilla_ : method == Method::LongMamba ? mLong_ : mDeci_;
    box->setChecked(true);
    statusBar()->showMessage(QString("running the haystack of %1 tokens, depth %2 (clicked in %3's map)")
                                 .arg(length)
                                 .arg(depth, 0, 'g', 3)
                                 .arg(method_label(method)),
                             8000);
    return startRun();
}

void MainWindow::applySession(const Session& s) {
    auto shown = [&](const std::string& v, std::filesystem::path (*resolve)(const Session&)) {
        if (v == "demo" || v.empty()) return QString::fromStdString(v);
        return QString::fromStdString(resolve(s).string());  // relative paths become absolute
    };
    model_->setText(shown(s.model, &resolve_model_path));
    textPath_->setText(shown(s.text, &resolve_text_path));
    calibration_->setText(shown(s.calibration, &resolve_calibration_path));
    paste_->setPlainText(QString::fromStdString(s.input_text));
    device_->setCurrentIndex(std::max(0, device_->findData(int(s.device))));
    auto has = [&](Method m) { return std::find(s.methods.begin(), s.methods.end(), m) != s.methods.end(); };
    mVanilla_->setChecked(has(Method::Vanilla));
    mLong_->setChecked(has(Method::LongMamba));
    mDeci_->setChecked(has(Method::DeciMamba));
    c_->setValue(s.c);
    b_->setValue(s.b);
    activate_->setValue(int(s.activate_above));
    QStringList layers;
    for (int l : s.deci.layers) layers << QString::number(l);
    deciLayers_->setText(layers.join(", "));
    deciBase_->setValue(int(s.deci.L_base));
    deciBeta_->setValue(s.deci.beta);
    maxTokens_->setValue(int(s.max_tokens));
    QStringList chans;
    for (const auto& c : s.detail_channels) chans << QString("%1:%2").arg(c.layer).arg(c.channel);
    channels_->setText(chans.join(", "));
    for (Method m : {Method::Vanilla, Method::LongMamba, Method::DeciMamba})
        selection_->setMethodShown(m, std::find(s.hidden_methods.begin(), s.hidden_methods.end(),
                                                method_name(m)) == s.hidden_methods.end());
    if (auto* cm = dynamic_cast<ChannelMapView*>(view("channel_map")))
        cm->setDifferenceShown(s.difference_map);
    selection_->setChannel(s.selected_layer, s.selected_channel);
    selection_->setToken(s.selected_token);
    if (auto* v = view(QString::fromStdString(s.view))) tabs_->setCurrentWidget(v);
    if (auto* cm = dynamic_cast<ChannelMapView*>(view("channel_map")))
        cm->setStatisticKey(QString::fromStdString(s.channel_map_statistic));
    if (auto* tv = dynamic_cast<TokensView*>(view("tokens")))
        tv->setModeKey(QString::fromStdString(s.tokens_colour));
    SessionHaystack h = s.haystack;
    if (!h.filler.empty() && h.filler != "demo") h.filler = resolve_filler_path(s).string();  // absolute
    setHaystack(h);
    loadSessionRetrieval(s);
    if (!s.sweep.empty())
        if (auto* ppl = dynamic_cast<PerplexityView*>(view("perplexity"))) {
            try {
                ppl->loadSweep(QString::fromStdString(resolve_sweep_path(s).string()));
            } catch (const Error& e) {  // the rest of the session still applies
                showError("Cannot load the session's sweep", QString::fromStdString(describe(e)));
            }
        }
}

AnalysisJob MainWindow::job() const {
    const Session s = session();
    AnalysisJob j;
    if (!s.model.empty()) j.model_dir = resolve_model_path(s).string();
    if (s.haystack.length > 0) {  // the haystack is the input; text and max tokens are unused
        j.haystack = s;
    } else
        j.text = paste_->toPlainText().toStdString();
    if (j.text.empty() && !j.isHaystack()) {
        if (s.text.empty()) throw Error("no input text", "open a text file, paste text, or type \"demo\"");
        j.text_path = resolve_text_path(s).string();
    }
    j.max_tokens = s.max_tokens;
    j.request = session_request(s);
    j.request.channels = parse_channels(channels_->text());  // Error on a malformed list
    if (j.request.methods.empty())
        throw Error("no method checked", "check vanilla, LongMamba and/or DeciMamba");
    return j;
}

bool MainWindow::startRun() {
    if (worker_->busy()) return false;
    AnalysisJob j;
    try {
        j = job();
    } catch (const Error& e) {
        showError("Cannot run", QString::fromStdString(describe(e)));
        emit runFinished(false);
        return false;
    }
    progress_->setValue(0);
    status_->setText("starting…");
    setIdle(false);
    worker_->start(j);
    return true;
}

void MainWindow::cancelRun() {
    if (!worker_->busy()) return;
    status_->setText("cancelling…");
    worker_->cancel();
}

void MainWindow::showResult(RunResultPtr result) {
    result_ = std::move(result);
    banner_->hide();  // a new result: earlier errors are history
    detailPending_ = false;
    if (detailWorker_->busy()) detailWorker_->cancel();
    selection_->setDetailStatus({});
    // Keep the selection if the run traced it; otherwise select the first traced channel (a global one when
    // there is one): opening a result never starts a computation by itself. Any channel selected afterwards
    // gets its detail (requestDetail); a session re-applies its own selection after this.
    if (result_ && !result_->methods.empty()) {
        const auto& traced = result_->methods.front().channels;
        const bool known = has_detail(*result_, {selection_->layer(), selection_->channel()});
        if (!known && !traced.empty()) {
            auto it =
                std::find_if(traced.begin(), traced.end(), [](const ChannelTrace& t) { return t.global; });
            const ChannelRef pick = it != traced.end() ? it->ref : traced.front().ref;
            selection_->setChannel(pick.layer, pick.channel);
        }
    }
    for (auto* v : views_) v->setResult(result_);
    if (result_)
        statusBar()->showMessage(QString("%1 tokens, %2 layers × %3 channels, %4 method(s)")
                                     .arg(qint64(result_->input.ids.size()))
                                     .arg(result_->n_layer)
                                     .arg(result_->channels)
                                     .arg(result_->methods.size()));
}

void MainWindow::saveSession(const QString& path) {
    save_session(session(), path.toStdString());
    addRecent(path);
}

void MainWindow::loadSession(const QString& path) {
    const Session s = load_session(path.toStdString());
    applySession(s);
    addRecent(path);
    if (!s.trace.empty()) {
        openTrace(QString::fromStdString(resolve_trace_path(s).string()));
        // The saved view: the selection may have been moved to a traced channel by showResult.
        selection_->setChannel(s.selected_layer, s.selected_channel);
        selection_->setToken(s.selected_token);
        if (auto* v = view(QString::fromStdString(s.view))) tabs_->setCurrentWidget(v);
        applyViewState(s);
    }
}

void MainWindow::openTrace(const QString& path) {
#ifdef MAMBASCOPE_GUI_HAVE_TRACE
    auto r = std::make_shared<RunResult>(read_trace(path.toStdString()));
    showResult(r);
    tracePath_ = QFileInfo(path).absoluteFilePath();
    addRecent(path);
#else
    throw Error("cannot open trace " + path.toStdString() + ": trace files are not supported by this build",
                "rebuild Mambascope with the engine's trace support (trace.h)");
#endif
}

void MainWindow::exportTrace(const QString& path) {
    if (!result_) throw Error("nothing to export", "run an analysis or open a trace first");
#ifdef MAMBASCOPE_GUI_HAVE_TRACE
    write_trace(path.toStdString(), *result_);
#else
    throw Error("trace export is not supported by this build", "rebuild with the engine's trace support");
#endif
}

void MainWindow::exportCurrentView(const QString& path) {
    if (!result_) throw Error("nothing to export", "run an analysis or open a trace first");
    export_widget(tabs_->currentWidget(), path, 2.0);
}

void MainWindow::exportComparison(const QString& path) {
    if (!result_) throw Error("nothing to export", "run an analysis or open a trace first");
    ComparisonWidget w(result_, selection_, nullptr, retrievalView_->retrieval());
    if (dark_) w.setPalette(palette());
    w.save(path, 2.0);
}

QImage MainWindow::comparisonImage(double scale) {
    ComparisonWidget w(result_, selection_, nullptr, retrievalView_->retrieval());
    if (dark_) w.setPalette(palette());
    return w.render(scale);
}

void MainWindow::setDark(bool dark) {
    dark_ = dark;
    QPalette p;
    if (dark) {
        p.setColor(QPalette::Window, QColor(45, 45, 48));
        p.setColor(QPalette::WindowText, QColor(230, 230, 230));
        p.setColor(QPalette::Base, QColor(30, 30, 32));
        p.setColor(QPalette::AlternateBase, QColor(45, 45, 48));
        p.setColor(QPalette::Text, QColor(230, 230, 230));
        p.setColor(QPalette::Button, QColor(60, 60, 64));
        p.setColor(QPalette::ButtonText, QColor(230, 230, 230));
        p.setColor(QPalette::Highlight, QColor(42, 130, 218));
        p.setColor(QPalette::HighlightedText, Qt::white);
        p.setColor(QPalette::ToolTipBase, QColor(60, 60, 64));
        p.setColor(QPalette::ToolTipText, QColor(230, 230, 230));
    } else {
        p = QApplication::style()->standardPalette();
    }
    QApplication::setPalette(p);
    for (auto* plot : findChildren<QCustomPlot*>()) style_plot(plot);
}

}  // namespace mambascope::gui

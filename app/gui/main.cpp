// mambascope: the desktop app. Also headless:
//   mambascope --session FILE [--screenshot OUT.png]   run the session's analysis (or open its trace)
//   mambascope --trace RUN.h5 [--screenshot OUT.png]    show a saved run without the model
//   mambascope --retrieval RES.json                      show a retrieval result (Retrieval view, composite)
// With --screenshot the comparison composite is saved at 2× and the app exits; without a display the
// offscreen platform is used.
#include <QApplication>
#include <QBuffer>
#include <QElapsedTimer>
#include <QMessageBox>
#include <QStatusBar>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "main_window.h"
#include "mambascope/atomic_file.h"
#include "mambascope/error.h"
#include "mambascope/forward.h"
#include "plot_tools.h"

using namespace mambascope;
using namespace mambascope::gui;

// Our flags, read before QApplication exists: QGuiApplication itself consumes "-session" (X11 session
// management), so QCommandLineParser would never see --session.
struct Flags {
    QString session, trace, screenshot, view, retrieval;
    double scale = 2.0;  // --scale: device pixels per widget pixel of the screenshot
    bool help = false, dark = false, benchRedraw = false;
};

// --bench-redraw: zoom steps and hover positions timed on the channel detail view (docs/benchmarks.md).
constexpr int kBenchZoomSteps = 24;
constexpr int kBenchHoverSteps = 60;
constexpr QSize kBenchWindowSize(1600, 1000);

// Times what a user waits for after a wheel step and a mouse move on the channel detail view of the shown
// result: thinning per pixel column of every series, the replot of both linked plots (zoom), and the
// crosshair's buffered-layer replot plus the repaint (hover). Prints median and worst, in milliseconds.
static int bench_redraw(MainWindow& w) {
    auto* detail = dynamic_cast<ChannelDetailView*>(w.view("channel_detail"));
    if (!detail || !w.result()) {
        std::fprintf(stderr, "mambascope: --bench-redraw needs --trace or --session\n");
        return 2;
    }
    w.tabs()->setCurrentWidget(detail);
    w.resize(kBenchWindowSize);
    w.show();
    w.waitForDetail();
    QCoreApplication::processEvents();
    if (!detail->plotsShown()) {
        std::fprintf(stderr, "mambascope: the selected channel has no detail to draw\n");
        return 1;
    }
    QCustomPlot* delta = detail->deltaPlot();
    QCustomPlot* decay = detail->decayPlot();
    delta->replot(QCustomPlot::rpImmediateRefresh);
    const QCPRange home = delta->xAxis->range();
    auto stats = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return std::pair{v[v.size() / 2], v.back()};
    };
    std::vector<double> zoom, hover;
    QElapsedTimer t;
    for (int i = 0; i < kBenchZoomSteps; ++i) {
        // Zoom in 1.5x per step around a moving centre, then back out (both ways refine the thinning).
        const int depth = i < kBenchZoomSteps / 2 ? i : kBenchZoomSteps - i;
        const double width = home.size() / std::pow(1.5, depth);
        const double centre = home.lower + home.size() * (0.3 + 0.4 * (i % 5) / 4.0);
        t.start();
        delta->xAxis->setRange(centre - width / 2, centre + width / 2);  // the decay plot follows (linked)
        delta->replot(QCustomPlot::rpImmediateRefresh);
        decay->replot(QCustomPlot::rpImmediateRefresh);
        zoom.push_back(t.nsecsElapsed() / 1e6);
    }
    reset_view(delta);
    delta->replot(QCustomPlot::rpImmediateRefresh);
    auto* cross = Crosshair::of(delta);
    const QRect r = delta->axisRect()->rect();
    for (int i = 0; i < kBenchHoverSteps; ++i) {
        const double x = r.left() + 1 + (r.width() - 2) * double(i) / (kBenchHoverSteps - 1);
        t.start();
        cross->moveTo(x, r.center().y());
        delta->repaint();
        hover.push_back(t.nsecsElapsed() / 1e6);
    }
    const auto [zm, zw] = stats(zoom);
    const auto [hm, hw] = stats(hover);
    qint64 points = 0;
    for (int i = 0; i < delta->graphCount(); ++i)
        if (auto* lod = lod_series(delta->graph(i))) points += lod->x().size();
    for (int i = 0; i < decay->graphCount(); ++i)
        if (auto* lod = lod_series(decay->graph(i))) points += lod->x().size();
    std::printf(
        "redraw on %lld tokens (%lld points in the detail plots, window %dx%d, %s):\n"
        "  zoom step (thin + replot both plots): median %.1f ms, worst %.1f ms over %d steps\n"
        "  hover (crosshair + repaint):          median %.1f ms, worst %.1f ms over %d moves\n",
        (long long)w.result()->input.ids.size(), (long long)points, w.width(), w.height(),
        QGuiApplication::platformName().toUtf8().constData(), zm, zw, kBenchZoomSteps, hm, hw,
        kBenchHoverSteps);
    return 0;
}

static bool parse_flags(int argc, char** argv, Flags& f) {
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i], v;
        if (a == "-h" || a == "--help") {
            f.help = true;
            continue;
        }
        if (a == "--dark") {
            f.dark = true;
            continue;
        }
        if (a == "--bench-redraw") {
            f.benchRedraw = true;
            continue;
        }
        if (auto eq = a.find('='); eq != std::string::npos)
            v = a.substr(eq + 1), a = a.substr(0, eq);
        else if (i + 1 < argc && (a == "--session" || a == "--trace" || a == "--screenshot" ||
                                  a == "--scale" || a == "--view" || a == "--retrieval"))
            v = argv[++i];
        if (a == "--session")
            f.session = QString::fromLocal8Bit(v.c_str());
        else if (a == "--trace")
            f.trace = QString::fromLocal8Bit(v.c_str());
        else if (a == "--screenshot")
            f.screenshot = QString::fromLocal8Bit(v.c_str());
        else if (a == "--scale")
            f.scale = std::clamp(std::atof(v.c_str()), 0.25, 4.0);
        else if (a == "--view")
            f.view = QString::fromLocal8Bit(v.c_str());
        else if (a == "--retrieval")
            f.retrieval = QString::fromLocal8Bit(v.c_str());
        else {
            std::fprintf(stderr, "mambascope: unknown argument '%s' (see --help)\n", argv[i]);
            return false;
        }
        if (v.empty()) {
            std::fprintf(stderr, "mambascope: %s needs a value\n", a.c_str());
            return false;
        }
    }
    return true;
}

int main(int argc, char** argv) {
    // OpenMP threads wait passively (no spinning against the GUI thread) unless the user set OMP_WAIT_POLICY:
    // the policy is read when the runtime starts, so this re-executes the program once (issue 16).
    mambascope::default_passive_omp_wait(argv);
    Flags fl;
    if (!parse_flags(argc, argv, fl)) return 2;
    if (fl.help) {
        std::printf(
            "usage: mambascope [--session FILE] [--trace RUN.h5] [--retrieval RES.json] [--screenshot "
            "OUT.png]\n"
            "  --session FILE       open a session (runs its analysis, or opens its trace)\n"
            "  --trace RUN.h5       open a saved trace without the model\n"
            "  --retrieval RES.json open a retrieval result (mambascope-cli retrieval --json): Retrieval "
            "view,\n"
            "                       and its heatmaps and accuracy-vs-length plot in the composite\n"
            "  --screenshot OUT.png save the comparison composite (2x) and exit (offscreen without a "
            "display)\n"
            "  --scale S            screenshot scale (default 2)\n"
            "  --view KEY           with --screenshot: save that view instead of the composite (PNG or "
            "PDF);\n"
            "                       keys: channel_map channel_detail perplexity receptive_fields tokens\n"
            "                       attention global_ratio retrieval\n"
            "  --dark               dark palette (this run only)\n"
            "  --bench-redraw       time zoom and hover redraws of the channel detail view and exit\n"
            "                       (docs/benchmarks.md)\n");
        return 0;
    }
    const bool wantsScreenshot = !fl.screenshot.isEmpty() || fl.benchRedraw;
    if (wantsScreenshot && !std::getenv("DISPLAY") && !std::getenv("WAYLAND_DISPLAY") &&
        !std::getenv("QT_QPA_PLATFORM"))
        setenv("QT_QPA_PLATFORM", "offscreen", 1);
    int qargc = 1;
    QApplication app(qargc, argv);
    QApplication::setOrganizationName("Mambascope");
    QApplication::setApplicationName("mambascope");
    QApplication::setApplicationVersion(MAMBASCOPE_VERSION);

    MainWindow w;
    if (wantsScreenshot) w.setPersistSettings(false);
    if (fl.dark) w.setDark(true);
    QObject::connect(w.worker(), &AnalysisWorker::failed, [](const QString& msg) {
        std::fprintf(stderr, "mambascope: run failed: %s\n", msg.toUtf8().constData());
    });
    // Start-up files: an error goes to stderr and, in the window, to its error banner.
    const QStringList startupErrors = w.openFiles(fl.session, fl.trace, fl.retrieval);
    for (const QString& e : startupErrors) std::fprintf(stderr, "mambascope: %s\n", e.toUtf8().constData());
    if (wantsScreenshot && !startupErrors.isEmpty()) return 1;
    if (fl.benchRedraw) return bench_redraw(w);
    const bool needRun = !fl.session.isEmpty() && !w.result() && startupErrors.isEmpty();
    if (wantsScreenshot) {
        if (needRun) {
            if (!w.startRun()) return 1;
            w.worker()->wait();
            QCoreApplication::processEvents();
        }
        w.waitForDetail();  // the selected channel's detail, when the run did not trace it
        // The Retrieval view needs only a retrieval result; everything else needs a run or a trace.
        const bool retrievalOnly = fl.view == "retrieval" && w.retrieval();
        if (!w.result() && !retrievalOnly) {
            std::fprintf(stderr, "mambascope: nothing to screenshot (no run and no trace)\n");
            return 1;
        }
        if (!fl.view.isEmpty()) {
            ResultView* v = w.view(fl.view);
            if (!v) {
                std::fprintf(stderr, "mambascope: unknown view '%s' (see --help for the keys)\n",
                             fl.view.toUtf8().constData());
                return 2;
            }
            w.tabs()->setCurrentWidget(v);
            w.resize(1500, 900);
            w.show();  // lay the window out at this size (offscreen without a display)
            QCoreApplication::processEvents();
            try {
                export_widget(v, fl.screenshot, fl.scale);
            } catch (const Error& e) {
                std::fprintf(stderr, "mambascope: %s\n", describe(e).c_str());
                return 1;
            }
            std::printf("wrote %s (view %s)\n", fl.screenshot.toUtf8().constData(),
                        fl.view.toUtf8().constData());
            return 0;
        }
        if (!fl.screenshot.endsWith(".png", Qt::CaseInsensitive)) {  // vector composite (.pdf, .svg)
            try {
                w.exportComparison(fl.screenshot);
            } catch (const Error& e) {
                std::fprintf(stderr, "mambascope: %s\n", describe(e).c_str());
                return 1;
            }
            std::printf("wrote %s\n", fl.screenshot.toUtf8().constData());
            return 0;
        }
        const QImage img = w.comparisonImage(fl.scale);
        QByteArray bytes;
        QBuffer buffer(&bytes);
        buffer.open(QIODevice::WriteOnly);
        try {
            if (!img.save(&buffer, "PNG")) throw Error("cannot encode the composite as PNG");
            write_file_atomic(fl.screenshot.toStdString(),
                              std::string_view(bytes.constData(), size_t(bytes.size())));
        } catch (const Error& e) {
            std::fprintf(stderr, "mambascope: cannot write %s: %s\n", fl.screenshot.toUtf8().constData(),
                         describe(e).c_str());
            return 1;
        }
        std::printf("wrote %s (%dx%d)\n", fl.screenshot.toUtf8().constData(), img.width(), img.height());
        return 0;
    }
    w.show();
    if (!startupErrors.isEmpty() && QGuiApplication::platformName() != "offscreen")
        QMessageBox::critical(&w, "Start-up", startupErrors.join("\n\n"));
    if (needRun) w.startRun();
    return app.exec();
}

// mambascope: the desktop app. Also headless:
//   mambascope --session FILE [--screenshot OUT.png]   run the session's analysis (or open its trace)
//   mambascope --trace RUN.h5 [--screenshot OUT.png]    show a saved run without the model
//   mambascope --retrieval RES.json                      show a retrieval result (Retrieval view, composite)
// With --screenshot the comparison composite is saved at 2× and the app exits; without a display the
// offscreen platform is used.
#include <QApplication>
#include <QStatusBar>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "main_window.h"
#include "mambascope/error.h"

using namespace mambascope;
using namespace mambascope::gui;

// Our flags, read before QApplication exists: QGuiApplication itself consumes "-session" (X11 session
// management), so QCommandLineParser would never see --session.
struct Flags {
    QString session, trace, screenshot, view, retrieval;
    double scale = 2.0;  // --scale: device pixels per widget pixel of the screenshot
    bool help = false, dark = false;
};

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
            "  --dark               dark palette (this run only)\n");
        return 0;
    }
    const bool wantsScreenshot = !fl.screenshot.isEmpty();
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
    try {
        if (!fl.session.isEmpty()) w.loadSession(fl.session);
        if (!fl.trace.isEmpty()) w.openTrace(fl.trace);
    } catch (const Error& e) {
        std::fprintf(stderr, "mambascope: %s\n", describe(e).c_str());
        if (wantsScreenshot) return 1;
    }
    if (!fl.retrieval.isEmpty()) {
        try {
            w.loadRetrieval(fl.retrieval);
        } catch (const Error& e) {
            std::fprintf(stderr, "mambascope: %s\n", describe(e).c_str());
            if (wantsScreenshot) return 1;
            w.statusBar()->showMessage("Cannot load retrieval result: " + QString::fromStdString(e.what()));
        }
    }
    const bool needRun = !fl.session.isEmpty() && !w.result();
    if (wantsScreenshot) {
        if (needRun) {
            if (!w.startRun()) return 1;
            w.worker()->wait();
            QCoreApplication::processEvents();
        }
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
        const QImage img = w.comparisonImage(fl.scale);
        if (!img.save(fl.screenshot)) {
            std::fprintf(stderr, "mambascope: cannot write %s\n", fl.screenshot.toUtf8().constData());
            return 1;
        }
        std::printf("wrote %s (%dx%d)\n", fl.screenshot.toUtf8().constData(), img.width(), img.height());
        return 0;
    }
    w.show();
    if (needRun) w.startRun();
    return app.exec();
}

// mambascope: the desktop app. Also headless:
//   mambascope --session FILE [--screenshot OUT.png]   run the session's analysis (or open its trace)
//   mambascope --trace RUN.h5 [--screenshot OUT.png]    show a saved run without the model
// With --screenshot the comparison composite is saved at 2× and the app exits; without a display the
// offscreen platform is used.
#include <QApplication>
#include <QCommandLineParser>
#include <cstdio>
#include <cstdlib>

#include "main_window.h"
#include "mambascope/error.h"

using namespace mambascope;
using namespace mambascope::gui;

int main(int argc, char** argv) {
    bool wantsScreenshot = false;
    for (int i = 1; i < argc; ++i)
        if (std::string(argv[i]) == "--screenshot") wantsScreenshot = true;
    if (wantsScreenshot && !std::getenv("DISPLAY") && !std::getenv("WAYLAND_DISPLAY") &&
        !std::getenv("QT_QPA_PLATFORM"))
        setenv("QT_QPA_PLATFORM", "offscreen", 1);
    QApplication app(argc, argv);
    QApplication::setOrganizationName("Mambascope");
    QApplication::setApplicationName("mambascope");
    QApplication::setApplicationVersion(MAMBASCOPE_VERSION);
    QCommandLineParser cl;
    cl.setApplicationDescription("Mambascope: instrumented Mamba / Mamba-2 runs and LongMamba.");
    cl.addHelpOption();
    cl.addVersionOption();
    QCommandLineOption session("session", "Open a session file (and run it, or open its trace).", "FILE");
    QCommandLineOption trace("trace", "Open a saved trace (HDF5) without the model.", "FILE");
    QCommandLineOption shot("screenshot", "Save the comparison composite (PNG, 2×) and exit.", "OUT");
    cl.addOptions({session, trace, shot});
    cl.process(app);

    MainWindow w;
    QObject::connect(w.worker(), &AnalysisWorker::failed, [](const QString& msg) {
        std::fprintf(stderr, "mambascope: run failed: %s\n", msg.toUtf8().constData());
    });
    try {
        if (cl.isSet(session)) w.loadSession(cl.value(session));
        if (cl.isSet(trace)) w.openTrace(cl.value(trace));
    } catch (const Error& e) {
        std::fprintf(stderr, "mambascope: %s\n", describe(e).c_str());
        if (cl.isSet(shot)) return 1;
    }
    const bool needRun = cl.isSet(session) && !w.result();
    if (cl.isSet(shot)) {
        if (needRun) {
            if (!w.startRun()) return 1;
            w.worker()->wait();
            QCoreApplication::processEvents();
        }
        if (!w.result()) {
            std::fprintf(stderr, "mambascope: nothing to screenshot (no run and no trace)\n");
            return 1;
        }
        const QImage img = w.comparisonImage(2.0);
        if (!img.save(cl.value(shot))) {
            std::fprintf(stderr, "mambascope: cannot write %s\n", cl.value(shot).toUtf8().constData());
            return 1;
        }
        std::printf("wrote %s (%dx%d)\n", cl.value(shot).toUtf8().constData(), img.width(), img.height());
        return 0;
    }
    w.show();
    if (needRun) w.startRun();
    return app.exec();
}

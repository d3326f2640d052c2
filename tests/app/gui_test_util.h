// gui_test_util.h: the one QApplication of the GUI test binary (offscreen) and an event-pumping wait, shared
// by every GUI test file (two QApplications in one process would abort).
#pragma once

#include <QApplication>
#include <QElapsedTimer>
#include <cstdlib>

namespace mambascope::test {

inline QApplication& app() {
    static int argc = 1;
    static char name[] = "mambascope_gui_tests";
    static char* argv[] = {name, nullptr};
    if (!std::getenv("QT_QPA_PLATFORM")) setenv("QT_QPA_PLATFORM", "offscreen", 1);
    setenv("MAMBASCOPE_RESOURCES", MAMBASCOPE_RESOURCES_DIR, 0);
    static QApplication* a = [] {
        auto* q = new QApplication(argc, argv);
        QApplication::setOrganizationName("MambascopeTests");
        return q;
    }();
    return *a;
}

// Pumps events until `done` or ~timeout.
template <class F>
bool wait_until(F done, int timeout_ms = 60000) {
    QElapsedTimer t;
    t.start();
    while (!done() && t.elapsed() < timeout_ms) QCoreApplication::processEvents(QEventLoop::AllEvents, 20);
    return done();
}

}  // namespace mambascope::test

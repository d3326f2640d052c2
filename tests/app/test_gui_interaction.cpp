// GUI tests of issue 14 (offscreen): level-of-detail thinning draws every extreme at its token, linked zoom,
// reset, integer ticks, legends outside the data that hide a method, crosshair and hover readouts, any
// channel's detail on demand, session round trip of trace + view state, vector PDF/SVG export without
// controls, errors in the window, dark-mode tokens.
#include <gtest/gtest.h>

#include <QAbstractButton>
#include <QDockWidget>
#include <QFile>
#include <QKeyEvent>
#include <QMenuBar>
#include <QMouseEvent>
#include <QStatusBar>
#include <QTemporaryDir>
#include <QTextBlock>
#include <QWheelEvent>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "fake_run.h"
#include "gui_test_util.h"
#include "main_window.h"
#include "mambascope/calibration.h"
#include "mambascope/channel_detail.h"
#include "mambascope/error.h"
#include "mambascope/model.h"
#include "mambascope/session.h"
#include "mambascope/trace.h"
#include "plot_tools.h"
#include "views.h"

using namespace mambascope;
using namespace mambascope::gui;
using mambascope::test::app;
using mambascope::test::make_fake_run;
using mambascope::test::wait_until;

namespace {

constexpr int64_t kLongTokens = 131072;
// Spikes of the long fake run: vanilla and LongMamba at different tokens (the issue saw them drawn shifted).
const std::vector<int64_t> kVanillaSpikes{1000, 50001, 99999, 131000};
const std::vector<int64_t> kLongMambaSpikes{1003, 77777};

// The fake run with channel (1, 3) traced over 131,072 tokens: small ripple, spikes at known tokens.
std::shared_ptr<RunResult> long_fake_run() {
    auto r = make_fake_run();
    r->input.ids.assign(size_t(kLongTokens), 'a');
    r->input.token_strings.assign(size_t(kLongTokens), "a");
    r->input.byte_offsets.clear();
    r->window_end = kLongTokens;
    for (auto& mr : r->methods) {
        mr.nll.clear();
        mr.nll_positions.clear();
        mr.global_keep_count.clear();
        auto& t = mr.channels[0];
        const auto& spikes = mr.method == Method::Vanilla ? kVanillaSpikes : kLongMambaSpikes;
        t.delta_raw.resize(size_t(kLongTokens));
        t.delta_used.resize(size_t(kLongTokens));
        t.critical.assign(size_t(kLongTokens), 0);
        t.cum_log_decay.resize(size_t(kLongTokens));
        for (int64_t i = 0; i < kLongTokens; ++i) {
            float d = float(0.05 + 0.01 * std::sin(0.37 * double(i)));
            for (int64_t s : spikes)
                if (i == s) d = 1.0f + 0.001f * float(s % 97);
            t.delta_raw[size_t(i)] = t.delta_used[size_t(i)] = d;
            t.cum_log_decay[size_t(i)] = -0.001f * float(i);
        }
    }
    return r;
}

// Every drawn point of `g` is a sample of (x, y) at its own x, and in every pixel column of the current
// range the largest and the smallest sample are drawn (so a spike stands at its true token).
void expect_lod_faithful(QCPGraph* g, const std::vector<float>& y, double x0) {
    const QCPRange r = g->keyAxis()->range();
    const int columns = g->keyAxis()->axisRect()->width();
    ASSERT_GT(columns, 10);
    std::map<int64_t, double> drawn;
    for (auto it = g->data()->constBegin(); it != g->data()->constEnd(); ++it) {
        const double idx = it->key - x0;
        ASSERT_EQ(idx, std::floor(idx)) << "drawn between samples at x = " << it->key;
        ASSERT_GE(idx, 0);
        ASSERT_LT(idx, double(y.size()));
        EXPECT_EQ(float(it->value), y[size_t(idx)]) << "drawn value is not the sample at x = " << it->key;
        drawn[int64_t(idx)] = it->value;
    }
    EXPECT_LE(g->data()->size(), 2 * columns + 4);  // thinned to the pixel columns
    const double w = r.size() / columns;
    for (int c = 0; c < columns; ++c) {
        const double lo = r.lower + c * w, hi = lo + w;
        int64_t a = std::max<int64_t>(0, int64_t(std::ceil(lo - x0))), b = int64_t(std::ceil(hi - x0));
        b = std::min<int64_t>(b, int64_t(y.size()));
        if (a >= b) continue;
        int64_t imax = a, imin = a;
        for (int64_t i = a; i < b; ++i) {
            if (y[size_t(i)] > y[size_t(imax)]) imax = i;
            if (y[size_t(i)] < y[size_t(imin)]) imin = i;
        }
        // Ties: some sample with the extreme value must be drawn in the column.
        auto has = [&](float v) {
            for (auto it = drawn.lower_bound(a); it != drawn.end() && it->first < b; ++it)
                if (float(it->second) == v) return true;
            return false;
        };
        EXPECT_TRUE(has(y[size_t(imax)])) << "column " << c << ": maximum at token " << imax << " not drawn";
        EXPECT_TRUE(has(y[size_t(imin)])) << "column " << c << ": minimum at token " << imin << " not drawn";
    }
}

void show(QWidget& w, QSize size = {1200, 800}) {
    w.resize(size);
    w.setAttribute(Qt::WA_DontShowOnScreen);
    w.show();
    QCoreApplication::processEvents();
}

void wheel(QCustomPlot* p, QPoint at, int steps) {
    QWheelEvent ev(QPointF(at), QPointF(p->mapToGlobal(at)), QPoint(), QPoint(0, 120 * steps), Qt::NoButton,
                   Qt::NoModifier, Qt::NoScrollPhase, false);
    QCoreApplication::sendEvent(p, &ev);
}

void click(QWidget* w, QPoint at) {
    QMouseEvent press(QEvent::MouseButtonPress, QPointF(at), QPointF(w->mapToGlobal(at)), Qt::LeftButton,
                      Qt::LeftButton, Qt::NoModifier);
    QCoreApplication::sendEvent(w, &press);
    QMouseEvent release(QEvent::MouseButtonRelease, QPointF(at), QPointF(w->mapToGlobal(at)), Qt::LeftButton,
                        Qt::NoButton, Qt::NoModifier);
    QCoreApplication::sendEvent(w, &release);
}

bool ticks_are_integers(QCPAxis* axis) {
    QVector<double> ticks, sub;
    QVector<QString> labels;
    axis->ticker()->generate(axis->range(), QLocale::c(), 'f', 0, ticks, &sub, &labels);
    if (ticks.isEmpty()) {
        std::fprintf(stderr, "no ticks in [%g, %g]\n", axis->range().lower, axis->range().upper);
        return false;
    }
    for (double t : ticks)
        if (t != std::round(t)) {
            std::fprintf(stderr, "non-integer tick %g in [%g, %g]\n", t, axis->range().lower,
                         axis->range().upper);
            return false;
        }
    return true;
}

std::string read_file(const QString& path) {
    std::ifstream in(path.toStdString(), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

size_t count(const std::string& hay, const std::string& needle) {
    size_t n = 0;
    for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) ++n;
    return n;
}

}  // namespace

// ---- Level of detail --------------------------------------------------------------------------------------

TEST(GuiLod, DrawnExtremaOfEveryPixelColumnAreTheDataAtTheirTokens) {
    app();
    Selection sel;
    ChannelDetailView v(&sel);
    show(v);
    auto run = long_fake_run();
    v.setResult(run);
    sel.setChannel(1, 3);
    QCoreApplication::processEvents();
    for (Method m : {Method::Vanilla, Method::LongMamba}) {
        QCPGraph* g = v.deltaGraph(m);
        ASSERT_NE(g, nullptr);
        const auto& y = run->find(m)->channels[0].delta_raw;
        // Whole input, then zoomed to a few hundred tokens, then to single tokens around each spike.
        for (QCPRange r : {QCPRange(0, kLongTokens - 1), QCPRange(40000, 60000), QCPRange(990, 1010)}) {
            v.deltaPlot()->xAxis->setRange(r);
            v.deltaPlot()->replot(QCustomPlot::rpImmediateRefresh);  // what the user sees: after a layout
            SCOPED_TRACE(testing::Message()
                         << method_label(m).toStdString() << " in [" << r.lower << ", " << r.upper << "]");
            expect_lod_faithful(g, y, 0.0);
        }
        // A spike is drawn at its own token at every zoom, never at a neighbour.
        const auto& spikes = m == Method::Vanilla ? kVanillaSpikes : kLongMambaSpikes;
        for (int64_t s : spikes) {
            v.deltaPlot()->xAxis->setRange(double(s) - 5000, double(s) + 5000);
            bool found = false;
            for (auto it = g->data()->constBegin(); it != g->data()->constEnd(); ++it)
                if (it->value > 0.5) {
                    EXPECT_EQ(it->key, double(s))
                        << method_label(m).toStdString() << " spike drawn off its token";
                    found = true;
                }
            EXPECT_TRUE(found) << "spike at " << s << " not drawn";
        }
    }
}

TEST(GuiLod, LodMinMaxKeepsEachColumnsExtremesInOrder) {
    QVector<double> x, y;
    for (int i = 0; i < 1000; ++i) x << i, y << (i == 123 ? 9.0 : i == 124 ? -9.0 : std::sin(i * 0.1));
    QVector<double> ox, oy;
    lod_min_max(x, y, 0, 999, 10, ox, oy);
    EXPECT_LE(ox.size(), 2 * 10 + 2);
    for (int i = 1; i < ox.size(); ++i) EXPECT_LT(ox[i - 1], ox[i]);  // x order kept
    EXPECT_TRUE(ox.contains(123.0));
    EXPECT_TRUE(ox.contains(124.0));
    // Few points in range: unchanged (with one neighbour either side).
    lod_min_max(x, y, 100.5, 110.5, 100, ox, oy);
    EXPECT_EQ(ox.front(), 100.0);
    EXPECT_EQ(ox.back(), 111.0);
    EXPECT_EQ(ox.size(), 12);
}

// ---- Zoom, pan, links
// --------------------------------------------------------------------------------------

TEST(GuiZoom, WheelZoomsXOnlyLinksStackedPlotsAndResetsOnDoubleClickOrHome) {
    app();
    Selection sel;
    ChannelDetailView v(&sel);
    show(v);
    v.setResult(make_fake_run());
    sel.setChannel(1, 3);
    QCustomPlot* delta = v.deltaPlot();
    QCustomPlot* decay = v.decayPlot();
    delta->replot(QCustomPlot::rpImmediateRefresh);
    const QCPRange x0 = delta->xAxis->range(), y0 = delta->yAxis->range();
    wheel(delta, delta->axisRect()->rect().center(), 2);
    const QCPRange x1 = delta->xAxis->range();
    EXPECT_LT(x1.size(), x0.size() * 0.9);  // zoomed in along x
    EXPECT_EQ(delta->yAxis->range(), y0);   // but not along y
    EXPECT_EQ(decay->xAxis->range(), x1);   // the stacked plot follows
    // Double-click resets both.
    QMouseEvent dbl(QEvent::MouseButtonDblClick, QPointF(delta->axisRect()->rect().center()),
                    QPointF(delta->mapToGlobal(delta->axisRect()->rect().center())), Qt::LeftButton,
                    Qt::LeftButton, Qt::NoModifier);
    QCoreApplication::sendEvent(delta, &dbl);
    EXPECT_EQ(delta->xAxis->range(), x0);
    EXPECT_EQ(decay->xAxis->range(), x0);
    // Home resets too.
    wheel(decay, decay->axisRect()->rect().center(), 3);
    EXPECT_NE(delta->xAxis->range(), x0);
    QKeyEvent home(QEvent::KeyPress, Qt::Key_Home, Qt::NoModifier);
    QCoreApplication::sendEvent(decay, &home);
    EXPECT_EQ(delta->xAxis->range(), x0);
}

TEST(GuiZoom, ChannelMapsZoomTogetherWithIntegerLayerAndChannelTicks) {
    app();
    Selection sel;
    ChannelMapView v(&sel);
    show(v);
    v.setResult(make_fake_run());
    v.setDifferenceShown(true);
    v.waitForBuild();
    ASSERT_EQ(v.plotCount(), 3);  // vanilla, LongMamba, difference
    QCustomPlot* a = v.plot(0);
    a->replot(QCustomPlot::rpImmediateRefresh);
    wheel(a, a->axisRect()->rect().center(), 3);
    const QCPRange x = a->xAxis->range(), y = a->yAxis->range();
    EXPECT_LT(x.size(), double(test::kFakeChannels));
    EXPECT_LT(y.size(), double(test::kFakeLayers));  // maps zoom in both axes
    for (int i = 1; i < v.plotCount(); ++i) {
        EXPECT_EQ(v.plot(i)->xAxis->range(), x) << "map " << i;
        EXPECT_EQ(v.plot(i)->yAxis->range(), y) << "map " << i;
    }
    for (int i = 0; i < v.plotCount(); ++i) {
        v.plot(i)->replot(QCustomPlot::rpImmediateRefresh);
        EXPECT_TRUE(ticks_are_integers(v.plot(i)->xAxis)) << "channel ticks of map " << i;
        EXPECT_TRUE(ticks_are_integers(v.plot(i)->yAxis)) << "layer ticks of map " << i;
    }
    // The difference map is LongMamba − vanilla of the statistic.
    ASSERT_NE(v.differenceMap(), nullptr);
    EXPECT_DOUBLE_EQ(v.differenceMap()->data()->cell(5, 2), test::fake_log_decay(Method::LongMamba, 2, 5) -
                                                                test::fake_log_decay(Method::Vanilla, 2, 5));
}

// ---- Legends, hiding a method, crosshair ------------------------------------------------------------------

TEST(GuiLegend, LegendSitsOutsideTheDataAndAClickHidesTheMethodEverywhere) {
    app();
    Selection sel;
    ChannelDetailView detail(&sel);
    PerplexityView ppl(&sel);
    show(detail);
    show(ppl);
    auto run = make_fake_run();
    detail.setResult(run);
    ppl.setResult(run);
    sel.setChannel(1, 3);
    for (QCustomPlot* p : {detail.deltaPlot(), detail.decayPlot(), ppl.plot()}) {
        p->replot(QCustomPlot::rpImmediateRefresh);
        EXPECT_FALSE(p->legend->outerRect().intersects(p->axisRect()->rect())) << "legend covers the data";
    }
    QCustomPlot* delta = detail.deltaPlot();
    QCPGraph* van = detail.deltaGraph(Method::Vanilla);
    auto* item = delta->legend->itemWithPlottable(van);
    ASSERT_NE(item, nullptr);
    click(delta, item->rect().center());
    EXPECT_FALSE(sel.methodShown(Method::Vanilla));
    EXPECT_FALSE(detail.deltaGraph(Method::Vanilla)->visible());
    EXPECT_FALSE(detail.decayGraph(Method::Vanilla)->visible());
    EXPECT_FALSE(ppl.nllGraph(Method::Vanilla)->visible());  // hidden in every view
    EXPECT_TRUE(detail.deltaGraph(Method::LongMamba)->visible());
    click(delta, delta->legend->itemWithPlottable(van)->rect().center());
    EXPECT_TRUE(ppl.nllGraph(Method::Vanilla)->visible());
}

TEST(GuiCrosshair, LinePlotsReadOutTheValuesUnderTheMouse) {
    app();
    Selection sel;
    ChannelDetailView detail(&sel);
    show(detail);
    auto run = make_fake_run();
    detail.setResult(run);
    sel.setChannel(1, 3);
    QCustomPlot* decay = detail.decayPlot();
    decay->replot(QCustomPlot::rpImmediateRefresh);
    Crosshair* ch = Crosshair::of(decay);
    ASSERT_NE(ch, nullptr);
    const double px = decay->xAxis->coordToPixel(150);
    ch->moveTo(px, decay->axisRect()->rect().center().y());
    EXPECT_TRUE(ch->shown());
    const int token = int(std::lround(decay->xAxis->pixelToCoord(px)));
    const float v = run->find(Method::Vanilla)->channels[0].cum_log_decay[size_t(token)];
    EXPECT_TRUE(ch->text().contains(QString("vanilla: %1").arg(double(v), 0, 'g', 5)))
        << ch->text().toStdString();
    ch->moveTo(-5, -5);  // outside: hidden
    EXPECT_FALSE(ch->shown());
    // Every line plot has one.
    PerplexityView ppl(&sel);
    GlobalRatioView ratio(&sel);
    for (QCustomPlot* p : {detail.deltaPlot(), ppl.plot(), ratio.layerPlot(), ratio.overallPlot()})
        EXPECT_NE(Crosshair::of(p), nullptr);
}

TEST(GuiHover, AttentionAndTokensViewsReadOutTheCellAndTheToken) {
    app();
    Selection sel;
    AttentionView att(&sel);
    TokensView tokens(&sel);
    show(att);
    auto run = make_fake_run();
    att.setResult(run);
    tokens.setResult(run);
    sel.setChannel(1, 3);
    att.waitForBuild();
    ASSERT_EQ(att.mapCount(), 2);
    // One colour scale for both maps, drawn as a colour bar.
    ASSERT_NE(att.colorScale(), nullptr);
    EXPECT_EQ(att.colorMap(0)->dataRange(), att.colorMap(1)->dataRange());
    QCustomPlot* p = att.plot(0);
    p->replot(QCustomPlot::rpImmediateRefresh);
    const int begin = int(test::kFakeTokens - 20);
    const QPoint at(int(p->xAxis->coordToPixel(begin + 3)), int(p->yAxis->coordToPixel(begin + 7)));
    const QString text = att.readoutAt(0, at);
    EXPECT_TRUE(text.contains(QString("i = %1, j = %2").arg(begin + 7).arg(begin + 3))) << text.toStdString();
    EXPECT_TRUE(text.contains(QString("α = %1").arg(std::exp(-0.2 * 4), 0, 'g', 4))) << text.toStdString();
    const QString tok = tokens.hoverText(37);
    EXPECT_TRUE(tok.contains("token 37")) << tok.toStdString();
    EXPECT_TRUE(tok.contains(
        QString("LongMamba NLL %1").arg(double(test::fake_nll(Method::LongMamba, 36)), 0, 'f', 3)))
        << tok.toStdString();
}

// ---- Any channel on demand --------------------------------------------------------------------------------

TEST(GuiAnyChannel, AnUntracedChannelGetsTheDetailARunWouldHaveRecorded) {
    app();
    const std::filesystem::path model_dir =
        std::filesystem::path(MAMBASCOPE_RESOURCES_DIR) / "models/demo-mamba1";
    const std::filesystem::path cal =
        std::filesystem::path(MAMBASCOPE_RESOURCES_DIR) / "calibration/demo-mamba1.h5";
    auto model = load_model(model_dir);
    std::ifstream in(std::filesystem::path(MAMBASCOPE_RESOURCES_DIR) / "text/demo.txt", std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), {});
    const RunInput input = make_run_input(*model, text, "demo.txt", 1200);
    AnalysisRequest req;
    req.methods = {Method::Vanilla, Method::LongMamba, Method::DeciMamba};  // every method's parameters
    req.calibration_path = cal;
    req.deci.L_base = 300;  // not the default: the detail run must take it from the run's record
    req.attention_tokens = 64;
    req.channels = {{2, 5}};
    auto run = std::make_shared<RunResult>(run_analysis(*model, input, req));
    run->provenance["model_path"] = model_dir.string();
    // What a run asked for channel (3, 40) up front records: the reference.
    req.channels = {{3, 40}};
    const RunResult want = run_analysis(*model, input, req);

    MainWindow w;
    w.showResult(run);
    w.tabs()->setCurrentWidget(w.view("channel_detail"));
    auto* detail = dynamic_cast<ChannelDetailView*>(w.view("channel_detail"));
    auto* att = dynamic_cast<AttentionView*>(w.view("attention"));
    w.selection()->setChannel(3, 40);
    EXPECT_TRUE(w.detailWorker()->busy());
    EXPECT_FALSE(detail->plotsShown());  // no stale plots while computing
    EXPECT_TRUE(detail->message().contains("Computing")) << detail->message().toStdString();
    w.waitForDetail();
    ASSERT_TRUE(detail->plotsShown()) << detail->message().toStdString();
    for (Method m : req.methods) {
        const ChannelTrace& ref = want.find(m)->channels.at(0);
        LodSeries* lod = lod_series(detail->deltaGraph(m));
        ASSERT_NE(lod, nullptr);
        ASSERT_EQ(lod->y().size(), qsizetype(ref.delta_raw.size()));
        for (size_t i = 0; i < ref.delta_raw.size(); i += 7)
            EXPECT_EQ(float(lod->y()[qsizetype(i)]), ref.delta_raw[i]);
        LodSeries* dec = lod_series(detail->decayGraph(m));
        ASSERT_NE(dec, nullptr);
        EXPECT_EQ(float(dec->y().back()), ref.cum_log_decay.back());
    }
    // Critical tokens and hidden attention of the new channel too.
    const auto& lmRef = want.find(Method::LongMamba)->channels.at(0);
    ASSERT_NE(detail->criticalGraph(), nullptr);
    EXPECT_EQ(lod_series(detail->criticalGraph())->x().size(),
              qsizetype(std::count(lmRef.critical.begin(), lmRef.critical.end(), 1)));
    att->waitForBuild();
    ASSERT_EQ(att->mapCount(), 3);
    const AttentionMap& am = want.find(Method::Vanilla)->attention.at(0);
    EXPECT_FLOAT_EQ(float(att->colorMap(0)->data()->cell(3, 10)), am.alpha.at2(10, 3));
    // The engine merge keeps the run's own channel and adds the new one.
    EXPECT_EQ(w.result()->find(Method::Vanilla)->channels.size(), 2u);
}

TEST(GuiAnyChannel, ANewSelectionCancelsTheJobInFlightAndComputesTheNewChannel) {
    app();
    MainWindow w;
    auto run = make_fake_run();
    run->provenance["model_path"] = std::string(MAMBASCOPE_RESOURCES_DIR) + "/models/demo-mamba1";
    std::atomic<bool> release{false};
    std::atomic<int> cancelled{0};
    // A stand-in for add_channel_detail: runs until released or cancelled, then adds a copy of a traced
    // channel.
    w.detailWorker()->setDetailFunction([&](const Model&, const RunResult& r,
                                            const std::vector<ChannelRef>& refs, const ProgressFn& progress) {
        try {
            while (!release) {
                report_progress(progress, 0.5, "tracing");
                std::this_thread::sleep_for(std::chrono::milliseconds(2));
            }
            report_progress(progress, 1.0,
                            "done");  // as run_analysis ends: a cancel is seen here at the latest
        } catch (const Cancelled&) {
            ++cancelled;
            throw;
        }
        RunResult out = r;
        for (auto& m : out.methods) {
            ChannelTrace t = m.channels.front();
            t.ref = refs.at(0);
            m.channels.push_back(t);
        }
        return out;
    });
    w.showResult(run);
    auto* detail = dynamic_cast<ChannelDetailView*>(w.view("channel_detail"));
    w.selection()->setChannel(0, 7);
    ASSERT_TRUE(w.detailWorker()->busy());
    EXPECT_FALSE(detail->plotsShown());
    w.selection()->setChannel(3, 9);  // while (0, 7) is in flight
    release = true;
    w.waitForDetail();
    EXPECT_EQ(cancelled.load(), 1);
    const auto& traced = w.result()->find(Method::LongMamba)->channels;
    auto has = [&](ChannelRef ref) {
        return std::any_of(traced.begin(), traced.end(), [&](const ChannelTrace& t) { return t.ref == ref; });
    };
    EXPECT_TRUE(has({3, 9}));
    EXPECT_FALSE(has({0, 7}));
    EXPECT_TRUE(detail->plotsShown());
    EXPECT_NE(detail->deltaGraph(Method::LongMamba), nullptr);
    EXPECT_TRUE(w.selection()->detailNote().isEmpty());
}

TEST(GuiAnyChannel, WithoutAModelTheViewSaysSoInsteadOfStalePlots) {
    app();
    MainWindow w;
    Session s;
    s.model = "";  // no model in the run panel, and the fake run names none
    w.applySession(s);
    w.showResult(make_fake_run());
    auto* detail = dynamic_cast<ChannelDetailView*>(w.view("channel_detail"));
    w.selection()->setChannel(1, 3);
    EXPECT_TRUE(detail->plotsShown());
    w.selection()->setChannel(0, 7);  // not traced
    EXPECT_FALSE(w.detailWorker()->busy());
    EXPECT_FALSE(detail->plotsShown());
    EXPECT_TRUE(detail->message().contains("no model is available")) << detail->message().toStdString();
    EXPECT_EQ(detail->deltaGraph(Method::LongMamba), nullptr);
}

TEST(GuiAnyChannel, RunPanelChannelsAreTracedUpFrontAndSaved) {
    app();
    MainWindow w;
    Session s;
    s.detail_channels = {{1, 7}, {3, 2}};
    w.applySession(s);
    const AnalysisJob j = w.job();
    ASSERT_EQ(j.request.channels.size(), 2u);
    EXPECT_EQ(j.request.channels[1], (ChannelRef{3, 2}));
    EXPECT_EQ(w.session().detail_channels, s.detail_channels);
    // The CLI reads the same key.
    const Session back = session_from_json(session_to_json(w.session()), "test");
    EXPECT_EQ(session_request(back).channels, s.detail_channels);
}

// ---- Sessions ---------------------------------------------------------------------------------------------

TEST(GuiSession, TraceAndViewStateRoundTripExactly) {
    app();
    QTemporaryDir dir;
    const QString h5 = dir.filePath("run.h5"), json = dir.filePath("s.json");
    write_trace(h5.toStdString(), *make_fake_run());
    {
        MainWindow a;
        show(a);
        a.openTrace(h5);
        a.selection()->setChannel(2, 4);
        a.selection()->setToken(42);
        a.selection()->setMethodShown(Method::Vanilla, false);
        auto* map = dynamic_cast<ChannelMapView*>(a.view("channel_map"));
        map->setStatisticKey("critical_count");
        map->setDifferenceShown(true);
        map->waitForBuild();
        map->plot(0)->xAxis->setRange(2.5, 9.5);
        auto* detail = dynamic_cast<ChannelDetailView*>(a.view("channel_detail"));
        detail->deltaPlot()->xAxis->setRange(50, 120);
        a.tabs()->setCurrentWidget(detail);
        a.saveSession(json);
    }
    MainWindow b;
    show(b);
    b.loadSession(json);
    EXPECT_FALSE(b.running());  // a session with a trace opens it, it does not run
    ASSERT_NE(b.result(), nullptr);
    EXPECT_EQ(QFileInfo(b.tracePath()), QFileInfo(h5));
    EXPECT_EQ(b.selection()->layer(), 2);
    EXPECT_EQ(b.selection()->channel(), 4);
    EXPECT_EQ(b.selection()->token(), 42);
    EXPECT_FALSE(b.selection()->methodShown(Method::Vanilla));
    EXPECT_EQ(b.tabs()->currentWidget(), b.view("channel_detail"));
    auto* map = dynamic_cast<ChannelMapView*>(b.view("channel_map"));
    EXPECT_EQ(map->statisticKey(), "critical_count");
    EXPECT_TRUE(map->differenceShown());
    map->waitForBuild();
    EXPECT_EQ(map->plot(0)->xAxis->range(), QCPRange(2.5, 9.5));
    EXPECT_EQ(map->plot(1)->xAxis->range(), QCPRange(2.5, 9.5));  // linked
    auto* detail = dynamic_cast<ChannelDetailView*>(b.view("channel_detail"));
    EXPECT_EQ(detail->deltaPlot()->xAxis->range(), QCPRange(50, 120));
    EXPECT_EQ(detail->decayPlot()->xAxis->range(), QCPRange(50, 120));
    EXPECT_FALSE(detail->deltaGraph(Method::Vanilla)->visible());
}

// ---- Export -----------------------------------------------------------------------------------------------

TEST(GuiExport, PdfAndSvgAreVectorsWithTextAndNoControls) {
    app();
    QTemporaryDir dir;
    MainWindow w;
    show(w);
    w.showResult(make_fake_run());
    w.selection()->setChannel(1, 3);
    w.tabs()->setCurrentWidget(w.view("channel_detail"));
    const QString pdf = dir.filePath("detail.pdf");
    w.exportCurrentView(pdf);
    const std::string bytes = read_file(pdf);
    ASSERT_EQ(bytes.substr(0, 4), "%PDF");
    EXPECT_GT(count(bytes, "/Font"), 0u) << "no text objects";
    EXPECT_EQ(count(bytes, "/Subtype /Image"), 0u) << "a line-plot view must not be an image";
    // SVG: the axis labels and the caption stamp are text; the view's controls are not there.
    w.tabs()->setCurrentWidget(w.view("channel_map"));
    const QString svg = dir.filePath("map.svg");
    w.exportCurrentView(svg);
    const std::string s = read_file(svg);
    EXPECT_NE(s.find("<svg"), std::string::npos);
    EXPECT_NE(s.find(">channel<"), std::string::npos) << "axis label not text";
    EXPECT_NE(s.find("fake"), std::string::npos) << "caption stamp (model) missing";
    EXPECT_EQ(s.find("Statistic:"), std::string::npos) << "a control's label was exported";
    EXPECT_EQ(s.find("LongMamba − vanilla"), std::string::npos) << "a check box was exported";
    // The composite as a vector PDF: text, and images only for its heatmaps.
    const QString comp = dir.filePath("comparison.pdf");
    w.exportComparison(comp);
    const std::string c = read_file(comp);
    EXPECT_GT(count(c, "/Font"), 0u);
    EXPECT_LE(count(c, "/Subtype /Image"), 4u);
}

TEST(GuiComposite, TitleNamesTheModelAndTheFigureHasNoControlsOrEmptySweep) {
    app();
    Selection sel;
    ComparisonWidget w(make_fake_run(), &sel);
    w.render(1.0);
    EXPECT_TRUE(w.caption().contains("fake"));
    bool titled = false;
    for (auto* l : w.findChildren<QLabel*>())
        if (l->text().contains("Mambascope") && l->text().contains("fake")) titled = true;
    EXPECT_TRUE(titled);
    for (auto* c : w.findChildren<QComboBox*>()) EXPECT_TRUE(c->isHidden());
    for (auto* b : w.findChildren<QAbstractButton*>()) EXPECT_TRUE(b->isHidden()) << b->text().toStdString();
    auto* ppl = w.findChild<PerplexityView*>();
    ASSERT_NE(ppl, nullptr);
    EXPECT_TRUE(ppl->sweepPlot()->isHidden());
    // Channel tick labels of each map keep apart.
    for (auto* v : w.findChildren<ChannelMapView*>())
        for (int i = 0; i < v->plotCount(); ++i) {
            QCPAxis* ax = v->plot(i)->xAxis;
            QVector<double> ticks, sub;
            QVector<QString> labels;
            ax->ticker()->generate(ax->range(), QLocale::c(), 'f', 0, ticks, &sub, &labels);
            for (int k = 1; k < ticks.size(); ++k)
                EXPECT_GE(ax->coordToPixel(ticks[k]) - ax->coordToPixel(ticks[k - 1]), 30.0);
        }
}

// ---- Errors, theme, window
// ---------------------------------------------------------------------------------

TEST(GuiErrors, StartUpFailuresShowInTheWindowNotOnlyOnStderr) {
    app();
    QTemporaryDir dir;
    QFile bad(dir.filePath("bad.json"));
    ASSERT_TRUE(bad.open(QIODevice::WriteOnly));
    bad.write("{ not json");
    bad.close();
    MainWindow w;
    const QStringList errors = w.openFiles(dir.filePath("bad.json"), dir.filePath("missing.h5"), {});
    EXPECT_EQ(errors.size(), 2);
    EXPECT_TRUE(w.bannerShown());
    EXPECT_TRUE(w.bannerText().contains("missing.h5")) << w.bannerText().toStdString();
    EXPECT_TRUE(w.bannerText().contains("bad.json"));
    EXPECT_FALSE(w.statusBar()->currentMessage().contains("No run yet"));
    w.showResult(make_fake_run());  // a result clears it
    EXPECT_FALSE(w.bannerShown());
}

namespace {
double luminance(QColor c) {
    auto lin = [](double v) { return v <= 0.03928 ? v / 12.92 : std::pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * lin(c.redF()) + 0.7152 * lin(c.greenF()) + 0.0722 * lin(c.blueF());
}
double contrast(QColor a, QColor b) {
    const double x = luminance(a) + 0.05, y = luminance(b) + 0.05;
    return std::max(x, y) / std::min(x, y);
}
}  // namespace

TEST(GuiTheme, CriticalTokensReadableInTheDarkPalette) {
    app();
    MainWindow w;
    w.setDark(true);
    w.showResult(make_fake_run());
    w.selection()->setChannel(1, 3);
    auto* tokens = dynamic_cast<TokensView*>(w.view("tokens"));
    tokens->setMode(TokensView::Critical);
    ASSERT_GT(tokens->highlightedCount(), 0);
    int checked = 0;
    // The format of each highlighted token: text against its background at least 4.5:1 (WCAG AA).
    QTextCursor cur(tokens->text()->document());
    for (int pos = 1; pos < std::min(400, tokens->text()->document()->characterCount()); ++pos) {
        cur.setPosition(pos);
        const QTextCharFormat f = cur.charFormat();
        if (!f.hasProperty(QTextFormat::BackgroundBrush)) continue;
        const QColor fg = f.hasProperty(QTextFormat::ForegroundBrush)
                              ? f.foreground().color()
                              : QApplication::palette().color(QPalette::Text);
        EXPECT_GE(contrast(fg, f.background().color()), 4.5) << "at " << pos;
        ++checked;
    }
    EXPECT_GT(checked, 0);
    w.setDark(false);
}

TEST(GuiWindow, ViewMenuRestoresAClosedRunPanel) {
    app();
    MainWindow w;
    show(w);
    auto* dock = w.findChild<QDockWidget*>("runDock");
    ASSERT_NE(dock, nullptr);
    dock->close();
    EXPECT_FALSE(dock->isVisible());
    QAction* restore = nullptr;
    for (QAction* menu : w.menuBar()->actions())
        if (menu->text() == "&View")
            for (QAction* a : menu->menu()->actions())
                if (a->text() == "&Run panel") restore = a;
    ASSERT_NE(restore, nullptr);
    restore->trigger();
    EXPECT_TRUE(dock->isVisible());
}

TEST(GuiMinor, DeciMambaPerplexityHeaderSaysOverHowManyPositions) {
    app();
    Selection sel;
    PerplexityView v(&sel);
    auto run = make_fake_run();
    auto& lm = run->methods[1];
    lm.method = Method::DeciMamba;
    lm.nll.resize(100);
    lm.nll_positions.resize(100);
    v.setResult(run);
    EXPECT_TRUE(v.findChild<QLabel*>()->text().contains(
        QString("over 100 of %1 positions").arg(test::kFakeTokens - 1)))
        << v.findChild<QLabel*>()->text().toStdString();
}

TEST(GuiMinor, ReceptiveFieldMapUsesALogColourScale) {
    app();
    Selection sel;
    ChannelMapView v(&sel);
    v.setResult(make_fake_run());
    v.setStatistic(ChannelMapView::ReceptiveField);
    v.waitForBuild();
    ASSERT_GE(v.mapCount(), 1);
    EXPECT_EQ(v.colorMap(0)->dataScaleType(), QCPAxis::stLogarithmic);
    v.setStatistic(ChannelMapView::LogDecay);
    v.waitForBuild();
    EXPECT_EQ(v.colorMap(0)->dataScaleType(), QCPAxis::stLinear);
}

TEST(GuiSession, MalformedViewStateAndChannelsAreErrorsNamingTheKey) {
    auto fails_with = [](const char* json, const char* key) {
        try {
            session_from_json(json, "s.json");
        } catch (const Error& e) {
            return std::string(e.what()).find(key) != std::string::npos;
        }
        return false;
    };
    EXPECT_TRUE(
        fails_with(R"({"view_state": {"ranges": {"channel_detail.x": [5, 1]}}})", "channel_detail.x"));
    EXPECT_TRUE(fails_with(R"({"view_state": {"ranges": {"channel_map.y": "wide"}}})", "channel_map.y"));
    EXPECT_TRUE(fails_with(R"({"channels": [[1]]})", "channels[0]"));
    EXPECT_TRUE(fails_with(R"({"channels": [[1, -2]]})", "channels[0]"));
    EXPECT_TRUE(fails_with(R"({"view_state": {"hidden_methods": ["mamba3"]}})", "mamba3"));
    const Session ok = session_from_json(
        R"({"channels": [[3, 0]], "view_state": {"ranges": {"perplexity.x": [10, 20]}, "hidden_methods": ["vanilla"]}})",
        "s.json");
    EXPECT_EQ(ok.detail_channels, (std::vector<ChannelRef>{{3, 0}}));
    EXPECT_EQ(ok.view_ranges.at("perplexity.x")[1], 20.0);
    EXPECT_EQ(ok.hidden_methods, std::vector<std::string>{"vanilla"});
}

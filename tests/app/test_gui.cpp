// GUI tests (offscreen): views draw the engine's numbers, selection links views, the worker cancels, exports
// write valid files, sessions round-trip. Driven by a fabricated RunResult (fake_run.h) and, when the engine
// has run_analysis, by a real run of the demo model.
#include <gtest/gtest.h>

#include <QApplication>
#include <QFile>
#include <QImage>
#include <QMouseEvent>
#include <QSemaphore>
#include <QTemporaryDir>
#include <QThreadPool>
#include <cstdlib>
#include <filesystem>
#include <thread>
#include <vector>

#include "engine/cli_runner.h"
#include "fake_run.h"
#include "gui_test_util.h"
#include "gui_util.h"
#include "main_window.h"
#include "mambascope/error.h"
#include "mambascope/ppl_sweep.h"
#include "mambascope/session.h"
#include "mambascope/trace.h"
#include "views.h"

using namespace mambascope;
using namespace mambascope::gui;
using mambascope::test::make_fake_run;

using mambascope::test::app;
using mambascope::test::wait_until;

TEST(GuiChannelMap, CellEqualsLogDecayOfEachMethod) {
    app();
    Selection sel;
    ChannelMapView v(&sel);
    v.setResult(make_fake_run());
    v.waitForBuild();
    ASSERT_EQ(v.mapCount(), 2);
    for (int i = 0; i < 2; ++i) {
        const Method m = v.mapMethod(i);
        auto* data = v.colorMap(i)->data();
        ASSERT_EQ(data->keySize(), test::kFakeChannels);
        ASSERT_EQ(data->valueSize(), test::kFakeLayers);
        for (int l = 0; l < test::kFakeLayers; ++l)
            for (int c = 0; c < test::kFakeChannels; ++c)
                EXPECT_DOUBLE_EQ(data->cell(c, l), test::fake_log_decay(m, l, c));
    }
    // One colour scale: both maps share the same data range.
    EXPECT_EQ(v.colorMap(0)->dataRange(), v.colorMap(1)->dataRange());
}

TEST(GuiChannelMap, CriticalCountStatisticShowsCounts) {
    app();
    Selection sel;
    ChannelMapView v(&sel);
    v.setResult(make_fake_run());
    v.setStatistic(ChannelMapView::CriticalCount);
    v.waitForBuild();
    ASSERT_EQ(v.mapCount(), 2);
    EXPECT_DOUBLE_EQ(v.colorMap(0)->data()->cell(8, 2), 18.0);
    EXPECT_DOUBLE_EQ(v.colorMap(0)->data()->cell(3, 2), 0.0);
}

TEST(GuiLinkedSelection, ChannelMapSelectionShowsThatChannelInDetail) {
    app();
    Selection sel;
    auto run = make_fake_run();
    ChannelMapView map(&sel);
    ChannelDetailView detail(&sel);
    map.setResult(run);
    detail.setResult(run);
    map.selectCell(2, 4);
    EXPECT_EQ(sel.layer(), 2);
    EXPECT_EQ(sel.channel(), 4);
    QCPGraph* g = detail.deltaGraph(Method::LongMamba);
    ASSERT_NE(g, nullptr);
    const auto* trace = &run->find(Method::LongMamba)->channels[1];
    ASSERT_EQ(trace->ref, (ChannelRef{2, 4}));
    ASSERT_EQ(g->data()->size(), int(trace->delta_raw.size()));
    for (int i = 0; i < g->data()->size(); ++i) {
        EXPECT_DOUBLE_EQ(g->data()->at(i)->key, double(i));
        EXPECT_FLOAT_EQ(float(g->data()->at(i)->value), trace->delta_raw[size_t(i)]);
    }
    // An untraced channel says so instead of drawing stale data.
    map.selectCell(0, 7);
    EXPECT_EQ(detail.deltaGraph(Method::LongMamba), nullptr);
    EXPECT_TRUE(detail.message().contains("not traced"));
}

TEST(GuiChannelDetail, DecayCurvesAndAlignmentTarget) {
    app();
    Selection sel;
    auto run = make_fake_run();
    ChannelDetailView detail(&sel);
    detail.setResult(run);
    sel.setChannel(1, 3);
    const auto& van = run->find(Method::Vanilla)->channels[0];
    QCPGraph* vg = detail.decayGraph(Method::Vanilla);
    ASSERT_NE(vg, nullptr);
    EXPECT_FLOAT_EQ(float(vg->data()->at(150)->value), van.cum_log_decay[150]);
    QCPGraph* tg = detail.targetGraph();
    ASSERT_NE(tg, nullptr);
    const double T = double(test::kFakeTokens);
    const double expected_end = van.cum_log_decay[size_t(test::kFakeTrainLen - 1)] * (T - 1) / T;
    EXPECT_NEAR(tg->data()->at(1)->value, expected_end, 1e-9);
    EXPECT_DOUBLE_EQ(tg->data()->at(0)->value, 0.0);
}

TEST(GuiPerplexity, GraphIsMovingAverageOfEngineNll) {
    app();
    Selection sel;
    auto run = make_fake_run();
    PerplexityView v(&sel);
    v.setResult(run);
    for (Method m : {Method::Vanilla, Method::LongMamba}) {
        QCPGraph* g = v.nllGraph(m);
        ASSERT_NE(g, nullptr);
        const auto& nll = run->find(m)->nll;
        ASSERT_EQ(g->data()->size(), int(nll.size()));
        double sum = 0;
        for (int i = 0; i < kNllSmoothingTokens; ++i) sum += nll[size_t(100 - i)];
        EXPECT_NEAR(g->data()->at(100)->value, sum / kNllSmoothingTokens, 1e-5);
        EXPECT_NEAR(g->data()->at(0)->value, nll[0], 1e-6);
    }
}

TEST(GuiReceptiveField, ScatterHoldsEveryChannelsLength) {
    app();
    Selection sel;
    ReceptiveFieldView v(&sel);
    v.setResult(make_fake_run());
    QCPGraph* g = v.rfGraph(Method::LongMamba);
    ASSERT_NE(g, nullptr);
    EXPECT_EQ(g->data()->size(), test::kFakeLayers * test::kFakeChannels);
    double maxv = 0;
    for (int i = 0; i < g->data()->size(); ++i) maxv = std::max(maxv, g->data()->at(i)->value);
    EXPECT_DOUBLE_EQ(maxv, 5 + 10 * 15 + 50);
}

TEST(GuiTokens, CriticalTokensOfSelectedChannelHighlightedAndClickSelects) {
    app();
    Selection sel;
    auto run = make_fake_run();
    TokensView v(&sel);
    v.setResult(run);
    sel.setChannel(1, 3);
    int64_t expected = 0;
    for (auto c : run->find(Method::LongMamba)->channels[0].critical) expected += c;
    EXPECT_EQ(v.highlightedCount(), expected);
    EXPECT_LT(expected, test::kFakeTokens);    // the fake filter drops some tokens
    EXPECT_EQ(v.tokenAtTextPosition(42), 42);  // one character per fake token
    QTextCursor cur = v.text()->textCursor();
    cur.setPosition(57);
    v.text()->setTextCursor(cur);
    EXPECT_EQ(sel.token(), 57);
}

TEST(GuiTokens, GlobalKeepModeShadesTokensByHowManyGlobalChannelsDroppedThem) {
    app();
    Selection sel;
    auto run = make_fake_run();
    TokensView v(&sel);
    v.setResult(run);
    v.setMode(TokensView::GlobalKeep);
    const auto& keep = run->find(Method::LongMamba)->global_keep_count;
    const int64_t n_global = test::kFakeLayers * (test::kFakeChannels / 4);
    EXPECT_EQ(v.globalChannels(), n_global);
    int64_t dropped = 0;
    for (int64_t t = 0; t < test::kFakeTokens; ++t) {
        EXPECT_EQ(v.keepCount(t), keep[size_t(t)]);
        dropped += keep[size_t(t)] < n_global;
    }
    EXPECT_GT(dropped, 0);
    EXPECT_EQ(v.highlightedCount(), dropped);
    // The shade of a token is where its count sits between the input's least- and most-kept tokens.
    const int64_t lo = *std::min_element(keep.begin(), keep.end()),
                  hi = *std::max_element(keep.begin(), keep.end());
    ASSERT_LT(lo, hi);
    auto alpha_at = [&](int pos) {
        QTextCursor c(v.text()->document());
        c.setPosition(pos + 1);  // the format of the character before the cursor
        return c.charFormat().background().color().alpha();
    };
    for (int t : {0, 3, 6, 9, 12})
        EXPECT_EQ(alpha_at(t), int(double(hi - keep[size_t(t)]) / double(hi - lo) * 200)) << t;
    EXPECT_EQ(alpha_at(4), 0);  // token 4 is kept by every global channel
    sel.setToken(6);
    EXPECT_NE(v.message().indexOf(QString("token 6 kept by %1 of %2").arg(keep[6]).arg(n_global)), -1)
        << v.message().toStdString();
}

TEST(GuiAttention, SelectedChannelMapsPerMethod) {
    app();
    Selection sel;
    AttentionView v(&sel);
    v.setResult(make_fake_run());
    sel.setChannel(2, 4);
    v.waitForBuild();
    ASSERT_EQ(v.mapCount(), 2);
    EXPECT_NEAR(v.colorMap(0)->data()->cell(3, 5), std::exp(-0.2 * 2), 1e-6);
}

TEST(GuiWorker, CancelMidRunLeavesNoResultAndIdleWindow) {
    app();
    MainWindow w;
    std::atomic<int> calls{0};
    w.worker()->setRunFunction(
        [&](const Model&, const RunInput&, const AnalysisRequest&, const ProgressFn& p) {
            for (int i = 0; i < 100000; ++i) {
                ++calls;
                report_progress(p, i / 100000.0, "fake layer");  // throws Cancelled once Cancel was pressed
                std::this_thread::sleep_for(std::chrono::milliseconds(2));
            }
            return RunResult{};
        });
    std::vector<bool> done;
    QObject::connect(&w, &MainWindow::runFinished, [&](bool ok) { done.push_back(ok); });
    ASSERT_TRUE(w.startRun());
    EXPECT_TRUE(w.running());
    ASSERT_TRUE(wait_until([&] { return calls > 5; }));
    w.cancelRun();
    ASSERT_TRUE(wait_until([&] { return done.size() > 0; }));
    EXPECT_FALSE(done.at(0));
    EXPECT_FALSE(w.running());
    EXPECT_EQ(w.result(), nullptr);
    EXPECT_LT(calls.load(), 100000);
}

TEST(GuiWorker, RunDeliversResultToEveryView) {
    app();
    MainWindow w;
    w.worker()->setRunFunction(
        [](const Model&, const RunInput& in, const AnalysisRequest&, const ProgressFn& p) {
            report_progress(p, 0.5, "fake");
            RunResult r = *make_fake_run();
            r.input = in;  // the real tokenised input reaches the run function
            return r;
        });
    std::vector<bool> done;
    QObject::connect(&w, &MainWindow::runFinished, [&](bool ok) { done.push_back(ok); });
    ASSERT_TRUE(w.startRun());
    ASSERT_TRUE(wait_until([&] { return done.size() > 0; }));
    ASSERT_TRUE(done.at(0));
    ASSERT_NE(w.result(), nullptr);
    EXPECT_EQ(w.result()->input.ids.size(), size_t(kDefaultSessionMaxTokens));  // demo text cut to max tokens
    EXPECT_EQ(w.result()->input.ids[0], int32_t(w.result()->input.token_strings[0][0] & 0xff));  // byte-level
    for (auto* v : w.views()) EXPECT_EQ(v->result(), w.result()) << v->key().toStdString();
}

// The GUI builds a text's run input with the engine's text_run_input, as the CLI does: the same text SHA-256,
// ids and token text as the trace `mambascope-cli analyze --text` writes for the same text and cap.
TEST(GuiWorker, RunInputCarriesTheTextsSha256AndTokenTextAsTheCliRecordsThem) {
    app();
    MainWindow w;
    Session s;
    s.max_tokens = 200;
    w.applySession(s);
    RunInput gui_input;
    w.worker()->setRunFunction(
        [&](const Model&, const RunInput& in, const AnalysisRequest&, const ProgressFn&) {
            gui_input = in;
            return *make_fake_run();
        });
    std::vector<bool> done;
    QObject::connect(&w, &MainWindow::runFinished, [&](bool ok) { done.push_back(ok); });
    ASSERT_TRUE(w.startRun());
    ASSERT_TRUE(wait_until([&] { return done.size() > 0; }));
    ASSERT_TRUE(done.at(0));
    ASSERT_EQ(gui_input.ids.size(), 200u);
    EXPECT_EQ(gui_input.text_sha256.size(), 64u);  // hex SHA-256 of the demo text

    QTemporaryDir dir;
    const std::string trace = dir.filePath("cli.h5").toStdString();
    const test::CliRun cli = test::run_cli(
        "analyze --model " + w.worker()->lastJob().model_dir + " --text " + resolve_text_path(s).string() +
        " --max-tokens 200 --methods vanilla --no-attention --out " + trace);
    ASSERT_EQ(cli.rc, 0) << cli.err;
    const RunInput cli_input = read_trace(trace).input;
    EXPECT_EQ(gui_input.text_sha256, cli_input.text_sha256);
    EXPECT_EQ(gui_input.text_bytes, cli_input.text_bytes);
    EXPECT_EQ(gui_input.ids, cli_input.ids);
    EXPECT_EQ(gui_input.token_strings, cli_input.token_strings);
    EXPECT_EQ(gui_input.byte_offsets, cli_input.byte_offsets);
}

TEST(GuiWorker, MissingModelIsAClearErrorNotACrash) {
    app();
    MainWindow w;
    Session s;
    s.model = "/nonexistent/model";
    w.applySession(s);
    std::vector<QString> failed;
    QObject::connect(w.worker(), &AnalysisWorker::failed, [&](const QString& m) { failed.push_back(m); });
    std::vector<bool> done;
    QObject::connect(&w, &MainWindow::runFinished, [&](bool ok) { done.push_back(ok); });
    w.startRun();
    ASSERT_TRUE(wait_until([&] { return done.size() > 0; }));
    ASSERT_EQ(failed.size(), 1u);
    EXPECT_TRUE(failed.at(0).contains("/nonexistent/model"));
    EXPECT_FALSE(w.running());
}

TEST(GuiExport, ViewPngPdfAndComparisonScreenshot) {
    app();
    QTemporaryDir dir;
    MainWindow w;
    w.resize(1200, 800);
    w.showResult(make_fake_run());
    const QString png = dir.filePath("view.png"), pdf = dir.filePath("view.pdf");
    w.exportCurrentView(png);
    QImage img(png);
    ASSERT_FALSE(img.isNull());
    EXPECT_GT(img.width(), 400);
    w.exportCurrentView(pdf);
    QFile f(pdf);
    ASSERT_TRUE(f.open(QIODevice::ReadOnly));
    EXPECT_TRUE(f.read(4) == "%PDF");
    const QImage shot = w.comparisonImage(2.0);
    EXPECT_EQ(shot.width(), 3200);
    EXPECT_EQ(shot.height(), 2 * (1000 + 16));  // the composite and its caption stamp
    // Not blank: more than a handful of distinct colours.
    QSet<QRgb> colours;
    for (int y = 0; y < shot.height(); y += 37)
        for (int x = 0; x < shot.width(); x += 41) colours.insert(shot.pixel(x, y));
    EXPECT_GT(colours.size(), 20);
}

TEST(GuiSession, JsonRoundTripKeepsEveryField) {
    Session s;
    s.model = "models/x";
    s.text = "in.txt";
    s.trace = "run.h5";
    s.calibration = "";
    s.methods = {Method::LongMamba};
    s.c = 0.1;
    s.b = 2.5;
    s.activate_above = 4096;
    s.deci.layers = {3, 5};
    s.deci.L_base = 2000;
    s.deci.beta = 0.5;
    s.max_tokens = 777;
    s.selected_layer = 4;
    s.selected_channel = 99;
    s.selected_token = 12;
    s.view = "tokens";
    const Session r = session_from_json(session_to_json(s), "test", "/base");
    EXPECT_EQ(r.model, s.model);
    EXPECT_EQ(r.text, s.text);
    EXPECT_EQ(r.trace, s.trace);
    EXPECT_EQ(r.calibration, s.calibration);
    EXPECT_EQ(r.methods, s.methods);
    EXPECT_EQ(r.c, s.c);
    EXPECT_EQ(r.b, s.b);
    EXPECT_EQ(r.activate_above, s.activate_above);
    EXPECT_EQ(r.deci.layers, s.deci.layers);
    EXPECT_EQ(r.deci.L_base, s.deci.L_base);
    EXPECT_EQ(r.deci.beta, s.deci.beta);
    EXPECT_EQ(r.max_tokens, s.max_tokens);
    EXPECT_EQ(r.selected_layer, s.selected_layer);
    EXPECT_EQ(r.selected_channel, s.selected_channel);
    EXPECT_EQ(r.selected_token, s.selected_token);
    EXPECT_EQ(r.view, s.view);
    EXPECT_EQ(resolve_model_path(r), std::filesystem::path("/base/models/x"));
    EXPECT_TRUE(resolve_calibration_path(r).empty());
    EXPECT_THROW(session_from_json(R"({"c": "big"})", "t"), Error);
    EXPECT_THROW(session_from_json(R"({"methods": ["mamba3"]})", "t"), Error);
}

TEST(GuiSession, DemoSessionResolvesBundledResources) {
    const Session s = load_session(std::filesystem::path(MAMBASCOPE_RESOURCES_DIR) / "demo" / "session.json");
    EXPECT_TRUE(std::filesystem::exists(resolve_model_path(s) / "config.json"));
    EXPECT_TRUE(std::filesystem::exists(resolve_text_path(s)));
    EXPECT_TRUE(std::filesystem::exists(resolve_calibration_path(s)));
    EXPECT_EQ(s.methods.size(), 3u);
}

TEST(GuiSession, WindowSaveLoadRestoresPanelAndSelection) {
    app();
    QTemporaryDir dir;
    const QString path = dir.filePath("s.json");
    {
        MainWindow w;
        Session s;
        s.c = 0.2;
        s.methods = {Method::Vanilla, Method::DeciMamba};
        s.deci.layers = {2};
        s.selected_layer = 3;
        s.selected_channel = 11;
        s.view = "perplexity";
        s.input_text = "pasted «text» over\ntwo lines";
        s.device = Device::Auto;
        s.channel_map_statistic = "critical_count";
        s.tokens_colour = "global_keep";
        w.applySession(s);
        w.saveSession(path);
    }
    MainWindow w2;
    w2.loadSession(path);
    const Session r = w2.session();
    // Pasted text and the device choice survive the round trip, and the pasted text is what Run would use.
    EXPECT_EQ(r.input_text, "pasted «text» over\ntwo lines");
    EXPECT_EQ(r.device, Device::Auto);
    EXPECT_EQ(w2.job().text, r.input_text);
    EXPECT_EQ(w2.job().request.device, Device::Auto);
    EXPECT_DOUBLE_EQ(r.c, 0.2);
    EXPECT_EQ(r.methods, (std::vector<Method>{Method::Vanilla, Method::DeciMamba}));
    EXPECT_EQ(r.deci.layers, std::vector<int>{2});
    EXPECT_EQ(w2.selection()->layer(), 3);
    EXPECT_EQ(w2.selection()->channel(), 11);
    EXPECT_EQ(r.view, "perplexity");
    // View state: the channel map shows critical counts, the Tokens view colours by global keep count.
    EXPECT_EQ(r.channel_map_statistic, "critical_count");
    EXPECT_EQ(r.tokens_colour, "global_keep");
    w2.showResult(make_fake_run());
    auto* cm = dynamic_cast<ChannelMapView*>(w2.view("channel_map"));
    ASSERT_NE(cm, nullptr);
    EXPECT_EQ(cm->value(Method::LongMamba, 0, 4), 10.0 + 4);  // fake critical_count(l, c) = 10 + c
    auto* tv = dynamic_cast<TokensView*>(w2.view("tokens"));
    ASSERT_NE(tv, nullptr);
    EXPECT_EQ(tv->modeKey(), "global_keep");
}

// A real run of the demo model (needs the engine's run_analysis; skipped while the GUI links the fallback).
TEST(GuiRealRun, DemoModelRunPopulatesViewsWithEngineNumbers) {
    app();
    MainWindow w;
    Session s;
    s.max_tokens = 1500;  // > the demo model's train_len (1024), so LongMamba filters
    w.applySession(s);
    std::vector<QString> failed;
    QObject::connect(w.worker(), &AnalysisWorker::failed, [&](const QString& m) { failed.push_back(m); });
    std::vector<bool> done;
    QObject::connect(&w, &MainWindow::runFinished, [&](bool ok) { done.push_back(ok); });
    ASSERT_TRUE(w.startRun());
    ASSERT_TRUE(wait_until([&] { return done.size() > 0; }, 600000));
    if (failed.size() && failed.at(0).contains("not part of this engine build"))
        GTEST_SKIP() << "engine without run_analysis";
    ASSERT_TRUE(failed.empty()) << failed.at(0).toStdString();
    ASSERT_NE(w.result(), nullptr);
    const RunResult& r = *w.result();
    auto* map = dynamic_cast<ChannelMapView*>(w.view("channel_map"));
    ASSERT_NE(map, nullptr);
    map->waitForBuild();
    ASSERT_GE(map->mapCount(), 2);
    const MethodResult* mr = r.find(map->mapMethod(0));
    EXPECT_DOUBLE_EQ(map->colorMap(0)->data()->cell(5, 1), mr->log_decay.at2(1, 5));
    if (!mr->channels.empty()) {
        const auto& t = mr->channels.front();
        w.selection()->setChannel(t.ref.layer, t.ref.channel);
        auto* detail = dynamic_cast<ChannelDetailView*>(w.view("channel_detail"));
        QCPGraph* g = detail->deltaGraph(mr->method);
        ASSERT_NE(g, nullptr);
        EXPECT_FLOAT_EQ(float(g->data()->at(0)->value), t.delta_raw[0]);
    }
    // Export the run as a trace and open it again without the model: same numbers on screen.
    QTemporaryDir dir;
    const QString h5 = dir.filePath("run.h5");
    w.exportTrace(h5);
    MainWindow w2;
    w2.openTrace(h5);
    ASSERT_NE(w2.result(), nullptr);
    EXPECT_EQ(w2.result()->input.ids, r.input.ids);
    auto* map2 = dynamic_cast<ChannelMapView*>(w2.view("channel_map"));
    map2->waitForBuild();
    ASSERT_GE(map2->mapCount(), 1);
    EXPECT_DOUBLE_EQ(map2->colorMap(0)->data()->cell(5, 1), map->colorMap(0)->data()->cell(5, 1));
    // The demo session has a calibration: the Global ratio view draws the engine's ratios at the run's c,
    // both from the run and from the trace (its /calibration/log_decay copy).
    ASSERT_EQ(r.calibration_log_decay.shape, (std::vector<int64_t>{r.n_layer, r.channels}));
    for (MainWindow* win : {&w, &w2}) {
        auto* gr = dynamic_cast<GlobalRatioView*>(win->view("global_ratio"));
        ASSERT_NE(gr, nullptr);
        ASSERT_TRUE(gr->hasCalibration());
        EXPECT_DOUBLE_EQ(gr->runC(), s.c);
        const auto want = global_ratio_per_layer(r.calibration_log_decay, s.c);
        QCPGraph* g = gr->runGraph();
        ASSERT_NE(g, nullptr);
        ASSERT_EQ(g->data()->size(), r.n_layer);
        for (int l = 0; l < r.n_layer; ++l) EXPECT_DOUBLE_EQ(g->data()->at(l)->value, want[size_t(l)]);
    }
}

// ---- Off-thread heatmaps ----------------------------------------------------------------------------------

namespace {
// The fake run with every log decay scaled: a second, distinguishable result.
std::shared_ptr<RunResult> scaled_fake_run(double k) {
    auto r = make_fake_run();
    for (auto& mr : r->methods)
        for (auto& v : mr.log_decay.data) v *= k;
    return r;
}
}  // namespace

TEST(GuiAsyncHeatmap, ChannelMapBuildsOffThreadAndAppliesEngineValues) {
    app();
    Selection sel;
    ChannelMapView v(&sel);
    auto run = make_fake_run();
    v.setResult(run);
    // Either still building, or already applied with the engine's numbers.
    if (!v.building()) {
        ASSERT_EQ(v.mapCount(), 2);
        EXPECT_DOUBLE_EQ(v.colorMap(0)->data()->cell(5, 2), test::fake_log_decay(v.mapMethod(0), 2, 5));
    }
    v.waitForBuild();
    EXPECT_FALSE(v.building());
    ASSERT_EQ(v.mapCount(), 2);
    for (int i = 0; i < 2; ++i)
        for (int l = 0; l < test::kFakeLayers; ++l)
            for (int c = 0; c < test::kFakeChannels; ++c)
                EXPECT_DOUBLE_EQ(v.colorMap(i)->data()->cell(c, l),
                                 run->find(v.mapMethod(i))->log_decay.at2(l, c));
    // The event loop delivering the (already applied) build's signal changes nothing.
    QCoreApplication::processEvents();
    EXPECT_EQ(v.mapCount(), 2);
}

TEST(GuiAsyncHeatmap, TwoQuickResultsEndWithTheSecond) {
    app();
    Selection sel;
    ChannelMapView v(&sel);
    auto a = scaled_fake_run(1.0), b = scaled_fake_run(3.0);
    v.setResult(a);
    v.setResult(b);
    // Let both workers finish and their signals arrive: the stale first build must never be applied.
    ASSERT_TRUE(wait_until([&] { return !v.building(); }, 10000));
    AsyncBuild::pool()->waitForDone();
    QCoreApplication::processEvents();
    ASSERT_EQ(v.mapCount(), 2);
    for (int i = 0; i < 2; ++i)
        for (int l = 0; l < test::kFakeLayers; ++l)
            for (int c = 0; c < test::kFakeChannels; ++c)
                EXPECT_DOUBLE_EQ(v.colorMap(i)->data()->cell(c, l),
                                 b->find(v.mapMethod(i))->log_decay.at2(l, c));
    // Same with a statistic change right after a result: the statistic wins.
    v.setResult(a);
    v.setStatistic(ChannelMapView::CriticalCount);
    v.waitForBuild();
    AsyncBuild::pool()->waitForDone();
    QCoreApplication::processEvents();
    ASSERT_EQ(v.mapCount(), 2);
    EXPECT_DOUBLE_EQ(v.colorMap(0)->data()->cell(8, 2), double(a->methods[0].critical_count.at2(2, 8)));
    // Clearing the result drops a pending build.
    v.setResult(b);
    v.setResult(nullptr);
    EXPECT_FALSE(v.building());
    AsyncBuild::pool()->waitForDone();
    QCoreApplication::processEvents();
    EXPECT_EQ(v.mapCount(), 0);
}

TEST(GuiAsyncHeatmap, AttentionMapsBuildOffThreadForTheLatestChannel) {
    app();
    Selection sel;
    AttentionView v(&sel);
    auto run = make_fake_run();
    v.setResult(run);
    sel.setChannel(1, 3);
    sel.setChannel(2, 4);
    v.waitForBuild();
    AsyncBuild::pool()->waitForDone();
    QCoreApplication::processEvents();
    ASSERT_EQ(v.mapCount(), 2);
    const auto& am = run->methods[0].attention[1];
    ASSERT_EQ(am.ref, (ChannelRef{2, 4}));
    for (int i = 0; i < 20; ++i)
        for (int j = 0; j < 20; ++j)
            EXPECT_FLOAT_EQ(float(v.colorMap(0)->data()->cell(j, i)), am.alpha.at2(i, j));
}

TEST(GuiAsyncHeatmap, ExportWaitsForPendingBuilds) {
    app();
    // Occupy every pool thread so that no heatmap build can finish on its own: the exported view's map then
    // exists only if export waited for (and ran) its build. Other tabs' builds are not waited for and stay
    // pending, which is the design (export renders one view).
    auto* pool = AsyncBuild::pool();
    pool->waitForDone();
    const int n = pool->maxThreadCount();
    QSemaphore started, gate;
    for (int i = 0; i < n; ++i)
        pool->start([&] {
            started.release();
            gate.acquire();
        });
    started.acquire(n);

    QTemporaryDir dir;
    MainWindow w;
    w.resize(1000, 700);
    w.showResult(make_fake_run());
    w.tabs()->setCurrentWidget(w.view("channel_map"));
    auto* map = dynamic_cast<ChannelMapView*>(w.view("channel_map"));
    ASSERT_NE(map, nullptr);
    EXPECT_TRUE(map->building());
    w.exportCurrentView(dir.filePath("map.png"));
    EXPECT_FALSE(map->building());
    EXPECT_EQ(map->mapCount(), 2);
    EXPECT_FALSE(QImage(dir.filePath("map.png")).isNull());

    gate.release(n);
    pool->waitForDone();
    QCoreApplication::processEvents();
}

// ---- Global ratio -----------------------------------------------------------------------------------------

namespace {
// Fake calibration log decay: layer l, channel c → −0.5·(l+1)·(c+1)·… spread over many decades so that every
// reference c splits the channels differently.
std::shared_ptr<RunResult> fake_run_with_calibration(double run_c) {
    auto r = make_fake_run();
    r->calibration_log_decay = Array<double>::zeros({test::kFakeLayers, test::kFakeChannels});
    for (int l = 0; l < test::kFakeLayers; ++l)
        for (int64_t c = 0; c < test::kFakeChannels; ++c)
            r->calibration_log_decay.at2(l, c) = -std::pow(10.0, 0.15 * double(c) + 0.3 * double(l)) * 0.5;
    for (auto& mr : r->methods) mr.params["c"] = run_c;
    return r;
}
}  // namespace

TEST(GuiGlobalRatio, CurvesAreTheEnginesRatiosAndTheRunsCIsHighlighted) {
    app();
    Selection sel;
    GlobalRatioView v(&sel);
    auto run = fake_run_with_calibration(0.2);
    v.setResult(run);
    ASSERT_TRUE(v.hasCalibration());
    EXPECT_DOUBLE_EQ(v.runC(), 0.2);
    // The four reference c values plus the run's.
    EXPECT_EQ(v.curveCs(), (std::vector<double>{1e-30, 1e-10, 1e-4, 5e-2, 0.2}));
    for (double c : v.curveCs()) {
        QCPGraph* g = v.layerGraph(c);
        ASSERT_NE(g, nullptr) << c;
        const auto want = global_ratio_per_layer(run->calibration_log_decay, c);
        ASSERT_EQ(g->data()->size(), test::kFakeLayers);
        for (int l = 0; l < test::kFakeLayers; ++l) {
            EXPECT_DOUBLE_EQ(g->data()->at(l)->key, double(l));
            EXPECT_DOUBLE_EQ(g->data()->at(l)->value, want[size_t(l)]) << "c " << c << " layer " << l;
        }
    }
    // The curves differ (the fake decays span many decades), and the run's curve is the thick one.
    EXPECT_NE(v.layerGraph(1e-30)->data()->at(0)->value, v.layerGraph(5e-2)->data()->at(0)->value);
    EXPECT_EQ(v.runGraph(), v.layerGraph(0.2));
    EXPECT_GT(v.runGraph()->pen().widthF(), v.layerGraph(1e-4)->pen().widthF());
    // Overall % vs c: ~200 log-spaced points from 1e-40 to 0.99, each the mean of the per-layer ratios.
    QCPGraph* o = v.overallGraph();
    ASSERT_NE(o, nullptr);
    ASSERT_EQ(o->data()->size(), GlobalRatioView::kOverallPoints);
    EXPECT_NEAR(o->data()->at(0)->key, 1e-40, 1e-52);
    EXPECT_NEAR(o->data()->at(o->data()->size() - 1)->key, 0.99, 1e-12);
    for (int i = 0; i < o->data()->size(); i += 7) {
        const double c = o->data()->at(i)->key;
        const auto per = global_ratio_per_layer(run->calibration_log_decay, c);
        double mean = 0;
        for (double x : per) mean += x / double(per.size());
        EXPECT_NEAR(o->data()->at(i)->value, mean, 1e-9) << "c " << c;
    }
    EXPECT_EQ(v.overallPlot()->xAxis->scaleType(), QCPAxis::stLogarithmic);
    ASSERT_NE(v.runMarker(), nullptr);
    ASSERT_EQ(v.runMarker()->data()->size(), 1);
    EXPECT_DOUBLE_EQ(v.runMarker()->data()->at(0)->key, 0.2);
    {
        const auto per = global_ratio_per_layer(run->calibration_log_decay, 0.2);
        double mean = 0;
        for (double x : per) mean += x / double(per.size());
        EXPECT_NEAR(v.runMarker()->data()->at(0)->value, mean, 1e-9);
    }
    // A run c that is one of the reference values is highlighted, not drawn twice.
    v.setResult(fake_run_with_calibration(5e-2));
    EXPECT_EQ(v.curveCs().size(), 4u);
    EXPECT_EQ(v.runGraph(), v.layerGraph(5e-2));
}

TEST(GuiGlobalRatio, ClickingALayerSelectsItAndKeepsTheChannel) {
    app();
    Selection sel;
    sel.setChannel(0, 7);
    GlobalRatioView v(&sel);
    v.resize(800, 600);
    v.setAttribute(Qt::WA_DontShowOnScreen);
    v.show();
    v.setResult(fake_run_with_calibration(0.05));
    v.layerPlot()->replot(QCustomPlot::rpImmediateRefresh);
    QCustomPlot* p = v.layerPlot();
    const QPointF at(p->xAxis->coordToPixel(2.0), p->yAxis->coordToPixel(50.0));
    EXPECT_EQ(v.layerAtPixel(at.x()), 2);
    QMouseEvent press(QEvent::MouseButtonPress, at, p->mapToGlobal(at), Qt::LeftButton, Qt::LeftButton,
                      Qt::NoModifier);
    QMouseEvent release(QEvent::MouseButtonRelease, at, p->mapToGlobal(at), Qt::LeftButton, Qt::NoButton,
                        Qt::NoModifier);
    QCoreApplication::sendEvent(p, &press);
    QCoreApplication::sendEvent(p, &release);
    EXPECT_EQ(sel.layer(), 2);
    EXPECT_EQ(sel.channel(), 7);
    v.selectLayer(3);
    EXPECT_EQ(sel.layer(), 3);
    EXPECT_EQ(sel.channel(), 7);
}

TEST(GuiGlobalRatio, WithoutCalibrationSaysSoAndDrawsNothing) {
    app();
    Selection sel;
    GlobalRatioView v(&sel);
    v.setResult(fake_run_with_calibration(0.05));
    EXPECT_GT(v.layerPlot()->graphCount(), 0);
    v.setResult(make_fake_run());  // no calibration_log_decay
    EXPECT_FALSE(v.hasCalibration());
    EXPECT_TRUE(v.message().contains("no calibration in this run")) << v.message().toStdString();
    EXPECT_EQ(v.layerPlot()->graphCount(), 0);
    EXPECT_EQ(v.overallPlot()->graphCount(), 0);
    EXPECT_EQ(v.overallGraph(), nullptr);
    EXPECT_EQ(v.layerGraph(5e-2), nullptr);
    // And it is one of the window's views.
    MainWindow w;
    ASSERT_NE(dynamic_cast<GlobalRatioView*>(w.view("global_ratio")), nullptr);
    EXPECT_EQ(w.view("global_ratio")->title(), "Global ratio");
}

// ---- Perplexity sweep -------------------------------------------------------------------------------------

TEST(GuiPerplexitySweep, LoadedCsvIsDrawnPerMethodAndABadFileKeepsThePreviousSweep) {
    app();
    QTemporaryDir dir;
    std::vector<PplPoint> pts;
    for (int64_t len : {512, 1024, 2048, 4096})
        for (Method m : {Method::Vanilla, Method::LongMamba}) {
            PplPoint p;
            p.length = len;
            p.method = m;
            p.windows = 3;
            p.tokens_scored = 300;
            p.mean_nll = 2.0 + 0.1 * double(len) / 1024.0 * (m == Method::Vanilla ? 2.0 : 0.5);
            p.perplexity = std::exp(p.mean_nll);
            p.seconds = 0.5;
            pts.push_back(p);
        }
    const QString csv = dir.filePath("sweep.csv");
    write_ppl_csv(csv.toStdString(), pts);
    Selection sel;
    PerplexityView v(&sel);
    EXPECT_EQ(v.sweepGraph(Method::Vanilla), nullptr);
    v.loadSweep(csv);
    EXPECT_EQ(v.sweepPath(), csv);
    const auto back = read_ppl_csv(csv.toStdString());  // the CSV's own precision
    for (Method m : {Method::Vanilla, Method::LongMamba}) {
        QCPGraph* g = v.sweepGraph(m);
        ASSERT_NE(g, nullptr);
        std::vector<const PplPoint*> want;
        for (const auto& p : back)
            if (p.method == m) want.push_back(&p);
        ASSERT_EQ(g->data()->size(), int(want.size()));
        for (int i = 0; i < g->data()->size(); ++i) {
            EXPECT_DOUBLE_EQ(g->data()->at(i)->key, double(want[size_t(i)]->length));
            EXPECT_DOUBLE_EQ(g->data()->at(i)->value, want[size_t(i)]->perplexity);
            EXPECT_NEAR(g->data()->at(i)->value, pts[size_t(i * 2 + (m == Method::LongMamba))].perplexity,
                        1e-4);
        }
    }
    EXPECT_EQ(v.sweepGraph(Method::DeciMamba), nullptr);
    EXPECT_EQ(v.sweepPlot()->xAxis->scaleType(), QCPAxis::stLogarithmic);
    // Independent of the run result: a result keeps the sweep and marks the training length.
    v.setResult(make_fake_run());
    ASSERT_NE(v.sweepGraph(Method::Vanilla), nullptr);
    EXPECT_EQ(v.sweepGraph(Method::Vanilla)->data()->size(), 4);
    ASSERT_NE(v.sweepTrainLine(), nullptr);
    EXPECT_DOUBLE_EQ(v.sweepTrainLine()->point1->coords().x(), double(test::kFakeTrainLen));
    EXPECT_NE(v.nllGraph(Method::Vanilla), nullptr);
    // A bad CSV is an Error and the previous sweep stays.
    const QString bad = dir.filePath("bad.csv");
    {
        QFile f(bad);
        ASSERT_TRUE(f.open(QIODevice::WriteOnly));
        f.write("this,is,not\na sweep\n");
    }
    EXPECT_THROW(v.loadSweep(bad), Error);
    EXPECT_THROW(v.loadSweep(dir.filePath("missing.csv")), Error);
    EXPECT_EQ(v.sweepPath(), csv);
    ASSERT_NE(v.sweepGraph(Method::LongMamba), nullptr);
    EXPECT_EQ(v.sweepGraph(Method::LongMamba)->data()->size(), 4);
    EXPECT_EQ(v.sweepPoints().size(), pts.size());
}

// ---- Theme ------------------------------------------------------------------------------------------------

namespace {
void expect_plots_themed(MainWindow& w, const QColor& base, const QColor& text) {
    const auto plots = w.findChildren<QCustomPlot*>();
    ASSERT_GT(plots.size(), 8);
    for (auto* p : plots) {
        const QImage img = p->toPixmap(240, 180).toImage();
        EXPECT_EQ(QColor(img.pixel(1, 1)).rgb(), base.rgb()) << p->parent()->metaObject()->className();
        for (auto* ax : p->axisRect()->axes()) {
            EXPECT_EQ(ax->labelColor(), text);
            EXPECT_EQ(ax->tickLabelColor(), text);
            EXPECT_EQ(ax->basePen().color(), text);
        }
        EXPECT_EQ(p->legend->textColor(), text);
    }
}
}  // namespace

TEST(GuiTheme, DarkPaletteReachesPlotsBuiltAfterTheSwitchAndBack) {
    app();
    MainWindow w;
    w.setDark(true);
    w.showResult(make_fake_run());
    for (auto* v : w.views()) v->waitForBuild();
    const QColor darkBase = QApplication::palette().color(QPalette::Base);
    const QColor darkText = QApplication::palette().color(QPalette::Text);
    EXPECT_LT(darkBase.lightness(), 80);
    expect_plots_themed(w, darkBase, darkText);
    // Reference lines follow the palette instead of hard-coded black/dark grey.
    w.selection()->setChannel(1, 3);
    auto* detail = dynamic_cast<ChannelDetailView*>(w.view("channel_detail"));
    ASSERT_NE(detail->targetGraph(), nullptr);
    EXPECT_EQ(detail->targetGraph()->pen().color(), reference_color(RefTone::Muted));
    EXPECT_GT(detail->targetGraph()->pen().color().lightness(), darkBase.lightness() + 40);
    w.setDark(false);
    const QColor lightBase = QApplication::palette().color(QPalette::Base);
    const QColor lightText = QApplication::palette().color(QPalette::Text);
    EXPECT_GT(lightBase.lightness(), 180);
    expect_plots_themed(w, lightBase, lightText);
    EXPECT_EQ(detail->targetGraph()->pen().color(), reference_color(RefTone::Muted));
    EXPECT_EQ(detail->targetGraph()->pen().style(), Qt::DashLine);
    // Plots rebuilt after switching back are light too.
    w.showResult(make_fake_run());
    for (auto* v : w.views()) v->waitForBuild();
    expect_plots_themed(w, lightBase, lightText);
}

TEST(GuiSession, SweepInTheSessionIsLoadedAndSavedAndABadOneKeepsTheRest) {
    app();
    QTemporaryDir dir;
    std::vector<PplPoint> pts;
    for (int64_t len : {1024, 4096}) {
        PplPoint p;
        p.length = len;
        p.windows = 1;
        p.tokens_scored = 100;
        p.mean_nll = 1.0 + double(len) / 4096.0;
        p.perplexity = std::exp(p.mean_nll);
        pts.push_back(p);
    }
    const QString csv = dir.filePath("sweep.csv");
    write_ppl_csv(csv.toStdString(), pts);
    MainWindow w;
    Session s;
    s.sweep = csv.toStdString();
    w.applySession(s);
    auto* ppl = dynamic_cast<PerplexityView*>(w.view("perplexity"));
    ASSERT_NE(ppl, nullptr);
    EXPECT_EQ(ppl->sweepPath(), csv);
    ASSERT_NE(ppl->sweepGraph(Method::Vanilla), nullptr);
    EXPECT_EQ(ppl->sweepGraph(Method::Vanilla)->data()->size(), 2);
    EXPECT_EQ(w.session().sweep, csv.toStdString());
    // A session naming a missing sweep: an error in the status bar, the rest of the session applied.
    Session bad;
    bad.c = 0.3;
    bad.sweep = dir.filePath("missing.csv").toStdString();
    EXPECT_NO_THROW(w.applySession(bad));
    EXPECT_DOUBLE_EQ(w.session().c, 0.3);
    EXPECT_EQ(ppl->sweepPath(), csv);  // the previous sweep stays
}

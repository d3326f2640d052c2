// GUI tests of the passkey-retrieval features (offscreen): the Retrieval view draws exactly the result's
// accuracies, a clicked cell opens that haystack through the worker, the Tokens view marks the needle and the
// answer, the composite prints each method's answer, and bad retrieval files are messages, not crashes.
#include <gtest/gtest.h>

#include <QMouseEvent>
#include <QStatusBar>
#include <QTemporaryDir>
#include <cmath>
#include <mutex>

#include "fake_run.h"
#include "gui_test_util.h"
#include "main_window.h"
#include "mambascope/error.h"
#include "mambascope/retrieval.h"
#include "mambascope/session.h"
#include "retrieval_view.h"
#include "views.h"

using namespace mambascope;
using namespace mambascope::gui;
using mambascope::test::app;
using mambascope::test::make_fake_run;
using mambascope::test::wait_until;

namespace {

const std::vector<int64_t> kLengths{512, 1024, 4096};
const std::vector<double> kDepths{0.0, 0.25, 1.0};
constexpr uint64_t kSeed = 7;

// Scores that differ per (method, length, depth, sample), so a transposed or shifted cell is caught. The
// cell (LongMamba, 4096, depth index 2) has no rows: it must stay blank (NaN).
RetrievalResult fake_retrieval() {
    RetrievalResult r;
    r.request.lengths = kLengths;
    r.request.depths = kDepths;
    r.request.methods = {Method::Vanilla, Method::LongMamba};
    r.request.samples = 2;
    r.request.seed = kSeed;
    r.model = "test-model";
    r.filler = "demo";
    for (Method m : r.request.methods)
        for (size_t li = 0; li < kLengths.size(); ++li)
            for (int di = 0; di < int(kDepths.size()); ++di) {
                if (m == Method::LongMamba && li == 2 && di == 2) continue;
                for (int s = 0; s < 2; ++s) {
                    RetrievalRow row;
                    row.method = m;
                    row.length = kLengths[li];
                    row.depth_index = di;
                    row.depth = kDepths[size_t(di)];
                    row.sample = s;
                    row.key = "12345";
                    row.tf.total = 5;
                    row.tf.correct =
                        int64_t((li * 3 + size_t(di) + size_t(s) + (m == Method::LongMamba ? 2 : 0)) % 6);
                    row.generate_ran = true;
                    row.generated = row.tf.correct == 5 ? "12345" : "99999";
                    row.generated_correct = row.tf.correct == 5 || (s == 1 && di == 0);
                    r.rows.push_back(row);
                }
            }
    return r;
}

QString write_fake_retrieval(const QTemporaryDir& dir, const RetrievalResult& r = fake_retrieval()) {
    const QString p = dir.filePath("retrieval.json");
    write_retrieval_json(p.toStdString(), r);
    return p;
}

// Lays a view out offscreen at a real size so that pixel ↔ coordinate maps are valid.
void lay_out(QWidget* w, QSize size = {1200, 900}) {
    w->setAttribute(Qt::WA_DontShowOnScreen);
    w->resize(size);
    w->show();
    QCoreApplication::processEvents();
    for (auto* p : w->findChildren<QCustomPlot*>()) p->replot(QCustomPlot::rpImmediateRefresh);
}

void click(QCustomPlot* p, QPointF at) {
    QMouseEvent press(QEvent::MouseButtonPress, at, p->mapToGlobal(at), Qt::LeftButton, Qt::LeftButton,
                      Qt::NoModifier);
    QMouseEvent release(QEvent::MouseButtonRelease, at, p->mapToGlobal(at), Qt::LeftButton, Qt::NoButton,
                        Qt::NoModifier);
    QCoreApplication::sendEvent(p, &press);
    QCoreApplication::sendEvent(p, &release);
}

struct Clicked {
    Method method = Method::DeciMamba;
    qint64 length = -1;
    int depth_index = -1;
    double depth = -1;
    int count = 0;
};

std::shared_ptr<RunResult> fake_haystack_run() {
    auto r = make_fake_run();
    r->provenance["haystack.key"] = "31415";
    r->provenance["haystack.needle_begin"] = "100";
    r->provenance["haystack.needle_end"] = "110";
    r->provenance["haystack.answer_begin"] = "295";
    r->provenance["haystack.answer.vanilla"] = "10599";
    r->provenance["haystack.answer_correct.vanilla"] = "0";
    r->provenance["haystack.answer.longmamba"] = "31415";
    r->provenance["haystack.answer_correct.longmamba"] = "1";
    r->provenance["haystack.tf_correct.longmamba"] = "5";
    r->provenance["haystack.tf_total.longmamba"] = "5";
    return r;
}

}  // namespace

TEST(GuiRetrieval, HeatmapCellsAreCellAccuracyAndLinesAreLengthAccuracy) {
    app();
    QTemporaryDir dir;
    const RetrievalResult truth = fake_retrieval();
    Selection sel;
    RetrievalView v(&sel);
    v.loadRetrieval(write_fake_retrieval(dir, truth));
    ASSERT_NE(v.retrieval(), nullptr);
    EXPECT_TRUE(v.message().contains("test-model")) << v.message().toStdString();
    EXPECT_TRUE(v.message().contains("2 sample(s)")) << v.message().toStdString();
    ASSERT_EQ(v.heatmapCount(), 2);
    EXPECT_EQ(v.heatmapMethod(0), Method::Vanilla);
    EXPECT_EQ(v.heatmapMethod(1), Method::LongMamba);
    int blank = 0;
    for (int i = 0; i < 2; ++i) {
        const Method m = v.heatmapMethod(i);
        QCPColorMap* map = v.heatmap(i);
        EXPECT_FALSE(map->interpolate());             // flat blocks
        EXPECT_EQ(map->dataRange(), QCPRange(0, 1));  // fixed colour scale
        EXPECT_EQ(map->data()->keySize(), int(kLengths.size()));
        EXPECT_EQ(map->data()->valueSize(), int(kDepths.size()));
        for (int li = 0; li < int(kLengths.size()); ++li)
            for (int di = 0; di < int(kDepths.size()); ++di) {
                const double want = truth.cell_accuracy(m, kLengths[size_t(li)], di);
                // Read back from the colour map itself (QCPColorMapData's own coordinate lookup).
                const double got = map->data()->data(double(li), double(di));
                if (std::isnan(want)) {
                    EXPECT_TRUE(std::isnan(got)) << i << " " << li << " " << di;
                    ++blank;
                } else {
                    EXPECT_DOUBLE_EQ(got, want) << i << " " << li << " " << di;
                    EXPECT_DOUBLE_EQ(v.cellValue(i, li, di), want);
                }
            }
    }
    EXPECT_EQ(blank, 1);  // (LongMamba, 4096, depth 1.0)
    for (Method m : {Method::Vanilla, Method::LongMamba})
        for (bool generated : {false, true}) {
            QCPGraph* g = v.lineGraph(m, generated);
            ASSERT_NE(g, nullptr);
            ASSERT_EQ(g->data()->size(), int(kLengths.size()));
            for (int k = 0; k < int(kLengths.size()); ++k) {
                EXPECT_DOUBLE_EQ(g->data()->at(k)->key, double(kLengths[size_t(k)]));
                EXPECT_DOUBLE_EQ(g->data()->at(k)->value,
                                 truth.length_accuracy(m, kLengths[size_t(k)], generated));
            }
            EXPECT_EQ(g->pen().style(), generated ? Qt::DashLine : Qt::SolidLine);
        }
    EXPECT_EQ(v.lineGraph(Method::DeciMamba), nullptr);
    EXPECT_EQ(v.linePlot()->xAxis->scaleType(), QCPAxis::stLogarithmic);
    ASSERT_NE(v.chanceGraph(), nullptr);
    EXPECT_EQ(v.chanceGraph()->name(), "chance (digits)");
    EXPECT_DOUBLE_EQ(v.chanceGraph()->data()->at(0)->value, 0.1);
}

TEST(GuiRetrieval, OneLengthAndOneDepthStillDrawsOneFlatCell) {
    app();
    RetrievalResult r;
    r.request.lengths = {2048};
    r.request.depths = {0.5};
    r.request.methods = {Method::Vanilla};
    RetrievalRow row;
    row.length = 2048;
    row.depth = 0.5;
    row.tf = {3, 5};
    r.rows = {row};
    Selection sel;
    RetrievalView v(&sel);
    v.setRetrieval(std::make_shared<RetrievalResult>(r));
    ASSERT_EQ(v.heatmapCount(), 1);
    EXPECT_DOUBLE_EQ(v.cellValue(0, 0, 0), 0.6);
    // The block covers the whole cell [−½, ½] on both axes (a zero-width one-cell map would be invisible).
    QCPColorMapData* d = v.heatmap(0)->data();
    double k0 = 0, v0 = 0, k1 = 0, v1 = 0;
    d->cellToCoord(0, 0, &k0, &v0);
    d->cellToCoord(d->keySize() - 1, d->valueSize() - 1, &k1, &v1);
    EXPECT_NEAR((k1 - k0) * d->keySize() / std::max(1, d->keySize() - 1), 1.0, 1e-9);
    EXPECT_NEAR((v1 - v0) * d->valueSize() / std::max(1, d->valueSize() - 1), 1.0, 1e-9);
}

TEST(GuiRetrieval, ClickingACellEmitsItsMethodLengthAndDepth) {
    app();
    QTemporaryDir dir;
    Selection sel;
    RetrievalView v(&sel);
    v.loadRetrieval(write_fake_retrieval(dir));
    lay_out(&v);
    Clicked got;
    QObject::connect(&v, &RetrievalView::cellClicked, [&](Method m, qint64 L, int di, double d) {
        got = {m, L, di, d, got.count + 1};
    });
    // A real mouse click at the centre of (LongMamba, 4096 tokens, depth 0.25).
    QCustomPlot* p = v.heatmapPlot(1);
    const QPointF centre = v.cellCentre(1, 2, 1);
    ASSERT_TRUE(p->axisRect()->rect().contains(centre.toPoint()));
    click(p, centre);
    ASSERT_EQ(got.count, 1);
    EXPECT_EQ(got.method, Method::LongMamba);
    EXPECT_EQ(got.length, 4096);
    EXPECT_EQ(got.depth_index, 1);
    EXPECT_DOUBLE_EQ(got.depth, 0.25);
    // Near a cell's corner is still that cell (flat blocks), and the vanilla map reports vanilla.
    const QPointF a = v.cellCentre(0, 0, 0), b = v.cellCentre(0, 1, 1);
    click(v.heatmapPlot(0), a + (b - a) * 0.45);
    ASSERT_EQ(got.count, 2);
    EXPECT_EQ(got.method, Method::Vanilla);
    EXPECT_EQ(got.length, 512);
    EXPECT_EQ(got.depth_index, 0);
    EXPECT_DOUBLE_EQ(got.depth, 0.0);
    // Outside the axes: nothing.
    EXPECT_FALSE(v.clickAt(1, QPointF(1, 1)));
    click(p, QPointF(1, 1));
    EXPECT_EQ(got.count, 2);
}

TEST(GuiRetrieval, ClickedCellRunsThatHaystackThroughTheWorker) {
    app();
    QTemporaryDir dir;
    MainWindow w;
    w.setPersistSettings(false);
    std::mutex mu;
    RunInput seen;
    w.worker()->setRunFunction(
        [&](const Model&, const RunInput& in, const AnalysisRequest&, const ProgressFn& p) {
            report_progress(p, 0.5, "fake");
            std::lock_guard<std::mutex> lock(mu);
            seen = in;
            RunResult r = *make_fake_run();
            r.input = in;
            return r;
        });
    w.worker()->setAnswerFunction(
        [](const Model&, const Haystack& h, const AnalysisRequest&, const ProgressFn&) {
            return std::map<std::string, std::string>{{"haystack.answer.vanilla", h.key},
                                                      {"haystack.answer_correct.vanilla", "1"}};
        });
    w.loadRetrieval(write_fake_retrieval(dir));
    w.tabs()->setCurrentWidget(w.retrievalView());
    lay_out(&w, {1400, 900});
    RetrievalView* v = w.retrievalView();
    ASSERT_EQ(v->heatmapCount(), 2);
    std::vector<bool> done;
    QObject::connect(&w, &MainWindow::runFinished, [&](bool ok) { done.push_back(ok); });
    click(v->heatmapPlot(0), v->cellCentre(0, 0, 1));  // vanilla, 512 tokens, depth 0.25
    ASSERT_TRUE(wait_until([&] { return !done.empty(); }));
    ASSERT_TRUE(done.at(0)) << w.statusBar()->currentMessage().toStdString();
    // The job carried the cell's haystack: sample 0, the result's seed, the session's filler and template.
    const AnalysisJob& job = w.worker()->lastJob();
    ASSERT_TRUE(job.isHaystack());
    const SessionHaystack& h = job.haystack.haystack;
    EXPECT_EQ(h.length, 512);
    EXPECT_DOUBLE_EQ(h.depth, 0.25);
    EXPECT_EQ(h.depth_index, 1);
    EXPECT_EQ(h.sample, 0);
    EXPECT_EQ(h.seed, kSeed);
    EXPECT_EQ(h.filler, "demo");
    EXPECT_EQ(h.prompt, "model");
    // The run got the teacher-forced haystack (prompt of exactly 512 tokens, then the key's tokens), and
    // the result carries the haystack's provenance and the answers.
    ASSERT_NE(w.result(), nullptr);
    const auto& prov = w.result()->provenance;
    ASSERT_TRUE(prov.count("haystack.key"));
    ASSERT_TRUE(prov.count("haystack.needle_begin"));
    EXPECT_EQ(prov.at("haystack.answer_begin"), "512");
    EXPECT_EQ(prov.at("haystack.cell"), "512:1:0");
    EXPECT_EQ(prov.at("haystack.answer.vanilla"), prov.at("haystack.key"));
    {
        std::lock_guard<std::mutex> lock(mu);
        EXPECT_GT(seen.ids.size(), 512u);
    }
    // The window now holds that haystack (a saved session reproduces the picture) and marks the cell.
    EXPECT_EQ(w.session().haystack.length, 512);
    ASSERT_NE(v->currentCellMarker(0), nullptr);
    EXPECT_TRUE(v->currentCellMarker(0)->visible());
    EXPECT_DOUBLE_EQ(v->currentCellMarker(0)->topLeft->coords().x(), -0.5);
    EXPECT_DOUBLE_EQ(v->currentCellMarker(0)->topLeft->coords().y(), 0.5);
    // The Tokens view shows the haystack's needle.
    auto* tv = dynamic_cast<TokensView*>(w.view("tokens"));
    ASSERT_NE(tv, nullptr);
    EXPECT_EQ(tv->needleBegin(), std::stoll(prov.at("haystack.needle_begin")));
}

TEST(GuiRetrieval, TokensViewMarksNeedleAndAnswerInEveryColouring) {
    app();
    Selection sel;
    auto run = fake_haystack_run();
    TokensView v(&sel);
    v.setResult(run);
    sel.setChannel(1, 3);
    const auto& crit = run->find(Method::LongMamba)->channels[0].critical;
    for (auto mode : {TokensView::Critical, TokensView::NllChange, TokensView::GlobalKeep}) {
        v.setMode(mode);
        EXPECT_EQ(v.needleBegin(), 100);
        EXPECT_EQ(v.needleEnd(), 110);
        EXPECT_EQ(v.answerBegin(), 295);
        for (qint64 t = 95; t < 115; ++t)
            EXPECT_EQ(v.markAt(t), t >= 100 && t < 110 ? TokensView::NeedleMark : TokensView::NoMark)
                << "mode " << mode << " token " << t;
        for (qint64 t = 290; t < test::kFakeTokens; ++t)
            EXPECT_EQ(v.markAt(t), t >= 295 ? TokensView::AnswerMark : TokensView::NoMark) << t;
        EXPECT_TRUE(v.toolTipAt(104).contains("needle (key 31415)")) << v.toolTipAt(104).toStdString();
        EXPECT_TRUE(v.toolTipAt(296).contains("answer")) << v.toolTipAt(296).toStdString();
        EXPECT_TRUE(v.toolTipAt(50).isEmpty());
        EXPECT_TRUE(v.message().contains("needle")) << v.message().toStdString();
        // The mark is drawn (bold, underlined), and in Critical mode the needle keeps the critical colouring.
        QTextCursor c(v.text()->document());
        for (qint64 t = 100; t < 110; ++t) {
            c.setPosition(int(t) + 1);  // one character per fake token
            EXPECT_EQ(c.charFormat().fontWeight(), QFont::Bold);
            EXPECT_TRUE(c.charFormat().fontUnderline());
            if (mode == TokensView::Critical)
                EXPECT_EQ(c.charFormat().background().color() == QColor(255, 214, 102), crit[size_t(t)] != 0)
                    << t;
        }
    }
    // A run without a haystack marks nothing.
    v.setResult(make_fake_run());
    EXPECT_EQ(v.needleBegin(), -1);
    EXPECT_EQ(v.markAt(104), TokensView::NoMark);
}

TEST(GuiRetrieval, CompositeHasAnswerHeaderAndRetrievalRow) {
    app();
    QTemporaryDir dir;
    Selection sel;
    const auto retrieval = std::make_shared<RetrievalResult>(fake_retrieval());
    ComparisonWidget w(fake_haystack_run(), &sel, nullptr, retrieval);
    ASSERT_NE(w.haystackHeader(), nullptr);
    const QString h = w.haystackHeader()->text();
    EXPECT_TRUE(h.contains("key 31415")) << h.toStdString();
    EXPECT_TRUE(h.contains("vanilla</b> answered \"10599\"")) << h.toStdString();
    EXPECT_TRUE(h.contains(QString::fromUtf8("✗ wrong"))) << h.toStdString();
    EXPECT_TRUE(h.contains("LongMamba</b> answered \"31415\"")) << h.toStdString();
    EXPECT_TRUE(h.contains(QString::fromUtf8("✓ right"))) << h.toStdString();
    EXPECT_TRUE(h.contains("#1a7f37") && h.contains("#c62828"));  // green and red
    const auto rvs = w.findChildren<RetrievalView*>();
    ASSERT_EQ(rvs.size(), 1);
    EXPECT_EQ(rvs[0]->heatmapCount(), 2);
    EXPECT_NE(rvs[0]->lineGraph(Method::LongMamba), nullptr);
    EXPECT_EQ(w.findChildren<ReceptiveFieldView*>().size(), 1);
    const QImage img = w.render(1.0);
    EXPECT_GT(img.height(), 1000);  // the extra rows add height, the 2×2 views keep theirs
    // Plain text form (CLI-like) and a non-haystack run: no header.
    EXPECT_TRUE(haystack_summary(*fake_haystack_run(), false)
                    .contains(QString::fromUtf8("vanilla answered \"10599\" ✗ wrong")));
    ComparisonWidget plain(make_fake_run(), &sel);
    EXPECT_EQ(plain.haystackHeader(), nullptr);
    EXPECT_TRUE(plain.findChildren<RetrievalView*>().isEmpty());
}

// The composite of a haystack run shows the needle in the Tokens view's critical-token colouring (global
// channels keeping each token, LongMamba §8.6), centred in a strip of whole lines; other runs have no strip.
TEST(GuiRetrieval, CompositeShowsTheNeedleAsCriticalTokens) {
    app();
    Selection sel;
    auto run = fake_haystack_run();
    ComparisonWidget w(run, &sel, nullptr, std::make_shared<RetrievalResult>(fake_retrieval()));
    NeedleTokensStrip* strip = w.needleStrip();
    ASSERT_NE(strip, nullptr);
    EXPECT_EQ(strip->method(), Method::LongMamba);
    // The needle's text (tokens 100–109) is in the strip and marked, its neighbours are not.
    QString needle;
    for (int64_t t = 100; t < 110; ++t) needle += QString::fromStdString(run->input.token_strings[size_t(t)]);
    EXPECT_TRUE(strip->plainText().contains(needle)) << strip->plainText().toStdString();
    for (qint64 t = 95; t < 115; ++t)
        EXPECT_EQ(strip->markAt(t), t >= 100 && t < 110 ? TokensView::NeedleMark : TokensView::NoMark) << t;
    EXPECT_EQ(strip->markAt(296), TokensView::AnswerMark);
    // The TokensView colouring: LongMamba's keep count shades tokens; fully kept ones stay (nearly) clear.
    TokensView tv(&sel);
    tv.setResult(run);
    tv.setMode(TokensView::GlobalKeep);
    const MethodResult* lm = run->find(Method::LongMamba);
    for (qint64 t = 90; t < 120; ++t) {
        const bool dropped = lm->global_keep_count[size_t(t)] < tv.globalChannels();
        EXPECT_EQ(strip->backgroundAt(t).alpha() > 0, dropped) << t;
    }
    EXPECT_EQ(strip->span().highlighted, tv.highlightedCount());  // same colouring over the same tokens
    const QString cap = strip->caption();
    EXPECT_TRUE(cap.contains("Tokens around the needle")) << cap.toStdString();
    EXPECT_TRUE(cap.contains("LongMamba") && cap.contains(QString::fromUtf8("§8.6")) &&
                cap.contains("key 31415"))
        << cap.toStdString();
    // Laid out: compact, full width, whole lines around the needle.
    const QImage img = w.render(1.0);
    EXPECT_GT(img.height(), 1000);
    EXPECT_GE(strip->height(), 90);
    EXPECT_LE(strip->height(), 160);
    EXPECT_GT(strip->width(), w.width() * 9 / 10);
    const auto [a, b] = strip->shownTokens();
    EXPECT_LE(a, 100);
    EXPECT_GE(b, 110);
    EXPECT_GT(b - a, 10);
    // The strip sits between the answer header and the views.
    EXPECT_GT(strip->geometry().top(), w.haystackHeader()->geometry().bottom());
    for (auto* v : w.findChildren<ResultView*>())
        EXPECT_GE(v->geometry().top(), strip->geometry().bottom()) << v->title().toStdString();

    // A run without a needle keeps the plain composite.
    ComparisonWidget plain(make_fake_run(), &sel);
    EXPECT_EQ(plain.needleStrip(), nullptr);
    EXPECT_TRUE(plain.findChildren<NeedleTokensStrip*>().isEmpty());
}

// Methods that score alike draw on top of each other: each has its own marker shape, and each later method's
// line and markers are thinner and smaller, so the one below still shows around it (and in the legend).
TEST(GuiRetrieval, CoincidingAccuracyLinesStayDistinguishable) {
    app();
    QTemporaryDir dir;
    Selection sel;
    RetrievalView v(&sel);
    v.loadRetrieval(write_fake_retrieval(dir));
    for (bool generated : {false, true}) {
        QCPGraph* van = v.lineGraph(Method::Vanilla, generated);
        QCPGraph* lm = v.lineGraph(Method::LongMamba, generated);
        ASSERT_NE(van, nullptr);
        ASSERT_NE(lm, nullptr);
        EXPECT_NE(van->scatterStyle().shape(), lm->scatterStyle().shape());
        EXPECT_GT(van->pen().widthF(), lm->pen().widthF());
        EXPECT_GT(van->scatterStyle().size(), lm->scatterStyle().size());
    }
}

TEST(GuiRetrieval, ReceptiveFieldPanelRingsTheGlobalChannels) {
    app();
    Selection sel;
    ReceptiveFieldView v(&sel);
    v.setResult(make_fake_run());
    for (Method m : {Method::Vanilla, Method::LongMamba}) {
        QCPGraph* g = v.rfGlobalGraph(m);
        ASSERT_NE(g, nullptr);
        EXPECT_EQ(g->data()->size(), test::kFakeLayers * (test::kFakeChannels / 4));  // c % 4 == 0
    }
}

TEST(GuiRetrieval, CorruptRetrievalJsonIsAMessageNotACrash) {
    app();
    QTemporaryDir dir;
    const QString good = write_fake_retrieval(dir);
    Selection sel;
    RetrievalView v(&sel);
    v.loadRetrieval(good);
    const RetrievalPtr before = v.retrieval();
    for (const char* content : {"{ this is not json", "", "{\"format\": \"something else\"}", "[1, 2, 3]"}) {
        const QString bad = dir.filePath("bad.json");
        QFile f(bad);
        ASSERT_TRUE(f.open(QIODevice::WriteOnly | QIODevice::Truncate));
        f.write(content);
        f.close();
        EXPECT_THROW(v.loadRetrieval(bad), Error) << content;
        EXPECT_EQ(v.retrieval(), before);  // the previous result stays
        EXPECT_EQ(v.heatmapCount(), 2);
    }
    EXPECT_THROW(v.loadRetrieval(dir.filePath("missing.json")), Error);

    // The window: the menu path reports the Error; a session naming a bad file still applies the rest.
    MainWindow w;
    w.setPersistSettings(false);
    const QString bad = dir.filePath("bad.json");
    try {
        w.loadRetrieval(bad);
        ADD_FAILURE() << "no Error for a corrupt retrieval file";
    } catch (const Error& e) {
        EXPECT_FALSE(describe(e).empty());
    }
    EXPECT_EQ(w.retrieval(), nullptr);
    Session s;
    s.retrieval = bad.toStdString();
    s.max_tokens = 777;
    w.applySession(s);
    EXPECT_EQ(w.retrieval(), nullptr);
    EXPECT_TRUE(w.statusBar()->currentMessage().contains("retrieval"))
        << w.statusBar()->currentMessage().toStdString();
    EXPECT_EQ(w.session().max_tokens, 777);
    // And a good one named by the session is loaded at startup.
    s.retrieval = good.toStdString();
    w.applySession(s);
    ASSERT_NE(w.retrieval(), nullptr);
    EXPECT_EQ(w.retrievalView()->heatmapCount(), 2);
    EXPECT_EQ(w.session().retrieval, good.toStdString());
}

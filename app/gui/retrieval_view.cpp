#include "retrieval_view.h"

#include <QFileDialog>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QMessageBox>
#include <QToolTip>
#include <QVBoxLayout>
#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "mambascope/error.h"

namespace mambascope::gui {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// Cells annotated with their value when the grid is at most this big (more would be unreadable).
constexpr int kMaxAnnotatedCells = 120;

// Perceptually uniform dark-to-light map (viridis stops): accuracy reads as lightness, also in greyscale.
QCPColorGradient accuracy_gradient() {
    QCPColorGradient g;
    g.setColorStopAt(0.0, QColor(68, 1, 84));
    g.setColorStopAt(0.25, QColor(59, 82, 139));
    g.setColorStopAt(0.5, QColor(33, 145, 140));
    g.setColorStopAt(0.75, QColor(94, 201, 98));
    g.setColorStopAt(1.0, QColor(253, 231, 37));
    g.setNanHandling(QCPColorGradient::nhTransparent);  // a cell without rows stays blank
    return g;
}

QString length_label(int64_t L) {
    if (L >= 1024 && L % 1024 == 0) return QString("%1k").arg(L / 1024);
    return QString::number(L);
}

QString depth_label(double d) {
    return QString::number(d, 'g', 3);
}

// Greedy answers can hold newlines or control bytes: show them on one line.
QString printable(const std::string& s) {
    QString q = QString::fromUtf8(s);
    for (auto& ch : q)
        if (ch.category() == QChar::Other_Control) ch = QChar(0x00B7);
    return q;
}

const std::string* prov(const RunResult& r, const std::string& key) {
    auto it = r.provenance.find(key);
    return it == r.provenance.end() ? nullptr : &it->second;
}

bool prov_int(const RunResult& r, const std::string& key, qint64* out) {
    const std::string* v = prov(r, key);
    if (!v) return false;
    bool ok = false;
    const qint64 x = QString::fromStdString(*v).trimmed().toLongLong(&ok);
    if (ok) *out = x;
    return ok;
}

}  // namespace

std::vector<Method> retrieval_methods(const RetrievalResult& r) {
    std::vector<Method> out;
    auto add = [&](Method m) {
        if (std::find(out.begin(), out.end(), m) == out.end()) out.push_back(m);
    };
    std::set<Method> present;
    for (const auto& row : r.rows) present.insert(row.method);
    for (Method m : r.request.methods)
        if (present.count(m)) add(m);
    for (const auto& row : r.rows) add(row.method);  // rows of a method the request does not list
    return out;
}

QString haystack_summary(const RunResult& r, bool html) {
    const std::string* key = prov(r, "haystack.key");
    if (!key) return {};
    QStringList parts;
    for (Method m : {Method::Vanilla, Method::LongMamba, Method::DeciMamba}) {
        const std::string name = method_name(m);
        const std::string* ans = prov(r, "haystack.answer." + name);
        qint64 tfc = 0, tft = 0;
        const bool tf = prov_int(r, "haystack.tf_correct." + name, &tfc) &&
                        prov_int(r, "haystack.tf_total." + name, &tft) && tft > 0;
        const QString tfText = tf ? QString("teacher-forced %1/%2 digits").arg(tfc).arg(tft) : QString();
        if (ans) {
            const std::string* ok = prov(r, "haystack.answer_correct." + name);
            const bool right = ok && *ok == "1";
            const QString a = printable(*ans);
            QString mark = right ? QString::fromUtf8("✓ right") : QString::fromUtf8("✗ wrong");
            if (html)
                mark = QString("<span style=\"color:%1\"><b>%2</b></span>")
                           .arg(right ? "#1a7f37" : "#c62828", mark);
            QString p = QString("%1 answered \"%2\" %3")
                            .arg(html ? "<b>" + method_label(m) + "</b>" : method_label(m),
                                 html ? a.toHtmlEscaped() : a, mark);
            if (tf) p += " (" + tfText + ")";
            parts << p;
        } else if (tf) {
            parts << QString("%1: %2").arg(html ? "<b>" + method_label(m) + "</b>" : method_label(m), tfText);
        }
    }
    QString head = QString("key %1").arg(QString::fromStdString(*key));
    if (html) head = "<b>" + head + "</b>";
    qint64 nb = 0, ne = 0;
    QString needle;
    if (prov_int(r, "haystack.needle_begin", &nb) && prov_int(r, "haystack.needle_end", &ne))
        needle =
            QString(" (needle at tokens %1–%2 of %3)").arg(nb).arg(ne - 1).arg(qint64(r.input.ids.size()));
    const QString sep = html ? " &nbsp;|&nbsp; " : " | ";
    const QString dash = QString::fromUtf8(" — ");
    if (parts.isEmpty()) return head + needle + dash + "no answers recorded in this trace";
    return head + needle + dash + parts.join(sep);
}

RetrievalView::RetrievalView(Selection* selection, QWidget* parent) : ResultView(selection, parent) {
    auto* lay = new QVBoxLayout(this);
    auto* top = new QHBoxLayout;
    open_ = new QPushButton("Open retrieval result…");
    open_->setToolTip(
        "A JSON written by `mambascope-cli retrieval --json FILE.json` (passkey retrieval per length × depth "
        "× method, method doc §10).");
    top->addWidget(open_);
    info_ = new QLabel("no retrieval result loaded: open one written by `mambascope-cli retrieval --json`");
    info_->setWordWrap(true);
    top->addWidget(info_, 1);
    lay->addLayout(top);
    body_ = new QBoxLayout(QBoxLayout::TopToBottom);
    mapsHost_ = new QWidget;
    new QHBoxLayout(mapsHost_);
    mapsHost_->layout()->setContentsMargins(0, 0, 0, 0);
    body_->addWidget(mapsHost_, 3);
    line_ = new QCustomPlot(this);
    line_->setMinimumSize(260, 200);
    line_->xAxis->setLabel("haystack length (tokens, log₂ scale)");
    line_->yAxis->setLabel("answer accuracy");
    line_->xAxis->setScaleType(QCPAxis::stLogarithmic);
    // The legend sits in its own column right of the axes, so it never covers a curve.
    // The legend sits in its own column right of the axes (top-aligned: a filler element below takes the
    // rest of the height), so it never covers a curve.
    line_->legend->setVisible(true);
    line_->axisRect()->insetLayout()->take(line_->legend);
    auto* side = new QCPLayoutGrid;
    line_->plotLayout()->addElement(0, 1, side);
    line_->plotLayout()->setColumnStretchFactor(1, 0.001);
    side->addElement(0, 0, line_->legend);
    side->addElement(1, 0, new QCPLayoutElement(line_));
    side->setRowStretchFactor(0, 0.001);
    side->setMargins(QMargins(4, 6, 6, 6));  // the legend frame stays inside the widget
    line_->legend->setMargins(QMargins(6, 4, 6, 4));
    style_plot(line_);
    body_->addWidget(line_, 2);
    lay->addLayout(body_, 1);
    connect(open_, &QPushButton::clicked, this, [this] {
        const QString p = QFileDialog::getOpenFileName(this, "Open retrieval result", path_,
                                                       "Retrieval JSON (*.json);;All files (*)");
        if (p.isEmpty()) return;
        try {
            loadRetrieval(p);
        } catch (const Error& e) {
            info_->setText("cannot load " + p + ": " + QString::fromStdString(e.what()));
            if (QGuiApplication::platformName() != "offscreen")
                QMessageBox::warning(this, "Cannot load retrieval result",
                                     QString::fromStdString(describe(e)));
        }
    });
    rebuild();
}

void RetrievalView::setCompact(bool compact) {
    compact_ = compact;
    open_->setVisible(!compact);
    body_->setDirection(compact ? QBoxLayout::LeftToRight : QBoxLayout::TopToBottom);
    body_->setStretch(0, compact ? 3 : 3);
    body_->setStretch(1, compact ? 2 : 2);
}

void RetrievalView::loadRetrieval(const QString& path) {
    auto r = std::make_shared<RetrievalResult>(read_retrieval_json(path.toStdString()));
    if (r->rows.empty())
        throw Error("no retrieval rows in " + path.toStdString(),
                    "write the file with `mambascope-cli retrieval --json FILE.json`");
    setRetrieval(std::move(r), path);
}

void RetrievalView::setRetrieval(RetrievalPtr r, const QString& path) {
    retrieval_ = std::move(r);
    path_ = retrieval_ ? path : QString();
    rebuild();
}

void RetrievalView::setResult(RunResultPtr result) {
    result_ = std::move(result);
    updateMarkers();
}

double RetrievalView::cellValue(int i, int li, int di) const {
    if (i < 0 || i >= heatmapCount()) return kNaN;
    return maps_[size_t(i)]->data()->data(double(li), double(di));
}

QCPGraph* RetrievalView::lineGraph(Method m, bool generated) const {
    auto it = lines_.find({m, generated});
    return it == lines_.end() ? nullptr : it->second;
}

QPointF RetrievalView::cellCentre(int i, int li, int di) const {
    const QCustomPlot* p = plots_[size_t(i)];
    return {p->xAxis->coordToPixel(double(li)), p->yAxis->coordToPixel(double(di))};
}

bool RetrievalView::cellAt(int i, const QPointF& pixel, int* li, int* di) const {
    if (i < 0 || i >= heatmapCount()) return false;
    const QCustomPlot* p = plots_[size_t(i)];
    if (!p->axisRect()->rect().contains(pixel.toPoint())) return false;
    // Cells are centred on integer coordinates: the nearest index is the cell (no interpolation).
    const long l = std::lround(p->xAxis->pixelToCoord(pixel.x()));
    const long d = std::lround(p->yAxis->pixelToCoord(pixel.y()));
    if (l < 0 || d < 0 || l >= long(lengths_.size()) || d >= long(depths_.size())) return false;
    *li = int(l);
    *di = int(d);
    return true;
}

bool RetrievalView::clickAt(int i, const QPointF& pixel) {
    int li = 0, di = 0;
    if (!cellAt(i, pixel, &li, &di)) return false;
    emit cellClicked(methods_[size_t(i)], lengths_[size_t(li)], di, depths_[size_t(di)]);
    return true;
}

QString RetrievalView::cellTip(Method m, int li, int di) const {
    const RetrievalResult& r = *retrieval_;
    const int64_t L = lengths_[size_t(li)];
    int n = 0, gen = 0;
    for (const auto& row : r.rows)
        if (row.method == m && row.length == L && row.depth_index == di) ++n, gen += row.generate_ran;
    const double tf = r.cell_accuracy(m, L, di), g = r.cell_accuracy(m, L, di, true);
    QString s = QString("%1 · %2 tokens · depth %3\n")
                    .arg(method_label(m))
                    .arg(L)
                    .arg(depth_label(depths_[size_t(di)]));
    if (n == 0) return s + "no samples in this cell";
    s += std::isfinite(tf) ? QString("teacher-forced accuracy %1").arg(tf, 0, 'f', 3) : QString("not scored");
    if (gen > 0 && std::isfinite(g)) s += QString("\ngreedy exact %1").arg(g, 0, 'f', 3);
    s += QString("\n%1 sample(s) · click to open sample 0 of this haystack").arg(n);
    return s;
}

void RetrievalView::rebuild() {
    for (auto* p : plots_) {
        p->hide();
        p->setParent(nullptr);
        p->deleteLater();
    }
    plots_.clear();
    maps_.clear();
    markers_.clear();
    methods_.clear();
    lines_.clear();
    lengths_.clear();
    depths_.clear();
    chance_ = nullptr;
    line_->clearGraphs();
    line_->clearItems();
    if (!retrieval_) {
        line_->replot(QCustomPlot::rpQueuedReplot);
        return;
    }
    const RetrievalResult& r = *retrieval_;
    // The grid: the request's lengths and depths (rows outside it are ignored); an old file without them
    // falls back to what the rows hold.
    lengths_ = r.request.lengths;
    if (lengths_.empty()) {
        std::set<int64_t> ls;
        for (const auto& row : r.rows) ls.insert(row.length);
        lengths_.assign(ls.begin(), ls.end());
    }
    depths_ = r.request.depths;
    if (depths_.empty()) {
        std::map<int, double> ds;
        for (const auto& row : r.rows) ds[row.depth_index] = row.depth;
        for (const auto& [i, d] : ds) {
            if (int(depths_.size()) <= i) depths_.resize(size_t(i) + 1, kNaN);
            depths_[size_t(i)] = d;
        }
    }
    const int nL = int(lengths_.size()), nD = int(depths_.size());
    methods_ = retrieval_methods(r);
    int samples = 0;
    bool anyGenerated = false;
    for (const auto& row : r.rows)
        samples = std::max(samples, row.sample + 1), anyGenerated |= row.generate_ran;
    info_->setText(QString("<b>Passkey retrieval</b> · model %1 · filler %2 · %3 sample(s) per cell · seed %4"
                           " · colour: teacher-forced accuracy of the key's digits%5")
                       .arg(QString::fromStdString(r.model).toHtmlEscaped(),
                            QString::fromStdString(r.filler).toHtmlEscaped())
                       .arg(r.request.samples > 0 ? r.request.samples : samples)
                       .arg(qulonglong(r.request.seed))
                       .arg(compact_ ? QString() : QString(" · click a cell to run that haystack")));

    // Length ticks: the grid's own lengths, on the index axis of the maps and the log axis of the line plot.
    QSharedPointer<QCPAxisTickerText> lengthTicks(new QCPAxisTickerText), lineTicks(new QCPAxisTickerText),
        depthTicks(new QCPAxisTickerText);
    for (int li = 0; li < nL; ++li) {
        lengthTicks->addTick(li, length_label(lengths_[size_t(li)]));
        lineTicks->addTick(double(lengths_[size_t(li)]), length_label(lengths_[size_t(li)]));
    }
    for (int di = 0; di < nD; ++di) depthTicks->addTick(di, depth_label(depths_[size_t(di)]));
    const bool annotate = nL * nD <= kMaxAnnotatedCells;
    const QCPColorGradient gradient = accuracy_gradient();
    for (size_t i = 0; i < methods_.size(); ++i) {
        const Method m = methods_[i];
        auto* plot = new QCustomPlot(mapsHost_);
        plot->setMinimumSize(180, 150);
        mapsHost_->layout()->addWidget(plot);
        plot->plotLayout()->insertRow(0);
        plot->plotLayout()->addElement(
            0, 0, new QCPTextElement(plot, method_label(m), QFont("sans", 10, QFont::Bold)));
        plot->xAxis->setLabel("haystack length (tokens)");
        plot->yAxis->setLabel(i == 0 || !compact_ ? "needle depth" : "");
        plot->xAxis->setTicker(lengthTicks);
        plot->yAxis->setTicker(depthTicks);
        plot->xAxis->grid()->setVisible(false);
        plot->yAxis->grid()->setVisible(false);
        plot->yAxis->setRangeReversed(true);  // depth 0 (start of the context) on top, as in NIAH plots
        // One data cell per grid cell; a dimension of one cell gets two identical cells (QCustomPlot draws a
        // one-cell dimension with zero width), so each cell still covers exactly [index − ½, index + ½].
        const int ks = std::max(nL, 2), vs = std::max(nD, 2);
        auto* data = new QCPColorMapData(ks, vs, nL > 1 ? QCPRange(0, nL - 1) : QCPRange(-0.25, 0.25),
                                         nD > 1 ? QCPRange(0, nD - 1) : QCPRange(-0.25, 0.25));
        for (int k = 0; k < ks; ++k)
            for (int v = 0; v < vs; ++v) {
                double kx = 0, vy = 0;
                data->cellToCoord(k, v, &kx, &vy);
                const int li = std::clamp(int(std::lround(kx)), 0, nL - 1);
                const int di = std::clamp(int(std::lround(vy)), 0, nD - 1);
                data->setCell(k, v, nL > 0 && nD > 0 ? r.cell_accuracy(m, lengths_[size_t(li)], di) : kNaN);
            }
        auto* map = new QCPColorMap(plot->xAxis, plot->yAxis);
        map->setData(data, false);
        map->setInterpolate(false);  // flat blocks: a cell is one measurement, not a sample of a field
        map->setTightBoundary(false);
        map->setGradient(gradient);
        map->setDataRange(QCPRange(0, 1));  // fixed: colours mean the same accuracy in every file
        if (annotate)
            for (int li = 0; li < nL; ++li)
                for (int di = 0; di < nD; ++di) {
                    const double a = r.cell_accuracy(m, lengths_[size_t(li)], di);
                    if (!std::isfinite(a)) continue;
                    auto* t = new QCPItemText(plot);
                    t->position->setCoords(li, di);
                    t->setText(QString::number(a, 'f', 2));
                    t->setFont(QFont("sans", nL * nD > 40 ? 7 : 8));
                    t->setColor(a < 0.6 ? Qt::white : Qt::black);
                    t->setClipToAxisRect(true);
                }
        auto* marker = new QCPItemRect(plot);
        marker->setPen(QPen(QColor(255, 0, 160), 2.5));
        marker->setBrush(Qt::NoBrush);
        marker->setVisible(false);
        plot->xAxis->setRange(-0.5, nL - 0.5);
        plot->yAxis->setRange(-0.5, nD - 0.5);
        plot->setToolTip({});
        style_plot(plot);
        plots_.push_back(plot);
        maps_.push_back(map);
        markers_.push_back(marker);
        const int idx = int(i);
        connect(plot, &QCustomPlot::mouseMove, this, [this, idx, m](QMouseEvent* ev) {
            int li = 0, di = 0;
            if (!cellAt(idx, ev->position(), &li, &di)) {
                QToolTip::hideText();
                return;
            }
            QToolTip::showText(ev->globalPosition().toPoint(), cellTip(m, li, di), plots_[size_t(idx)]);
        });
        auto press = std::make_shared<QPointF>();
        connect(plot, &QCustomPlot::mousePress, this, [press](QMouseEvent* ev) { *press = ev->position(); });
        connect(plot, &QCustomPlot::mouseRelease, this, [this, idx, press](QMouseEvent* ev) {
            if ((ev->position() - *press).manhattanLength() > 4) return;  // a drag, not a click
            clickAt(idx, ev->position());
        });
    }
    if (!plots_.empty()) {
        auto* scale = new QCPColorScale(plots_.back());
        plots_.back()->plotLayout()->addElement(1, 1, scale);
        scale->setGradient(gradient);
        scale->setDataRange(QCPRange(0, 1));
        scale->axis()->setLabel("teacher-forced accuracy");
        scale->setBarWidth(12);
        maps_.back()->setColorScale(scale);
        auto* group = new QCPMarginGroup(plots_.back());
        plots_.back()->axisRect()->setMarginGroup(QCP::msBottom | QCP::msTop, group);
        scale->setMarginGroup(QCP::msBottom | QCP::msTop, group);
        style_plot(plots_.back());
    }

    // Accuracy vs length: one solid line per method (teacher-forced), one dashed (greedy exact) when run.
    line_->xAxis->setTicker(lineTicks);
    // Methods can score alike (vanilla and DeciMamba often coincide): each has its own marker shape, and each
    // later method draws thinner lines and smaller markers on top of the earlier ones, so both stay visible.
    const auto shape_of = [](Method m) {
        switch (m) {
            case Method::Vanilla:
                return QCPScatterStyle::ssCircle;
            case Method::LongMamba:
                return QCPScatterStyle::ssSquare;
            case Method::DeciMamba:
                return QCPScatterStyle::ssDiamond;
        }
        return QCPScatterStyle::ssTriangle;
    };
    for (size_t mi = 0; mi < methods_.size(); ++mi) {
        const Method m = methods_[mi];
        const double layer = double(std::min<size_t>(mi, 3));  // 0 = drawn first, widest
        bool gen = false;
        for (const auto& row : r.rows) gen |= row.method == m && row.generate_ran;
        for (bool generated : {false, true}) {
            if (generated && !gen) continue;
            QVector<double> x, y;
            for (int64_t L : lengths_) {
                const double a = r.length_accuracy(m, L, generated);
                if (std::isfinite(a)) x << double(L), y << a;
            }
            if (x.isEmpty()) continue;
            auto* g = line_->addGraph();
            const QColor col = method_color(m);
            g->setName(method_label(m) + (generated ? " greedy exact" : " teacher-forced"));
            const double width =
                generated ? std::max(1.0, 2.8 - 0.9 * layer) : std::max(1.2, 3.8 - 1.1 * layer);
            const double size = std::max(6.0, 12.0 - 2.5 * layer);
            g->setPen(QPen(col, width, generated ? Qt::DashLine : Qt::SolidLine));
            g->setScatterStyle(QCPScatterStyle(shape_of(m), QPen(col, 1.5),
                                               generated ? QBrush(Qt::white) : QBrush(col), size));
            g->setData(x, y, true);
            lines_[{m, generated}] = g;
        }
    }
    double lo = 1, hi = 2;
    if (nL > 0) {
        lo = double(*std::min_element(lengths_.begin(), lengths_.end()));
        hi = double(*std::max_element(lengths_.begin(), lengths_.end()));
    }
    const double xlo = lo / (hi > lo ? 1.5 : 2.0), xhi = hi * (hi > lo ? 1.5 : 2.0);
    chance_ = line_->addGraph();
    chance_->setName("chance (digits)");
    set_reference_pen(chance_, RefTone::Muted, 1.2, Qt::DotLine);
    chance_->setData(QVector<double>{xlo, xhi}, QVector<double>{kRetrievalChance, kRetrievalChance});
    auto* chanceText = new QCPItemText(line_);
    chanceText->position->setCoords(xhi, kRetrievalChance);
    chanceText->setPositionAlignment(Qt::AlignRight | Qt::AlignBottom);
    chanceText->setText("chance (digits)");
    chanceText->setFont(QFont("sans", 8));
    chanceText->setColor(reference_color(RefTone::Muted));
    line_->xAxis->setRange(xlo, xhi);
    line_->yAxis->setRange(-0.03, 1.05);
    (void)anyGenerated;
    style_plot(line_);
    line_->legend->setMaximumSize(QWIDGETSIZE_MAX,
                                  line_->legend->minimumOuterSizeHint().height());  // no stretched rows
    updateMarkers();
}

void RetrievalView::updateMarkers() {
    int li = -1, di = -1;
    if (result_ && retrieval_) {
        qint64 L = 0;
        if (prov_int(*result_, "haystack.length", &L) || prov_int(*result_, "haystack.needle_end", &L)) {
            // haystack.length (session runs) or the trace's prompt length (input minus the answer digits)
            qint64 ab = 0;
            if (!result_->provenance.count("haystack.length") &&
                prov_int(*result_, "haystack.answer_begin", &ab))
                L = ab;
            for (size_t k = 0; k < lengths_.size(); ++k)
                if (lengths_[k] == L) li = int(k);
        }
        // The depth index: the cell spec "L:DI:S" of a CLI trace, else the depth itself.
        if (const std::string* cell = prov(*result_, "haystack.cell")) {
            const QStringList f = QString::fromStdString(*cell).split(':');
            if (f.size() == 3) di = f[1].toInt();
        } else if (const std::string* d = prov(*result_, "haystack.depth")) {
            const double depth = QString::fromStdString(*d).toDouble();
            for (size_t k = 0; k < depths_.size(); ++k)
                if (std::abs(depths_[k] - depth) < 1e-6) di = int(k);
        }
        if (di >= int(depths_.size())) di = -1;
    }
    for (size_t i = 0; i < markers_.size(); ++i) {
        auto* mk = markers_[i];
        mk->setVisible(li >= 0 && di >= 0);
        if (mk->visible()) {
            mk->topLeft->setCoords(li - 0.5, di - 0.5);
            mk->bottomRight->setCoords(li + 0.5, di + 0.5);
        }
        plots_[i]->replot(QCustomPlot::rpQueuedReplot);
    }
    line_->replot(QCustomPlot::rpQueuedReplot);
}

}  // namespace mambascope::gui

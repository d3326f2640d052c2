#include "gui_util.h"

#include <qcustomplot.h>

#include <QApplication>
#include <QPalette>
#include <algorithm>

#include "mambascope/model.h"
#include "mambascope/tokenizer.h"

namespace mambascope::gui {

QVector<double> moving_average(const QVector<double>& y, int window) {
    QVector<double> out(y.size());
    double sum = 0;
    for (qsizetype i = 0; i < y.size(); ++i) {
        sum += y[i];
        if (i >= window) sum -= y[i - window];
        out[i] = sum / double(std::min<qsizetype>(i + 1, window));
    }
    return out;
}

QColor method_color(Method m) {
    switch (m) {
        case Method::Vanilla:
            return QColor(31, 119, 180);
        case Method::LongMamba:
            return QColor(214, 39, 40);
        case Method::DeciMamba:
            return QColor(44, 160, 44);
    }
    return Qt::gray;
}

QString method_label(Method m) {
    switch (m) {
        case Method::Vanilla:
            return "vanilla";
        case Method::LongMamba:
            return "LongMamba";
        case Method::DeciMamba:
            return "DeciMamba";
    }
    return "?";
}

QColor reference_color(RefTone tone) {
    const QPalette p = QApplication::palette();
    const QColor fg = p.color(QPalette::Text);
    if (tone == RefTone::Strong) return fg;
    const QColor bg = p.color(QPalette::Base);
    return QColor((fg.red() + bg.red()) / 2, (fg.green() + bg.green()) / 2, (fg.blue() + bg.blue()) / 2);
}

namespace {
constexpr const char* kRefToneProperty = "mambascope_ref_tone";

void apply_reference_pen(QObject* o) {
    const QVariant tone = o->property(kRefToneProperty);
    if (!tone.isValid()) return;
    const QColor col = reference_color(RefTone(tone.toInt()));
    if (auto* g = qobject_cast<QCPGraph*>(o)) {
        QPen pen = g->pen();
        pen.setColor(col);
        g->setPen(pen);
    } else if (auto* line = qobject_cast<QCPItemStraightLine*>(o)) {
        QPen pen = line->pen();
        pen.setColor(col);
        line->setPen(pen);
    } else if (auto* item = qobject_cast<QCPItemLine*>(o)) {
        QPen pen = item->pen();
        pen.setColor(col);
        item->setPen(pen);
    } else if (auto* text = qobject_cast<QCPItemText*>(o)) {
        text->setColor(col);
    }
}
}  // namespace

void set_reference_pen(QObject* o, RefTone tone, double width, Qt::PenStyle style) {
    o->setProperty(kRefToneProperty, int(tone));
    const QPen pen(reference_color(tone), width, style);
    if (auto* g = qobject_cast<QCPGraph*>(o))
        g->setPen(pen);
    else if (auto* line = qobject_cast<QCPItemStraightLine*>(o))
        line->setPen(pen);
    else if (auto* item = qobject_cast<QCPItemLine*>(o))
        item->setPen(pen);
    apply_reference_pen(o);
}

void style_plot(QCustomPlot* plot) {
    const QPalette p = QApplication::palette();
    const QColor bg = p.color(QPalette::Base), fg = p.color(QPalette::Text);
    const QColor grid((fg.red() + 3 * bg.red()) / 4, (fg.green() + 3 * bg.green()) / 4,
                      (fg.blue() + 3 * bg.blue()) / 4);
    plot->setBackground(bg);
    auto style_axis = [&](QCPAxis* ax) {
        ax->setBasePen(QPen(fg));
        ax->setTickPen(QPen(fg));
        ax->setSubTickPen(QPen(fg));
        ax->setTickLabelColor(fg);
        ax->setLabelColor(fg);
        ax->grid()->setPen(QPen(grid, 1, Qt::DotLine));
    };
    for (auto* el : plot->plotLayout()->elements(true)) {
        if (auto* rect = qobject_cast<QCPAxisRect*>(el)) {
            for (auto* ax : rect->axes()) style_axis(ax);
        } else if (auto* scale = qobject_cast<QCPColorScale*>(el)) {
            style_axis(scale->axis());
        } else if (auto* title = qobject_cast<QCPTextElement*>(el)) {
            title->setTextColor(fg);
        } else if (auto* legend = qobject_cast<QCPLegend*>(el)) {
            legend->setBrush(bg);
            legend->setTextColor(fg);
            legend->setBorderPen(QPen(fg));
        }
    }
    plot->legend->setBrush(bg);
    plot->legend->setTextColor(fg);
    plot->legend->setBorderPen(QPen(fg));
    // A wrapped legend (columns first) has empty cells: item(i) is null there.
    for (int i = 0; i < plot->legend->itemCount(); ++i)
        if (auto* item = plot->legend->item(i)) {
            // Entries of hidden plottables (legend click) are greyed.
            auto* pi = qobject_cast<QCPPlottableLegendItem*>(item);
            item->setTextColor(pi && !pi->plottable()->visible() ? reference_color(RefTone::Muted) : fg);
        }
    for (int i = 0; i < plot->graphCount(); ++i) apply_reference_pen(plot->graph(i));
    for (int i = 0; i < plot->itemCount(); ++i) apply_reference_pen(plot->item(i));
    plot->replot(QCustomPlot::rpQueuedReplot);
}

RunInput make_run_input(const Model& model, const std::string& utf8, const std::string& text_path,
                        int64_t max_tokens) {
    return text_run_input(*choose_tokenizer(model.dir, model.config.tokenizer), utf8, text_path, max_tokens);
}

}  // namespace mambascope::gui

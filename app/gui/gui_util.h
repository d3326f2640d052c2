// gui_util.h: small helpers shared by the views and the worker: display smoothing, method colours/labels, the
// palette-aware plot style, and turning text into a RunInput with the model's tokenizer.
//
// Design decision: plots take every colour from the application palette at the time they are styled, so a
// theme switch restyles existing plots and plots built later alike. (Long series are thinned per pixel
// column by plot_tools.h, not here.)
#pragma once

#include <QColor>
#include <QString>
#include <QVector>
#include <cstdint>
#include <memory>
#include <string>

#include "mambascope/analysis.h"

class QCustomPlot;
class QObject;
class QPen;

namespace mambascope::gui {

using RunResultPtr = std::shared_ptr<const RunResult>;

// Display smoothing of per-position NLL (tokens).
constexpr int kNllSmoothingTokens = 64;

// Trailing moving average over `window` samples (display smoothing, not model math).
QVector<double> moving_average(const QVector<double>& y, int window);

QColor method_color(Method m);
QString method_label(Method m);  // "vanilla", "LongMamba", "DeciMamba"

// Theme. Plots take their colours from the current QApplication palette: Base for the background, Text for
// axes, ticks, labels, titles and the legend. Reference lines (thresholds, training length, alignment
// targets) are drawn in palette-aware tones so that they stay visible on a dark background.
enum class RefTone { Strong, Muted };  // Strong: the Text colour; Muted: Text blended halfway into Base
QColor reference_color(RefTone tone);
// Marks a QCPGraph or QCPAbstractItem as a reference line and gives it the palette's pen for `tone` (width
// and style kept when style_plot recolours it after a theme change).
void set_reference_pen(QObject* graph_or_item, RefTone tone, double width, Qt::PenStyle style);
// Applies the current palette to a plot (background, axes of every axis rect and colour scale, titles,
// legend, grid, reference lines) and queues a replot. new_plot() calls it; MainWindow::setDark calls it for
// every plot.
void style_plot(QCustomPlot* plot);

// The run input of UTF-8 text with the model's tokenizer (choose_tokenizer): the engine's text_run_input, as
// the CLI builds it (ids, token strings, byte offsets, the text's SHA-256 and size; at most max_tokens).
RunInput make_run_input(const Model& model, const std::string& utf8, const std::string& text_path,
                        int64_t max_tokens);

}  // namespace mambascope::gui

// async_build.h: runs a view's expensive, QObject-free computation (heatmap cells) on the thread pool and
// applies the newest result on the GUI thread.
//
// Design decision: every start() bumps a generation counter shared with the worker. A result whose
// generation is no longer current is dropped (the worker may also stop early by polling `stale()`), so quick
// setResult/statistic changes end with the last request's data. wait() blocks until the current build is
// applied, for tests, headless screenshots and export.
//
// Builds run on their own pool (`AsyncBuild::pool()`), not Qt's global one: Qt's raster engine uses the
// global pool to convert images while painting, and a GUI thread that waits for a build must never queue
// behind it.
#pragma once

#include <QCoreApplication>
#include <QFuture>
#include <QFutureWatcher>
#include <QObject>
#include <QThread>
#include <QThreadPool>
#include <QtConcurrent/QtConcurrentRun>
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>

namespace mambascope::gui {

class AsyncBuild {
  public:
    explicit AsyncBuild(QObject* context) : context_(context) {}
    ~AsyncBuild() { ++*gen_; }  // a running worker sees itself stale and stops
    AsyncBuild(const AsyncBuild&) = delete;
    AsyncBuild& operator=(const AsyncBuild&) = delete;

    bool building() const { return bool(finish_); }

    // The pool every build runs on (as many threads as cores, at least two).
    static QThreadPool* pool() {
        static QThreadPool* p = [] {
            auto* q = new QThreadPool;  // lives for the program; never destroyed while builds may run
            q->setMaxThreadCount(std::max(2, QThread::idealThreadCount()));
            // Like Qt's global pool: queued builds are dropped and running ones finished before the
            // application object goes (running ones see themselves stale and stop early).
            qAddPostRoutine([] {
                AsyncBuild::pool()->clear();
                AsyncBuild::pool()->waitForDone();
            });
            return q;
        }();
        return p;
    }

    // Blocks until the current build is computed, then applies it (no-op when none is pending).
    void wait() {
        if (!finish_) return;
        auto f = std::move(finish_);
        finish_ = nullptr;
        f();
    }

    // Drops any pending build (its result is never applied).
    void cancel() {
        ++*gen_;
        finish_ = nullptr;
    }

    // compute(stale) runs on the thread pool and returns a T (copyable; plain data only); apply(T&) runs on
    // the GUI thread when the build is still the newest one.
    template <class T, class Compute, class Apply>
    void start(Compute compute, Apply apply) {
        const uint64_t my = ++*gen_;
        auto gen = gen_;
        QFuture<T> fut = QtConcurrent::run(pool(), [compute = std::move(compute), gen, my]() mutable {
            return compute([gen, my] { return gen->load() != my; });
        });
        finish_ = [fut, apply = std::move(apply)]() mutable {
            fut.waitForFinished();
            T r = fut.result();
            apply(r);
        };
        auto* watcher = new QFutureWatcher<T>(context_);
        QObject::connect(watcher, &QFutureWatcherBase::finished, context_, [this, watcher, my] {
            watcher->deleteLater();
            if (gen_->load() == my) wait();
        });
        watcher->setFuture(fut);
    }

  private:
    QObject* context_;
    std::shared_ptr<std::atomic<uint64_t>> gen_ = std::make_shared<std::atomic<uint64_t>>(0);
    std::function<void()> finish_;
};

}  // namespace mambascope::gui

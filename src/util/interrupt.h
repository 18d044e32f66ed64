// Cooperative interruption (SIGINT/SIGTERM): the signal handler sets one process-wide flag that
// long loops poll; a long library call with no loop of ours (LAPACK's SVD) runs on its own thread
// while the caller polls, so Ctrl-C stops a run within a fraction of a second.
#pragma once
#include <atomic>
#include <functional>

namespace deltaedit::util {

// The signal that interrupted the run, 0 if none. Written by the signal handler only
// (lock-free, constant-initialised: async-signal-safe).
extern std::atomic<int> g_interrupt_signal;

inline bool interrupted() { return g_interrupt_signal.load(std::memory_order_relaxed) != 0; }

// Throws Error(Interrupted) once a signal arrived.
void check_interrupted();

// Runs `job` on a thread of its own while this thread checks for interruption every 20 ms.
// Returns when the job returns (rethrowing what it threw); on SIGINT/SIGTERM throws
// Error(Interrupted) at once and leaves the job running to the end of the process, so `job` must
// own everything it touches (capture shared_ptrs, never references to the caller's stack).
void run_interruptible(std::function<void()> job);

}  // namespace deltaedit::util

// SIGHUP as a request to re-read files, taken on a thread of its own: never
// work in a signal handler. BlockHangupSignal() at the start of main(), before
// any thread starts (as BlockTerminationSignals), so that no thread has
// SIGHUP delivered (its default action would end the process); a
// HangupListener then takes each one with sigtimedwait and calls back.
// SIGTERM/SIGINT stay with GrpcServer::WaitForTerminationSignal.
//
// One listener per process: two threads waiting for SIGHUP would each see
// only some of them.
#ifndef KVSTORE_COMMON_SERVER_HANGUP_LISTENER_H_
#define KVSTORE_COMMON_SERVER_HANGUP_LISTENER_H_

#include <atomic>
#include <functional>
#include <thread>

namespace kvstore {

// Blocks SIGHUP in the calling thread and every thread it starts afterwards.
void BlockHangupSignal();

class HangupListener {
 public:
  // Calls `on_hangup` on the listener's thread for each SIGHUP.
  explicit HangupListener(std::function<void()> on_hangup);
  ~HangupListener();  // Stops and joins the thread.
  HangupListener(const HangupListener&) = delete;
  HangupListener& operator=(const HangupListener&) = delete;

 private:
  void Loop();

  const std::function<void()> on_hangup_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace kvstore

#endif  // KVSTORE_COMMON_SERVER_HANGUP_LISTENER_H_

#include "common/server/hangup_listener.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#include <utility>

#include "glog/logging.h"

namespace kvstore {
namespace {

sigset_t HangupSet() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGHUP);
  return set;
}

}  // namespace

void BlockHangupSignal() {
  const sigset_t set = HangupSet();
  const int rc = pthread_sigmask(SIG_BLOCK, &set, nullptr);
  CHECK_EQ(rc, 0) << "pthread_sigmask: " << strerror(rc);
}

HangupListener::HangupListener(std::function<void()> on_hangup) : on_hangup_(std::move(on_hangup)) {
  thread_ = std::thread([this] { Loop(); });
}

HangupListener::~HangupListener() {
  stopping_.store(true);
  // Wakes the wait: SIGHUP is blocked, so this one is only queued for it.
  pthread_kill(thread_.native_handle(), SIGHUP);
  thread_.join();
}

void HangupListener::Loop() {
  const sigset_t set = HangupSet();
  // A bounded wait as well, so a stop is seen even if the wake-up signal
  // was taken by another thread.
  const timespec tick = {1, 0};
  for (;;) {
    const int signal = sigtimedwait(&set, nullptr, &tick);
    if (stopping_.load()) return;
    if (signal == SIGHUP) on_hangup_();
  }
}

}  // namespace kvstore

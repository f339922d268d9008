// A TCP relay on 127.0.0.1 for tests that cut one process off from another
// (e.g. a router from etcd) without touching either: it accepts on a free
// port and pipes bytes both ways to a target address. Cut() closes every
// relayed connection and refuses new ones (accepted, then closed at once)
// until Restore(). Loopback only; nothing is ever sent anywhere but the
// target.
//
// Thread-safe: Cut and Restore may be called from any thread. One thread
// accepts; each connection has one thread that pumps both directions. The
// destructor stops them all.
#ifndef KVSTORE_TESTS_SUPPORT_TCP_RELAY_H_
#define KVSTORE_TESTS_SUPPORT_TCP_RELAY_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace kvstore::testing {

class TcpRelay {
 public:
  // `target` is "127.0.0.1:PORT".
  explicit TcpRelay(std::string target);
  ~TcpRelay();
  TcpRelay(const TcpRelay&) = delete;
  TcpRelay& operator=(const TcpRelay&) = delete;

  // Listens on 127.0.0.1:0 and starts accepting.
  absl::Status Start();
  // "127.0.0.1:PORT" to give the client instead of the target.
  const std::string& address() const { return address_; }

  // Closes every relayed connection and refuses new ones until Restore.
  void Cut();
  void Restore();

  // Connections accepted, and those refused while cut (for test output).
  uint64_t accepted() const { return accepted_.load(); }
  uint64_t refused() const { return refused_.load(); }

 private:
  void Accept();
  void Pump(int client, int upstream);
  int ConnectToTarget() const;

  const std::string target_;
  std::string address_;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};  // A pipe: writing to it wakes the accepting thread.
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> refused_{0};
  std::thread acceptor_;
  absl::Mutex mu_;
  bool cut_ ABSL_GUARDED_BY(mu_) = false;
  std::set<int> open_ ABSL_GUARDED_BY(mu_);  // Fds of live connections (both ends).
  std::vector<std::thread> pumps_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvstore::testing

#endif  // KVSTORE_TESTS_SUPPORT_TCP_RELAY_H_

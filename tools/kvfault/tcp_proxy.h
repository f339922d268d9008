// A TCP proxy on 127.0.0.1 that puts network faults on one link without root
// and without netem (which this kernel lacks): it accepts on a free port and
// pipes bytes both ways to a target address, and on the way it can
//   delay      hold every chunk for delay ± jitter (order kept: TCP never
//              reorders, so a chunk is never released before the one ahead)
//   blackhole  stop forwarding and stop reading, keeping every socket open
//              (the peers' buffers fill, as under a partition that drops
//              packets); new connections are accepted but not connected on
//              until the blackhole is lifted
//   rate       cap each direction of each connection at a byte rate
//   refuse     accept new connections and reset them at once
//   reset      close every open connection with a TCP reset (one-shot)
// Set() replaces the faults; Set({}) heals: held bytes flow again.
// Loopback only; nothing is ever sent anywhere but the target.
//
// Used by kvfault (a proxy on every replication and client link) and by
// integration tests (Cut/Restore: a router or a node cut off from etcd).
//
// Thread-safe: every method may be called from any thread. One thread
// accepts; each connection has one thread that pumps both directions. The
// destructor stops and joins them all.
#ifndef KVSTORE_TOOLS_KVFAULT_TCP_PROXY_H_
#define KVSTORE_TOOLS_KVFAULT_TCP_PROXY_H_

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace kvstore::fault {

// The faults on a link; the default is a healthy link.
struct LinkFaults {
  absl::Duration delay = absl::ZeroDuration();
  absl::Duration jitter = absl::ZeroDuration();  // Uniform in [-jitter, +jitter].
  bool blackhole = false;
  bool refuse = false;
  int64_t rate_bytes_per_s = 0;  // 0: unlimited.

  bool healthy() const;
  // "delay 100ms ± 20ms, rate 12500 B/s", or "healthy".
  std::string ToString() const;
};

// What a proxy did, for logs and test output.
struct ProxyStats {
  uint64_t accepted = 0;  // Connections accepted and relayed.
  uint64_t refused = 0;   // Accepted and reset at once (refuse), or whose target refused.
  uint64_t reset = 0;     // Open connections closed by ResetConnections/Cut.
  uint64_t open = 0;      // Connections open now.
  uint64_t bytes_to_target = 0;
  uint64_t bytes_from_target = 0;
};

class TcpProxy {
 public:
  // `target` is "127.0.0.1:PORT". `seed` draws the jitter.
  explicit TcpProxy(std::string target, uint64_t seed = 1);
  ~TcpProxy();
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  // Listens on 127.0.0.1:0 and starts accepting.
  absl::Status Start();
  // "127.0.0.1:PORT" to give the client instead of the target.
  const std::string& address() const { return address_; }
  const std::string& target() const { return target_; }

  // Replaces the link's faults; open connections follow within ~10 ms.
  void Set(const LinkFaults& faults);
  LinkFaults faults() const;
  // Closes every open connection with a TCP reset (SO_LINGER 0). Returns
  // how many it closed. New connections are relayed as usual.
  int ResetConnections();

  // The tests' cut: refuse new connections and reset the open ones, until
  // Restore() (which heals every fault).
  void Cut();
  void Restore() { Set(LinkFaults()); }

  ProxyStats stats() const;
  uint64_t accepted() const { return stats().accepted; }
  uint64_t refused() const { return stats().refused; }

 private:
  struct Connection;
  void Accept();
  void Pump(Connection* c);
  int ConnectToTarget() const;

  const std::string target_;
  std::string address_;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};  // A pipe: writing to it wakes the accepting thread.
  std::atomic<bool> stop_{false};
  std::thread acceptor_;

  mutable absl::Mutex mu_;
  LinkFaults faults_ ABSL_GUARDED_BY(mu_);
  uint64_t reset_generation_ ABSL_GUARDED_BY(mu_) = 0;  // Bumped by each reset.
  uint64_t seed_ ABSL_GUARDED_BY(mu_);
  ProxyStats stats_ ABSL_GUARDED_BY(mu_);
  std::list<std::unique_ptr<Connection>> connections_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvstore::fault

#endif  // KVSTORE_TOOLS_KVFAULT_TCP_PROXY_H_

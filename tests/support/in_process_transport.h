// A ReplicationTransport inside one process, for deterministic tests of the
// replication library without gRPC: each Connect opens a pair of message
// queues to a registered ReplicationNode and runs its follower session on a
// thread of this transport. A test can make a follower unreachable, cut every
// open stream to it, or hold the messages a leader sends it (they are
// delivered, in order, once released) — the faults replication must survive:
// a follower that is down, a connection that breaks mid-stream, a slow link.
// Thread-safe. Destroy it after the nodes' links are stopped, before the nodes.
#ifndef KVSTORE_TESTS_SUPPORT_IN_PROCESS_TRANSPORT_H_
#define KVSTORE_TESTS_SUPPORT_IN_PROCESS_TRANSPORT_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/replication/node.h"
#include "common/replication/transport.h"

namespace kvstore::testing {

class InProcessTransport final : public ReplicationTransport {
 public:
  InProcessTransport() = default;
  // Cuts every stream and joins the follower threads.
  ~InProcessTransport() override;
  InProcessTransport(const InProcessTransport&) = delete;
  InProcessTransport& operator=(const InProcessTransport&) = delete;

  // `node` answers streams to `address` (it must outlive its registration).
  void Register(const std::string& address, ReplicationNode* node);
  // Cuts its streams, waits for its sessions to end, and forgets it.
  void Unregister(const std::string& address);
  // While unreachable, Connect gives a stream that fails at once.
  void SetReachable(const std::string& address, bool reachable);
  // Breaks every open stream to `address` (both ends see it end).
  void Cut(const std::string& address);
  // While held, what leaders send to `address` waits (in order) undelivered.
  void Hold(const std::string& address, bool hold);
  // Streams opened to `address` so far.
  int connects(const std::string& address) const;
  // Runs `hook(address)` at the start of every Connect, on the connecting
  // thread, before the stream exists (a test acts "just before a leader's
  // stream opens"). It may call this transport. Empty: none.
  void SetConnectHook(std::function<void(const std::string& address)> hook);
  // The same at the start of every Promise, before the node is asked.
  void SetPromiseHook(std::function<void(const std::string& address)> hook);

  std::unique_ptr<LeaderStream> Connect(const std::string& address) override;
  absl::StatusOr<v1::Position> AskPosition(const std::string& address,
                                           absl::Duration timeout) override;
  absl::StatusOr<v1::Position> Promise(const std::string& address,
                                       const v1::PromiseRequest& request,
                                       absl::Duration timeout) override;

  class Pipe;

 private:
  struct Peer {
    ReplicationNode* node = nullptr;
    bool reachable = true;
    bool held = false;
    int connects = 0;
    std::vector<std::shared_ptr<Pipe>> pipes;
    std::vector<std::thread> sessions;
  };

  // The node answering `address` when it is reachable; else UNAVAILABLE.
  absl::StatusOr<ReplicationNode*> ReachableNode(const std::string& address);

  mutable absl::Mutex mu_;
  std::map<std::string, Peer> peers_ ABSL_GUARDED_BY(mu_);
  std::function<void(const std::string&)> connect_hook_ ABSL_GUARDED_BY(mu_);
  std::function<void(const std::string&)> promise_hook_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvstore::testing

#endif  // KVSTORE_TESTS_SUPPORT_IN_PROCESS_TRANSPORT_H_

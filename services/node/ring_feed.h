// RingFeed: keeps a node's OwnershipGate fed with the ring in etcd
// (<P>/ring, common/coord/schema.h RingRecord), in etcd mode.
//
// It watches that one key (a coord::TopologyView on it) and hands each new
// version to OwnershipGate::SetRing; the gate ignores versions it has passed.
// While etcd is unreachable, or when the key is deleted or malformed, the
// gate keeps the last ring it was given. Without a ring key at all (a
// cluster initialised by an older kvctl) the gate stays disabled and the
// node serves every key, as before; that is logged once. A shard that the
// ring does not list (a new shard group before its first migration) owns
// nothing, so it refuses every key with WRONG_SHARD.
//
// Thread-safe; snapshots are handled on the view's thread.
#ifndef KVSTORE_SERVICES_NODE_RING_FEED_H_
#define KVSTORE_SERVICES_NODE_RING_FEED_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/coord/etcd_client.h"
#include "common/coord/topology_view.h"
#include "common/ring/hash_ring.h"
#include "services/node/ownership_gate.h"

namespace kvstore {

// The ring a <P>/ring value describes, built. INVALID_ARGUMENT when the value
// is not a RingRecord or makes no ring (no vnodes, say).
struct VersionedRing {
  std::shared_ptr<const HashRing> ring;
  int64_t version = 0;
};
absl::StatusOr<VersionedRing> RingFromValue(absl::string_view value);

class RingFeed {
 public:
  // `client` and `gate` must outlive the feed. `prefix` is --etcd-prefix.
  RingFeed(coord::EtcdClient* client, const std::string& prefix, OwnershipGate* gate);
  // Stop().
  ~RingFeed();
  RingFeed(const RingFeed&) = delete;
  RingFeed& operator=(const RingFeed&) = delete;

  void Start();
  // Waits up to `timeout` for the first read of the key (present or not);
  // false when etcd did not answer in time.
  bool AwaitFirstRead(absl::Duration timeout);
  // Ends the watch. Idempotent.
  void Stop();

 private:
  void OnSnapshot(const coord::TopologySnapshot& snapshot);

  OwnershipGate* const gate_;
  std::unique_ptr<coord::TopologyView> view_;
  absl::Mutex mu_;
  bool read_ ABSL_GUARDED_BY(mu_) = false;
  // The view's thread only: what was last logged, so each state is logged once.
  bool warned_absent_ = false;
  std::string last_error_;
};

}  // namespace kvstore

#endif  // KVSTORE_SERVICES_NODE_RING_FEED_H_

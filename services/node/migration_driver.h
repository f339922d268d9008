// The destination side of resharding (docs/resharding.md): on the leader of
// the shard a migration adds (or, removing a shard, of the destination of
// the stage in progress: one source, one destination per stage), pulls the moving ranges from each
// source shard (copy, then catch-up from the source's log), writes them as imports that keep their
// versions, and when every source is close, fences the sources and publishes the next ring in one
// etcd Txn; then has the sources delete what they no longer own. State lives in etcd (the migration
// record and one progress key per source), so a new leader, or this one restarted, resumes from the
// last checkpoint rather than from the start.
//
// Thread-safe. Runs on its own thread between Start and Stop; does nothing
// while this node does not lead its shard or no migration names it.
#ifndef KVSTORE_SERVICES_NODE_MIGRATION_DRIVER_H_
#define KVSTORE_SERVICES_NODE_MIGRATION_DRIVER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/coord/etcd_client.h"
#include "common/coord/schema.h"
#include "common/metrics/migration_metrics.h"
#include "common/replication/replication_hooks.h"
#include "common/ring/hash_ring.h"
#include "common/ring/ring_diff.h"
#include "common/storage/store.h"
#include "grpcpp/channel.h"
#include "kvstore/v1/migration.grpc.pb.h"

namespace kvstore {

struct MigrationDriverOptions {
  std::string prefix;  // The cluster's etcd prefix.
  std::string shard;   // This node's shard.
  // A channel to a node of another shard (same credentials as replication).
  std::function<std::shared_ptr<grpc::Channel>(const std::string& address)> channel;
  // Installs a ring in this node's ownership check (at once after a cutover
  // commits, before the watch brings it).
  std::function<void(std::shared_ptr<const HashRing> ring, int64_t version)> install_ring;
  // Ends this node's leadership so that the shard elects again and takes a
  // newer epoch (FailoverAgent::Reelect); called when a source's epoch is
  // not below this leader's.
  std::function<absl::Status(const std::string& why)> renew_epoch;
  absl::Duration poll = absl::Milliseconds(250);
  absl::Duration rpc_timeout = absl::Seconds(5);
};

class MigrationDriver {
 public:
  // `etcd`, `store` and `replication` (null: a lone shard, always leading)
  // must outlive the driver.
  MigrationDriver(coord::EtcdClient* etcd, Store* store, ReplicationHooks* replication,
                  MigrationDriverOptions options);
  ~MigrationDriver();
  MigrationDriver(const MigrationDriver&) = delete;
  MigrationDriver& operator=(const MigrationDriver&) = delete;

  void Start();
  // Returns once the driver's thread is joined; a migration it was driving
  // stays where its last checkpoint says. Idempotent.
  void Stop();

  // What the driver reports of the migration it drives now, as of its last
  // progress update (empty `id`: none). Any thread.
  MigrationMetrics metrics() const;

 private:
  struct Source;
  struct Run;

  void Loop();
  // Drives the migration `id` until it is over, this node stops leading, or
  // an error (returned, and recorded in the migration record).
  absl::Status Drive(const std::string& id);
  absl::Status LoadRecord(Run& run);
  absl::Status SetPhase(Run& run, const std::string& phase);
  absl::Status CopyAndCatchUp(Run& run);
  // One call to `source` (Begin, a Copy page or a CatchUp page) and its
  // imports. `throttled`: wait for the token bucket afterwards (not while the
  // sources are fenced: there the pause, not the rate, matters).
  absl::Status Step(Run& run, Source& source, bool throttled, bool* progressed);
  // True when the cutover committed; false when it went back to catch-up.
  absl::StatusOr<bool> Cutover(Run& run);
  absl::Status AbortCutover(Run& run, const std::string& why);
  absl::Status CleanupSources(Run& run);
  // Waits until every router registered under <P>/routers/ reports the
  // migration's ring version or a later one (a router whose lease ran out
  // has no key and does not count), saying in each source's progress which
  // routers it waits for. False when stopping or no longer leading.
  bool AwaitRouters(Run& run);
  absl::Status Cancel(Run& run);
  // A remove whose stage finished its cleanup: the record moves to the next
  // stage (phase copy, from = this stage's ring), for that stage's
  // destination to drive.
  absl::Status NextStage(Run& run);
  absl::Status Finish(Run& run, const std::string& phase);
  // Deletes the keys this node holds but does not own under `ring` (null:
  // a ring without this shard, so every key).
  absl::Status PurgeNotOwned(const HashRing* ring);
  absl::Status FlushProgress(Run& run, bool force);
  void ReleaseSources(Run& run, bool finished);

  // The source's leader and a stub to it; refreshed after a failed call.
  absl::Status ResolveSource(Source& source);
  // --copy-from=replica: the most advanced replica of the source (not its
  // leader) by its member record in etcd, and a stub to it; UNAVAILABLE when
  // the shard has none.
  absl::Status ResolveReplica(Source& source);
  // Writes the keys as imports and waits until they are committed here.
  absl::Status Import(const google::protobuf::RepeatedPtrField<v1::MovedKey>& keys,
                      uint64_t* applied);
  // Waits while the token bucket is in debt; false when stopping. While
  // copying or catching up, a pause or a cancel ends the wait early.
  bool Throttle(Run& run, uint64_t bytes);
  // True when the operator asked to pause or cancel, by a record at most
  // kRecordRefresh old (re-read from etcd when older), or when that re-read
  // failed (kept in the run for the copy loop to return).
  bool Halted(Run& run);
  bool Leading();
  // Waits `d` or until Stop; false when stopping.
  bool WaitFor(absl::Duration d);
  bool stopping();
  // Copies the run's phase and per-source progress into `metrics_`.
  void PublishMetrics(const Run& run);

  coord::EtcdClient* const etcd_;
  Store* const store_;
  ReplicationHooks* const replication_;
  const MigrationDriverOptions options_;

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;

  mutable absl::Mutex metrics_mu_;
  MigrationMetrics metrics_ ABSL_GUARDED_BY(metrics_mu_);
};

}  // namespace kvstore

#endif  // KVSTORE_SERVICES_NODE_MIGRATION_DRIVER_H_

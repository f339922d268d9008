// The source side of resharding (proto/kvstore/v1/migration.proto,
// docs/resharding.md): what a shard's leader answers to the leader of the
// shard that receives some of its ranges. Every call is a stateless pull, so
// the caller can restart, and this node can fail over, between any two calls.
// Only the leader of `shard` answers (FAILED_PRECONDITION elsewhere), except
// a Copy that names a min_index: a caught-up replica of `shard` that has
// applied at least that index serves it too (--copy-from=replica).
//
// Thread-safe; callbacks never block a gRPC thread on disk or on replicas.
#ifndef KVSTORE_SERVICES_NODE_MIGRATION_SOURCE_H_
#define KVSTORE_SERVICES_NODE_MIGRATION_SOURCE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/replication/replication_hooks.h"
#include "common/ring/ring_diff.h"
#include "common/security/access_policy.h"
#include "common/storage/log_cursor.h"
#include "common/storage/store.h"
#include "kvstore/v1/migration.grpc.pb.h"

namespace kvstore {

// ErrorInfo reason of a CatchUp whose start is no longer in the source's log.
inline constexpr char kMigrationLogGone[] = "LOG_GONE";

// What the source needs from the node's ownership of keys (OwnershipGate in
// kv-shard; null members mean "not available": Fence and Cleanup then refuse).
struct MigrationSourceHooks {
  // Holds `ranges` until the ring reaches `until_version` and runs `fn` while
  // no admitted write is between its ownership check and the store.
  std::function<void(RangeSet ranges, int64_t until_version, const std::function<void()>& fn)>
      hold_and_run;
  // Ends the hold.
  std::function<void()> release;
  // The node's ring version, and whether it owns a key under that ring.
  std::function<int64_t()> ring_version;
  std::function<bool(absl::string_view key)> owns;
  // This shard's share of the ring (for estimates); 0 when unknown.
  std::function<double()> owned_fraction;
};

class MigrationSourceService final : public v1::Migration::CallbackService {
 public:
  // `store`, `replication` (null on a lone shard: then this node is the
  // leader) and `access` (null: every call allowed; else cluster access, as
  // Admin and Replication) must outlive the service.
  MigrationSourceService(std::string shard, Store* store, ReplicationHooks* replication,
                         MigrationSourceHooks hooks, const AccessPolicy* access = nullptr);

  grpc::ServerUnaryReactor* Begin(grpc::CallbackServerContext* context,
                                  const v1::MigrationBeginRequest* request,
                                  v1::MigrationBeginResponse* response) override;
  grpc::ServerUnaryReactor* Copy(grpc::CallbackServerContext* context,
                                 const v1::MigrationCopyRequest* request,
                                 v1::MigrationCopyResponse* response) override;
  grpc::ServerUnaryReactor* CatchUp(grpc::CallbackServerContext* context,
                                    const v1::MigrationCatchUpRequest* request,
                                    v1::MigrationCatchUpResponse* response) override;
  grpc::ServerUnaryReactor* Fence(grpc::CallbackServerContext* context,
                                  const v1::MigrationFenceRequest* request,
                                  v1::MigrationFenceResponse* response) override;
  grpc::ServerUnaryReactor* Release(grpc::CallbackServerContext* context,
                                    const v1::MigrationReleaseRequest* request,
                                    v1::MigrationReleaseResponse* response) override;
  grpc::ServerUnaryReactor* Cleanup(grpc::CallbackServerContext* context,
                                    const v1::MigrationCleanupRequest* request,
                                    v1::MigrationCleanupResponse* response) override;

  // The same, without gRPC (tests, and the handlers above).
  absl::Status ServeBegin(const v1::MigrationBeginRequest& request,
                          v1::MigrationBeginResponse* response);
  absl::Status ServeCopy(const v1::MigrationCopyRequest& request,
                         v1::MigrationCopyResponse* response);
  absl::Status ServeCatchUp(const v1::MigrationCatchUpRequest& request,
                            v1::MigrationCatchUpResponse* response);
  absl::Status ServeFence(const v1::MigrationFenceRequest& request,
                          v1::MigrationFenceResponse* response);
  // `done` gets the result once the deletes are in the log.
  void ServeCleanup(const v1::MigrationCleanupRequest& request,
                    v1::MigrationCleanupResponse* response, std::function<void(absl::Status)> done);

  // Copy pages this node answered (as leader or as replica), for
  // kvstore_migration_copy_pages_served_total. Any thread.
  uint64_t copy_pages_served() const { return copy_pages_served_.load(std::memory_order_relaxed); }

 private:
  // OK on the leader of `shard`.
  absl::Status CheckSource(absl::string_view shard);
  // OK on the leader of `shard`, or on a caught-up replica of it that has
  // applied `min_index` (> 0).
  absl::Status CheckCopySource(absl::string_view shard, uint64_t min_index);

  const std::string shard_;
  Store* const store_;
  ReplicationHooks* const replication_;
  const MigrationSourceHooks hooks_;
  const AccessPolicy* const access_;
  std::atomic<uint64_t> copy_pages_served_{0};

  absl::Mutex mu_;
  // One log cursor per catch-up (migration id and first range), reused while
  // the caller asks from where the last answer ended: re-seeking from a
  // segment's start on every call would read the segment again each time.
  // A cursor is valid for one leadership (epoch) of this node.
  struct CatchUpCursor {
    uint64_t epoch = 0;
    std::unique_ptr<LogCursor> cursor;
  };
  std::map<std::string, CatchUpCursor> cursors_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvstore

#endif  // KVSTORE_SERVICES_NODE_MIGRATION_SOURCE_H_

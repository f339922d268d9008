// kvstore.v1.Admin for a shard: status and on-demand snapshots. A snapshot can
// take seconds, so it runs on the service's own worker thread, never on a gRPC
// reaction; requests that arrive meanwhile wait for the next one. Backup and
// Restore streams run on threads of their own (backup_stream.h).
#ifndef KVSTORE_SERVICES_NODE_ADMIN_SERVICE_H_
#define KVSTORE_SERVICES_NODE_ADMIN_SERVICE_H_

#include <atomic>
#include <deque>
#include <functional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/replication/replication_hooks.h"
#include "common/security/access_policy.h"
#include "common/storage/store.h"
#include "kvstore/v1/admin.grpc.pb.h"

namespace kvstore {

class AdminService final : public v1::Admin::CallbackService {
 public:
  // `store`, `replication` and `access` (null: every call allowed) must
  // outlive the service. Without replication (null) the node reports `role`
  // and Promote is FAILED_PRECONDITION.
  AdminService(Store* store, std::string role, std::string data_dir,
               ReplicationHooks* replication = nullptr, const AccessPolicy* access = nullptr);
  // Finishes queued work first.
  ~AdminService() override;
  AdminService(const AdminService&) = delete;
  AdminService& operator=(const AdminService&) = delete;

  grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext* context,
                                   const v1::StatusRequest* request,
                                   v1::StatusResponse* response) override;
  grpc::ServerUnaryReactor* Snapshot(grpc::CallbackServerContext* context,
                                     const v1::SnapshotRequest* request,
                                     v1::SnapshotResponse* response) override;
  grpc::ServerUnaryReactor* Promote(grpc::CallbackServerContext* context,
                                    const v1::PromoteRequest* request,
                                    v1::PromoteResponse* response) override;
  grpc::ServerWriteReactor<v1::BackupChunk>* Backup(grpc::CallbackServerContext* context,
                                                    const v1::BackupRequest* request) override;
  grpc::ServerReadReactor<v1::BackupChunk>* Restore(grpc::CallbackServerContext* context,
                                                    v1::RestoreResponse* response) override;
  // A router's call: FAILED_PRECONDITION here (after the token check, like
  // every Admin call).
  grpc::ServerUnaryReactor* ClusterStatus(grpc::CallbackServerContext* context,
                                          const v1::ClusterStatusRequest* request,
                                          v1::ClusterStatusResponse* response) override;

  // What Status answers, without the RPC (for metrics). Thread-safe.
  void FillStatus(v1::StatusResponse* response);

 private:
  void Worker();
  // Runs `job` on the worker thread, or finishes `reactor` with UNAVAILABLE.
  void Enqueue(grpc::ServerUnaryReactor* reactor, std::function<void()> job);

  Store* const store_;
  const std::string role_;
  const std::string data_dir_;
  ReplicationHooks* const replication_;
  const AccessPolicy* const access_;
  const int64_t started_micros_;
  std::atomic<bool> restoring_{false};

  absl::Mutex mu_;
  std::deque<std::function<void()>> work_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread worker_;
};

// Fills a SnapshotInfo from the storage layer's description.
void FillSnapshotInfo(const SnapshotMeta& meta, double duration_seconds, v1::SnapshotInfo* info);

}  // namespace kvstore

#endif  // KVSTORE_SERVICES_NODE_ADMIN_SERVICE_H_

// kvstore.v1.Admin on kv-router, so `kvctl --addr=ROUTER status` works: Status
// answers role "router" with the version, uptime and address (a router holds
// no data, so the other fields stay empty). ClusterStatus asks every node of
// every shard for its Admin.Status now, in parallel, and sums the leaders'
// answers. Promote, Snapshot, Backup and Restore act on a shard's data and are
// UNIMPLEMENTED here, saying to call a shard node.
#ifndef KVSTORE_SERVICES_ROUTER_ROUTER_ADMIN_SERVICE_H_
#define KVSTORE_SERVICES_ROUTER_ROUTER_ADMIN_SERVICE_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/security/access_policy.h"
#include "kvstore/v1/admin.grpc.pb.h"
#include "services/router/backend_channels.h"
#include "services/router/routing_table.h"

namespace kvstore {

// Thread-safe.
class RouterAdminService final : public v1::Admin::CallbackService {
 public:
  // `access` (null: every call allowed) must outlive the service.
  explicit RouterAdminService(std::string version, const AccessPolicy* access = nullptr);
  RouterAdminService(const RouterAdminService&) = delete;
  RouterAdminService& operator=(const RouterAdminService&) = delete;

  // The router's client-facing HOST:PORT, once the server has bound it.
  void set_address(std::string address);

  // Where ClusterStatus finds the shards (the table in use) and calls them.
  // Without it ClusterStatus is UNIMPLEMENTED. `channels` must outlive the
  // service; set before the server starts.
  using TableSource = std::function<std::shared_ptr<RoutingTable>()>;
  void set_cluster(TableSource tables, BackendChannels* channels) {
    tables_ = std::move(tables);
    channels_ = channels;
  }
  // Deadline of each node's Admin.Status within ClusterStatus (shorter when
  // the caller's deadline is sooner).
  static constexpr int64_t kNodeStatusTimeoutMs = 2000;

  grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext* context,
                                   const v1::StatusRequest* request,
                                   v1::StatusResponse* response) override;
  grpc::ServerUnaryReactor* Snapshot(grpc::CallbackServerContext* context,
                                     const v1::SnapshotRequest* request,
                                     v1::SnapshotResponse* response) override;
  grpc::ServerUnaryReactor* Promote(grpc::CallbackServerContext* context,
                                    const v1::PromoteRequest* request,
                                    v1::PromoteResponse* response) override;
  grpc::ServerUnaryReactor* ClusterStatus(grpc::CallbackServerContext* context,
                                          const v1::ClusterStatusRequest* request,
                                          v1::ClusterStatusResponse* response) override;
  grpc::ServerWriteReactor<v1::BackupChunk>* Backup(grpc::CallbackServerContext* context,
                                                    const v1::BackupRequest* request) override;
  grpc::ServerReadReactor<v1::BackupChunk>* Restore(grpc::CallbackServerContext* context,
                                                    v1::RestoreResponse* response) override;

 private:
  const std::string version_;
  const AccessPolicy* const access_;
  const absl::Time started_;
  TableSource tables_;
  BackendChannels* channels_ = nullptr;
  absl::Mutex mu_;
  std::string address_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvstore

#endif  // KVSTORE_SERVICES_ROUTER_ROUTER_ADMIN_SERVICE_H_

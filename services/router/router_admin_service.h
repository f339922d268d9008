// kvstore.v1.Admin on kv-router, so `kvctl --addr=ROUTER status` works: Status
// answers role "router" with the version, uptime and address (a router holds
// no data, so the other fields stay empty). Promote and Snapshot act on a
// shard's data and are UNIMPLEMENTED here, saying to call a shard node.
#ifndef KVSTORE_SERVICES_ROUTER_ROUTER_ADMIN_SERVICE_H_
#define KVSTORE_SERVICES_ROUTER_ROUTER_ADMIN_SERVICE_H_

#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/security/access_policy.h"
#include "kvstore/v1/admin.grpc.pb.h"

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

  grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext* context,
                                   const v1::StatusRequest* request,
                                   v1::StatusResponse* response) override;
  grpc::ServerUnaryReactor* Snapshot(grpc::CallbackServerContext* context,
                                     const v1::SnapshotRequest* request,
                                     v1::SnapshotResponse* response) override;
  grpc::ServerUnaryReactor* Promote(grpc::CallbackServerContext* context,
                                    const v1::PromoteRequest* request,
                                    v1::PromoteResponse* response) override;

 private:
  const std::string version_;
  const AccessPolicy* const access_;
  const absl::Time started_;
  absl::Mutex mu_;
  std::string address_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvstore

#endif  // KVSTORE_SERVICES_ROUTER_ROUTER_ADMIN_SERVICE_H_

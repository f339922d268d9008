#include "services/router/router_admin_service.h"

#include <utility>

#include "absl/time/clock.h"

namespace kvstore {
namespace {

grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* context, const grpc::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

}  // namespace

RouterAdminService::RouterAdminService(std::string version, const AccessPolicy* access)
    : version_(std::move(version)), access_(access), started_(absl::Now()) {}

void RouterAdminService::set_address(std::string address) {
  absl::MutexLock lock(&mu_);
  address_ = std::move(address);
}

grpc::ServerUnaryReactor* RouterAdminService::Status(grpc::CallbackServerContext* context,
                                                     const v1::StatusRequest* /*request*/,
                                                     v1::StatusResponse* response) {
  if (auto* refused = RefuseUnauthenticated(access_, context, Access::kCluster)) return refused;
  response->set_role("router");
  response->set_version(version_);
  response->set_uptime_seconds(absl::ToDoubleSeconds(absl::Now() - started_));
  {
    absl::MutexLock lock(&mu_);
    response->set_address(address_);
  }
  return Finish(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* RouterAdminService::Snapshot(grpc::CallbackServerContext* context,
                                                       const v1::SnapshotRequest* /*request*/,
                                                       v1::SnapshotResponse* /*response*/) {
  if (auto* refused = RefuseUnauthenticated(access_, context, Access::kCluster)) return refused;
  return Finish(context, grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                                      "kv-router holds no data to snapshot: call Admin.Snapshot "
                                      "on a shard node (kv-shard or kv-replica), e.g. "
                                      "kvctl --addr=NODE snapshot"));
}

grpc::ServerUnaryReactor* RouterAdminService::Promote(grpc::CallbackServerContext* context,
                                                      const v1::PromoteRequest* /*request*/,
                                                      v1::PromoteResponse* /*response*/) {
  if (auto* refused = RefuseUnauthenticated(access_, context, Access::kCluster)) return refused;
  return Finish(context, grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                                      "kv-router cannot be promoted: call Admin.Promote on the "
                                      "replica to promote, e.g. kvctl --addr=REPLICA promote; "
                                      "routers find the new leader by themselves"));
}

}  // namespace kvstore

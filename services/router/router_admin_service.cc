#include "services/router/router_admin_service.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <utility>
#include <vector>

#include "absl/time/clock.h"

namespace kvstore {
namespace {

grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* context, const grpc::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

template <typename Reactor>
class RefusedStream final : public Reactor {
 public:
  explicit RefusedStream(const grpc::Status& status) { this->Finish(status); }
  void OnDone() override { delete this; }
};

constexpr char kNoDataHere[] =
    "kv-router holds no data: back up and restore with kvctl --addr=ROUTER backup|restore DIR, "
    "which calls Admin.Backup/Restore on each shard's nodes";

// One ClusterStatus call: an Admin.Status to every node, answered when the
// last one returns. Deletes itself then.
class ClusterStatusGather {
 public:
  ClusterStatusGather(std::shared_ptr<RoutingTable> table, grpc::ServerUnaryReactor* reactor,
                      v1::ClusterStatusResponse* response)
      : table_(std::move(table)), reactor_(reactor), response_(response) {}

  void Start(BackendChannels* channels, std::chrono::system_clock::time_point deadline) {
    for (int shard = 0; shard < table_->shard_count(); ++shard) {
      for (const std::string& address : table_->ShardNodes(shard)) {
        auto call = std::make_unique<Call>();
        call->shard = shard;
        call->address = address;
        call->stub = channels->AdminStub(address);
        call->context.set_deadline(deadline);
        calls_.push_back(std::move(call));
      }
    }
    left_.store(calls_.size());
    if (calls_.empty()) {
      Done();
      return;
    }
    // Copy the list first: the last callback may delete this.
    std::vector<Call*> calls;
    for (auto& c : calls_) calls.push_back(c.get());
    for (Call* call : calls) {
      call->stub->async()->Status(&call->context, &call->request, &call->response,
                                  [this, call](grpc::Status status) {
                                    call->status = std::move(status);
                                    if (left_.fetch_sub(1) == 1) Done();
                                  });
    }
  }

 private:
  struct Call {
    int shard = 0;
    std::string address;
    std::shared_ptr<v1::Admin::Stub> stub;
    grpc::ClientContext context;
    v1::StatusRequest request;
    v1::StatusResponse response;
    grpc::Status status;
  };

  void Done() {
    response_->set_vnodes(static_cast<uint32_t>(table_->topology().vnodes));
    uint64_t total_keys = 0;
    uint64_t total_memory = 0;
    uint32_t down = 0;
    for (int shard = 0; shard < table_->shard_count(); ++shard) {
      v1::ShardClusterStatus* s = response_->add_shards();
      s->set_name(table_->shard_name(shard));
      s->set_leader(table_->Leader(shard));
      for (const std::string& r : table_->topology().shards[shard].replicas) s->add_replicas(r);
      for (const auto& call : calls_) {
        if (call->shard != shard) continue;
        v1::ClusterNodeStatus* node = s->add_nodes();
        node->set_address(call->address);
        if (!call->status.ok()) {
          node->set_error(call->status.error_message().empty() ? std::string("no answer")
                                                               : call->status.error_message());
          ++down;
          continue;
        }
        *node->mutable_status() = call->response;
        const v1::StatusResponse& st = call->response;
        if (call->address == s->leader() && st.role() == "leader") {
          s->set_key_count(st.key_count());
          s->set_memory_bytes(st.memory_bytes());
          if (st.has_snapshot()) *s->mutable_last_snapshot() = st.snapshot();
        } else if (st.role() == "replica") {
          s->set_max_lag_entries(std::max(s->max_lag_entries(), st.lag_entries()));
        }
      }
      total_keys += s->key_count();
      total_memory += s->memory_bytes();
    }
    response_->set_total_keys(total_keys);
    response_->set_total_memory_bytes(total_memory);
    response_->set_nodes(static_cast<uint32_t>(calls_.size()));
    response_->set_nodes_down(down);
    grpc::ServerUnaryReactor* reactor = reactor_;
    delete this;
    reactor->Finish(grpc::Status::OK);
  }

  const std::shared_ptr<RoutingTable> table_;
  grpc::ServerUnaryReactor* const reactor_;
  v1::ClusterStatusResponse* const response_;
  std::vector<std::unique_ptr<Call>> calls_;
  std::atomic<size_t> left_{0};
};

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

grpc::ServerUnaryReactor* RouterAdminService::ClusterStatus(
    grpc::CallbackServerContext* context, const v1::ClusterStatusRequest* /*request*/,
    v1::ClusterStatusResponse* response) {
  if (auto* refused = RefuseUnauthenticated(access_, context, Access::kCluster)) return refused;
  if (!tables_ || channels_ == nullptr) {
    return Finish(context, grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                                        "this router was started without a cluster to report"));
  }
  const auto deadline =
      std::min(context->deadline(),
               std::chrono::system_clock::now() + std::chrono::milliseconds(kNodeStatusTimeoutMs));
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  (new ClusterStatusGather(tables_(), reactor, response))->Start(channels_, deadline);
  return reactor;
}

// The token is checked first, as for every Admin call: an unauthenticated
// caller learns nothing about what this server serves.
grpc::ServerWriteReactor<v1::BackupChunk>* RouterAdminService::Backup(
    grpc::CallbackServerContext* context, const v1::BackupRequest* /*request*/) {
  grpc::Status s = CheckAccess(access_, *context, Access::kCluster);
  if (s.ok()) s = grpc::Status(grpc::StatusCode::UNIMPLEMENTED, kNoDataHere);
  return new RefusedStream<grpc::ServerWriteReactor<v1::BackupChunk>>(s);
}

grpc::ServerReadReactor<v1::BackupChunk>* RouterAdminService::Restore(
    grpc::CallbackServerContext* context, v1::RestoreResponse* /*response*/) {
  grpc::Status s = CheckAccess(access_, *context, Access::kCluster);
  if (s.ok()) s = grpc::Status(grpc::StatusCode::UNIMPLEMENTED, kNoDataHere);
  return new RefusedStream<grpc::ServerReadReactor<v1::BackupChunk>>(s);
}

}  // namespace kvstore

#include "services/shard/kv_service.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/server/grpc_status.h"

namespace kvstore {
namespace {

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context,
                                    const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

v1::KeyError* SetKeyError(const absl::Status& status, v1::KeyError* error) {
  error->set_code(static_cast<int32_t>(status.code()));
  error->set_message(std::string(status.message()));
  return error;
}

}  // namespace

absl::StatusOr<WritePlan> PlanWrite(const v1::WriteAck& ack, ReplicationHooks* replication) {
  WritePlan plan;
  switch (ack.mode()) {
    case v1::ACK_MODE_DEFAULT:
      plan.replicas = replication != nullptr ? replication->DefaultSyncAcks() : 0;
      if (plan.replicas > 0 && plan.replicas > replication->FollowerCount()) {
        return absl::FailedPreconditionError(
            absl::StrCat("this leader acknowledges after ", plan.replicas,
                         " replicas (--sync-acks) but has ", replication->FollowerCount(),
                         " followers; pass --followers, or send the write "
                         "with ack ACK_MODE_LEADER_MEMORY"));
      }
      return plan;
    case v1::ACK_MODE_LEADER_MEMORY:
      plan.durability = Durability::kWritten;
      return plan;
    case v1::ACK_MODE_LEADER_FSYNC:
      plan.durability = Durability::kFsynced;
      return plan;
    case v1::ACK_MODE_REPLICAS: {
      const int followers = replication != nullptr ? replication->FollowerCount() : 0;
      if (followers == 0) {
        return absl::FailedPreconditionError(
            "ACK_MODE_REPLICAS needs followers, and this shard has none configured");
      }
      plan.replicas = static_cast<int>(ack.replicas());
      if (plan.replicas == 0) plan.replicas = std::max(1, replication->DefaultSyncAcks());
      if (plan.replicas > followers) {
        return absl::FailedPreconditionError(
            absl::StrCat("ACK_MODE_REPLICAS asks for ", plan.replicas,
                         " replicas but this shard has ", followers, " followers"));
      }
      return plan;
    }
    default:
      return absl::InvalidArgumentError("unknown ack mode");
  }
}

grpc::ServerUnaryReactor* KvService::Admit(grpc::CallbackServerContext* context,
                                           const v1::WriteAck& ack, WritePlan* plan) {
  if (replication_ != nullptr) {
    std::string leader;
    if (absl::Status s = replication_->CheckWritable(&leader); !s.ok()) {
      if (!leader.empty()) context->AddTrailingMetadata("kv-leader", leader);
      return FinishNow(context, s);
    }
  }
  absl::StatusOr<WritePlan> planned = PlanWrite(ack, replication_);
  if (!planned.ok()) return FinishNow(context, planned.status());
  *plan = *planned;
  return nullptr;
}

// Finishes a write once the replicas it needs (if any) confirm `index`.
void KvService::AfterWrite(grpc::ServerUnaryReactor* reactor, const WritePlan& plan, uint64_t index,
                           absl::Status status) {
  if (!status.ok() || plan.replicas == 0 || index == 0 || replication_ == nullptr) {
    reactor->Finish(ToGrpcStatus(status));
    return;
  }
  replication_->AwaitReplicas(
      index, plan.replicas, [reactor](const absl::Status& s) { reactor->Finish(ToGrpcStatus(s)); });
}

grpc::ServerUnaryReactor* KvService::Get(grpc::CallbackServerContext* context,
                                         const v1::GetRequest* request, v1::GetResponse* response) {
  if (auto* refused = RefuseUnauthenticated(access_, context, Access::kPublic)) return refused;
  if (absl::Status s = CheckGet(*request, limits_); !s.ok()) return FinishNow(context, s);
  uint64_t version = 0;
  if (store_->Get(request->key(), response->mutable_value(), &version)) {
    response->set_found(true);
    response->set_version(version);
  }
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* KvService::Set(grpc::CallbackServerContext* context,
                                         const v1::SetRequest* request, v1::SetResponse* response) {
  if (auto* refused = RefuseUnauthenticated(access_, context, Access::kPublic)) return refused;
  if (absl::Status s = CheckSet(*request, limits_); !s.ok()) return FinishNow(context, s);
  WritePlan plan;
  if (grpc::ServerUnaryReactor* refused = Admit(context, request->ack(), &plan)) return refused;
  std::vector<Mutation> batch(1);
  batch[0].kind = Mutation::Kind::kSet;
  batch[0].key = request->key();
  batch[0].value = request->value();
  batch[0].ttl_ms = request->ttl_ms();
  if (request->has_if_version()) batch[0].if_version = request->if_version();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  store_->Write(std::move(batch), plan.durability,
                [this, reactor, response, plan](std::vector<MutationResult> results) {
                  if (results[0].status.ok()) response->set_version(results[0].version);
                  AfterWrite(reactor, plan, results[0].version, results[0].status);
                });
  return reactor;
}

grpc::ServerUnaryReactor* KvService::Delete(grpc::CallbackServerContext* context,
                                            const v1::DeleteRequest* request,
                                            v1::DeleteResponse* response) {
  if (auto* refused = RefuseUnauthenticated(access_, context, Access::kPublic)) return refused;
  if (absl::Status s = CheckDelete(*request, limits_); !s.ok()) return FinishNow(context, s);
  WritePlan plan;
  if (grpc::ServerUnaryReactor* refused = Admit(context, request->ack(), &plan)) return refused;
  std::vector<Mutation> batch(1);
  batch[0].kind = Mutation::Kind::kDelete;
  batch[0].key = request->key();
  if (request->has_if_version()) batch[0].if_version = request->if_version();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  store_->Write(std::move(batch), plan.durability,
                [this, reactor, response, plan](std::vector<MutationResult> results) {
                  if (results[0].status.ok()) {
                    response->set_deleted(results[0].applied);
                    response->set_version(results[0].version);
                  }
                  AfterWrite(reactor, plan, results[0].version, results[0].status);
                });
  return reactor;
}

grpc::ServerUnaryReactor* KvService::MultiGet(grpc::CallbackServerContext* context,
                                              const v1::MultiGetRequest* request,
                                              v1::MultiGetResponse* response) {
  if (auto* refused = RefuseUnauthenticated(access_, context, Access::kPublic)) return refused;
  if (absl::Status s = CheckMultiGet(*request, limits_); !s.ok()) return FinishNow(context, s);
  response->mutable_results()->Reserve(request->keys_size());
  for (const std::string& key : request->keys()) {
    v1::GetResult* result = response->add_results();
    uint64_t version = 0;
    if (store_->Get(key, result->mutable_value(), &version)) {
      result->set_found(true);
      result->set_version(version);
    }
  }
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* KvService::MultiSet(grpc::CallbackServerContext* context,
                                              const v1::MultiSetRequest* request,
                                              v1::MultiSetResponse* response) {
  if (auto* refused = RefuseUnauthenticated(access_, context, Access::kPublic)) return refused;
  if (absl::Status s = CheckMultiSet(*request, limits_); !s.ok()) return FinishNow(context, s);
  WritePlan plan;
  if (grpc::ServerUnaryReactor* refused = Admit(context, request->ack(), &plan)) return refused;
  std::vector<Mutation> batch(request->items_size());
  for (int i = 0; i < request->items_size(); ++i) {
    const v1::SetItem& item = request->items(i);
    batch[i].kind = Mutation::Kind::kSet;
    batch[i].key = item.key();
    batch[i].value = item.value();
    batch[i].ttl_ms = item.ttl_ms();
    if (item.has_if_version()) batch[i].if_version = item.if_version();
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  store_->Write(std::move(batch), plan.durability,
                [this, reactor, response, plan](std::vector<MutationResult> results) {
                  uint64_t last = 0;
                  for (const MutationResult& r : results) {
                    v1::SetResult* out = response->add_results();
                    if (r.status.ok()) {
                      out->set_version(r.version);
                      last = std::max(last, r.version);
                    } else {
                      SetKeyError(r.status, out->mutable_error());
                    }
                  }
                  AfterWrite(reactor, plan, last, absl::OkStatus());
                });
  return reactor;
}

}  // namespace kvstore

#include "services/shard/kv_service.h"

#include <utility>
#include <vector>

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

absl::StatusOr<Durability> DurabilityFor(const v1::WriteAck& ack) {
  switch (ack.mode()) {
    case v1::ACK_MODE_DEFAULT:
      return Durability::kDefault;
    case v1::ACK_MODE_LEADER_MEMORY:
      return Durability::kWritten;
    case v1::ACK_MODE_LEADER_FSYNC:
      return Durability::kFsynced;
    case v1::ACK_MODE_REPLICAS:
      return absl::FailedPreconditionError(
          "ACK_MODE_REPLICAS needs followers, and this shard has none configured");
    default:
      return absl::InvalidArgumentError("unknown ack mode");
  }
}

grpc::ServerUnaryReactor* KvService::Get(grpc::CallbackServerContext* context,
                                         const v1::GetRequest* request, v1::GetResponse* response) {
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
  if (absl::Status s = CheckSet(*request, limits_); !s.ok()) return FinishNow(context, s);
  absl::StatusOr<Durability> durability = DurabilityFor(request->ack());
  if (!durability.ok()) return FinishNow(context, durability.status());
  std::vector<Mutation> batch(1);
  batch[0].kind = Mutation::Kind::kSet;
  batch[0].key = request->key();
  batch[0].value = request->value();
  batch[0].ttl_ms = request->ttl_ms();
  if (request->has_if_version()) batch[0].if_version = request->if_version();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  store_->Write(std::move(batch), *durability,
                [reactor, response](std::vector<MutationResult> results) {
                  if (results[0].status.ok()) response->set_version(results[0].version);
                  reactor->Finish(ToGrpcStatus(results[0].status));
                });
  return reactor;
}

grpc::ServerUnaryReactor* KvService::Delete(grpc::CallbackServerContext* context,
                                            const v1::DeleteRequest* request,
                                            v1::DeleteResponse* response) {
  if (absl::Status s = CheckDelete(*request, limits_); !s.ok()) return FinishNow(context, s);
  absl::StatusOr<Durability> durability = DurabilityFor(request->ack());
  if (!durability.ok()) return FinishNow(context, durability.status());
  std::vector<Mutation> batch(1);
  batch[0].kind = Mutation::Kind::kDelete;
  batch[0].key = request->key();
  if (request->has_if_version()) batch[0].if_version = request->if_version();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  store_->Write(std::move(batch), *durability,
                [reactor, response](std::vector<MutationResult> results) {
                  if (results[0].status.ok()) {
                    response->set_deleted(results[0].applied);
                    response->set_version(results[0].version);
                  }
                  reactor->Finish(ToGrpcStatus(results[0].status));
                });
  return reactor;
}

grpc::ServerUnaryReactor* KvService::MultiGet(grpc::CallbackServerContext* context,
                                              const v1::MultiGetRequest* request,
                                              v1::MultiGetResponse* response) {
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
  if (absl::Status s = CheckMultiSet(*request, limits_); !s.ok()) return FinishNow(context, s);
  absl::StatusOr<Durability> durability = DurabilityFor(request->ack());
  if (!durability.ok()) return FinishNow(context, durability.status());
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
  store_->Write(std::move(batch), *durability,
                [reactor, response](std::vector<MutationResult> results) {
                  for (const MutationResult& r : results) {
                    v1::SetResult* out = response->add_results();
                    if (r.status.ok()) {
                      out->set_version(r.version);
                    } else {
                      SetKeyError(r.status, out->mutable_error());
                    }
                  }
                  reactor->Finish(grpc::Status::OK);
                });
  return reactor;
}

}  // namespace kvstore

// kvstore.v1.KeyValue served from a local Store (the shard leader's side).
// Reads answer at once; writes return their reactor and are finished by the
// store's log thread once durable, so no gRPC thread waits on an fsync.
#ifndef KVSTORE_SERVICES_SHARD_KV_SERVICE_H_
#define KVSTORE_SERVICES_SHARD_KV_SERVICE_H_

#include "common/storage/store.h"
#include "kvstore/v1/kv.grpc.pb.h"
#include "services/shard/request_limits.h"

namespace kvstore {

class KvService final : public v1::KeyValue::CallbackService {
 public:
  // `store` must outlive the service.
  KvService(Store* store, RequestLimits limits) : store_(store), limits_(limits) {}

  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* context, const v1::GetRequest* request,
                                v1::GetResponse* response) override;
  grpc::ServerUnaryReactor* Set(grpc::CallbackServerContext* context, const v1::SetRequest* request,
                                v1::SetResponse* response) override;
  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* context,
                                   const v1::DeleteRequest* request,
                                   v1::DeleteResponse* response) override;
  grpc::ServerUnaryReactor* MultiGet(grpc::CallbackServerContext* context,
                                     const v1::MultiGetRequest* request,
                                     v1::MultiGetResponse* response) override;
  grpc::ServerUnaryReactor* MultiSet(grpc::CallbackServerContext* context,
                                     const v1::MultiSetRequest* request,
                                     v1::MultiSetResponse* response) override;

 private:
  Store* const store_;
  const RequestLimits limits_;
};

// The store durability a WriteAck asks for. ACK_MODE_REPLICAS needs followers,
// which a lone shard does not have: FAILED_PRECONDITION.
absl::StatusOr<Durability> DurabilityFor(const v1::WriteAck& ack);

}  // namespace kvstore

#endif  // KVSTORE_SERVICES_SHARD_KV_SERVICE_H_

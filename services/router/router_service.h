// kvstore.v1.KeyValue served by forwarding: each key goes to the shard the
// ring names. No thread waits for a shard: handlers start asynchronous calls
// (one long-lived channel per backend) and the last answer finishes the
// caller's RPC.
//
// Routing rules:
//  - Writes (Set, Delete, MultiSet) go to the shard's leader and are never
//    retried on failure: the write may have been applied. One exception: a
//    FAILED_PRECONDITION whose trailing metadata names the leader
//    ("kv-leader: HOST:PORT") means the node refused the write without
//    applying it, so it is sent once more, there, and that address is used as
//    the shard's leader until the next topology reload.
//  - Reads go to the leader; with READ_MODE_ANY_REPLICA they go round robin
//    over the shard's leader and replicas, and an UNAVAILABLE answer is
//    retried once on the next node of the same shard.
//  - MultiGet/MultiSet are split per shard and sent in parallel; results come
//    back in the caller's order. A shard that fails gives each of its keys a
//    KeyError (code and message, naming the shard and address); the call
//    itself succeeds. A MultiSet is atomic per shard at most, never across.
//  - Forwarded calls carry the caller's deadline (and are cancelled with the
//    caller's call); without one, forward_timeout_ms applies.
//  - Requests are validated as kv-shard validates them, before anything is
//    sent, so a rejected batch writes nothing on any shard.
#ifndef KVSTORE_SERVICES_ROUTER_ROUTER_SERVICE_H_
#define KVSTORE_SERVICES_ROUTER_ROUTER_SERVICE_H_

#include <cstdint>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "kvstore/v1/kv.grpc.pb.h"
#include "services/router/backend_channels.h"
#include "services/router/routing_table.h"
#include "services/shard/request_limits.h"

namespace kvstore {

struct RouterOptions {
  // Checked before forwarding; should match the shards' limits.
  RequestLimits limits;
  // Deadline of a forwarded call when the caller set none.
  int64_t forward_timeout_ms = 5000;
  // Replica reads: skip replicas further behind than this (log entries;
  // 0 = no limit). Stored only: replicas do not report their lag yet.
  uint64_t max_replica_lag = 0;
  // Largest message to and from the backends.
  int max_message_bytes = 64 << 20;
};

// The trailing-metadata key a node that refuses a write sets to the leader's
// HOST:PORT.
inline constexpr char kLeaderHintKey[] = "kv-leader";

// Thread-safe. Must outlive every RPC it serves (GrpcServer::Shutdown waits).
class RouterService final : public v1::KeyValue::CallbackService {
 public:
  RouterService(RouterOptions options, std::shared_ptr<RoutingTable> table);
  RouterService(const RouterService&) = delete;
  RouterService& operator=(const RouterService&) = delete;

  // Routes new requests by `table` (a reloaded topology); requests already
  // started finish with the table they began with.
  void SetTable(std::shared_ptr<RoutingTable> table);
  std::shared_ptr<RoutingTable> table() const;
  const RouterOptions& options() const { return options_; }

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
  const RouterOptions options_;
  BackendChannels channels_;
  mutable absl::Mutex mu_;
  std::shared_ptr<RoutingTable> table_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvstore

#endif  // KVSTORE_SERVICES_ROUTER_ROUTER_SERVICE_H_

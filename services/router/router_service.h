// kvstore.v1.KeyValue served by forwarding: each key goes to the shard the
// ring names. No thread waits for a shard: handlers start asynchronous calls
// (one long-lived channel per backend) and the last answer finishes the
// caller's RPC.
//
// Routing rules:
//  - Writes (Set, Delete, MultiSet) go to the shard's leader and are never
//    retried on failure: the write may have been applied. One exception: a
//    FAILED_PRECONDITION with NOT_LEADER in its error details
//    (google.rpc.ErrorInfo, metadata "leader"), or from older nodes trailing
//    metadata "kv-leader: HOST:PORT", means the node refused the write without
//    applying it, so it is sent once more, there, and that address is used as
//    the shard's leader until the next topology reload. A NOT_LEADER naming
//    no leader: in etcd mode the router starts a fresh read of etcd
//    (RouterOptions::refresh_ring; asynchronous, no thread waits) and sends
//    the write once to the leader it shows, if that is another node; in
//    static mode once to the table's leader if the probes moved it.
//    A hint naming a node the probes found deposed is not followed.
//  - Every forwarded write carries the epoch of the leader the router
//    believes in (request metadata kv-leader-epoch, kLeaderEpochKey; from
//    etcd's leader key, then the probes; none when unknown). A node that
//    knows no epoch that new refuses it NOT_LEADER and, if it leads, fences
//    itself (docs/failover.md §8b).
//  - Leaders are also discovered: every backend is probed with Admin.Status
//    (backend_prober.h), and a node of the shard that reports leading a newer
//    epoch than the leader in use takes its writes (backend_health.h,
//    ChooseLeader). A leader the probes found deposed gets no writes: they
//    fail with UNAVAILABLE until a newer leader is known.
//  - Reads go to the leader; with READ_MODE_ANY_REPLICA they go round robin
//    over the shard's leader and replicas that passed their last probe (and,
//    with max_replica_lag, are not too far behind), or to the leader when
//    none did; an UNAVAILABLE answer is retried once on the next node.
//  - MultiGet/MultiSet are split per shard and sent in parallel; results come
//    back in the caller's order. A shard that fails gives each of its keys a
//    KeyError (code and message, naming the shard and address); the call
//    itself succeeds. A MultiSet is atomic per shard at most, never across.
//  - Ownership refusals (etcd mode, ownership_retry.h): a key a shard refuses
//    as another shard's (WRONG_SHARD) or as being moved (RANGE_MOVING), for a
//    single-key call, a Pipeline request or a key of a MultiGet/MultiSet, was
//    not served, so it is sent again once per kind of refusal: WRONG_SHARD to
//    its owner under the router's table after a fresh read of the ring from
//    etcd (RouterOptions::refresh_ring) when the shard knows a newer ring;
//    RANGE_MOVING after the ring version moves past the refusal's, or 2 s,
//    or the deadline. The rest of a batch is not held up by it beyond that.
//  - Forwarded calls carry the caller's deadline (and are cancelled with the
//    caller's call); without one, forward_timeout_ms applies.
//  - Under load, single Gets and Sets bound for the same node may travel
//    together as one MultiGet/MultiSet (RouterOptions::coalesce_in_flight;
//    the rules and what a coalesced request keeps are in coalescing_lanes.h).
//  - Requests are validated as kv-shard validates them, before anything is
//    sent, so a rejected batch writes nothing on any shard.
//  - Scan walks the shards one after another, in the order of their names
//    (router_scan.cc): a page comes from one shard, read as a Get with the
//    request's read_mode (an UNAVAILABLE node is retried once on the next);
//    a shard with nothing (more) to give passes the call on to the next one.
//    The cursor carries the shard's place and its own cursor
//    (common/kv/scan_cursor.h).
//  - Pipeline (a stream of requests, each answered as it completes) routes
//    each request exactly as its unary call; at most pipeline_max_in_flight
//    of one stream are forwarded at a time, and none while its answers
//    waiting to be written hold kDefaultPipelineMaxHeldBytes (the stream is
//    not read further until answers go out). Each request's deadline is the stream's, or
//    forward_timeout_ms from its arrival if that is sooner; cancelling the
//    stream drops the answers still due, not the forwarded calls.
#ifndef KVSTORE_SERVICES_ROUTER_ROUTER_SERVICE_H_
#define KVSTORE_SERVICES_ROUTER_ROUTER_SERVICE_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/kv/pipeline.h"
#include "common/kv/request_limits.h"
#include "common/security/access_policy.h"
#include "common/security/credentials.h"
#include "kvstore/v1/kv.grpc.pb.h"
#include "services/router/backend_channels.h"
#include "services/router/backend_health.h"
#include "services/router/backend_prober.h"
#include "services/router/ownership_retry.h"
#include "services/router/routing_table.h"
#include "services/router/shard_call.h"  // kLeaderHintKey

namespace kvstore {

class CoalescingLanes;

struct RouterOptions {
  // Checked before forwarding; should match the shards' limits.
  RequestLimits limits;
  // Deadline of a forwarded call when the caller set none.
  int64_t forward_timeout_ms = 5000;
  // Replica reads: skip replicas further behind than this (log entries, as
  // the replica reports in Admin.Status; 0 = no limit).
  uint64_t max_replica_lag = 0;
  // Health probes: how often and with what deadline (StartProbing).
  int64_t probe_interval_ms = 500;
  int64_t probe_timeout_ms = 400;
  // Largest message to and from the backends.
  int max_message_bytes = 64 << 20;
  // Who may call (null: everyone); must outlive the service.
  const AccessPolicy* access = nullptr;
  // TLS and tokens of the calls to the backends (default: plaintext, none).
  ClientSecurity backend_security;
  // Coalescing (coalescing_lanes.h): per node and kind of request, how many
  // forwarded Get (Set) calls may be out before further ones wait and go
  // together as one MultiGet (MultiSet); 0 sends every request on its own.
  int coalesce_in_flight = 0;
  // Most requests in one coalesced call (also capped by limits.max_batch_items).
  size_t coalesce_max_items = 256;
  // Pipeline: requests of one stream forwarded and not yet answered, at most.
  size_t pipeline_max_in_flight = kDefaultPipelineMaxInFlight;
  // If set, called with the backend's address and the code of every forwarded
  // call (each attempt) that fails, e.g. to count errors per backend (metrics).
  // Runs on gRPC threads: must not block.
  std::function<void(const std::string& backend, grpc::StatusCode code)> on_backend_error;
  // etcd mode: starts a fresh (linearizable) read of the ring and the leader
  // keys in etcd, begun after this call, and calls `done` once its result
  // has been applied (SetTable, when anything changed) or the read failed.
  // Must not block; `done` may run on any thread, never after the service
  // is destroyed. Null (static mode): a WRONG_SHARD is retried by the
  // current table, a NOT_LEADER naming no leader by the probes' leader.
  std::function<void(std::function<void()> done)> refresh_ring;
  // The longest a request refused with RANGE_MOVING (or WRONG_SHARD, for the
  // fresh read) waits for the ring to change before its retry; the request's
  // own deadline may end it sooner.
  absl::Duration ownership_wait = kOwnershipWaitBound;
};

// Thread-safe. Must outlive every RPC it serves (GrpcServer::Shutdown waits).
class RouterService final : public v1::KeyValue::CallbackService, private PipelineBackend {
 public:
  // Does not probe until StartProbing (or ProbeOnce).
  RouterService(RouterOptions options, std::shared_ptr<RoutingTable> table);
  // Stops the probes. Only when no RPC is in flight (after the server's
  // Shutdown).
  ~RouterService() override;
  RouterService(const RouterService&) = delete;
  RouterService& operator=(const RouterService&) = delete;

  // Probes the backends every probe_interval_ms on a thread of its own
  // (nothing when it is 0).
  void StartProbing();
  // One round of probes now, on the calling thread; returns when it is done.
  void ProbeOnce() { prober_->ProbeOnce(); }
  const HealthBook& health() const { return health_; }

  // Routes new requests by `table` (a reloaded topology); requests already
  // started finish with the table they began with. Leaders learned for the
  // old table are forgotten, but the latest probes apply to the new one at
  // once (a node known to lead a newer epoch than the named leader, or a
  // deposed named leader, moves the writes as a probe round would).
  void SetTable(std::shared_ptr<RoutingTable> table);
  std::shared_ptr<RoutingTable> table() const;
  const RouterOptions& options() const { return options_; }
  // The backend channels, shared with the router's Admin service (ClusterStatus).
  BackendChannels* channels() { return &channels_; }
  // Requests waiting in the coalescing lanes for a call to their node to return.
  size_t coalesce_queued() const;
  // Requests (or keys of batches) refused as not their shard's now, waiting
  // for the ring to change before they are sent again.
  size_t ownership_waiting() const { return ring_waiters_->waiting(); }

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
  grpc::ServerBidiReactor<v1::PipelineRequests, v1::PipelineResponses>* Pipeline(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* Scan(grpc::CallbackServerContext* context,
                                 const v1::ScanRequest* request,
                                 v1::ScanResponse* response) override;

 private:
  // One Scan call's walk over the shards (router_scan.cc).
  class ScanWalk;
  // Sends one Scan page request to `shard`'s `nodes` with the read retry
  // rule; `done` gets the status and a label naming the shard and node.
  void ForwardScan(std::shared_ptr<RoutingTable> table, int shard, std::vector<std::string> nodes,
                   grpc::CallbackServerContext* parent,
                   std::chrono::system_clock::time_point deadline, const v1::ScanRequest* request,
                   v1::ScanResponse* response,
                   std::function<void(const grpc::Status&, const std::string&)> done);

  // How each kind of request is routed, for the unary handlers and Pipeline
  // alike. `parent`, when not null, is the caller's RPC, whose cancellation
  // the forwarded calls follow. `done` gets the request's final status (the
  // response is filled when it is OK); it may run before the Route* returns,
  // on any thread. `request` and `response` must live until then.
  using RouteDone = PipelineBackend::Done;
  struct Route {
    grpc::CallbackServerContext* parent;
    std::chrono::system_clock::time_point deadline;
  };
  void RouteGet(const Route& route, const v1::GetRequest* request, v1::GetResponse* response,
                RouteDone done);
  void RouteSet(const Route& route, const v1::SetRequest* request, v1::SetResponse* response,
                RouteDone done);
  void RouteDelete(const Route& route, const v1::DeleteRequest* request,
                   v1::DeleteResponse* response, RouteDone done);
  void RouteMultiGet(const Route& route, const v1::MultiGetRequest* request,
                     v1::MultiGetResponse* response, RouteDone done);
  void RouteMultiSet(const Route& route, const v1::MultiSetRequest* request,
                     v1::MultiSetResponse* response, RouteDone done);
  // A unary call: the caller's token, then `route`, which finishes the call.
  template <typename Request, typename Response>
  using RouteMethod = void (RouterService::*)(const Route&, const Request*, Response*, RouteDone);
  template <typename Request, typename Response>
  grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* context, const Request* request,
                                  Response* response, RouteMethod<Request, Response> route);

  // PipelineBackend: a stream's requests, routed like the unary calls.
  Route PipelineRoute(Deadline stream_deadline) const;
  void PipelineGet(Deadline deadline, const v1::GetRequest* request, v1::GetResponse* response,
                   Done done) override;
  void PipelineSet(Deadline deadline, const v1::SetRequest* request, v1::SetResponse* response,
                   Done done) override;
  void PipelineDelete(Deadline deadline, const v1::DeleteRequest* request,
                      v1::DeleteResponse* response, Done done) override;
  void PipelineMultiGet(Deadline deadline, const v1::MultiGetRequest* request,
                        v1::MultiGetResponse* response, Done done) override;
  void PipelineMultiSet(Deadline deadline, const v1::MultiSetRequest* request,
                        v1::MultiSetResponse* response, Done done) override;

  // Single-key requests routed by `table`, following an ownership refusal
  // while `retries` allows (FollowRefusal).
  void SendGet(const Route& route, std::shared_ptr<RoutingTable> table,
               const v1::GetRequest* request, v1::GetResponse* response, RouteDone done,
               OwnershipRetries retries);
  void SendSet(const Route& route, std::shared_ptr<RoutingTable> table,
               const v1::SetRequest* request, v1::SetResponse* response, RouteDone done,
               OwnershipRetries retries);
  void SendDelete(const Route& route, std::shared_ptr<RoutingTable> table,
                  const v1::DeleteRequest* request, v1::DeleteResponse* response, RouteDone done,
                  OwnershipRetries retries);
  // Waits as `refusal` of a request routed by ring version `sent_version`
  // asks (ownership_retry.h), bounded by `deadline` and ownership_wait,
  // then calls `then` with the table to route by now (null when the router
  // is being destroyed). `then` may run at once, on this thread.
  void AwaitRing(const OwnershipRefusal& refusal, int64_t sent_version,
                 std::chrono::system_clock::time_point deadline,
                 std::function<void(std::shared_ptr<RoutingTable>)> then);
  // For a single key sent to `shard` of `sent_with`: when `refusal` is one
  // `retries` allows, waits (AwaitRing) and then calls `resend` with the
  // table and the retries left, or `give_up` when the key's owner there is
  // still the refusing shard (WRONG_SHARD) or the router is going; true.
  // Else false, and neither is called. `give_up`'s argument: the shard named
  // a newer ring than the router could read (WRONG_SHARD, ring source set).
  bool FollowRefusal(const OwnershipRefusal& refusal,
                     const std::shared_ptr<RoutingTable>& sent_with, int shard,
                     const std::string& key, std::chrono::system_clock::time_point deadline,
                     OwnershipRetries retries,
                     std::function<void(std::shared_ptr<RoutingTable>, OwnershipRetries)> resend,
                     std::function<void(bool ring_unknown)> give_up);

  // Where writes and READ_MODE_LEADER reads of `shard` go; UNAVAILABLE when
  // the probes found that node deposed.
  absl::StatusOr<std::string> LeaderTarget(const RoutingTable& table, int shard) const;
  // The nodes a read may try (RoutingTable::ReadNodes, filtered by health).
  std::vector<std::string> ReadTargets(const RoutingTable& table, int shard,
                                       v1::ReadMode mode) const;

  const RouterOptions options_;
  BackendChannels channels_;
  HealthBook health_;
  // What every forwarded call uses (set once in the constructor).
  Backends backends_;
  mutable absl::Mutex mu_;
  std::shared_ptr<RoutingTable> table_ ABSL_GUARDED_BY(mu_);
  // Coalescing (coalescing_lanes.h); null when options_.coalesce_in_flight is 0.
  std::unique_ptr<CoalescingLanes> lanes_;
  // Requests waiting for the ring to change (AwaitRing); told of each table.
  std::unique_ptr<RingWaiters> ring_waiters_;
  // Last: stopped first, while everything it uses is still there.
  std::unique_ptr<BackendProber> prober_;
};

}  // namespace kvstore

#endif  // KVSTORE_SERVICES_ROUTER_ROUTER_SERVICE_H_

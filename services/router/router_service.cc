#include "services/router/router_service.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/server/grpc_status.h"
#include "common/topology/topology.h"
#include "glog/logging.h"
#include "services/router/batch_split.h"
#include "services/router/coalescing_lanes.h"
#include "services/router/shard_call.h"

namespace kvstore {
namespace {

// The caller's deadline, else `default_timeout_ms` from now.
std::chrono::system_clock::time_point CallDeadline(const grpc::CallbackServerContext& parent,
                                                   int64_t default_timeout_ms) {
  const auto caller_deadline = parent.deadline();
  return caller_deadline != std::chrono::system_clock::time_point::max()
             ? caller_deadline
             : absl::ToChronoTime(absl::Now() + absl::Milliseconds(default_timeout_ms));
}

// The status a single-key call returns to its caller: the shard's own answer,
// except that UNAVAILABLE and DEADLINE_EXCEEDED (which may come from the
// transport, not the shard) say which shard and node.
grpc::Status ForCaller(const grpc::Status& status, const std::string& label) {
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE ||
      status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return grpc::Status(status.error_code(), absl::StrCat(label, ": ", status.error_message()));
  }
  return status;
}

// `status` with its message prefixed by "shard NAME: ".
absl::Status InShard(const RoutingTable& table, int shard, const absl::Status& status) {
  return absl::Status(status.code(),
                      absl::StrCat("shard ", table.shard_name(shard), ": ", status.message()));
}

// A MultiGet or MultiSet split over several shards: the slices' calls run in
// parallel and the last one to answer finishes the request.
//
// A MultiGet's answer is kept to `max_response_bytes`: once the slices
// gathered would make it larger, or a shard refuses its slice's answer as too
// large (RESOURCE_EXHAUSTED: then the whole is too large as well), the
// caller's answer is dropped and the call fails with RESOURCE_EXHAUSTED;
// slices that come later are dropped as they arrive. (The call still ends
// with the last slice: a slice may yet retry on another node, which it starts
// from the caller's call.)
template <typename Request, typename Response>
class BatchCall {
 public:
  BatchCall(std::function<void(const grpc::Status&)> done, const Request* request,
            Response* response, std::vector<ShardSlice> slices, const RequestLimits& limits)
      : done_(std::move(done)),
        limits_(limits),
        response_(response),
        slices_(std::move(slices)),
        requests_(slices_.size()),
        responses_(slices_.size()),
        pending_(slices_.size()) {
    if (slices_.size() == 1) {
      // One shard owns everything: send the caller's request as it is.
      request_of_.push_back(request);
    } else {
      for (size_t k = 0; k < slices_.size(); ++k) {
        requests_[k] = SliceRequest(*request, slices_[k]);
        request_of_.push_back(&requests_[k]);
      }
    }
  }

  const std::vector<ShardSlice>& slices() const { return slices_; }
  const Request* request(size_t k) const { return request_of_[k]; }
  Response* response(size_t k) { return &responses_[k]; }

  void SliceDone(size_t k, const grpc::Status& status, const std::string& label) {
    constexpr bool kCapped = std::is_same_v<Response, v1::MultiGetResponse>;
    bool last = false;
    grpc::Status final_status;
    {
      absl::MutexLock lock(&mu_);
      if (kCapped && failure_.ok()) {
        if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
          failure_ =
              grpc::Status(status.error_code(), absl::StrCat(label, ": ", status.error_message()));
        } else if (status.ok()) {
          bytes_ += responses_[k].ByteSizeLong();
          if (bytes_ > limits_.max_response_bytes) {
            failure_ = ToGrpcStatus(ResponseTooLarge(limits_));
          }
        }
        if (!failure_.ok()) response_->Clear();
      }
      if (kCapped && !failure_.ok()) {
        responses_[k].Clear();
      } else if (status.ok()) {
        GatherResults(slices_[k], label, &responses_[k], response_);
      } else {
        FailSlice(slices_[k], label, FromGrpcStatus(status), response_);
      }
      last = --pending_ == 0;
      final_status = failure_;
    }
    if (last) done_(final_status);
  }

 private:
  const std::function<void(const grpc::Status&)> done_;
  const RequestLimits limits_;
  Response* const response_;
  const std::vector<ShardSlice> slices_;
  std::vector<Request> requests_;  // Used when there is more than one slice.
  std::vector<const Request*> request_of_;
  std::vector<Response> responses_;
  absl::Mutex mu_;
  size_t pending_ ABSL_GUARDED_BY(mu_);
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;      // Of the slices gathered so far, encoded.
  grpc::Status failure_ ABSL_GUARDED_BY(mu_);  // The call's status once the answer is dropped.
};

}  // namespace

RouterService::RouterService(RouterOptions options, std::shared_ptr<RoutingTable> table)
    : options_(std::move(options)),
      channels_(options_.max_message_bytes, options_.backend_security) {
  channels_.set_error_observer(options_.on_backend_error);
  SetTable(std::move(table));
  ProbeOptions probe;
  probe.interval = absl::Milliseconds(options_.probe_interval_ms);
  probe.timeout = absl::Milliseconds(options_.probe_timeout_ms);
  probe.max_replica_lag = options_.max_replica_lag;
  prober_ = std::make_unique<BackendProber>(
      &channels_, &health_, [this] { return this->table(); }, probe);
  if (options_.coalesce_in_flight > 0) {
    LaneLimits limits;
    limits.max_in_flight = options_.coalesce_in_flight;
    limits.max_items = std::max<size_t>(
        1, std::min<size_t>(options_.coalesce_max_items, options_.limits.max_batch_items));
    limits.max_request_bytes = static_cast<size_t>(options_.max_message_bytes) / 2;
    limits.max_answer_bytes = std::min(static_cast<size_t>(options_.max_message_bytes),
                                       options_.limits.max_response_bytes) /
                              2;
    lanes_ = std::make_unique<CoalescingLanes>(
        Backends{&channels_, &health_, options_.forward_timeout_ms}, limits);
  }
}

RouterService::~RouterService() { prober_->Stop(); }

size_t RouterService::coalesce_queued() const { return lanes_ == nullptr ? 0 : lanes_->queued(); }

void RouterService::StartProbing() {
  if (options_.probe_interval_ms > 0) prober_->Start();
}

void RouterService::SetTable(std::shared_ptr<RoutingTable> table) {
  // What the probes already know applies at once: a reload naming a leader
  // that was since replaced (or deposed) does not send it writes until the
  // next round.
  ApplyLeaderProbes(*table, health_);
  channels_.Retain(table->ProbeAddresses());
  // Channels retired by an earlier reload whose calls have all ended; the
  // probe rounds do this too (this thread is never a gRPC callback).
  channels_.ReleaseRetired();
  absl::MutexLock lock(&mu_);
  table_ = std::move(table);
}

std::shared_ptr<RoutingTable> RouterService::table() const {
  absl::MutexLock lock(&mu_);
  return table_;
}

absl::StatusOr<std::string> RouterService::LeaderTarget(const RoutingTable& table,
                                                        int shard) const {
  std::string leader = table.Leader(shard);
  const NodeHealth health = health_.Get(leader);
  if (health.deposed()) {
    return absl::UnavailableError(
        absl::StrCat("its leader ", leader, " was deposed (epoch ", health.epoch,
                     ") and no newer leader is known yet; retry once one is promoted"));
  }
  return leader;
}

std::vector<std::string> RouterService::ReadTargets(const RoutingTable& table, int shard,
                                                    v1::ReadMode mode) const {
  if (mode != v1::READ_MODE_ANY_REPLICA) return table.ReadNodes(shard, mode);
  return table.ReadNodes(shard, mode, [this](const std::string& address) {
    return ServesReplicaReads(health_.Get(address), options_.max_replica_lag);
  });
}

template <typename Request, typename Response>
grpc::ServerUnaryReactor* RouterService::Unary(grpc::CallbackServerContext* context,
                                               const Request* request, Response* response,
                                               RouteMethod<Request, Response> route) {
  if (auto* refused = RefuseUnauthenticated(options_.access, context, Access::kPublic)) {
    return refused;
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  (this->*route)({context, CallDeadline(*context, options_.forward_timeout_ms)}, request, response,
                 [reactor](const grpc::Status& status) { reactor->Finish(status); });
  return reactor;
}

grpc::ServerUnaryReactor* RouterService::Get(grpc::CallbackServerContext* context,
                                             const v1::GetRequest* request,
                                             v1::GetResponse* response) {
  return Unary(context, request, response, &RouterService::RouteGet);
}

grpc::ServerUnaryReactor* RouterService::Set(grpc::CallbackServerContext* context,
                                             const v1::SetRequest* request,
                                             v1::SetResponse* response) {
  return Unary(context, request, response, &RouterService::RouteSet);
}

grpc::ServerUnaryReactor* RouterService::Delete(grpc::CallbackServerContext* context,
                                                const v1::DeleteRequest* request,
                                                v1::DeleteResponse* response) {
  return Unary(context, request, response, &RouterService::RouteDelete);
}

grpc::ServerUnaryReactor* RouterService::MultiGet(grpc::CallbackServerContext* context,
                                                  const v1::MultiGetRequest* request,
                                                  v1::MultiGetResponse* response) {
  return Unary(context, request, response, &RouterService::RouteMultiGet);
}

grpc::ServerUnaryReactor* RouterService::MultiSet(grpc::CallbackServerContext* context,
                                                  const v1::MultiSetRequest* request,
                                                  v1::MultiSetResponse* response) {
  return Unary(context, request, response, &RouterService::RouteMultiSet);
}

void RouterService::RouteGet(const Route& route, const v1::GetRequest* request,
                             v1::GetResponse* response, RouteDone done) {
  if (absl::Status s = CheckGet(*request, options_.limits); !s.ok()) {
    return done(ToGrpcStatus(s));
  }
  std::shared_ptr<RoutingTable> table = this->table();
  const int shard = table->ShardOf(request->key());
  std::vector<std::string> nodes;
  if (request->read_mode() == v1::READ_MODE_ANY_REPLICA) {
    nodes = ReadTargets(*table, shard, request->read_mode());
  } else {
    absl::StatusOr<std::string> leader = LeaderTarget(*table, shard);
    if (!leader.ok()) return done(ToGrpcStatus(InShard(*table, shard, leader.status())));
    nodes = {*std::move(leader)};
  }
  ShardDone finish = [done = std::move(done)](const grpc::Status& status,
                                              const std::string& label) {
    done(ForCaller(status, label));
  };
  if (lanes_ != nullptr) {
    lanes_->SubmitGet(request->read_mode(),
                      {std::move(table), shard, std::move(nodes), route.parent, route.deadline,
                       request, response, std::move(finish)});
    return;
  }
  Forward(Backends{&channels_, &health_, options_.forward_timeout_ms}, std::move(table), shard,
          RetryRule::kNextNodeIfUnavailable, std::move(nodes), route.parent, route.deadline,
          request, response, std::move(finish));
}

void RouterService::RouteSet(const Route& route, const v1::SetRequest* request,
                             v1::SetResponse* response, RouteDone done) {
  if (absl::Status s = CheckSet(*request, options_.limits); !s.ok()) {
    return done(ToGrpcStatus(s));
  }
  std::shared_ptr<RoutingTable> table = this->table();
  const int shard = table->ShardOf(request->key());
  absl::StatusOr<std::string> leader = LeaderTarget(*table, shard);
  if (!leader.ok()) return done(ToGrpcStatus(InShard(*table, shard, leader.status())));
  ShardDone finish = [done = std::move(done)](const grpc::Status& status,
                                              const std::string& label) {
    done(ForCaller(status, label));
  };
  if (lanes_ != nullptr) {
    lanes_->SubmitSet(request->ack(), {std::move(table),
                                       shard,
                                       {*std::move(leader)},
                                       route.parent,
                                       route.deadline,
                                       request,
                                       response,
                                       std::move(finish)});
    return;
  }
  Forward(Backends{&channels_, &health_, options_.forward_timeout_ms}, std::move(table), shard,
          RetryRule::kHintedLeader, {*std::move(leader)}, route.parent, route.deadline, request,
          response, std::move(finish));
}

void RouterService::RouteDelete(const Route& route, const v1::DeleteRequest* request,
                                v1::DeleteResponse* response, RouteDone done) {
  if (absl::Status s = CheckDelete(*request, options_.limits); !s.ok()) {
    return done(ToGrpcStatus(s));
  }
  std::shared_ptr<RoutingTable> table = this->table();
  const int shard = table->ShardOf(request->key());
  absl::StatusOr<std::string> leader = LeaderTarget(*table, shard);
  if (!leader.ok()) return done(ToGrpcStatus(InShard(*table, shard, leader.status())));
  Forward(Backends{&channels_, &health_, options_.forward_timeout_ms}, std::move(table), shard,
          RetryRule::kHintedLeader, {*std::move(leader)}, route.parent, route.deadline, request,
          response, [done = std::move(done)](const grpc::Status& status, const std::string& label) {
            done(ForCaller(status, label));
          });
}

void RouterService::RouteMultiGet(const Route& route, const v1::MultiGetRequest* request,
                                  v1::MultiGetResponse* response, RouteDone done) {
  if (absl::Status s = CheckMultiGet(*request, options_.limits); !s.ok()) {
    return done(ToGrpcStatus(s));
  }
  if (request->keys_size() == 0) return done(grpc::Status::OK);
  std::shared_ptr<RoutingTable> table = this->table();
  std::vector<ShardSlice> slices =
      SplitByShard(request->keys_size(), [&](int i) { return table->ShardOf(request->keys(i)); });
  PrepareResults(request->keys_size(), response);
  auto batch = std::make_shared<BatchCall<v1::MultiGetRequest, v1::MultiGetResponse>>(
      std::move(done), request, response, std::move(slices), options_.limits);
  for (size_t k = 0; k < batch->slices().size(); ++k) {
    const int shard = batch->slices()[k].shard;
    std::vector<std::string> nodes;
    if (request->read_mode() == v1::READ_MODE_ANY_REPLICA) {
      nodes = ReadTargets(*table, shard, request->read_mode());
    } else {
      absl::StatusOr<std::string> leader = LeaderTarget(*table, shard);
      if (!leader.ok()) {
        batch->SliceDone(k, ToGrpcStatus(leader.status()),
                         absl::StrCat("shard ", table->shard_name(shard)));
        continue;
      }
      nodes = {*std::move(leader)};
    }
    ShardDone slice_done = [batch, k](const grpc::Status& status, const std::string& label) {
      batch->SliceDone(k, status, label);
    };
    if (lanes_ != nullptr) {
      lanes_->SubmitMultiGet(request->read_mode(),
                             {table, shard, std::move(nodes), route.parent, route.deadline,
                              batch->request(k), batch->response(k), std::move(slice_done)});
      continue;
    }
    Forward(Backends{&channels_, &health_, options_.forward_timeout_ms}, table, shard,
            RetryRule::kNextNodeIfUnavailable, std::move(nodes), route.parent, route.deadline,
            batch->request(k), batch->response(k), std::move(slice_done));
  }
}

void RouterService::RouteMultiSet(const Route& route, const v1::MultiSetRequest* request,
                                  v1::MultiSetResponse* response, RouteDone done) {
  if (absl::Status s = CheckMultiSet(*request, options_.limits); !s.ok()) {
    return done(ToGrpcStatus(s));
  }
  if (request->items_size() == 0) return done(grpc::Status::OK);
  std::shared_ptr<RoutingTable> table = this->table();
  std::vector<ShardSlice> slices = SplitByShard(
      request->items_size(), [&](int i) { return table->ShardOf(request->items(i).key()); });
  PrepareResults(request->items_size(), response);
  auto batch = std::make_shared<BatchCall<v1::MultiSetRequest, v1::MultiSetResponse>>(
      std::move(done), request, response, std::move(slices), options_.limits);
  for (size_t k = 0; k < batch->slices().size(); ++k) {
    const int shard = batch->slices()[k].shard;
    absl::StatusOr<std::string> leader = LeaderTarget(*table, shard);
    if (!leader.ok()) {
      batch->SliceDone(k, ToGrpcStatus(leader.status()),
                       absl::StrCat("shard ", table->shard_name(shard)));
      continue;
    }
    ShardDone slice_done = [batch, k](const grpc::Status& status, const std::string& label) {
      batch->SliceDone(k, status, label);
    };
    if (lanes_ != nullptr) {
      lanes_->SubmitMultiSet(request->ack(), {table,
                                              shard,
                                              {*std::move(leader)},
                                              route.parent,
                                              route.deadline,
                                              batch->request(k),
                                              batch->response(k),
                                              std::move(slice_done)});
      continue;
    }
    Forward(Backends{&channels_, &health_, options_.forward_timeout_ms}, table, shard,
            RetryRule::kHintedLeader, {*std::move(leader)}, route.parent, route.deadline,
            batch->request(k), batch->response(k), std::move(slice_done));
  }
}

void RouterService::ForwardScan(std::shared_ptr<RoutingTable> table, int shard,
                                std::vector<std::string> nodes, grpc::CallbackServerContext* parent,
                                std::chrono::system_clock::time_point deadline,
                                const v1::ScanRequest* request, v1::ScanResponse* response,
                                std::function<void(const grpc::Status&, const std::string&)> done) {
  Forward(Backends{&channels_, &health_, options_.forward_timeout_ms}, std::move(table), shard,
          RetryRule::kNextNodeIfUnavailable, std::move(nodes), parent, deadline, request, response,
          std::move(done));
}

// ---- Pipeline ---------------------------------------------------------------
// Each request of a stream is routed as its unary call would be (without the
// caller's cancellation: a stream's requests outlive a cancelled stream until
// their deadline), by common/kv/pipeline.h's reactor.

grpc::ServerBidiReactor<v1::PipelineRequests, v1::PipelineResponses>* RouterService::Pipeline(
    grpc::CallbackServerContext* context) {
  return ServePipeline(context, CheckAccess(options_.access, *context, Access::kPublic), this,
                       options_.pipeline_max_in_flight);
}

RouterService::Route RouterService::PipelineRoute(Deadline stream_deadline) const {
  return Route{nullptr, std::min(stream_deadline,
                                 std::chrono::system_clock::now() +
                                     std::chrono::milliseconds(options_.forward_timeout_ms))};
}

void RouterService::PipelineGet(Deadline deadline, const v1::GetRequest* request,
                                v1::GetResponse* response, Done done) {
  RouteGet(PipelineRoute(deadline), request, response, std::move(done));
}
void RouterService::PipelineSet(Deadline deadline, const v1::SetRequest* request,
                                v1::SetResponse* response, Done done) {
  RouteSet(PipelineRoute(deadline), request, response, std::move(done));
}
void RouterService::PipelineDelete(Deadline deadline, const v1::DeleteRequest* request,
                                   v1::DeleteResponse* response, Done done) {
  RouteDelete(PipelineRoute(deadline), request, response, std::move(done));
}
void RouterService::PipelineMultiGet(Deadline deadline, const v1::MultiGetRequest* request,
                                     v1::MultiGetResponse* response, Done done) {
  RouteMultiGet(PipelineRoute(deadline), request, response, std::move(done));
}
void RouterService::PipelineMultiSet(Deadline deadline, const v1::MultiSetRequest* request,
                                     v1::MultiSetResponse* response, Done done) {
  RouteMultiSet(PipelineRoute(deadline), request, response, std::move(done));
}

}  // namespace kvstore

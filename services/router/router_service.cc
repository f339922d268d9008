#include "services/router/router_service.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <optional>
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
#include "services/router/ownership_retry.h"
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
// transport, not the shard) say which shard and node. The error details
// (ErrorInfo) stay as the shard sent them.
grpc::Status ForCaller(const grpc::Status& status, const std::string& label) {
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE ||
      status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return grpc::Status(status.error_code(), absl::StrCat(label, ": ", status.error_message()),
                        status.error_details());
  }
  return status;
}

// A refusal the router followed but could not act on because it could not
// learn the newer ring the shard named (its fresh read of etcd failed or did
// not arrive in time, e.g. cut off from etcd): UNAVAILABLE, retryable, since
// nothing was done and the key lives elsewhere; ForCaller otherwise. The
// shard's ErrorInfo is kept.
grpc::Status GivenUp(const grpc::Status& status, const std::string& label, bool ring_unknown) {
  if (!ring_unknown) return ForCaller(status, label);
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      absl::StrCat(label,
                                   ": this router could not read the newer ring the shard "
                                   "follows (etcd unreachable?), so it cannot route the key; "
                                   "retry: ",
                                   status.error_message()),
                      status.error_details());
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
//
// Keys a shard refuses as not its own now (WRONG_SHARD or RANGE_MOVING, per
// key or for its whole slice) are sent again, once for each kind of refusal
// (ownership_retry.h): after the wait the refusal asks for they are split by
// the router's table then and go out as new slices, whose answers replace
// the refusals in the caller's results. A WRONG_SHARD key whose owner is
// still the shard that refused it keeps its refusal.
template <typename Request, typename Response>
class BatchCall : public std::enable_shared_from_this<BatchCall<Request, Response>> {
 public:
  // One slice sent to one shard: its positions in the caller's batch, the
  // table it was routed by and the ownership retries its keys have left.
  struct Slice {
    ShardSlice slice;
    std::shared_ptr<RoutingTable> table;
    OwnershipRetries retries;
    Request own_request;  // Unless the caller's request goes as it is.
    const Request* request = nullptr;
    Response response;
  };
  // Sends slice `k` of `batch` to its shard; its answer goes to SliceDone.
  using Sender = std::function<void(BatchCall* batch, size_t k)>;
  // Waits as `refusal` asks of keys routed by ring version `sent_version`,
  // then calls `then` with the table to route them by (null: give up).
  using Awaiter = std::function<void(const OwnershipRefusal& refusal, int64_t sent_version,
                                     std::function<void(std::shared_ptr<RoutingTable>)> then)>;

  BatchCall(std::function<void(const grpc::Status&)> done, const Request* request,
            Response* response, const RequestLimits& limits, Sender send, Awaiter await)
      : done_(std::move(done)),
        limits_(limits),
        request_(request),
        response_(response),
        send_(std::move(send)),
        await_(std::move(await)) {}

  // Splits the caller's keys by `table` and sends the slices.
  void Start(std::shared_ptr<RoutingTable> table) {
    std::vector<int> all(static_cast<size_t>(Count(*request_)));
    for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int>(i);
    std::vector<size_t> added;
    {
      absl::MutexLock lock(&mu_);
      added = AddSlicesLocked(all, std::move(table), OwnershipRetries(), /*whole=*/true);
    }
    for (size_t k : added) send_(this, k);
  }

  Slice* slice(size_t k) {
    absl::MutexLock lock(&mu_);
    return slices_[k].get();
  }

  void SliceDone(size_t k, const grpc::Status& status, const std::string& label) {
    constexpr bool kCapped = std::is_same_v<Response, v1::MultiGetResponse>;
    std::vector<Retry> retries;
    bool last = false;
    grpc::Status final_status;
    {
      absl::MutexLock lock(&mu_);
      Slice& s = *slices_[k];
      if (kCapped && failure_.ok()) {
        if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
          failure_ =
              grpc::Status(status.error_code(), absl::StrCat(label, ": ", status.error_message()));
        } else if (status.ok()) {
          bytes_ += s.response.ByteSizeLong();
          if (bytes_ > limits_.max_response_bytes) {
            failure_ = ToGrpcStatus(ResponseTooLarge(limits_));
          }
        }
        if (!failure_.ok()) response_->Clear();
      }
      if (kCapped && !failure_.ok()) {
        s.response.Clear();
      } else {
        retries = RefusedKeys(s, status);
        if (status.ok()) {
          GatherResults(s.slice, label, &s.response, response_);
        } else {
          FailSlice(s.slice, label, FromGrpcStatus(status), response_);
        }
      }
      // Each retry keeps the call open until its keys have gone out again.
      pending_ += retries.size();
      last = --pending_ == 0;
      final_status = failure_;
    }
    for (Retry& retry : retries) {
      const OwnershipRefusal refusal = retry.refusal;
      const int64_t sent_version = retry.sent_version;
      await_(refusal, sent_version,
             [self = this->shared_from_this(),
              retry = std::move(retry)](std::shared_ptr<RoutingTable> table) mutable {
               self->Resend(std::move(retry), std::move(table));
             });
    }
    if (last) done_(final_status);
  }

 private:
  // Keys of one slice refused for one reason, to send again.
  struct Retry {
    OwnershipRefusal refusal;
    std::vector<int> positions;  // In the caller's batch.
    std::string from_shard;
    int64_t sent_version = 0;
    OwnershipRetries retries;  // What the keys have left after this one.
  };

  static int Count(const v1::MultiGetRequest& r) { return r.keys_size(); }
  static int Count(const v1::MultiSetRequest& r) { return r.items_size(); }
  static const std::string& KeyAt(const v1::MultiGetRequest& r, int i) { return r.keys(i); }
  static const std::string& KeyAt(const v1::MultiSetRequest& r, int i) { return r.items(i).key(); }

  // The keys of `s` refused as not the shard's now, by kind, that their
  // retries allow sending again.
  std::vector<Retry> RefusedKeys(const Slice& s, const grpc::Status& status) const {
    std::vector<Retry> out;
    auto add = [&](const OwnershipRefusal& refusal, int position) {
      if (!refusal || !s.retries.Allows(refusal.kind)) return;
      for (Retry& r : out) {
        if (r.refusal.kind == refusal.kind) {
          r.positions.push_back(position);
          return;
        }
      }
      Retry& r = out.emplace_back();
      r.refusal = refusal;
      r.positions.push_back(position);
      r.from_shard = s.table->shard_name(s.slice.shard);
      r.sent_version = s.table->ring_version();
      r.retries = s.retries.After(refusal.kind);
    };
    if (!status.ok()) {
      const OwnershipRefusal whole = RefusalOf(status);
      for (int position : s.slice.positions) add(whole, position);
    } else if (s.response.results_size() == static_cast<int>(s.slice.positions.size())) {
      for (int i = 0; i < s.response.results_size(); ++i) {
        const v1::KeyError& error = s.response.results(i).error();
        if (error.code() != 0) add(RefusalOf(error), s.slice.positions[static_cast<size_t>(i)]);
      }
    }
    return out;
  }

  // New slices for `positions` (of the caller's batch) split by `table`,
  // counted as pending; returns their indexes. `whole`: the positions are
  // the caller's whole batch, which goes as it is when one shard owns it.
  std::vector<size_t> AddSlicesLocked(const std::vector<int>& positions,
                                      std::shared_ptr<RoutingTable> table, OwnershipRetries retries,
                                      bool whole) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<ShardSlice> split = SplitByShard(static_cast<int>(positions.size()), [&](int j) {
      return table->ShardOf(KeyAt(*request_, positions[static_cast<size_t>(j)]));
    });
    std::vector<size_t> added;
    for (ShardSlice& slice : split) {
      for (int& j : slice.positions) j = positions[static_cast<size_t>(j)];
      auto s = std::make_unique<Slice>();
      if (whole && split.size() == 1) {
        s->request = request_;
      } else {
        s->own_request = SliceRequest(*request_, slice);
        s->request = &s->own_request;
      }
      s->slice = std::move(slice);
      s->table = table;
      s->retries = retries;
      added.push_back(slices_.size());
      slices_.push_back(std::move(s));
    }
    pending_ += added.size();
    return added;
  }

  // The wait for `retry` is over: its keys go out by `table` (null: they
  // keep their refusals), then the retry stops holding the call open.
  void Resend(Retry retry, std::shared_ptr<RoutingTable> table) {
    constexpr bool kCapped = std::is_same_v<Response, v1::MultiGetResponse>;
    std::vector<size_t> added;
    if (table != nullptr) {
      std::vector<int> positions;
      for (int p : retry.positions) {
        // Still the refusing shard's under this table: the refusal stands.
        if (retry.refusal.kind == OwnershipRefusal::Kind::kWrongShard &&
            table->shard_name(table->ShardOf(KeyAt(*request_, p))) == retry.from_shard) {
          continue;
        }
        positions.push_back(p);
      }
      absl::MutexLock lock(&mu_);
      if (!positions.empty() && !(kCapped && !failure_.ok())) {
        added = AddSlicesLocked(positions, std::move(table), retry.retries, /*whole=*/false);
      }
    }
    for (size_t k : added) send_(this, k);
    bool last = false;
    grpc::Status final_status;
    {
      absl::MutexLock lock(&mu_);
      last = --pending_ == 0;
      final_status = failure_;
    }
    if (last) done_(final_status);
  }

  const std::function<void(const grpc::Status&)> done_;
  const RequestLimits limits_;
  const Request* const request_;
  Response* const response_;
  const Sender send_;
  const Awaiter await_;
  absl::Mutex mu_;
  // Every slice sent, first the caller's split, then the retries'; never
  // removed, so a Slice stays where it is until the call ends.
  std::vector<std::unique_ptr<Slice>> slices_ ABSL_GUARDED_BY(mu_);
  size_t pending_ ABSL_GUARDED_BY(mu_) = 0;    // Slices out, and retries waiting.
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;      // Of the slices gathered so far, encoded.
  grpc::Status failure_ ABSL_GUARDED_BY(mu_);  // The call's status once the answer is dropped.
};

using MultiGetCall = BatchCall<v1::MultiGetRequest, v1::MultiGetResponse>;
using MultiSetCall = BatchCall<v1::MultiSetRequest, v1::MultiSetResponse>;

}  // namespace

RouterService::RouterService(RouterOptions options, std::shared_ptr<RoutingTable> table)
    : options_(std::move(options)),
      channels_(options_.max_message_bytes, options_.backend_security),
      ring_waiters_(std::make_unique<RingWaiters>()) {
  backends_.channels = &channels_;
  backends_.health = &health_;
  backends_.default_timeout_ms = options_.forward_timeout_ms;
  if (options_.refresh_ring) {
    // etcd mode: a write refused NOT_LEADER naming no leader waits for a
    // fresh read of etcd (the ring's read brings the leader keys too).
    backends_.refresh = options_.refresh_ring;
    backends_.current_table = [this] { return this->table(); };
  }
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
    lanes_ = std::make_unique<CoalescingLanes>(backends_, limits);
  }
}

RouterService::~RouterService() {
  // Requests still waiting for the ring end with the refusal they had.
  ring_waiters_->Stop();
  prober_->Stop();
}

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
  const int64_t ring_version = table->ring_version();
  {
    absl::MutexLock lock(&mu_);
    table_ = std::move(table);
  }
  // After the table: a request woken by the new version routes by it.
  ring_waiters_->SetVersion(ring_version);
}

void RouterService::AwaitRing(const OwnershipRefusal& refusal, int64_t sent_version,
                              std::chrono::system_clock::time_point deadline,
                              std::function<void(std::shared_ptr<RoutingTable>)> then) {
  const absl::Time bound =
      std::min(absl::FromChrono(deadline), absl::Now() + options_.ownership_wait);
  auto with_table = [this, then = std::move(then)](bool go_on) { then(go_on ? table() : nullptr); };
  if (refusal.kind == OwnershipRefusal::Kind::kRangeMoving) {
    // Until the cutover's ring (or its abandonment) is seen, or the bound.
    const int64_t held_at = refusal.ring_version >= 0 ? refusal.ring_version : sent_version;
    ring_waiters_->Wait(held_at + 1, nullptr, bound, std::move(with_table));
    return;
  }
  // WRONG_SHARD: the shard knows a newer ring than the one the request was
  // routed by (a per-key refusal does not say which: one newer is assumed).
  const int64_t known = refusal.ring_version >= 0 ? refusal.ring_version : sent_version + 1;
  if (table()->ring_version() >= known || !options_.refresh_ring) {
    with_table(true);
    return;
  }
  // A fresh read, begun after the refusal, rather than the watch's pace. The
  // wait ends when it is in (whatever it found) or the version arrives.
  auto refreshed = std::make_shared<std::atomic<bool>>(false);
  ring_waiters_->Wait(known, refreshed, bound, std::move(with_table));
  VLOG(1) << "WRONG_SHARD at ring version " << known << " (router at " << table()->ring_version()
          << "): reading the ring from etcd";
  options_.refresh_ring([waiters = ring_waiters_.get(), refreshed] {
    refreshed->store(true);
    waiters->Poke();
  });
}

bool RouterService::FollowRefusal(
    const OwnershipRefusal& refusal, const std::shared_ptr<RoutingTable>& sent_with, int shard,
    const std::string& key, std::chrono::system_clock::time_point deadline,
    OwnershipRetries retries,
    std::function<void(std::shared_ptr<RoutingTable>, OwnershipRetries)> resend,
    std::function<void(bool ring_unknown)> give_up) {
  if (!refusal || !retries.Allows(refusal.kind)) return false;
  // The ring version the refusing shard follows (as AwaitRing assumes it);
  // a router with a ring source that still has not got it could not read it.
  const int64_t known =
      refusal.ring_version >= 0 ? refusal.ring_version : sent_with->ring_version() + 1;
  const bool can_refresh = static_cast<bool>(options_.refresh_ring);
  AwaitRing(refusal, sent_with->ring_version(), deadline,
            [refusal, from = sent_with->shard_name(shard), key, left = retries.After(refusal.kind),
             known, can_refresh, resend = std::move(resend),
             give_up = std::move(give_up)](std::shared_ptr<RoutingTable> table) {
              if (table == nullptr || (refusal.kind == OwnershipRefusal::Kind::kWrongShard &&
                                       table->shard_name(table->ShardOf(key)) == from)) {
                return give_up(table != nullptr && can_refresh &&
                               refusal.kind == OwnershipRefusal::Kind::kWrongShard &&
                               table->ring_version() < known);
              }
              resend(std::move(table), left);
            });
  return true;
}

std::shared_ptr<RoutingTable> RouterService::table() const {
  absl::MutexLock lock(&mu_);
  return table_;
}

absl::StatusOr<std::string> RouterService::LeaderTarget(const RoutingTable& table,
                                                        int shard) const {
  std::string leader = table.Leader(shard);
  if (const std::optional<uint64_t> epoch = health_.DeposedEpoch(leader)) {
    return absl::UnavailableError(
        absl::StrCat("its leader ", leader, " was deposed (epoch ", *epoch,
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
  SendGet(route, table(), request, response, std::move(done), OwnershipRetries());
}

void RouterService::SendGet(const Route& route, std::shared_ptr<RoutingTable> table,
                            const v1::GetRequest* request, v1::GetResponse* response,
                            RouteDone done, OwnershipRetries retries) {
  const int shard = table->ShardOf(request->key());
  std::vector<std::string> nodes;
  if (request->read_mode() == v1::READ_MODE_ANY_REPLICA) {
    nodes = ReadTargets(*table, shard, request->read_mode());
  } else {
    absl::StatusOr<std::string> leader = LeaderTarget(*table, shard);
    if (!leader.ok()) return done(ToGrpcStatus(InShard(*table, shard, leader.status())));
    nodes = {*std::move(leader)};
  }
  ShardDone finish = [this, route, table, shard, request, response, retries,
                      done = std::move(done)](const grpc::Status& status,
                                              const std::string& label) {
    if (!status.ok() &&
        FollowRefusal(
            RefusalOf(status), table, shard, request->key(), route.deadline, retries,
            [this, route, request, response, done](std::shared_ptr<RoutingTable> next,
                                                   OwnershipRetries left) {
              response->Clear();
              SendGet(route, std::move(next), request, response, done, left);
            },
            [done, status, label](bool ring_unknown) {
              done(GivenUp(status, label, ring_unknown));
            })) {
      return;
    }
    done(ForCaller(status, label));
  };
  if (lanes_ != nullptr) {
    lanes_->SubmitGet(request->read_mode(),
                      {std::move(table), shard, std::move(nodes), route.parent, route.deadline,
                       request, response, std::move(finish)});
    return;
  }
  Forward(backends_, std::move(table), shard, RetryRule::kNextNodeIfUnavailable, std::move(nodes),
          route.parent, route.deadline, request, response, std::move(finish));
}

void RouterService::RouteSet(const Route& route, const v1::SetRequest* request,
                             v1::SetResponse* response, RouteDone done) {
  if (absl::Status s = CheckSet(*request, options_.limits); !s.ok()) {
    return done(ToGrpcStatus(s));
  }
  SendSet(route, table(), request, response, std::move(done), OwnershipRetries());
}

void RouterService::SendSet(const Route& route, std::shared_ptr<RoutingTable> table,
                            const v1::SetRequest* request, v1::SetResponse* response,
                            RouteDone done, OwnershipRetries retries) {
  const int shard = table->ShardOf(request->key());
  absl::StatusOr<std::string> leader = LeaderTarget(*table, shard);
  if (!leader.ok()) return done(ToGrpcStatus(InShard(*table, shard, leader.status())));
  // A refused write was not applied: sending it again is safe.
  ShardDone finish = [this, route, table, shard, request, response, retries,
                      done = std::move(done)](const grpc::Status& status,
                                              const std::string& label) {
    if (!status.ok() &&
        FollowRefusal(
            RefusalOf(status), table, shard, request->key(), route.deadline, retries,
            [this, route, request, response, done](std::shared_ptr<RoutingTable> next,
                                                   OwnershipRetries left) {
              response->Clear();
              SendSet(route, std::move(next), request, response, done, left);
            },
            [done, status, label](bool ring_unknown) {
              done(GivenUp(status, label, ring_unknown));
            })) {
      return;
    }
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
  Forward(backends_, std::move(table), shard, RetryRule::kHintedLeader, {*std::move(leader)},
          route.parent, route.deadline, request, response, std::move(finish));
}

void RouterService::RouteDelete(const Route& route, const v1::DeleteRequest* request,
                                v1::DeleteResponse* response, RouteDone done) {
  if (absl::Status s = CheckDelete(*request, options_.limits); !s.ok()) {
    return done(ToGrpcStatus(s));
  }
  SendDelete(route, table(), request, response, std::move(done), OwnershipRetries());
}

void RouterService::SendDelete(const Route& route, std::shared_ptr<RoutingTable> table,
                               const v1::DeleteRequest* request, v1::DeleteResponse* response,
                               RouteDone done, OwnershipRetries retries) {
  const int shard = table->ShardOf(request->key());
  absl::StatusOr<std::string> leader = LeaderTarget(*table, shard);
  if (!leader.ok()) return done(ToGrpcStatus(InShard(*table, shard, leader.status())));
  ShardDone finish = [this, route, table, shard, request, response, retries,
                      done = std::move(done)](const grpc::Status& status,
                                              const std::string& label) {
    if (!status.ok() &&
        FollowRefusal(
            RefusalOf(status), table, shard, request->key(), route.deadline, retries,
            [this, route, request, response, done](std::shared_ptr<RoutingTable> next,
                                                   OwnershipRetries left) {
              response->Clear();
              SendDelete(route, std::move(next), request, response, done, left);
            },
            [done, status, label](bool ring_unknown) {
              done(GivenUp(status, label, ring_unknown));
            })) {
      return;
    }
    done(ForCaller(status, label));
  };
  Forward(backends_, std::move(table), shard, RetryRule::kHintedLeader, {*std::move(leader)},
          route.parent, route.deadline, request, response, std::move(finish));
}

void RouterService::RouteMultiGet(const Route& route, const v1::MultiGetRequest* request,
                                  v1::MultiGetResponse* response, RouteDone done) {
  if (absl::Status s = CheckMultiGet(*request, options_.limits); !s.ok()) {
    return done(ToGrpcStatus(s));
  }
  if (request->keys_size() == 0) return done(grpc::Status::OK);
  PrepareResults(request->keys_size(), response);
  auto batch = std::make_shared<MultiGetCall>(
      std::move(done), request, response, options_.limits,
      [this, route](MultiGetCall* call, size_t k) {
        MultiGetCall::Slice* s = call->slice(k);
        const int shard = s->slice.shard;
        const v1::ReadMode mode = s->request->read_mode();
        std::vector<std::string> nodes;
        if (mode == v1::READ_MODE_ANY_REPLICA) {
          nodes = ReadTargets(*s->table, shard, mode);
        } else {
          absl::StatusOr<std::string> leader = LeaderTarget(*s->table, shard);
          if (!leader.ok()) {
            call->SliceDone(k, ToGrpcStatus(leader.status()),
                            absl::StrCat("shard ", s->table->shard_name(shard)));
            return;
          }
          nodes = {*std::move(leader)};
        }
        ShardDone slice_done = [call = call->shared_from_this(), k](const grpc::Status& status,
                                                                    const std::string& label) {
          call->SliceDone(k, status, label);
        };
        if (lanes_ != nullptr) {
          lanes_->SubmitMultiGet(
              mode, {s->table, shard, std::move(nodes), route.parent, route.deadline, s->request,
                     &s->response, std::move(slice_done)});
          return;
        }
        Forward(backends_, s->table, shard, RetryRule::kNextNodeIfUnavailable, std::move(nodes),
                route.parent, route.deadline, s->request, &s->response, std::move(slice_done));
      },
      [this, deadline = route.deadline](const OwnershipRefusal& refusal, int64_t sent_version,
                                        std::function<void(std::shared_ptr<RoutingTable>)> then) {
        AwaitRing(refusal, sent_version, deadline, std::move(then));
      });
  batch->Start(table());
}

void RouterService::RouteMultiSet(const Route& route, const v1::MultiSetRequest* request,
                                  v1::MultiSetResponse* response, RouteDone done) {
  if (absl::Status s = CheckMultiSet(*request, options_.limits); !s.ok()) {
    return done(ToGrpcStatus(s));
  }
  if (request->items_size() == 0) return done(grpc::Status::OK);
  PrepareResults(request->items_size(), response);
  auto batch = std::make_shared<MultiSetCall>(
      std::move(done), request, response, options_.limits,
      [this, route](MultiSetCall* call, size_t k) {
        MultiSetCall::Slice* s = call->slice(k);
        const int shard = s->slice.shard;
        absl::StatusOr<std::string> leader = LeaderTarget(*s->table, shard);
        if (!leader.ok()) {
          call->SliceDone(k, ToGrpcStatus(leader.status()),
                          absl::StrCat("shard ", s->table->shard_name(shard)));
          return;
        }
        ShardDone slice_done = [call = call->shared_from_this(), k](const grpc::Status& status,
                                                                    const std::string& label) {
          call->SliceDone(k, status, label);
        };
        if (lanes_ != nullptr) {
          lanes_->SubmitMultiSet(s->request->ack(), {s->table,
                                                     shard,
                                                     {*std::move(leader)},
                                                     route.parent,
                                                     route.deadline,
                                                     s->request,
                                                     &s->response,
                                                     std::move(slice_done)});
          return;
        }
        Forward(backends_, s->table, shard, RetryRule::kHintedLeader, {*std::move(leader)},
                route.parent, route.deadline, s->request, &s->response, std::move(slice_done));
      },
      [this, deadline = route.deadline](const OwnershipRefusal& refusal, int64_t sent_version,
                                        std::function<void(std::shared_ptr<RoutingTable>)> then) {
        AwaitRing(refusal, sent_version, deadline, std::move(then));
      });
  batch->Start(table());
}

void RouterService::ForwardScan(std::shared_ptr<RoutingTable> table, int shard,
                                std::vector<std::string> nodes, grpc::CallbackServerContext* parent,
                                std::chrono::system_clock::time_point deadline,
                                const v1::ScanRequest* request, v1::ScanResponse* response,
                                std::function<void(const grpc::Status&, const std::string&)> done) {
  Forward(backends_, std::move(table), shard, RetryRule::kNextNodeIfUnavailable, std::move(nodes),
          parent, deadline, request, response, std::move(done));
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

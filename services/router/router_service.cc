#include "services/router/router_service.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <functional>
#include <iterator>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/server/grpc_status.h"
#include "common/topology/topology.h"
#include "glog/logging.h"
#include "services/router/batch_split.h"

namespace kvstore {
namespace {

// The asynchronous client call for each request type.
using RpcDone = std::function<void(grpc::Status)>;
void StartRpc(v1::KeyValue::Stub* stub, grpc::ClientContext* context, const v1::GetRequest* request,
              v1::GetResponse* response, RpcDone done) {
  stub->async()->Get(context, request, response, std::move(done));
}
void StartRpc(v1::KeyValue::Stub* stub, grpc::ClientContext* context, const v1::SetRequest* request,
              v1::SetResponse* response, RpcDone done) {
  stub->async()->Set(context, request, response, std::move(done));
}
void StartRpc(v1::KeyValue::Stub* stub, grpc::ClientContext* context,
              const v1::DeleteRequest* request, v1::DeleteResponse* response, RpcDone done) {
  stub->async()->Delete(context, request, response, std::move(done));
}
void StartRpc(v1::KeyValue::Stub* stub, grpc::ClientContext* context,
              const v1::MultiGetRequest* request, v1::MultiGetResponse* response, RpcDone done) {
  stub->async()->MultiGet(context, request, response, std::move(done));
}
void StartRpc(v1::KeyValue::Stub* stub, grpc::ClientContext* context,
              const v1::MultiSetRequest* request, v1::MultiSetResponse* response, RpcDone done) {
  stub->async()->MultiSet(context, request, response, std::move(done));
}
void StartRpc(v1::KeyValue::Stub* stub, grpc::ClientContext* context,
              const v1::ScanRequest* request, v1::ScanResponse* response, RpcDone done) {
  stub->async()->Scan(context, request, response, std::move(done));
}

enum class RetryRule {
  // Reads: an UNAVAILABLE node is tried once more on the next node.
  kNextNodeIfUnavailable,
  // Writes: only a refusal that names the leader is sent again, there.
  kHintedLeader,
};

// Called once with the final status and a label naming the shard and the node
// that answered last ("shard shard-1 at 127.0.0.1:50062"), for messages.
using ShardDone = std::function<void(const grpc::Status& status, const std::string& label)>;

// One request forwarded to one shard: at most two attempts. Owns itself:
// deleted right after calling `done`.
template <typename Request, typename Response>
class ShardCall {
 public:
  // `request` and `response` must stay valid until `done` is called.
  // `parent` is the caller's RPC, whose cancellation the call follows; null
  // for a coalesced call made on behalf of several callers. A retry shares
  // the same `deadline`.
  ShardCall(BackendChannels* channels, const HealthBook* health,
            std::shared_ptr<RoutingTable> table, int shard, RetryRule rule,
            std::vector<std::string> nodes, grpc::CallbackServerContext* parent,
            std::chrono::system_clock::time_point deadline, const Request* request,
            Response* response, ShardDone done)
      : channels_(channels),
        health_(health),
        table_(std::move(table)),
        shard_(shard),
        rule_(rule),
        nodes_(std::move(nodes)),
        parent_(parent),
        deadline_(deadline),
        request_(request),
        response_(response),
        done_(std::move(done)) {}

  void Start() { Attempt(nodes_[0]); }

 private:
  void Attempt(std::string address) {
    address_ = std::move(address);
    // Propagates the caller's deadline and cancellation to this call.
    std::unique_ptr<grpc::ClientContext>& context = contexts_[attempts_++];
    context = parent_ != nullptr ? grpc::ClientContext::FromCallbackServerContext(*parent_)
                                 : std::make_unique<grpc::ClientContext>();
    context->set_deadline(deadline_);
    stub_ = channels_->Stub(address_);
    StartRpc(stub_.get(), context.get(), request_, response_,
             [this](grpc::Status status) { Finished(std::move(status)); });
  }

  void Finished(grpc::Status status) {
    if (!status.ok()) channels_->CallFailed(address_, status.error_code());
    std::string next = RetryTarget(status);
    if (!next.empty() && attempts_ < 2) {
      response_->Clear();
      Attempt(std::move(next));
      return;
    }
    // Our stub and contexts go first, while the caller's RPC (and so the
    // router, which holds every channel) is still alive: finishing the caller
    // may let the server shut down and the channels go, and this callback
    // must not drop the last reference to a channel (backend_channels.h).
    ShardDone done = done_;
    std::string label = absl::StrCat("shard ", table_->shard_name(shard_), " at ", address_);
    delete this;
    done(status, label);
  }

  // Where the failed attempt may be retried; empty when it may not.
  std::string RetryTarget(const grpc::Status& status) {
    switch (rule_) {
      case RetryRule::kNextNodeIfUnavailable:
        if (status.error_code() == grpc::StatusCode::UNAVAILABLE && nodes_.size() > 1) {
          return nodes_[1];
        }
        return "";
      case RetryRule::kHintedLeader: {
        if (status.error_code() != grpc::StatusCode::FAILED_PRECONDITION) return "";
        // NOT_LEADER (ErrorInfo) names the leader in its metadata; older
        // nodes only in the kv-leader trailer.
        const std::optional<ErrorInfo> info = ErrorInfoOf(status);
        const bool not_leader = info && info->reason == kReasonNotLeader;
        std::string hint;
        if (not_leader) {
          auto leader = info->metadata.find("leader");
          if (leader != info->metadata.end()) hint = leader->second;
        }
        if (hint.empty()) {
          const auto& trailers = contexts_[attempts_ - 1]->GetServerTrailingMetadata();
          auto it = trailers.find(kLeaderHintKey);
          if (it != trailers.end()) hint.assign(it->second.data(), it->second.size());
        }
        if (hint.empty()) {
          // A CAS mismatch, or a refusal naming no leader. A NOT_LEADER write
          // was not applied: if the router's own view (etcd's leader key, the
          // probes) has moved on since the write was sent, it goes there.
          if (!not_leader) return "";
          std::string current = table_->Leader(shard_);
          return current != address_ && !health_->Get(current).deposed() ? current : "";
        }
        if (hint == address_ || !CheckHostPort(hint).ok()) return "";
        // Never write to a node known to be deposed (the hint is stale).
        if (health_->Get(hint).deposed()) return "";
        if (table_->SetLeader(shard_, hint)) {
          LOG(WARNING) << "Leader change: shard " << table_->shard_name(shard_)
                       << " writes now go to " << hint << " (was " << address_ << "): " << address_
                       << " refused a write naming it";
        }
        return hint;
      }
    }
    return "";
  }

  BackendChannels* const channels_;
  const HealthBook* const health_;
  const std::shared_ptr<RoutingTable> table_;
  const int shard_;
  const RetryRule rule_;
  const std::vector<std::string> nodes_;
  grpc::CallbackServerContext* const parent_;
  const std::chrono::system_clock::time_point deadline_;
  const Request* const request_;
  Response* const response_;
  const ShardDone done_;

  int attempts_ = 0;
  std::string address_;  // Of the current attempt.
  std::shared_ptr<v1::KeyValue::Stub> stub_;
  // One per attempt; kept until the end, as the first one's trailers are read
  // after it completes.
  std::unique_ptr<grpc::ClientContext> contexts_[2];
};

// The caller's deadline, else `default_timeout_ms` from now.
std::chrono::system_clock::time_point CallDeadline(const grpc::CallbackServerContext& parent,
                                                   int64_t default_timeout_ms) {
  const auto caller_deadline = parent.deadline();
  return caller_deadline != std::chrono::system_clock::time_point::max()
             ? caller_deadline
             : absl::ToChronoTime(absl::Now() + absl::Milliseconds(default_timeout_ms));
}

// What a forwarded call needs of the router.
struct Backends {
  BackendChannels* channels;
  const HealthBook* health;
  int64_t default_timeout_ms;
};

template <typename Request, typename Response>
void Forward(const Backends& backends, std::shared_ptr<RoutingTable> table, int shard,
             RetryRule rule, std::vector<std::string> nodes, grpc::CallbackServerContext* parent,
             std::chrono::system_clock::time_point deadline, const Request* request,
             Response* response, ShardDone done) {
  auto* call = new ShardCall<Request, Response>(
      backends.channels, backends.health, std::move(table), shard, rule, std::move(nodes), parent,
      deadline, request, response, std::move(done));
  call->Start();
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

// ---- Coalescing -------------------------------------------------------------
//
// Each forwarded unary call costs the router and the shard a whole gRPC call.
// Under load, single Gets (and Sets) bound for the same node therefore travel
// together: a lane (one per node, request kind and read mode or ack) lets up to
// `coalesce_in_flight` calls run; requests that arrive while all of them are
// out wait in the lane and leave together, as one MultiGet (MultiSet), as soon
// as one of the lane's calls returns. No timer: at low load every request goes
// out alone, at once, exactly as before; the busier the node, the larger the
// batches. A waiting request adds at most one round trip to its latency.
//
// What a coalesced request keeps: its own result, version and error (per-key
// errors of the batch become its status), the retry rules of its kind (a batch
// that a node refuses naming the leader goes there once; a batch of replica
// reads that meets UNAVAILABLE tries the next node), its deadline (a request
// whose deadline passes while it waits is answered DEADLINE_EXCEEDED without
// being sent; the batch carries the latest deadline of its requests). What it
// loses: a caller's cancellation no longer cancels the forwarded batch (it
// still ends by its deadline).
//
// Size: a request that would fit alone never fails because of the others in
// its batch. A batch's request is kept to half the message limit (keys, and
// values for writes), and so is its expected answer: each read is expected to
// answer as much as the largest value the lane's last answers held (the
// estimate halves with each answer that holds less). The estimate can be
// wrong, so a batch of reads that fails with RESOURCE_EXHAUSTED (over the
// router's message limit, or over the shard's --max-response-bytes) is split
// in halves, each sent again (reads only: a write batch is never sent twice),
// down to requests alone, whose failure is then their own.

namespace {

// The status a per-key error of a batch answer stands for (OK when unset).
grpc::Status KeyErrorStatus(const v1::KeyError& error) {
  return grpc::Status(static_cast<grpc::StatusCode>(error.code()), error.message());
}

// Moves `n` results from `from`, starting at `offset`, to the end of `to`.
template <typename Result>
void MoveResults(google::protobuf::RepeatedPtrField<Result>* from, int offset, int n,
                 google::protobuf::RepeatedPtrField<Result>* to) {
  for (int i = 0; i < n; ++i) to->Add()->Swap(from->Mutable(offset + i));
}

size_t LargestValueOf(const v1::MultiGetResponse& batch) {
  size_t largest = 0;
  for (const v1::GetResult& r : batch.results()) largest = std::max(largest, r.value().size());
  return largest;
}

// A kind of request a lane carries: how requests join a batch (Add, in
// order) and how each gets its part of the batch's answer back (Take, from
// `offset`, the number of keys before it). Count is the keys of a request,
// Bytes what it adds to the batch's request, LargestValue the largest value
// in an answer (0 for writes); kResendable when a batch may be sent again.
struct GetKind {
  using Request = v1::GetRequest;
  using Response = v1::GetResponse;
  using BatchRequest = v1::MultiGetRequest;
  using BatchResponse = v1::MultiGetResponse;
  static constexpr RetryRule kRule = RetryRule::kNextNodeIfUnavailable;
  static constexpr bool kResendable = true;
  static size_t Count(const Request&) { return 1; }
  static size_t Bytes(const Request& r) { return r.key().size(); }
  static size_t LargestValue(const Response& r) { return r.value().size(); }
  static size_t LargestValue(const BatchResponse& batch) { return LargestValueOf(batch); }
  static void Add(const Request& r, BatchRequest* batch) {
    if (batch->keys_size() == 0) batch->set_read_mode(r.read_mode());
    batch->add_keys(r.key());
  }
  static int Results(const BatchResponse& batch) { return batch.results_size(); }
  static grpc::Status Take(BatchResponse* batch, int offset, const Request&, Response* out) {
    v1::GetResult* r = batch->mutable_results(offset);
    if (r->error().code() != 0) return KeyErrorStatus(r->error());
    out->set_found(r->found());
    out->set_version(r->version());
    out->set_expires_at_ms(r->expires_at_ms());
    out->mutable_value()->swap(*r->mutable_value());
    return grpc::Status::OK;
  }
};

struct SetKind {
  using Request = v1::SetRequest;
  using Response = v1::SetResponse;
  using BatchRequest = v1::MultiSetRequest;
  using BatchResponse = v1::MultiSetResponse;
  static constexpr RetryRule kRule = RetryRule::kHintedLeader;
  static constexpr bool kResendable = false;
  static size_t Count(const Request&) { return 1; }
  static size_t Bytes(const Request& r) { return r.key().size() + r.value().size(); }
  static size_t LargestValue(const Response&) { return 0; }
  static size_t LargestValue(const BatchResponse&) { return 0; }
  static void Add(const Request& r, BatchRequest* batch) {
    if (batch->items_size() == 0) *batch->mutable_ack() = r.ack();
    v1::SetItem* item = batch->add_items();
    item->set_key(r.key());
    item->set_value(r.value());
    item->set_ttl_ms(r.ttl_ms());
    if (r.has_if_version()) item->set_if_version(r.if_version());
  }
  static int Results(const BatchResponse& batch) { return batch.results_size(); }
  static grpc::Status Take(BatchResponse* batch, int offset, const Request&, Response* out) {
    const v1::SetResult& r = batch->results(offset);
    if (r.error().code() != 0) return KeyErrorStatus(r.error());
    out->set_version(r.version());
    return grpc::Status::OK;
  }
};

// A shard's slice of a client's MultiGet: its keys join the batch, and its
// results (per-key errors included) come back as they are.
struct MultiGetKind {
  using Request = v1::MultiGetRequest;
  using Response = v1::MultiGetResponse;
  using BatchRequest = v1::MultiGetRequest;
  using BatchResponse = v1::MultiGetResponse;
  static constexpr RetryRule kRule = RetryRule::kNextNodeIfUnavailable;
  static constexpr bool kResendable = true;
  static size_t Count(const Request& r) { return r.keys_size(); }
  static size_t LargestValue(const Response& r) { return LargestValueOf(r); }
  static size_t Bytes(const Request& r) {
    size_t n = 0;
    for (const std::string& key : r.keys()) n += key.size();
    return n;
  }
  static void Add(const Request& r, BatchRequest* batch) {
    if (batch->keys_size() == 0) batch->set_read_mode(r.read_mode());
    for (const std::string& key : r.keys()) batch->add_keys(key);
  }
  static int Results(const BatchResponse& batch) { return batch.results_size(); }
  static grpc::Status Take(BatchResponse* batch, int offset, const Request& r, Response* out) {
    MoveResults(batch->mutable_results(), offset, r.keys_size(), out->mutable_results());
    return grpc::Status::OK;
  }
};

// A shard's slice of a client's MultiSet.
struct MultiSetKind {
  using Request = v1::MultiSetRequest;
  using Response = v1::MultiSetResponse;
  using BatchRequest = v1::MultiSetRequest;
  using BatchResponse = v1::MultiSetResponse;
  static constexpr RetryRule kRule = RetryRule::kHintedLeader;
  static constexpr bool kResendable = false;
  static size_t Count(const Request& r) { return r.items_size(); }
  static size_t LargestValue(const Response&) { return 0; }
  static size_t Bytes(const Request& r) {
    size_t n = 0;
    for (const v1::SetItem& item : r.items()) n += item.key().size() + item.value().size();
    return n;
  }
  static void Add(const Request& r, BatchRequest* batch) {
    if (batch->items_size() == 0) *batch->mutable_ack() = r.ack();
    for (const v1::SetItem& item : r.items()) *batch->add_items() = item;
  }
  static int Results(const BatchResponse& batch) { return batch.results_size(); }
  static grpc::Status Take(BatchResponse* batch, int offset, const Request& r, Response* out) {
    MoveResults(batch->mutable_results(), offset, r.items_size(), out->mutable_results());
    return grpc::Status::OK;
  }
};

// What a lane lets out at once (see above).
struct LaneLimits {
  int max_in_flight;         // Calls out before requests wait.
  size_t max_items;          // Keys in one batch.
  size_t max_request_bytes;  // Of a batch's request (Kind::Bytes).
  size_t max_answer_bytes;   // Expected of a batch's answer.
};

// One node's queue of requests of one kind (see above). Thread-safe.
template <typename Kind>
class Lane {
 public:
  using Request = typename Kind::Request;
  using Response = typename Kind::Response;

  struct Item {
    std::shared_ptr<RoutingTable> table;
    int shard;
    std::vector<std::string> nodes;  // nodes[0] is the lane's node.
    grpc::CallbackServerContext* parent;
    std::chrono::system_clock::time_point deadline;
    const Request* request;
    Response* response;
    // The request's status and a label naming the shard and the node that
    // answered last (ShardDone); the caller makes its final status of them.
    ShardDone done;
  };

  Lane(const Backends& backends, const LaneLimits& limits) : backends_(backends), limits_(limits) {}

  size_t queued() {
    absl::MutexLock lock(&mu_);
    return queue_.size();
  }

  void Submit(Item item) {
    {
      absl::MutexLock lock(&mu_);
      if (in_flight_ >= limits_.max_in_flight) {
        queue_.push_back(std::move(item));
        return;
      }
      ++in_flight_;
    }
    SendOne(std::move(item));
  }

 private:
  void SendOne(Item item) {
    auto owned = std::make_shared<Item>(std::move(item));
    auto* call = new ShardCall<Request, Response>(
        backends_.channels, backends_.health, owned->table, owned->shard, Kind::kRule, owned->nodes,
        owned->parent, owned->deadline, owned->request, owned->response,
        [this, owned](const grpc::Status& status, const std::string& label) {
          if (status.ok()) Learn(Kind::LargestValue(*owned->response));
          Next();
          owned->done(status, label);
        });
    call->Start();
  }

  struct Batch {
    std::vector<Item> items;
    typename Kind::BatchRequest request;
    typename Kind::BatchResponse response;
  };

  void Send(std::vector<Item> items) {
    if (items.size() == 1) {
      SendOne(std::move(items[0]));
    } else {
      SendBatch(std::move(items));
    }
  }

  void SendBatch(std::vector<Item> items) {
    auto batch = std::make_shared<Batch>();
    batch->items = std::move(items);
    auto deadline = batch->items[0].deadline;
    for (const Item& item : batch->items) {
      Kind::Add(*item.request, &batch->request);
      deadline = std::max(deadline, item.deadline);
    }
    const Item& first = batch->items[0];
    auto* call = new ShardCall<typename Kind::BatchRequest, typename Kind::BatchResponse>(
        backends_.channels, backends_.health, first.table, first.shard, Kind::kRule, first.nodes,
        /*parent=*/nullptr, deadline, &batch->request, &batch->response,
        [this, batch](const grpc::Status& status, const std::string& label) {
          size_t keys = 0;
          for (const Item& item : batch->items) keys += Kind::Count(*item.request);
          if (Kind::kResendable && batch->items.size() > 1 &&
              status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
            SplitAndResend(std::move(batch->items), keys);
            return;
          }
          if (status.ok()) Learn(Kind::LargestValue(batch->response));
          Next();
          if (status.ok() && static_cast<size_t>(Kind::Results(batch->response)) != keys) {
            const grpc::Status wrong(
                grpc::StatusCode::INTERNAL,
                absl::StrCat(label, " answered ", Kind::Results(batch->response), " results for ",
                             keys, " keys"));
            for (Item& item : batch->items) item.done(wrong, label);
            return;
          }
          int offset = 0;
          for (Item& item : batch->items) {
            item.done(status.ok()
                          ? Kind::Take(&batch->response, offset, *item.request, item.response)
                          : status,
                      label);
            offset += static_cast<int>(Kind::Count(*item.request));
          }
        });
    call->Start();
  }

  // A batch's answer was too large: its halves go again, the first in its
  // slot, the second in one more; each keeps the lane going when it returns.
  // The values are at least as large as the limit that was passed (about
  // twice the answer budget) allows for `keys` keys: batches taken from the
  // queue from now on are at most half as large.
  void SplitAndResend(std::vector<Item> items, size_t keys) {
    {
      absl::MutexLock lock(&mu_);
      answer_bytes_per_key_ =
          std::max(answer_bytes_per_key_, 2 * limits_.max_answer_bytes / std::max<size_t>(1, keys));
      ++in_flight_;
    }
    const size_t half = items.size() / 2;
    std::vector<Item> second(std::make_move_iterator(items.begin() + half),
                             std::make_move_iterator(items.end()));
    items.resize(half);
    Send(std::move(items));
    Send(std::move(second));
  }

  // What the answers of reads are expected to hold per key, from the largest
  // value of an answer just received.
  void Learn(size_t largest_value) {
    absl::MutexLock lock(&mu_);
    answer_bytes_per_key_ = std::max(largest_value + kResultOverhead, answer_bytes_per_key_ / 2);
  }

  // One of the lane's calls returned: sends what waits, as one call, or
  // frees the slot.
  void Next() {
    std::vector<Item> ready;
    std::vector<Item> expired;
    {
      absl::MutexLock lock(&mu_);
      const auto now = std::chrono::system_clock::now();
      size_t bytes = 0;
      size_t answer_bytes = 0;
      size_t keys = 0;
      while (!queue_.empty()) {
        Item& item = queue_.front();
        if (item.deadline <= now) {
          expired.push_back(std::move(item));
          queue_.pop_front();
          continue;
        }
        const size_t size = Kind::Bytes(*item.request);
        const size_t count = Kind::Count(*item.request);
        const size_t answer = count * answer_bytes_per_key_;
        if (!ready.empty() && (bytes + size > limits_.max_request_bytes ||
                               answer_bytes + answer > limits_.max_answer_bytes ||
                               keys + count > limits_.max_items)) {
          break;
        }
        bytes += size;
        answer_bytes += answer;
        keys += count;
        ready.push_back(std::move(item));
        queue_.pop_front();
      }
      if (ready.empty()) --in_flight_;
    }
    if (!ready.empty()) Send(std::move(ready));
    for (Item& item : expired) {
      item.done(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                             "the deadline passed before the request was sent (the router's "
                             "queue for that node was full)"),
                absl::StrCat("shard ", item.table->shard_name(item.shard), " at ", item.nodes[0]));
    }
  }

  // A result's bytes besides its value (found, version, framing).
  static constexpr size_t kResultOverhead = 32;

  const Backends backends_;
  const LaneLimits limits_;
  absl::Mutex mu_;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<Item> queue_ ABSL_GUARDED_BY(mu_);
  size_t answer_bytes_per_key_ ABSL_GUARDED_BY(mu_) = kResultOverhead;
};

}  // namespace

// The lanes of every node, created on first use and kept for the router's
// life (a handful per node).
class RouterService::Lanes {
 public:
  Lanes(const Backends& backends, const LaneLimits& limits)
      : backends_(backends), limits_(limits) {}

  Lane<GetKind>* ForGet(const std::string& node, v1::ReadMode mode) {
    return Find(&gets_, absl::StrCat(node, "/", static_cast<int>(mode)));
  }
  Lane<SetKind>* ForSet(const std::string& node, const v1::WriteAck& ack) {
    return Find(&sets_, absl::StrCat(node, "/", static_cast<int>(ack.mode()), "/", ack.replicas()));
  }
  Lane<MultiGetKind>* ForMultiGet(const std::string& node, v1::ReadMode mode) {
    return Find(&multi_gets_, absl::StrCat(node, "/", static_cast<int>(mode)));
  }
  Lane<MultiSetKind>* ForMultiSet(const std::string& node, const v1::WriteAck& ack) {
    return Find(&multi_sets_,
                absl::StrCat(node, "/", static_cast<int>(ack.mode()), "/", ack.replicas()));
  }

  size_t queued() {
    absl::MutexLock lock(&mu_);
    size_t n = 0;
    for (const auto& [key, lane] : gets_) n += lane->queued();
    for (const auto& [key, lane] : sets_) n += lane->queued();
    for (const auto& [key, lane] : multi_gets_) n += lane->queued();
    for (const auto& [key, lane] : multi_sets_) n += lane->queued();
    return n;
  }

 private:
  template <typename Kind>
  Lane<Kind>* Find(absl::flat_hash_map<std::string, std::unique_ptr<Lane<Kind>>>* lanes,
                   std::string key) {
    absl::MutexLock lock(&mu_);
    std::unique_ptr<Lane<Kind>>& lane = (*lanes)[std::move(key)];
    if (lane == nullptr) {
      lane = std::make_unique<Lane<Kind>>(backends_, limits_);
    }
    return lane.get();
  }

  const Backends backends_;
  const LaneLimits limits_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<Lane<GetKind>>> gets_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::unique_ptr<Lane<SetKind>>> sets_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::unique_ptr<Lane<MultiGetKind>>> multi_gets_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::unique_ptr<Lane<MultiSetKind>>> multi_sets_
      ABSL_GUARDED_BY(mu_);
};

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
    lanes_ = std::make_unique<Lanes>(Backends{&channels_, &health_, options_.forward_timeout_ms},
                                     limits);
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
    Lane<GetKind>* lane = lanes_->ForGet(nodes[0], request->read_mode());
    lane->Submit({std::move(table), shard, std::move(nodes), route.parent, route.deadline, request,
                  response, std::move(finish)});
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
    Lane<SetKind>* lane = lanes_->ForSet(*leader, request->ack());
    lane->Submit({std::move(table),
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
      Lane<MultiGetKind>* lane = lanes_->ForMultiGet(nodes[0], request->read_mode());
      lane->Submit({table, shard, std::move(nodes), route.parent, route.deadline, batch->request(k),
                    batch->response(k), std::move(slice_done)});
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
      Lane<MultiSetKind>* lane = lanes_->ForMultiSet(*leader, request->ack());
      lane->Submit({table,
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

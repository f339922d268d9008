#include "services/router/coalescing_lanes.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <iterator>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/server/grpc_status.h"
#include "google/protobuf/arena.h"

namespace kvstore {
namespace {

// The status a per-key error of a batch answer stands for (OK when unset),
// with its reason (WRONG_SHARD, RANGE_MOVING) as the ErrorInfo a unary call
// would have carried, so the request's owner can follow the refusal.
grpc::Status KeyErrorStatus(const v1::KeyError& error) {
  if (error.reason().empty()) {
    return grpc::Status(static_cast<grpc::StatusCode>(error.code()), error.message());
  }
  return ToGrpcStatus(
      WithErrorInfo(absl::Status(static_cast<absl::StatusCode>(error.code()), error.message()),
                    {error.reason(), {}}));
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
// in an answer (0 for writes); kResendable when a batch may be sent again;
// kOnArena when the batch's request and answer are built on an arena (a few
// blocks for the whole batch instead of several allocations per key): for
// single keys, whose answers copy fields or swap strings out of the batch,
// not for slices of client batches, whose results are moved as messages (a
// move off an arena is a deep copy).
struct GetKind {
  using Request = v1::GetRequest;
  using Response = v1::GetResponse;
  using BatchRequest = v1::MultiGetRequest;
  using BatchResponse = v1::MultiGetResponse;
  static constexpr RetryRule kRule = RetryRule::kNextNodeIfUnavailable;
  static constexpr bool kResendable = true;
  static constexpr bool kOnArena = true;
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
  static constexpr bool kOnArena = true;
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
  static constexpr bool kOnArena = false;
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
  static constexpr bool kOnArena = false;
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

// One node's queue of requests of one kind (see coalescing_lanes.h). Thread-safe.
template <typename Kind>
class Lane {
 public:
  using Request = typename Kind::Request;
  using Response = typename Kind::Response;

  using Item = LaneRequest<Request, Response>;

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
    // The call takes the node list: nothing reads the item's again.
    auto owned = std::make_shared<Item>(std::move(item));
    auto* call = new ShardCall<Request, Response>(
        backends_, owned->table, owned->shard, Kind::kRule, std::move(owned->nodes), owned->parent,
        owned->deadline, owned->request, owned->response,
        [this, owned](const grpc::Status& status, const std::string& label) {
          if (status.ok()) Learn(Kind::LargestValue(*owned->response));
          Next();
          owned->done(status, label);
        });
    call->Start();
  }

  // The requests sent together, and the forwarded call's request and
  // answer (on `arena` when Kind::kOnArena).
  struct Batch {
    using BatchRequest = typename Kind::BatchRequest;
    using BatchResponse = typename Kind::BatchResponse;
    Batch()
        : request(google::protobuf::Arena::CreateMessage<BatchRequest>(Kind::kOnArena ? &arena
                                                                                      : nullptr)),
          response(google::protobuf::Arena::CreateMessage<BatchResponse>(
              Kind::kOnArena ? &arena : nullptr)) {}
    ~Batch() {
      if (!Kind::kOnArena) {
        delete request;
        delete response;
      }
    }
    Batch(const Batch&) = delete;
    Batch& operator=(const Batch&) = delete;

    std::vector<Item> items;
    google::protobuf::Arena arena;  // Allocates nothing until used.
    BatchRequest* const request;
    BatchResponse* const response;
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
      Kind::Add(*item.request, batch->request);
      deadline = std::max(deadline, item.deadline);
    }
    const Item& first = batch->items[0];
    auto* call = new ShardCall<typename Kind::BatchRequest, typename Kind::BatchResponse>(
        backends_, first.table, first.shard, Kind::kRule, first.nodes,
        /*parent=*/nullptr, deadline, batch->request, batch->response,
        [this, batch](const grpc::Status& status, const std::string& label) {
          size_t keys = 0;
          for (const Item& item : batch->items) keys += Kind::Count(*item.request);
          if (Kind::kResendable && batch->items.size() > 1 &&
              status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
            SplitAndResend(std::move(batch->items), keys);
            return;
          }
          if (status.ok()) Learn(Kind::LargestValue(*batch->response));
          Next();
          if (status.ok() && static_cast<size_t>(Kind::Results(*batch->response)) != keys) {
            const grpc::Status wrong(
                grpc::StatusCode::INTERNAL,
                absl::StrCat(label, " answered ", Kind::Results(*batch->response), " results for ",
                             keys, " keys"));
            for (Item& item : batch->items) item.done(wrong, label);
            return;
          }
          int offset = 0;
          for (Item& item : batch->items) {
            item.done(status.ok()
                          ? Kind::Take(batch->response, offset, *item.request, item.response)
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
class CoalescingLanes::Impl {
 public:
  Impl(const Backends& backends, const LaneLimits& limits) : backends_(backends), limits_(limits) {}

  Lane<GetKind>* ForGet(const std::string& node, v1::ReadMode mode) {
    return Find(&gets_, node, static_cast<int>(mode));
  }
  Lane<SetKind>* ForSet(const std::string& node, const v1::WriteAck& ack) {
    return Find(&sets_, node, static_cast<int>(ack.mode()), ack.replicas());
  }
  Lane<MultiGetKind>* ForMultiGet(const std::string& node, v1::ReadMode mode) {
    return Find(&multi_gets_, node, static_cast<int>(mode));
  }
  Lane<MultiSetKind>* ForMultiSet(const std::string& node, const v1::WriteAck& ack) {
    return Find(&multi_sets_, node, static_cast<int>(ack.mode()), ack.replicas());
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
  // The lane of "node/mode" (reads) or "node/mode/replicas" (writes). Every
  // request looks its lane up: the key is built in a buffer of the calling
  // thread and an existing lane is found under a shared lock, so finding one
  // allocates nothing and readers do not queue behind each other.
  template <typename Kind>
  Lane<Kind>* Find(absl::flat_hash_map<std::string, std::unique_ptr<Lane<Kind>>>* lanes,
                   const std::string& node, int mode, std::optional<uint32_t> replicas = {}) {
    thread_local std::string key;
    key.clear();
    absl::StrAppend(&key, node, "/", mode);
    if (replicas.has_value()) absl::StrAppend(&key, "/", *replicas);
    {
      absl::ReaderMutexLock lock(&mu_);
      auto it = lanes->find(key);
      if (it != lanes->end()) return it->second.get();
    }
    absl::MutexLock lock(&mu_);
    std::unique_ptr<Lane<Kind>>& lane = (*lanes)[key];
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

CoalescingLanes::CoalescingLanes(const Backends& backends, const LaneLimits& limits)
    : impl_(std::make_unique<Impl>(backends, limits)) {}

CoalescingLanes::~CoalescingLanes() = default;

void CoalescingLanes::SubmitGet(v1::ReadMode mode,
                                LaneRequest<v1::GetRequest, v1::GetResponse> request) {
  impl_->ForGet(request.nodes[0], mode)->Submit(std::move(request));
}

void CoalescingLanes::SubmitSet(const v1::WriteAck& ack,
                                LaneRequest<v1::SetRequest, v1::SetResponse> request) {
  impl_->ForSet(request.nodes[0], ack)->Submit(std::move(request));
}

void CoalescingLanes::SubmitMultiGet(
    v1::ReadMode mode, LaneRequest<v1::MultiGetRequest, v1::MultiGetResponse> request) {
  impl_->ForMultiGet(request.nodes[0], mode)->Submit(std::move(request));
}

void CoalescingLanes::SubmitMultiSet(
    const v1::WriteAck& ack, LaneRequest<v1::MultiSetRequest, v1::MultiSetResponse> request) {
  impl_->ForMultiSet(request.nodes[0], ack)->Submit(std::move(request));
}

size_t CoalescingLanes::queued() const { return impl_->queued(); }

}  // namespace kvstore

// One request forwarded by the router to one shard (ShardCall), with the
// retry rule of its kind, and what such a call needs of the router
// (Backends). Used by the router's handlers (router_service.cc) and by the
// coalescing lanes (coalescing_lanes.cc), which forward batches the same way.
#ifndef KVSTORE_SERVICES_ROUTER_SHARD_CALL_H_
#define KVSTORE_SERVICES_ROUTER_SHARD_CALL_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/server/grpc_status.h"
#include "common/topology/topology.h"
#include "glog/logging.h"
#include "grpcpp/grpcpp.h"
#include "kvstore/v1/kv.grpc.pb.h"
#include "services/router/backend_channels.h"
#include "services/router/backend_health.h"
#include "services/router/routing_table.h"

namespace kvstore {

// The trailing-metadata key a node that refuses a write sets to the leader's
// HOST:PORT.
inline constexpr char kLeaderHintKey[] = "kv-leader";

// The asynchronous client call for each request type.
using RpcDone = std::function<void(grpc::Status)>;
void StartRpc(v1::KeyValue::Stub* stub, grpc::ClientContext* context, const v1::GetRequest* request,
              v1::GetResponse* response, RpcDone done);
void StartRpc(v1::KeyValue::Stub* stub, grpc::ClientContext* context, const v1::SetRequest* request,
              v1::SetResponse* response, RpcDone done);
void StartRpc(v1::KeyValue::Stub* stub, grpc::ClientContext* context,
              const v1::DeleteRequest* request, v1::DeleteResponse* response, RpcDone done);
void StartRpc(v1::KeyValue::Stub* stub, grpc::ClientContext* context,
              const v1::MultiGetRequest* request, v1::MultiGetResponse* response, RpcDone done);
void StartRpc(v1::KeyValue::Stub* stub, grpc::ClientContext* context,
              const v1::MultiSetRequest* request, v1::MultiSetResponse* response, RpcDone done);
void StartRpc(v1::KeyValue::Stub* stub, grpc::ClientContext* context,
              const v1::ScanRequest* request, v1::ScanResponse* response, RpcDone done);

enum class RetryRule {
  // Reads: an UNAVAILABLE node is tried once more on the next node.
  kNextNodeIfUnavailable,
  // Writes: only a refusal that names the leader is sent again, there.
  kHintedLeader,
};

// Called once with the final status and a label naming the shard and the node
// that answered last ("shard shard-1 at 127.0.0.1:50062"), for messages.
using ShardDone = std::function<void(const grpc::Status& status, const std::string& label)>;

// What a forwarded call needs of the router.
struct Backends {
  BackendChannels* channels = nullptr;
  const HealthBook* health = nullptr;
  int64_t default_timeout_ms = 0;
  // etcd mode: starts a fresh linearizable read of the topology (leader keys
  // included; RouterOptions::refresh_ring) and calls `done` once it has been
  // applied or failed; must not block. Null in static mode.
  std::function<void(std::function<void()> done)> refresh;
  // The table the router routes by now (after a refresh). Set with `refresh`.
  std::function<std::shared_ptr<RoutingTable>()> current_table;
};

// One request forwarded to one shard: at most two attempts. Owns itself:
// deleted right after calling `done`. A write (kHintedLeader) carries the
// epoch the router believes its target leads (kLeaderEpochKey, when known).
// A write refused NOT_LEADER naming no leader, in etcd mode, waits for a
// fresh read of etcd (Backends::refresh, asynchronous) and goes once to the
// leader that read shows, if that is another node.
template <typename Request, typename Response>
class ShardCall {
 public:
  // `backends`, `request` and `response` must stay valid until `done` is
  // called.
  // `parent` is the caller's RPC, whose cancellation the call follows; null
  // for a coalesced call made on behalf of several callers. A retry shares
  // the same `deadline`.
  ShardCall(const Backends& backends, std::shared_ptr<RoutingTable> table, int shard,
            RetryRule rule, std::vector<std::string> nodes, grpc::CallbackServerContext* parent,
            std::chrono::system_clock::time_point deadline, const Request* request,
            Response* response, ShardDone done)
      : channels_(backends.channels),
        health_(backends.health),
        backends_(&backends),
        table_(std::move(table)),
        shard_(shard),
        rule_(rule),
        nodes_(std::move(nodes)),
        parent_(parent),
        deadline_(deadline),
        request_(request),
        response_(response),
        done_(std::move(done)) {}

  void Start() { Attempt(nodes_[0], WriteEpoch(*table_, shard_, nodes_[0])); }

 private:
  // The epoch a write to `address` names (0: unknown, or not a write).
  uint64_t WriteEpoch(const RoutingTable& table, int shard, const std::string& address) const {
    return rule_ == RetryRule::kHintedLeader ? table.WriteEpoch(shard, address) : 0;
  }

  void Attempt(std::string address, uint64_t epoch) {
    address_ = std::move(address);
    // Propagates the caller's deadline and cancellation to this call.
    std::unique_ptr<grpc::ClientContext>& context = contexts_[attempts_++];
    context = parent_ != nullptr ? grpc::ClientContext::FromCallbackServerContext(*parent_)
                                 : std::make_unique<grpc::ClientContext>();
    context->set_deadline(deadline_);
    if (epoch != 0) context->AddMetadata(kLeaderEpochKey, std::to_string(epoch));
    stub_ = channels_->Stub(address_);
    StartRpc(stub_.get(), context.get(), request_, response_,
             [this](grpc::Status status) { Finished(std::move(status)); });
  }

  void Finished(grpc::Status status) {
    if (!status.ok()) channels_->CallFailed(address_, status.error_code());
    if (attempts_ < 2 && backends_->refresh && backends_->current_table &&
        NotLeaderNamingNone(status)) {
      // Not applied, and nobody named: ask etcd who leads now, without
      // holding this thread (the answer comes on the refresh thread).
      backends_->refresh(
          [this, status = std::move(status)]() mutable { Refreshed(std::move(status)); });
      return;
    }
    std::string next = RetryTarget(status);
    if (!next.empty() && attempts_ < 2) {
      response_->Clear();
      Attempt(next, WriteEpoch(*table_, shard_, next));
      return;
    }
    End(status);
  }

  // A fresh read of etcd is applied (or failed): resend once to the leader
  // the router's table names now, if that is another node.
  void Refreshed(grpc::Status status) {
    std::shared_ptr<RoutingTable> now = backends_->current_table();
    if (now != nullptr) {
      for (int s = 0; s < now->shard_count(); ++s) {
        if (now->shard_name(s) != table_->shard_name(shard_)) continue;
        const std::string leader = now->Leader(s);
        if (leader != address_ && !health_->Get(leader).deposed()) {
          LOG(INFO) << "Shard " << now->shard_name(s) << ": " << address_
                    << " refused a write naming no leader; etcd names " << leader
                    << ", sending it there";
          response_->Clear();
          Attempt(leader, WriteEpoch(*now, s, leader));
          return;
        }
      }
    }
    End(status);
  }

  void End(const grpc::Status& status) {
    // Our stub and contexts go first, while the caller's RPC (and so the
    // router, which holds every channel) is still alive: finishing the caller
    // may let the server shut down and the channels go, and this callback
    // must not drop the last reference to a channel (backend_channels.h).
    ShardDone done = done_;
    std::string label = absl::StrCat("shard ", table_->shard_name(shard_), " at ", address_);
    delete this;
    done(status, label);
  }

  // The leader a NOT_LEADER refusal names (ErrorInfo metadata, else the
  // kv-leader trailer of older nodes); "" when none.
  std::string HintOf(const std::optional<ErrorInfo>& info) const {
    std::string hint;
    if (info) {
      auto leader = info->metadata.find("leader");
      if (leader != info->metadata.end()) hint = leader->second;
    }
    if (hint.empty()) {
      const auto& trailers = contexts_[attempts_ - 1]->GetServerTrailingMetadata();
      auto it = trailers.find(kLeaderHintKey);
      if (it != trailers.end()) hint.assign(it->second.data(), it->second.size());
    }
    return hint;
  }

  // A write refused NOT_LEADER (not applied) that names no leader.
  bool NotLeaderNamingNone(const grpc::Status& status) const {
    if (rule_ != RetryRule::kHintedLeader ||
        status.error_code() != grpc::StatusCode::FAILED_PRECONDITION) {
      return false;
    }
    const std::optional<ErrorInfo> info = ErrorInfoOf(status);
    return info && info->reason == kReasonNotLeader && HintOf(info).empty();
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
        const std::string hint = HintOf(not_leader ? info : std::optional<ErrorInfo>());
        if (hint.empty()) {
          // A CAS mismatch, or a refusal naming no leader. A NOT_LEADER write
          // was not applied: if the router's own view (the probes; in etcd
          // mode Finished read etcd afresh first) has moved on since the
          // write was sent, it goes there.
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
  const Backends* const backends_;
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

template <typename Request, typename Response>
void Forward(const Backends& backends, std::shared_ptr<RoutingTable> table, int shard,
             RetryRule rule, std::vector<std::string> nodes, grpc::CallbackServerContext* parent,
             std::chrono::system_clock::time_point deadline, const Request* request,
             Response* response, ShardDone done) {
  auto* call =
      new ShardCall<Request, Response>(backends, std::move(table), shard, rule, std::move(nodes),
                                       parent, deadline, request, response, std::move(done));
  call->Start();
}

}  // namespace kvstore

#endif  // KVSTORE_SERVICES_ROUTER_SHARD_CALL_H_

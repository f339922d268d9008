#include "services/node/kv_service.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/kv/scan_cursor.h"
#include "common/server/grpc_status.h"

namespace kvstore {
namespace {

// `done` for a unary call: finishes its reactor.
PipelineBackend::Done FinishReactor(grpc::ServerUnaryReactor* reactor) {
  return [reactor](const grpc::Status& status) { reactor->Finish(status); };
}

// The key's error, with the reason of its ErrorInfo (WRONG_SHARD,
// RANGE_MOVING) when it has one.
v1::KeyError* SetKeyError(const absl::Status& status, v1::KeyError* error) {
  error->set_code(static_cast<int32_t>(status.code()));
  error->set_message(std::string(status.message()));
  if (std::optional<ErrorInfo> info = ErrorInfoOf(status)) error->set_reason(info->reason);
  return error;
}

// A snapshot install replaced the map during a read: what it saw may be
// neither the old state nor the new (Store::install_generation).
absl::Status ReadDuringInstall() {
  return absl::UnavailableError("a snapshot install ran during the read; retry");
}

// A read saw one whole state only if no install was under way when it began
// (an even generation) and none began before it ended (the same one).
bool ReadWasWhole(uint64_t before, uint64_t after) { return before % 2 == 0 && before == after; }

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
      // Compared as the uint32 it is: cast first, 2^31 and up would turn
      // negative, and a negative count waits for no follower at all.
      if (ack.replicas() > static_cast<uint32_t>(std::max(0, followers))) {
        return absl::InvalidArgumentError(
            absl::StrCat("ACK_MODE_REPLICAS asks for ", ack.replicas(),
                         " replicas but this shard has ", followers, " followers"));
      }
      if (followers == 0) {
        return absl::FailedPreconditionError(
            "ACK_MODE_REPLICAS needs followers, and this shard has none configured");
      }
      plan.replicas = static_cast<int>(ack.replicas());
      if (plan.replicas == 0) plan.replicas = std::max(1, replication->DefaultSyncAcks());
      if (plan.replicas > followers) {
        return absl::FailedPreconditionError(
            absl::StrCat("ACK_MODE_REPLICAS asks for the shard's default of ", plan.replicas,
                         " replicas but this shard has ", followers, " followers"));
      }
      return plan;
    }
    default:
      return absl::InvalidArgumentError("unknown ack mode");
  }
}

absl::Status KvService::Admit(grpc::CallbackServerContext* unary, const v1::WriteAck& ack,
                              WritePlan* plan) {
  if (replication_ != nullptr) {
    std::string leader;
    // A router's epoch newer than this node knows: a newer leader exists
    // (a leader fences itself); refused unapplied, as NOT_LEADER.
    const uint64_t router_epoch =
        unary != nullptr ? LeaderEpochIn(unary->client_metadata()) : uint64_t{0};
    if (absl::Status s = replication_->CheckRouterEpoch(router_epoch, &leader); !s.ok()) {
      return NotLeader(std::move(s), leader);
    }
    if (absl::Status s = replication_->CheckWritable(&leader); !s.ok()) {
      if (!leader.empty() && unary != nullptr) unary->AddTrailingMetadata("kv-leader", leader);
      if (!absl::IsFailedPrecondition(s)) return s;
      return NotLeader(std::move(s), leader);
    }
  }
  absl::StatusOr<WritePlan> planned = PlanWrite(ack, replication_);
  if (!planned.ok()) return planned.status();
  *plan = *planned;
  return absl::OkStatus();
}

// FAILED_PRECONDITION from CheckWritable: this node does not lead. The
// ErrorInfo says so for machines (the kv-leader trailer stays for older
// routers): the write was not applied, the leader is there, at that epoch.
absl::Status KvService::NotLeader(absl::Status refusal, const std::string& leader) const {
  ErrorInfo info{kReasonNotLeader, {}};
  if (!leader.empty()) info.metadata["leader"] = leader;
  // A refusal is rare and cheap next to the retry it saves; the node's epoch
  // is the newest it has followed or led.
  v1::StatusResponse status;
  replication_->FillStatus(&status);
  info.metadata["epoch"] = std::to_string(status.epoch());
  return WithErrorInfo(std::move(refusal), info);
}

absl::Status KvService::AdmitRead(v1::ReadMode mode) const {
  if (replication_ == nullptr) return absl::OkStatus();
  std::string leader;
  return replication_->CheckReadable(mode != v1::READ_MODE_ANY_REPLICA, &leader);
}

void KvService::Written::Add(const MutationResult& r) {
  if (r.index != 0) {
    first = first == 0 ? r.index : std::min(first, r.index);
    last = std::max(last, r.index);
  }
  conflict = std::max(conflict, r.conflict_index);
}

void KvService::AfterWrite(const WritePlan& plan, const Written& written, Done done) {
  if (replication_ == nullptr || (!written.status.ok() && written.conflict == 0)) {
    return done(ToGrpcStatus(written.status));
  }
  int replicas = written.last != 0 ? plan.replicas : 0;
  uint64_t through = written.last;
  // Under sync acks the store publishes a write once its in-sync followers
  // hold it: an answer that saw one in flight waits for the same.
  if (written.conflict != 0 && replication_->DefaultSyncAcks() > 0) {
    replicas = std::max(replicas, replication_->DefaultSyncAcks());
    through = std::max(through, written.conflict);
  }
  if (replicas == 0 || through == 0) {
    // A leased leader (etcd mode) acknowledges nothing once its lease is gone.
    if (written.last != 0) {
      if (absl::Status s = replication_->CheckAcknowledge(); !s.ok()) {
        return done(ToGrpcStatus(s));
      }
    }
    return done(ToGrpcStatus(written.status));
  }
  replication_->AwaitReplicas(
      through, replicas, [this, plan, written, done = std::move(done)](const absl::Status& s) {
        if (s.ok() && written.last != 0) {
          if (absl::Status lost = replication_->CheckAcknowledge(); !lost.ok()) {
            return done(ToGrpcStatus(lost));
          }
        }
        if (s.ok()) {
          // Acknowledged on this request's replica count, which may be below
          // the count the store publishes on: visible from now on.
          if (written.last != 0 && plan.replicas > 0)
            store_->MakeVisible(written.first, written.last);
          return done(ToGrpcStatus(written.status));
        }
        if (written.last == 0) {
          return done(ToGrpcStatus(absl::UnavailableError(absl::StrCat(
              "the condition could not be decided: it depends on a write (index ", written.conflict,
              ") not yet confirmed by the in-sync replicas; nothing was "
              "written, retry (",
              s.message(), ")"))));
        }
        done(ToGrpcStatus(s));
      });
}

// The unary handlers: the caller's token, then the shared Serve*.

grpc::ServerUnaryReactor* KvService::Get(grpc::CallbackServerContext* context,
                                         const v1::GetRequest* request, v1::GetResponse* response) {
  if (auto* refused = RefuseUnauthenticated(access_, context, Access::kPublic)) return refused;
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  ServeGet(request, response, FinishReactor(reactor));
  return reactor;
}

grpc::ServerUnaryReactor* KvService::Set(grpc::CallbackServerContext* context,
                                         const v1::SetRequest* request, v1::SetResponse* response) {
  if (auto* refused = RefuseUnauthenticated(access_, context, Access::kPublic)) return refused;
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  ServeSet(context, request, response, FinishReactor(reactor));
  return reactor;
}

grpc::ServerUnaryReactor* KvService::Delete(grpc::CallbackServerContext* context,
                                            const v1::DeleteRequest* request,
                                            v1::DeleteResponse* response) {
  if (auto* refused = RefuseUnauthenticated(access_, context, Access::kPublic)) return refused;
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  ServeDelete(context, request, response, FinishReactor(reactor));
  return reactor;
}

grpc::ServerUnaryReactor* KvService::MultiGet(grpc::CallbackServerContext* context,
                                              const v1::MultiGetRequest* request,
                                              v1::MultiGetResponse* response) {
  if (auto* refused = RefuseUnauthenticated(access_, context, Access::kPublic)) return refused;
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  ServeMultiGet(request, response, FinishReactor(reactor));
  return reactor;
}

grpc::ServerUnaryReactor* KvService::MultiSet(grpc::CallbackServerContext* context,
                                              const v1::MultiSetRequest* request,
                                              v1::MultiSetResponse* response) {
  if (auto* refused = RefuseUnauthenticated(access_, context, Access::kPublic)) return refused;
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  ServeMultiSet(context, request, response, FinishReactor(reactor));
  return reactor;
}

grpc::ServerUnaryReactor* KvService::Scan(grpc::CallbackServerContext* context,
                                          const v1::ScanRequest* request,
                                          v1::ScanResponse* response) {
  if (auto* refused = RefuseUnauthenticated(access_, context, Access::kPublic)) return refused;
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(ServeScan(request, response)));
  return reactor;
}

grpc::ServerBidiReactor<v1::PipelineRequests, v1::PipelineResponses>* KvService::Pipeline(
    grpc::CallbackServerContext* context) {
  return ServePipeline(context, CheckAccess(access_, *context, Access::kPublic), this);
}

void KvService::ServeGet(const v1::GetRequest* request, v1::GetResponse* response, Done done) {
  if (absl::Status s = CheckGet(*request, limits_); !s.ok()) return done(ToGrpcStatus(s));
  if (absl::Status s = AdmitRead(request->read_mode()); !s.ok()) return done(ToGrpcStatus(s));
  if (absl::Status s = CheckOwner(request->key()); !s.ok()) return done(ToGrpcStatus(s));
  const uint64_t installs = store_->install_generation();
  uint64_t version = 0;
  int64_t expires = 0;
  if (store_->Get(request->key(), response->mutable_value(), &version, &expires)) {
    response->set_found(true);
    response->set_version(version);
    response->set_expires_at_ms(static_cast<uint64_t>(expires));
  }
  if (!ReadWasWhole(installs, store_->install_generation())) {
    response->Clear();
    return done(ToGrpcStatus(ReadDuringInstall()));
  }
  done(grpc::Status::OK);
}

void KvService::ServeSet(grpc::CallbackServerContext* unary, const v1::SetRequest* request,
                         v1::SetResponse* response, Done done) {
  if (absl::Status s = CheckSet(*request, limits_); !s.ok()) return done(ToGrpcStatus(s));
  WritePlan plan;
  if (absl::Status s = Admit(unary, request->ack(), &plan); !s.ok()) {
    return done(ToGrpcStatus(s));
  }
  std::optional<OwnershipGate::Admission> admission = AdmitWrite();
  if (absl::Status s = CheckOwner(request->key()); !s.ok()) {
    admission.reset();
    return done(ToGrpcStatus(s));
  }
  std::vector<Mutation> batch(1);
  batch[0].kind = Mutation::Kind::kSet;
  batch[0].key = request->key();
  batch[0].value = request->value();
  batch[0].ttl_ms = request->ttl_ms();
  if (request->has_if_version()) batch[0].if_version = request->if_version();
  store_->Write(
      std::move(batch), plan.durability,
      [this, response, plan, done = std::move(done)](std::vector<MutationResult> results) mutable {
        if (results[0].status.ok()) response->set_version(results[0].version);
        Written written;
        written.Add(results[0]);
        written.status = results[0].status;
        AfterWrite(plan, written, std::move(done));
      });
}

void KvService::ServeDelete(grpc::CallbackServerContext* unary, const v1::DeleteRequest* request,
                            v1::DeleteResponse* response, Done done) {
  if (absl::Status s = CheckDelete(*request, limits_); !s.ok()) return done(ToGrpcStatus(s));
  WritePlan plan;
  if (absl::Status s = Admit(unary, request->ack(), &plan); !s.ok()) {
    return done(ToGrpcStatus(s));
  }
  std::optional<OwnershipGate::Admission> admission = AdmitWrite();
  if (absl::Status s = CheckOwner(request->key()); !s.ok()) {
    admission.reset();
    return done(ToGrpcStatus(s));
  }
  std::vector<Mutation> batch(1);
  batch[0].kind = Mutation::Kind::kDelete;
  batch[0].key = request->key();
  if (request->has_if_version()) batch[0].if_version = request->if_version();
  store_->Write(
      std::move(batch), plan.durability,
      [this, response, plan, done = std::move(done)](std::vector<MutationResult> results) mutable {
        if (results[0].status.ok()) {
          response->set_deleted(results[0].applied);
          response->set_version(results[0].version);
        }
        Written written;
        written.Add(results[0]);
        written.status = results[0].status;
        AfterWrite(plan, written, std::move(done));
      });
}

void KvService::ServeMultiGet(const v1::MultiGetRequest* request, v1::MultiGetResponse* response,
                              Done done) {
  if (absl::Status s = CheckMultiGet(*request, limits_); !s.ok()) return done(ToGrpcStatus(s));
  if (absl::Status s = AdmitRead(request->read_mode()); !s.ok()) return done(ToGrpcStatus(s));
  const uint64_t installs = store_->install_generation();
  response->mutable_results()->Reserve(request->keys_size());
  size_t bytes = 0;  // Of the answer so far, as encoded.
  for (const std::string& key : request->keys()) {
    v1::GetResult* result = response->add_results();
    uint64_t version = 0;
    int64_t expires = 0;
    if (absl::Status s = CheckOwner(key); !s.ok()) {
      // Another shard's key (or one being moved): its own error, never found=false.
      SetKeyError(s, result->mutable_error());
    } else if (store_->Get(key, result->mutable_value(), &version, &expires)) {
      result->set_found(true);
      result->set_version(version);
      result->set_expires_at_ms(static_cast<uint64_t>(expires));
    }
    // Checked as each value is copied: one key asked for many times must
    // not build its answer before the answer is refused.
    bytes += RepeatedElementBytes(result->ByteSizeLong());
    if (bytes > limits_.max_response_bytes) {
      response->Clear();
      return done(ToGrpcStatus(ResponseTooLarge(limits_)));
    }
  }
  if (!ReadWasWhole(installs, store_->install_generation())) {
    response->Clear();
    return done(ToGrpcStatus(ReadDuringInstall()));
  }
  done(grpc::Status::OK);
}

void KvService::ServeMultiSet(grpc::CallbackServerContext* unary,
                              const v1::MultiSetRequest* request, v1::MultiSetResponse* response,
                              Done done) {
  if (absl::Status s = CheckMultiSet(*request, limits_); !s.ok()) return done(ToGrpcStatus(s));
  WritePlan plan;
  if (absl::Status s = Admit(unary, request->ack(), &plan); !s.ok()) {
    return done(ToGrpcStatus(s));
  }
  // Refused items get their own error and are not written; the others go
  // to the store as one batch, in order.
  std::optional<OwnershipGate::Admission> admission = AdmitWrite();
  std::vector<absl::Status> refused;  // Per item; empty when none is refused.
  std::vector<Mutation> batch;
  batch.reserve(request->items_size());
  for (int i = 0; i < request->items_size(); ++i) {
    const v1::SetItem& item = request->items(i);
    if (absl::Status s = CheckOwner(item.key()); !s.ok()) {
      if (refused.empty()) refused.resize(request->items_size());
      refused[i] = std::move(s);
      continue;
    }
    Mutation& m = batch.emplace_back();
    m.kind = Mutation::Kind::kSet;
    m.key = item.key();
    m.value = item.value();
    m.ttl_ms = item.ttl_ms();
    if (item.has_if_version()) m.if_version = item.if_version();
  }
  auto answer = [this, request, response, plan, refused = std::move(refused),
                 done = std::move(done)](std::vector<MutationResult> results) mutable {
    Written written;
    size_t next = 0;  // Into results: the items that were written.
    for (int i = 0; i < request->items_size(); ++i) {
      v1::SetResult* out = response->add_results();
      if (!refused.empty() && !refused[i].ok()) {
        SetKeyError(refused[i], out->mutable_error());
        continue;
      }
      const MutationResult& r = results[next++];
      written.Add(r);
      if (r.status.ok()) {
        out->set_version(r.version);
      } else {
        SetKeyError(r.status, out->mutable_error());
      }
    }
    AfterWrite(plan, written, std::move(done));
  };
  if (batch.empty()) {
    admission.reset();
    return answer({});
  }
  store_->Write(std::move(batch), plan.durability, std::move(answer));
}

absl::Status KvService::ServeScan(const v1::ScanRequest* request, v1::ScanResponse* response) {
  if (absl::Status s = CheckScan(*request, limits_); !s.ok()) return s;
  absl::StatusOr<NodeScanCursor> cursor = DecodeNodeCursor(request->cursor());
  if (!cursor.ok()) return cursor.status();
  if (absl::Status s = AdmitRead(request->read_mode()); !s.ok()) return s;
  KvMap::ScanOptions options;
  options.prefix = request->prefix();
  options.limit = ScanPageLimit(*request, limits_);
  options.keys_only = request->keys_only();
  // Room for the next cursor (at most a key and its header), the framing, and
  // what kv-router adds when it wraps the cursor (scan_cursor.h).
  const size_t reserved = limits_.max_key_bytes + 128;
  options.max_bytes =
      limits_.max_response_bytes > reserved ? limits_.max_response_bytes - reserved : 0;
  const uint64_t installs = store_->install_generation();
  KvMap::ScanPage page =
      store_->Scan(KvMap::ScanPosition{cursor->hash, std::move(cursor->after_key)}, options);
  if (!ReadWasWhole(installs, store_->install_generation())) return ReadDuringInstall();
  response->mutable_entries()->Reserve(static_cast<int>(page.entries.size()));
  for (KvMap::ScannedEntry& e : page.entries) {
    // Keys another shard owns (copied here, or left by a move) are not this
    // shard's to show; the cursor still moves past them.
    if (ownership_ != nullptr && !ownership_->Owns(e.key)) continue;
    v1::ScanEntry* out = response->add_entries();
    out->set_key(std::move(e.key));
    out->set_value(std::move(e.value));
    out->set_version(e.version);
    out->set_expires_at_ms(static_cast<uint64_t>(e.expire_unix_ms));
  }
  if (page.next.has_value()) {
    response->set_next_cursor(
        EncodeNodeCursor(NodeScanCursor{page.next->hash, std::move(page.next->after_key)}));
  }
  // A page's first entry is taken whatever its size; one larger than the
  // cap (a --max-response-bytes below --max-value-bytes) cannot be sent.
  if (response->ByteSizeLong() > limits_.max_response_bytes) {
    response->Clear();
    return ResponseTooLarge(limits_);
  }
  return absl::OkStatus();
}

}  // namespace kvstore

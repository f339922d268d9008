// kvstore.v1.KeyValue served from a local Store (the shard leader's side).
// Reads answer at once; writes return their reactor and are finished by the
// store's log thread once durable, so no gRPC thread waits on an fsync.
//
// Ownership (etcd mode, with an OwnershipGate): every key of every request,
// on leaders and replicas alike, is checked against the ring. A refused
// single-key request fails with the gate's WRONG_SHARD or RANGE_MOVING; in a
// MultiGet or MultiSet each refused key gets its own KeyError (with `reason`)
// and is neither read nor written, while the others are served. Scan leaves
// out the keys this shard does not own. A write holds the gate's Admission
// from its Check until Store::Write has it (ownership_gate.h).
#ifndef KVSTORE_SERVICES_NODE_KV_SERVICE_H_
#define KVSTORE_SERVICES_NODE_KV_SERVICE_H_

#include <optional>

#include "common/kv/pipeline.h"
#include "common/kv/request_limits.h"
#include "common/replication/replication_hooks.h"
#include "common/security/access_policy.h"
#include "common/storage/store.h"
#include "kvstore/v1/kv.grpc.pb.h"
#include "services/node/ownership_gate.h"

namespace kvstore {

// How one write is acknowledged: the leader's durability, then how many
// followers must confirm it (0 = none).
struct WritePlan {
  Durability durability = Durability::kDefault;
  int replicas = 0;
};

class KvService final : public v1::KeyValue::CallbackService, private PipelineBackend {
 public:
  // `store`, `replication` (null for a lone shard), `access` (null: every
  // call allowed) and `ownership` (null: static mode, every key is this
  // shard's) must outlive the service.
  KvService(Store* store, RequestLimits limits, ReplicationHooks* replication = nullptr,
            const AccessPolicy* access = nullptr, const OwnershipGate* ownership = nullptr)
      : store_(store),
        limits_(limits),
        replication_(replication),
        access_(access),
        ownership_(ownership) {}

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
  // One page of this node's keys (Store::Scan), admitted as a Get with the
  // same read_mode; the cursor is common/kv/scan_cursor.h's node cursor.
  grpc::ServerUnaryReactor* Scan(grpc::CallbackServerContext* context,
                                 const v1::ScanRequest* request,
                                 v1::ScanResponse* response) override;

 private:
  // Each kind of request, for the unary handlers and Pipeline alike: `done`
  // gets the status (the response is filled when OK), from the store's log
  // thread for writes. `unary` is the unary call, to carry the leader hint
  // of a refused write in its trailers; null for a Pipeline request.
  void ServeGet(const v1::GetRequest* request, v1::GetResponse* response, Done done);
  void ServeSet(grpc::CallbackServerContext* unary, const v1::SetRequest* request,
                v1::SetResponse* response, Done done);
  void ServeDelete(grpc::CallbackServerContext* unary, const v1::DeleteRequest* request,
                   v1::DeleteResponse* response, Done done);
  void ServeMultiGet(const v1::MultiGetRequest* request, v1::MultiGetResponse* response, Done done);
  void ServeMultiSet(grpc::CallbackServerContext* unary, const v1::MultiSetRequest* request,
                     v1::MultiSetResponse* response, Done done);
  absl::Status ServeScan(const v1::ScanRequest* request, v1::ScanResponse* response);

  // PipelineBackend (the stream's deadline does not apply: nothing here waits
  // but a write for its log and replicas).
  void PipelineGet(Deadline, const v1::GetRequest* request, v1::GetResponse* response,
                   Done done) override {
    ServeGet(request, response, std::move(done));
  }
  void PipelineSet(Deadline, const v1::SetRequest* request, v1::SetResponse* response,
                   Done done) override {
    ServeSet(nullptr, request, response, std::move(done));
  }
  void PipelineDelete(Deadline, const v1::DeleteRequest* request, v1::DeleteResponse* response,
                      Done done) override {
    ServeDelete(nullptr, request, response, std::move(done));
  }
  void PipelineMultiGet(Deadline, const v1::MultiGetRequest* request,
                        v1::MultiGetResponse* response, Done done) override {
    ServeMultiGet(request, response, std::move(done));
  }
  void PipelineMultiSet(Deadline, const v1::MultiSetRequest* request,
                        v1::MultiSetResponse* response, Done done) override {
    ServeMultiSet(nullptr, request, response, std::move(done));
  }

  // OK when this node takes the write (and fills *plan). A refusal that names
  // the leader also puts it in `unary`'s trailers (when not null). A unary
  // call's kv-leader-epoch (a router's) newer than every epoch this node
  // knows is refused first, as NOT_LEADER (ReplicationHooks::CheckRouterEpoch).
  absl::Status Admit(grpc::CallbackServerContext* unary, const v1::WriteAck& ack, WritePlan* plan);
  // A read may be answered here now (ReplicationHooks::CheckReadable); a lone
  // shard answers every read.
  absl::Status AdmitRead(v1::ReadMode mode) const;
  // A not-leader refusal of Admit, with its ErrorInfo (NOT_LEADER).
  absl::Status NotLeader(absl::Status refusal, const std::string& leader) const;
  // OK when this shard serves `key` now (always, without a gate).
  absl::Status CheckOwner(absl::string_view key) const {
    return ownership_ == nullptr ? absl::OkStatus() : ownership_->Check(key);
  }
  // The gate's admission for a write, from its checks until Store::Write
  // has it; none without a gate.
  std::optional<OwnershipGate::Admission> AdmitWrite() const {
    if (ownership_ == nullptr) return std::nullopt;
    return ownership_->Admit();
  }

  // Calls `done` once the replicas the write needs (if any) confirm `index`.
  // What Store::Write reported for a request, in one place for AfterWrite.
  struct Written {
    uint64_t first = 0;  // Lowest and highest log index written (0: none).
    uint64_t last = 0;
    uint64_t conflict = 0;  // Highest MutationResult::conflict_index.
    absl::Status status;    // The request's own error (one key), else OK.
    void Add(const MutationResult& r);
  };
  // Answers a write once the replicas the plan asks for confirm it; a
  // mismatch that saw a write in flight, once that write is committed as the
  // shard publishes it (Store::conflict_index).
  void AfterWrite(const WritePlan& plan, const Written& written, Done done);

  Store* const store_;
  const RequestLimits limits_;
  ReplicationHooks* const replication_;
  const AccessPolicy* const access_;
  const OwnershipGate* const ownership_;
};

// The plan a WriteAck asks for. ACK_MODE_REPLICAS with `replicas` above the
// configured followers is INVALID_ARGUMENT naming both numbers; without
// `replicas` it needs followers (a lone shard has none) and at least the
// shard's --sync-acks of them, else FAILED_PRECONDITION.
absl::StatusOr<WritePlan> PlanWrite(const v1::WriteAck& ack, ReplicationHooks* replication);

}  // namespace kvstore

#endif  // KVSTORE_SERVICES_NODE_KV_SERVICE_H_

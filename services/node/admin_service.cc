#include "services/node/admin_service.h"

#include <utility>

#include "common/server/grpc_status.h"
#include "common/storage/clock.h"
#include "services/node/backup_stream.h"

#ifndef KVSTORE_VERSION
#define KVSTORE_VERSION "dev"
#endif

namespace kvstore {

void FillSnapshotInfo(const SnapshotMeta& meta, double duration_seconds, v1::SnapshotInfo* info) {
  info->set_start_index(meta.start_index);
  info->set_end_index(meta.end_index);
  info->set_keys(meta.entries);
  info->set_bytes(meta.bytes);
  info->set_created_unix_ms(meta.created_unix_ms);
  info->set_duration_seconds(duration_seconds);
}

AdminService::AdminService(Store* store, std::string role, std::string data_dir,
                           ReplicationHooks* replication, const AccessPolicy* access)
    : store_(store),
      role_(std::move(role)),
      data_dir_(std::move(data_dir)),
      replication_(replication),
      access_(access),
      started_micros_(RealClock()->NowMicros()),
      worker_([this] { Worker(); }) {}

AdminService::~AdminService() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
  }
  worker_.join();
}

void AdminService::Worker() {
  for (;;) {
    std::function<void()> job;
    {
      absl::MutexLock l(&mu_);
      mu_.Await(absl::Condition(
          +[](AdminService* s)
               ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) { return s->stopping_ || !s->work_.empty(); },
          this));
      if (work_.empty()) return;  // Stopping, and nothing left to do.
      job = std::move(work_.front());
      work_.pop_front();
    }
    job();
  }
}

grpc::ServerUnaryReactor* AdminService::Status(grpc::CallbackServerContext* context,
                                               const v1::StatusRequest* /*request*/,
                                               v1::StatusResponse* response) {
  if (auto* refused = RefuseUnauthenticated(access_, context, Access::kCluster)) return refused;
  FillStatus(response);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

void AdminService::FillStatus(v1::StatusResponse* response) {
  const StoreStatus st = store_->GetStatus();
  response->set_role(role_);
  response->set_epoch(st.epoch);
  response->set_last_index(st.last_index);
  response->set_key_count(st.key_count);
  response->set_memory_bytes(st.memory_bytes);
  v1::LogStatus* log = response->mutable_log();
  log->set_first_index(st.log_first_index);
  log->set_last_index(st.log_last_index);
  log->set_durable_index(st.log_durable_index);
  log->set_segments(st.log_segments);
  log->set_bytes(st.log_bytes);
  if (st.last_snapshot.has_value()) {
    FillSnapshotInfo(*st.last_snapshot, st.last_snapshot_seconds, response->mutable_snapshot());
  }
  response->set_fsync(std::string(FsyncPolicyName(st.fsync)));
  response->set_data_dir(data_dir_);
  response->set_uptime_seconds(static_cast<double>(RealClock()->NowMicros() - started_micros_) /
                               1e6);
  response->set_version(KVSTORE_VERSION);
  if (replication_ != nullptr) replication_->FillStatus(response);
}

void AdminService::Enqueue(grpc::ServerUnaryReactor* reactor, std::function<void()> job) {
  absl::MutexLock l(&mu_);
  if (stopping_) {
    reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is shutting down"));
    return;
  }
  work_.push_back(std::move(job));
}

grpc::ServerUnaryReactor* AdminService::ClusterStatus(grpc::CallbackServerContext* context,
                                                      const v1::ClusterStatusRequest* /*request*/,
                                                      v1::ClusterStatusResponse* /*response*/) {
  if (auto* refused = RefuseUnauthenticated(access_, context, Access::kCluster)) return refused;
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                               "ClusterStatus is answered by kv-router (this is a " + role_ +
                                   " node); ask a router, or Status for this node"));
  return reactor;
}

grpc::ServerUnaryReactor* AdminService::Snapshot(grpc::CallbackServerContext* context,
                                                 const v1::SnapshotRequest* /*request*/,
                                                 v1::SnapshotResponse* response) {
  if (auto* refused = RefuseUnauthenticated(access_, context, Access::kCluster)) return refused;
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Enqueue(reactor, [this, reactor, response] {
    const int64_t started = RealClock()->NowMicros();
    absl::StatusOr<SnapshotMeta> meta = store_->TakeSnapshot();
    if (!meta.ok()) {
      reactor->Finish(ToGrpcStatus(meta.status()));
      return;
    }
    FillSnapshotInfo(*meta, static_cast<double>(RealClock()->NowMicros() - started) / 1e6,
                     response->mutable_snapshot());
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* AdminService::Promote(grpc::CallbackServerContext* context,
                                                const v1::PromoteRequest* request,
                                                v1::PromoteResponse* response) {
  if (auto* refused = RefuseUnauthenticated(access_, context, Access::kCluster)) return refused;
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (replication_ == nullptr) {
    reactor->Finish(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                 "this server has no replication; nothing to promote"));
    return reactor;
  }
  // Waits for an fsync of the epoch record: off the gRPC threads.
  Enqueue(reactor, [this, reactor, request, response] {
    std::vector<std::string> followers(request->followers().begin(), request->followers().end());
    absl::StatusOr<ReplicationHooks::PromoteResult> promoted =
        replication_->Promote(request->epoch(), std::move(followers), request->force());
    if (!promoted.ok()) {
      reactor->Finish(ToGrpcStatus(promoted.status()));
      return;
    }
    response->set_epoch(promoted->epoch);
    response->set_entries_may_be_lost(promoted->entries_may_be_lost);
    response->set_warning(promoted->warning);
    response->set_last_index(store_->last_index());
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

namespace {

// A stream refused before it starts.
template <typename Reactor>
class RefusedStream final : public Reactor {
 public:
  explicit RefusedStream(const grpc::Status& status) { this->Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerWriteReactor<v1::BackupChunk>* AdminService::Backup(
    grpc::CallbackServerContext* context, const v1::BackupRequest* request) {
  if (grpc::Status s = CheckAccess(access_, *context, Access::kCluster); !s.ok()) {
    return new RefusedStream<grpc::ServerWriteReactor<v1::BackupChunk>>(s);
  }
  v1::StatusResponse self;
  FillStatus(&self);
  return StartBackupStream(store_, std::move(self), *request);
}

grpc::ServerReadReactor<v1::BackupChunk>* AdminService::Restore(
    grpc::CallbackServerContext* context, v1::RestoreResponse* response) {
  if (grpc::Status s = CheckAccess(access_, *context, Access::kCluster); !s.ok()) {
    return new RefusedStream<grpc::ServerReadReactor<v1::BackupChunk>>(s);
  }
  v1::StatusResponse self;
  FillStatus(&self);
  return StartRestoreStream(store_, replication_, std::move(self), response, &restoring_);
}

}  // namespace kvstore

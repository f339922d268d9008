#include "services/node/migration_source.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/kv/scan_cursor.h"
#include "common/server/grpc_status.h"
#include "common/storage/log_format.h"
#include "common/storage/op.h"
#include "common/storage/storage_failpoints.h"
#include "glog/logging.h"
#include "services/node/migration_failpoints.h"
#include "services/node/moved_keys.h"

namespace kvstore {
namespace {

constexpr uint32_t kDefaultMaxBytes = 1 << 20;
// Keys a Copy call looks at before it answers, matching or not, so that a
// call over ranges that hold few keys still returns in bounded time.
constexpr size_t kCopyScanBudget = 20000;

size_t MaxBytes(uint32_t asked) {
  return asked == 0 ? kDefaultMaxBytes : std::min<uint32_t>(asked, 16u << 20);
}

}  // namespace

MigrationSourceService::MigrationSourceService(std::string shard, Store* store,
                                               ReplicationHooks* replication,
                                               MigrationSourceHooks hooks,
                                               const AccessPolicy* access)
    : shard_(std::move(shard)),
      store_(store),
      replication_(replication),
      hooks_(std::move(hooks)),
      access_(access) {}

absl::Status MigrationSourceService::CheckSource(absl::string_view shard) {
  if (shard != shard_) {
    return absl::FailedPreconditionError(
        absl::StrCat("this node serves shard ", shard_, ", not ", shard));
  }
  if (replication_ != nullptr) {
    std::string leader;
    if (absl::Status s = replication_->CheckWritable(&leader); !s.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("a migration reads from the leader of ", shard_, ": ", s.message(),
                       leader.empty() ? "" : absl::StrCat(" (leader ", leader, ")")));
    }
  }
  return absl::OkStatus();
}

absl::Status MigrationSourceService::CheckCopySource(absl::string_view shard, uint64_t min_index) {
  absl::Status leader = CheckSource(shard);
  if (leader.ok() || min_index == 0 || shard != shard_ || replication_ == nullptr) return leader;
  // A replica: its store must be whole and caught up with its leader, and
  // hold everything through the copy's start, so that the copy and the
  // catch-up from the leader's log (from min_index + 1) leave nothing out.
  std::string leader_address;
  if (absl::Status s = replication_->CheckReadable(/*leader_read=*/false, &leader_address);
      !s.ok()) {
    return absl::UnavailableError(
        absl::StrCat("this replica of ", shard_, " cannot serve a copy now: ", s.message()));
  }
  const uint64_t applied = store_->published_through();
  if (applied < min_index) {
    return absl::FailedPreconditionError(absl::StrCat("this replica of ", shard_, " has applied ",
                                                      applied, ", below the copy's start index ",
                                                      min_index));
  }
  return absl::OkStatus();
}

absl::Status MigrationSourceService::ServeBegin(const v1::MigrationBeginRequest& request,
                                                v1::MigrationBeginResponse* response) {
  if (absl::Status s = CheckSource(request.shard()); !s.ok()) return s;
  const RangeSet ranges = RangesFromProto(request.ranges());
  if (ranges.empty()) return absl::InvalidArgumentError("a migration needs at least one range");
  // Everything at or below start_index is published, so every Copy from now
  // on sees it; CatchUp brings what comes after.
  const uint64_t start = store_->published_through();
  store_->SetMigrationRetentionFloor(std::max<uint64_t>(start, 1));
  uint64_t start_epoch = 0;
  if (start > 0) {
    absl::StatusOr<uint64_t> epoch = LogCursor::EpochAt(store_->fs(), store_->dir(), start);
    if (!epoch.ok()) {
      return absl::UnavailableError(absl::StrCat("the log no longer holds index ", start, " (",
                                                 epoch.status().message(), "); ask again"));
    }
    start_epoch = *epoch;
  }
  response->set_start_epoch(start_epoch);
  const StoreStatus status = store_->GetStatus();
  const double owned = hooks_.owned_fraction ? hooks_.owned_fraction() : 0;
  const double share = owned > 0 ? std::min(1.0, ranges.Fraction() / owned) : ranges.Fraction();
  response->set_start_index(start);
  response->set_epoch(store_->epoch());
  response->set_keys_estimate(static_cast<uint64_t>(status.key_count * share));
  response->set_bytes_estimate(static_cast<uint64_t>(status.memory_bytes * share));
  LOG(INFO) << "Migration " << request.migration_id() << ": copy of " << ranges.ranges().size()
            << " ranges (" << ranges.Fraction() * 100 << "% of the ring) starts after index "
            << start << "; keeping the log from there";
  return absl::OkStatus();
}

absl::Status MigrationSourceService::ServeCopy(const v1::MigrationCopyRequest& request,
                                               v1::MigrationCopyResponse* response) {
  if (absl::Status s = CheckCopySource(request.shard(), request.min_index()); !s.ok()) return s;
  const RangeSet ranges = RangesFromProto(request.ranges());
  absl::StatusOr<NodeScanCursor> cursor = DecodeNodeCursor(request.cursor());
  if (!cursor.ok()) return cursor.status();
  KvMap::ScanPosition position{cursor->hash, std::move(cursor->after_key)};
  const size_t max_bytes = MaxBytes(request.max_bytes());
  size_t bytes = 0;
  size_t scanned = 0;
  bool done = false;
  while (bytes < max_bytes && scanned < kCopyScanBudget) {
    KvMap::ScanOptions options;
    options.limit = 1000;
    options.max_bytes = max_bytes - bytes;
    KvMap::ScanPage page = store_->Scan(position, options);
    scanned += page.entries.size();
    for (KvMap::ScannedEntry& e : page.entries) {
      if (!ranges.ContainsKey(e.key)) continue;
      bytes += KvMap::ScanEntryBytes(e.key.size(), e.value.size());
      v1::MovedKey* k = response->add_keys();
      k->set_key(std::move(e.key));
      k->set_value(std::move(e.value));
      k->set_version(e.version);
      k->set_expire_unix_ms(e.expire_unix_ms);
    }
    if (!page.next.has_value()) {
      done = true;
      break;
    }
    position = *std::move(page.next);
  }
  response->set_done(done);
  if (!done) {
    response->set_next_cursor(
        EncodeNodeCursor(NodeScanCursor{position.hash, std::move(position.after_key)}));
  }
  response->set_scanned(scanned);
  response->set_checksum(MovedKeysChecksum(response->keys()));
  copy_pages_served_.fetch_add(1, std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::Status MigrationSourceService::ServeCatchUp(const v1::MigrationCatchUpRequest& request,
                                                  v1::MigrationCatchUpResponse* response) {
  if (absl::Status s = CheckSource(request.shard()); !s.ok()) return s;
  if (request.from_index() == 0) return absl::InvalidArgumentError("from_index must be >= 1");
  const RangeSet ranges = RangesFromProto(request.ranges());
  // Committed: published (durable, and held by the in-sync followers under
  // sync acks), and in the log for the cursor to read.
  const uint64_t committed = std::min(store_->published_through(), store_->written_index());
  response->set_committed_index(committed);
  response->set_next_index(request.from_index());
  response->set_last_epoch(request.after_epoch());
  // Keep what the caller still needs, also after a failover to this node.
  store_->SetMigrationRetentionFloor(std::max<uint64_t>(request.from_index() - 1, 1));
  const auto log_gone = [&](absl::string_view why) {
    return WithErrorInfo(absl::FailedPreconditionError(absl::StrCat(
                             "shard ", shard_, " cannot continue the catch-up from index ",
                             request.from_index(), ": ", why, "; the copy must start again")),
                         ErrorInfo{kMigrationLogGone, {}});
  };
  const std::string cursor_key = absl::StrCat(
      request.migration_id(), "/", ranges.empty() ? uint64_t{0} : ranges.ranges().front().first);
  absl::MutexLock l(&mu_);
  CatchUpCursor& entry = cursors_[cursor_key];
  const uint64_t epoch = store_->epoch();
  if (entry.cursor == nullptr || entry.epoch != epoch ||
      entry.cursor->next_index() != request.from_index()) {
    // A new reader, or another leadership of this node: the record the
    // caller applied last must be the one this log holds there.
    entry.cursor.reset();
    if (request.from_index() > 1) {
      absl::StatusOr<uint64_t> at =
          LogCursor::EpochAt(store_->fs(), store_->dir(), request.from_index() - 1);
      if (absl::IsNotFound(at.status())) {
        if (request.from_index() - 1 > store_->last_index()) {
          return log_gone(absl::StrCat("its log ends at ", store_->last_index(),
                                       " (a failover lost the tail the caller applied)"));
        }
        return log_gone("its log no longer holds that index (removed after a snapshot)");
      }
      if (!at.ok()) return at.status();
      if (*at != request.after_epoch()) {
        return log_gone(absl::StrCat("its record at ", request.from_index() - 1, " is of epoch ",
                                     *at, ", not ", request.after_epoch(),
                                     " (its log diverged in a failover)"));
      }
    }
    if (request.from_index() > committed) {
      response->set_checksum(MovedKeysChecksum(response->keys()));
      return absl::OkStatus();
    }
    entry.epoch = epoch;
    entry.cursor = std::make_unique<LogCursor>(store_->fs(), store_->dir());
    entry.cursor->Seek(request.from_index());
  }
  if (request.from_index() > committed) {
    response->set_checksum(MovedKeysChecksum(response->keys()));
    return absl::OkStatus();
  }
  std::unique_ptr<LogCursor>& cursor = entry.cursor;
  std::string records;
  uint64_t first = 0;
  uint64_t last = 0;
  const absl::Status read =
      cursor->Read(committed, MaxBytes(request.max_bytes()), &records, &first, &last);
  if (absl::IsNotFound(read)) {
    cursor.reset();
    return log_gone("its log no longer holds that index (removed after a snapshot)");
  }
  if (!read.ok()) {
    cursor.reset();
    return read;
  }
  absl::string_view rest = records;
  while (!rest.empty()) {
    log::RecordHeader header;
    if (!log::ParseRecordHeader(rest, &header) ||
        rest.size() < log::kRecordHeaderSize + header.payload_len) {
      cursor.reset();
      return absl::DataLossError(
          absl::StrCat("a log record after index ", first, " does not parse while catching up"));
    }
    const absl::string_view payload = rest.substr(log::kRecordHeaderSize, header.payload_len);
    rest.remove_prefix(log::kRecordHeaderSize + header.payload_len);
    response->set_last_epoch(header.epoch);
    if (header.type != log::RecordType::kOp) continue;
    OpView op;
    if (!DecodeOp(payload, &op)) {
      cursor.reset();
      return absl::DataLossError(
          absl::StrCat("log record ", header.index, " holds no valid operation"));
    }
    if (!ranges.ContainsKey(op.key)) continue;
    v1::MovedKey* k = response->add_keys();
    k->set_key(op.key.data(), op.key.size());
    k->set_version(op.version);
    k->set_index(header.index);
    if (op.type == OpType::kDelete) {
      k->set_deleted(true);
    } else {
      k->set_value(op.value.data(), op.value.size());
      k->set_expire_unix_ms(op.expire_unix_ms);
    }
  }
  if (last != 0) response->set_next_index(last + 1);
  response->set_checksum(MovedKeysChecksum(response->keys()));
  return absl::OkStatus();
}

absl::Status MigrationSourceService::ServeFence(const v1::MigrationFenceRequest& request,
                                                v1::MigrationFenceResponse* response) {
  if (absl::Status s = CheckSource(request.shard()); !s.ok()) return s;
  if (!hooks_.hold_and_run) {
    return absl::FailedPreconditionError("this node does not check key ownership (static mode)");
  }
  const RangeSet ranges = RangesFromProto(request.ranges());
  uint64_t fence = 0;
  hooks_.hold_and_run(ranges, request.to_ring_version(), [&] { fence = store_->last_index(); });
  KV_FAILPOINT_CRASH(failpoints::kSourceFenced);
  response->set_fence_index(fence);
  response->set_epoch(store_->epoch());
  LOG(INFO) << "Migration " << request.migration_id() << ": holding " << ranges.ranges().size()
            << " ranges until ring version " << request.to_ring_version() << "; fence index "
            << fence;
  return absl::OkStatus();
}

void MigrationSourceService::ServeCleanup(const v1::MigrationCleanupRequest& request,
                                          v1::MigrationCleanupResponse* response,
                                          std::function<void(absl::Status)> done) {
  if (absl::Status s = CheckSource(request.shard()); !s.ok()) return done(s);
  if (!hooks_.owns || !hooks_.ring_version) {
    return done(absl::FailedPreconditionError("this node does not check key ownership"));
  }
  if (hooks_.ring_version() < request.ring_version()) {
    return done(absl::UnavailableError(
        absl::StrCat("this node is on ring version ", hooks_.ring_version(), ", not yet ",
                     request.ring_version(), ": it cannot clean up yet")));
  }
  absl::StatusOr<NodeScanCursor> cursor = DecodeNodeCursor(request.cursor());
  if (!cursor.ok()) return done(cursor.status());
  KvMap::ScanOptions options;
  options.limit = request.limit() == 0 ? 1000 : std::min<uint32_t>(request.limit(), 10000);
  options.keys_only = true;
  KvMap::ScanPage page =
      store_->Scan(KvMap::ScanPosition{cursor->hash, std::move(cursor->after_key)}, options);
  std::vector<Mutation> deletes;
  for (KvMap::ScannedEntry& e : page.entries) {
    if (hooks_.owns(e.key)) continue;
    Mutation m;
    m.kind = Mutation::Kind::kDelete;
    m.key = std::move(e.key);
    m.if_version = e.version;  // Never a write that arrived since (there should be none).
    deletes.push_back(std::move(m));
  }
  response->set_done(!page.next.has_value());
  if (!page.next.has_value()) store_->SetMigrationRetentionFloor(0);
  if (page.next.has_value()) {
    response->set_next_cursor(
        EncodeNodeCursor(NodeScanCursor{page.next->hash, std::move(page.next->after_key)}));
  }
  if (deletes.empty()) return done(absl::OkStatus());
  store_->Write(
      std::move(deletes), Durability::kDefault,
      [response, done = std::move(done)](std::vector<MutationResult> results) {
        KV_FAILPOINT_CRASH(failpoints::kSourceCleanupPage);
        uint64_t deleted = 0;
        absl::Status first_error;
        for (const MutationResult& r : results) {
          if (r.applied) ++deleted;
          if (!r.status.ok() && !absl::IsFailedPrecondition(r.status) && first_error.ok()) {
            first_error = r.status;
          }
        }
        response->set_deleted(deleted);
        done(first_error);
      });
}

grpc::ServerUnaryReactor* MigrationSourceService::Begin(grpc::CallbackServerContext* context,
                                                        const v1::MigrationBeginRequest* request,
                                                        v1::MigrationBeginResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (grpc::Status s = CheckAccess(access_, *context, Access::kCluster); !s.ok()) {
    reactor->Finish(s);
    return reactor;
  }
  reactor->Finish(ToGrpcStatus(ServeBegin(*request, response)));
  return reactor;
}

grpc::ServerUnaryReactor* MigrationSourceService::Copy(grpc::CallbackServerContext* context,
                                                       const v1::MigrationCopyRequest* request,
                                                       v1::MigrationCopyResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (grpc::Status s = CheckAccess(access_, *context, Access::kCluster); !s.ok()) {
    reactor->Finish(s);
    return reactor;
  }
  reactor->Finish(ToGrpcStatus(ServeCopy(*request, response)));
  return reactor;
}

grpc::ServerUnaryReactor* MigrationSourceService::CatchUp(
    grpc::CallbackServerContext* context, const v1::MigrationCatchUpRequest* request,
    v1::MigrationCatchUpResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (grpc::Status s = CheckAccess(access_, *context, Access::kCluster); !s.ok()) {
    reactor->Finish(s);
    return reactor;
  }
  reactor->Finish(ToGrpcStatus(ServeCatchUp(*request, response)));
  return reactor;
}

grpc::ServerUnaryReactor* MigrationSourceService::Fence(grpc::CallbackServerContext* context,
                                                        const v1::MigrationFenceRequest* request,
                                                        v1::MigrationFenceResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (grpc::Status s = CheckAccess(access_, *context, Access::kCluster); !s.ok()) {
    reactor->Finish(s);
    return reactor;
  }
  reactor->Finish(ToGrpcStatus(ServeFence(*request, response)));
  return reactor;
}

grpc::ServerUnaryReactor* MigrationSourceService::Release(
    grpc::CallbackServerContext* context, const v1::MigrationReleaseRequest* request,
    v1::MigrationReleaseResponse*) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (grpc::Status denied = CheckAccess(access_, *context, Access::kCluster); !denied.ok()) {
    reactor->Finish(denied);
    return reactor;
  }
  absl::Status s;
  if (request->shard() != shard_) {
    s = absl::FailedPreconditionError(
        absl::StrCat("this node serves shard ", shard_, ", not ", request->shard()));
  } else if (hooks_.release) {
    hooks_.release();
    if (request->finished()) store_->SetMigrationRetentionFloor(0);
    LOG(INFO) << "Migration " << request->migration_id() << ": hold released"
              << (request->finished() ? " (migration over)" : "");
  }
  reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

grpc::ServerUnaryReactor* MigrationSourceService::Cleanup(
    grpc::CallbackServerContext* context, const v1::MigrationCleanupRequest* request,
    v1::MigrationCleanupResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (grpc::Status s = CheckAccess(access_, *context, Access::kCluster); !s.ok()) {
    reactor->Finish(s);
    return reactor;
  }
  ServeCleanup(*request, response, [reactor](absl::Status s) { reactor->Finish(ToGrpcStatus(s)); });
  return reactor;
}

}  // namespace kvstore

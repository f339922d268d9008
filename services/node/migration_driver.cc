#include "services/node/migration_driver.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "common/coord/txn.h"
#include "common/server/grpc_status.h"
#include "common/storage/storage_failpoints.h"
#include "glog/logging.h"
#include "grpcpp/client_context.h"
#include "services/node/migration_failpoints.h"
#include "services/node/migration_source.h"
#include "services/node/moved_keys.h"

namespace kvstore {
namespace {

int64_t NowUnixMillis() { return absl::ToUnixMillis(absl::Now()); }

// How stale the migration record may be while copying: a pause or a cancel
// takes effect within about this long.
constexpr absl::Duration kRecordRefresh = absl::Milliseconds(250);
// The longest the throttle waits before looking at the record again.
constexpr absl::Duration kThrottleSlice = absl::Milliseconds(50);

bool IsOver(const std::string& phase) {
  return phase == "done" || phase == "cancelled" || phase == "failed";
}

}  // namespace

// One source shard of the migration, as this driver sees it.
struct MigrationDriver::Source {
  std::string name;
  RangeSet ranges;
  coord::SourceProgress progress;
  // Set by ResolveSource.
  std::string leader_address;
  int64_t leader_mod_revision = 0;
  std::unique_ptr<v1::Migration::Stub> stub;
  // The epoch in the leader key (0 until the leader confirmed it).
  uint64_t leader_epoch = 0;
  // --copy-from=replica: the replica copy pages go to (none: ask etcd for
  // one before the next page), and whether a page's fallback to the leader
  // was logged.
  std::string replica_address;
  std::unique_ptr<v1::Migration::Stub> replica_stub;
  bool fallback_logged = false;
  // Cutover only.
  uint64_t fence_index = 0;
  uint64_t epoch = 0;
  // Rate of the last second, for the status.
  uint64_t bytes_at_last_flush = 0;
  // A CatchUp has answered in this run, so source_index says how far behind
  // this source is (a cutover right after the copy would apply everything
  // written during the copy while the ranges are held).
  bool lag_known = false;
};

// The migration being driven.
struct MigrationDriver::Run {
  std::string id;
  coord::MigrationRecord record;
  int64_t record_revision = 0;
  absl::Time record_read;
  coord::RingRecord ring;  // As read at the start.
  int64_t ring_revision = 0;
  std::shared_ptr<const HashRing> before;
  std::shared_ptr<const HashRing> after;
  std::vector<Source> sources;
  // Token bucket (bytes); refilled at the record's throttle.
  double tokens = 0;
  absl::Time refilled;
  absl::Time flushed;
  // A re-read of the record that failed in Halted: it ends the round, and
  // the copy loop returns it (etcd is then unreachable: no second wait).
  absl::Status record_error;
};

MigrationDriver::MigrationDriver(coord::EtcdClient* etcd, Store* store,
                                 ReplicationHooks* replication, MigrationDriverOptions options)
    : etcd_(etcd), store_(store), replication_(replication), options_(std::move(options)) {}

MigrationDriver::~MigrationDriver() { Stop(); }

void MigrationDriver::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void MigrationDriver::Stop() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

bool MigrationDriver::stopping() {
  absl::MutexLock l(&mu_);
  return stopping_;
}

bool MigrationDriver::WaitFor(absl::Duration d) {
  absl::MutexLock l(&mu_);
  const auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
  mu_.AwaitWithTimeout(absl::Condition(&stop), d);
  return !stopping_;
}

bool MigrationDriver::Leading() {
  if (replication_ == nullptr) return true;
  std::string leader;
  return replication_->CheckWritable(&leader).ok();
}

void MigrationDriver::Loop() {
  std::string last_error;
  while (WaitFor(options_.poll)) {
    if (!Leading()) continue;
    absl::StatusOr<coord::RangeResult> active =
        etcd_->Range(coord::ActiveMigrationKey(options_.prefix));
    if (!active.ok() || active->kvs.empty()) continue;
    absl::StatusOr<std::string> id = coord::ParseActiveMigrationValue(active->kvs[0].value());
    if (!id.ok()) continue;
    absl::Status s = Drive(*id);
    if (s.ok()) {
      // Over, or no longer this node's to drive.
      PublishMetrics(Run());
      last_error.clear();
      continue;
    }
    if (std::string(s.message()) != last_error) {
      last_error = std::string(s.message());
      LOG(WARNING) << "Migration " << *id << ": " << s;
    }
    WaitFor(absl::Seconds(1));
  }
}

absl::Status MigrationDriver::LoadRecord(Run& run) {
  absl::StatusOr<coord::RangeResult> got =
      etcd_->Range(coord::MigrationKey(options_.prefix, run.id));
  if (!got.ok()) return got.status();
  if (got->kvs.empty()) {
    return absl::NotFoundError(absl::StrCat("migration ", run.id, " has no record in etcd"));
  }
  absl::StatusOr<coord::MigrationRecord> record = coord::ParseMigrationValue(got->kvs[0].value());
  if (!record.ok()) return record.status();
  run.record = *std::move(record);
  run.record_revision = got->kvs[0].mod_revision();
  run.record_read = absl::Now();
  return absl::OkStatus();
}

absl::Status MigrationDriver::SetPhase(Run& run, const std::string& phase) {
  // Guarded by the record's revision: kvctl may have changed the throttle or
  // asked to cancel meanwhile; re-read and apply the phase on top.
  for (int attempt = 0; attempt < 10; ++attempt) {
    coord::MigrationRecord next = run.record;
    next.phase = phase;
    if (IsOver(phase)) next.finished_unix_ms = NowUnixMillis();
    etcdserverpb::TxnRequest txn;
    const std::string key = coord::MigrationKey(options_.prefix, run.id);
    *txn.add_compare() = coord::ModRevisionIs(key, run.record_revision);
    *txn.add_success() = coord::PutOp(key, coord::MigrationValue(next));
    absl::StatusOr<etcdserverpb::TxnResponse> r = etcd_->Txn(txn);
    if (!r.ok()) return r.status();
    if (r->succeeded()) {
      run.record = next;
      run.record_revision = r->header().revision();
      PublishMetrics(run);
      return absl::OkStatus();
    }
    if (absl::Status s = LoadRecord(run); !s.ok()) return s;
  }
  return absl::AbortedError("the migration record keeps changing under the driver");
}

absl::Status MigrationDriver::ResolveSource(Source& source) {
  absl::StatusOr<coord::RangeResult> got =
      etcd_->Range(coord::ShardLeaderKey(options_.prefix, source.name));
  if (!got.ok()) return got.status();
  if (got->kvs.empty()) {
    return absl::UnavailableError(absl::StrCat("source shard ", source.name, " has no leader"));
  }
  absl::StatusOr<coord::LeaderValueRecord> leader = coord::ParseLeaderJson(got->kvs[0].value());
  if (!leader.ok()) return leader.status();
  if (leader->addr != source.leader_address || source.stub == nullptr) {
    source.leader_address = leader->addr;
    source.stub = v1::Migration::NewStub(options_.channel(leader->addr));
  }
  source.leader_mod_revision = got->kvs[0].mod_revision();
  source.leader_epoch = static_cast<uint64_t>(std::max<int64_t>(leader->epoch, 0));
  return absl::OkStatus();
}

absl::Status MigrationDriver::ResolveReplica(Source& source) {
  coord::RangeOptions all;
  all.prefix = true;
  const std::string prefix = coord::MembersPrefix(options_.prefix, source.name);
  absl::StatusOr<coord::RangeResult> got = etcd_->Range(prefix, all);
  if (!got.ok()) return got.status();
  // The most advanced replica. Its record in etcd is a hint (rewritten at
  // most every 250 ms): the replica itself refuses a page when it has not
  // applied min_index, and that page then comes from the leader.
  std::optional<coord::MemberRecord> best;
  for (const mvccpb::KeyValue& kv : got->kvs) {
    absl::StatusOr<coord::MemberRecord> m =
        coord::ParseMemberValue(kv.key().substr(prefix.size()), kv.value());
    if (!m.ok() || m->state != "replica" || m->addr.empty() || m->addr == source.leader_address) {
      continue;
    }
    if (!best || m->durable_index > best->durable_index) best = *m;
  }
  if (!best) {
    return absl::UnavailableError(
        absl::StrCat("shard ", source.name, " has no replica in etcd to copy from"));
  }
  if (best->addr != source.replica_address || source.replica_stub == nullptr) {
    source.replica_address = best->addr;
    source.replica_stub = v1::Migration::NewStub(options_.channel(best->addr));
  }
  return absl::OkStatus();
}

absl::Status MigrationDriver::Import(const google::protobuf::RepeatedPtrField<v1::MovedKey>& keys,
                                     uint64_t* applied) {
  *applied = 0;
  if (keys.empty()) return absl::OkStatus();
  std::vector<Mutation> batch;
  batch.reserve(keys.size());
  for (const v1::MovedKey& k : keys) {
    Mutation m;
    m.kind = k.deleted() ? Mutation::Kind::kImportDelete : Mutation::Kind::kImport;
    m.key = k.key();
    m.value = k.value();
    m.version = k.version();
    m.expire_unix_ms = k.expire_unix_ms();
    batch.push_back(std::move(m));
  }
  absl::Notification written;
  absl::Status status;
  uint64_t last = 0;
  store_->Write(std::move(batch), Durability::kDefault, [&](std::vector<MutationResult> results) {
    for (const MutationResult& r : results) {
      if (!r.status.ok() && status.ok()) status = r.status;
      if (r.applied) {
        ++*applied;
        last = std::max(last, r.index);
      }
    }
    written.Notify();
  });
  written.WaitForNotification();
  if (!status.ok()) return status;
  // Committed as the shard's own writes are: on the in-sync followers under
  // sync acks, so a failover of this shard keeps every import checkpointed.
  if (last == 0 || replication_ == nullptr) return absl::OkStatus();
  const int acks = replication_->DefaultSyncAcks();
  if (acks > 0) {
    absl::Notification replicated;
    replication_->AwaitReplicas(last, acks, [&](const absl::Status& s) {
      status = s;
      replicated.Notify();
    });
    replicated.WaitForNotification();
    if (!status.ok()) return status;
  }
  return replication_->CheckAcknowledge();
}

bool MigrationDriver::Throttle(Run& run, uint64_t bytes) {
  const double rate =
      static_cast<double>(std::max<int64_t>(run.record.throttle_bytes_per_second, 1));
  const absl::Time now = absl::Now();
  // At most a quarter second of burst.
  run.tokens = std::min(rate / 4, run.tokens + rate * absl::ToDoubleSeconds(now - run.refilled));
  run.refilled = now;
  run.tokens -= static_cast<double>(bytes);
  if (run.tokens >= 0) return !stopping();
  // The debt is waited off in slices, so that a pause or a cancel asked
  // meanwhile ends the wait (one wait of a batch over the throttle lasts a
  // second at 64 KiB/s). Only while copying and catching up: a cutover runs
  // on the record it read (its Txn is guarded by that read's revision).
  const absl::Time until = now + absl::Seconds(-run.tokens / rate);
  const bool watch = run.record.phase == "copy" || run.record.phase == "catchup";
  for (absl::Time t = absl::Now(); t < until; t = absl::Now()) {
    if (!WaitFor(std::min(kThrottleSlice, until - t))) return false;
    if (watch && Halted(run)) return true;
  }
  return !stopping();
}

bool MigrationDriver::Halted(Run& run) {
  if (!run.record_error.ok()) return true;
  if (absl::Now() - run.record_read > kRecordRefresh) {
    if (absl::Status s = LoadRecord(run); !s.ok()) {
      run.record_error = s;
      return true;
    }
  }
  return run.record.paused || run.record.cancel_requested;
}

absl::Status MigrationDriver::FlushProgress(Run& run, bool force) {
  PublishMetrics(run);
  const absl::Time now = absl::Now();
  if (!force && now - run.flushed < absl::Milliseconds(500)) return absl::OkStatus();
  const double seconds = std::max(1e-3, absl::ToDoubleSeconds(now - run.flushed));
  run.flushed = now;
  for (Source& s : run.sources) {
    s.progress.rate_bytes_per_second =
        static_cast<double>(s.progress.bytes_copied - s.bytes_at_last_flush) / seconds;
    s.bytes_at_last_flush = s.progress.bytes_copied;
    s.progress.updated_unix_ms = NowUnixMillis();
    s.progress.destination_epoch = store_->epoch();
    absl::StatusOr<int64_t> put =
        etcd_->Put(coord::MigrationProgressKey(options_.prefix, run.record, s.name),
                   coord::SourceProgressValue(s.progress));
    if (!put.ok()) return put.status();
  }
  return absl::OkStatus();
}

absl::Status MigrationDriver::Drive(const std::string& id) {
  Run run;
  run.id = id;
  run.refilled = run.flushed = absl::Now();
  if (absl::Status s = LoadRecord(run); !s.ok()) return s;
  // An add is driven by the shard it adds; each stage of a remove by that
  // stage's destination.
  const bool remove = run.record.kind == "remove";
  if (remove &&
      (run.record.stage < 0 || static_cast<size_t>(run.record.stage) >= run.record.stages.size())) {
    return absl::FailedPreconditionError(
        absl::StrCat("remove migration ", id, " has no stage ", run.record.stage, ": cancel it"));
  }
  const std::string& driver = remove ? run.record.stages[run.record.stage] : run.record.shard;
  if (driver != options_.shard) return absl::OkStatus();
  // The ring now, and the rings the migration (a remove: its stage) goes
  // between.
  absl::StatusOr<coord::RangeResult> ring_read = etcd_->Range(coord::RingKey(options_.prefix));
  if (!ring_read.ok()) return ring_read.status();
  if (ring_read->kvs.empty()) return absl::FailedPreconditionError("no ring in etcd");
  absl::StatusOr<coord::RingRecord> ring = coord::ParseRingValue(ring_read->kvs[0].value());
  if (!ring.ok()) return ring.status();
  run.ring = *ring;
  run.ring_revision = ring_read->kvs[0].mod_revision();
  absl::StatusOr<HashRing> after = coord::BuildRing(run.record.to);
  if (!after.ok()) return after.status();
  run.after = std::make_shared<const HashRing>(*std::move(after));

  if (run.record.phase == "cancelled") return Finish(run, "cancelled");
  if (IsOver(run.record.phase)) return Finish(run, run.record.phase);
  const bool switched = run.ring.version >= run.record.to.version;
  if (!switched && run.ring.version != run.record.from_version) {
    return absl::FailedPreconditionError(
        absl::StrCat("the ring is at version ", run.ring.version, " but migration ", id,
                     " starts from ", run.record.from_version, ": cancel it and plan again"));
  }

  // The moves into this shard, between the ring the migration starts from
  // and the one it publishes. An add record written before `from` existed:
  // the ring it publishes without this shard.
  coord::RingRecord from_ring;
  if (run.record.from.has_value()) {
    from_ring = *run.record.from;
  } else {
    from_ring = run.record.to;
    from_ring.shards.erase(
        std::remove(from_ring.shards.begin(), from_ring.shards.end(), options_.shard),
        from_ring.shards.end());
  }
  absl::StatusOr<HashRing> before = coord::BuildRing(from_ring);
  if (!before.ok()) return before.status();
  run.before = std::make_shared<const HashRing>(*std::move(before));
  coord::RangeOptions prefix_read;
  prefix_read.prefix = true;
  absl::StatusOr<coord::RangeResult> progress =
      etcd_->Range(coord::MigrationSourcesPrefix(options_.prefix, id), prefix_read);
  if (!progress.ok()) return progress.status();
  for (RingMove& move : DiffRings(*run.before, *run.after)) {
    if (move.to != options_.shard) continue;
    Source source;
    source.name = move.from;
    source.ranges = std::move(move.ranges);
    source.progress.source = move.from;
    source.progress.destination = options_.shard;
    for (const mvccpb::KeyValue& kv : progress->kvs) {
      if (kv.key() != coord::MigrationProgressKey(options_.prefix, run.record, move.from)) {
        continue;
      }
      absl::StatusOr<coord::SourceProgress> p =
          coord::ParseSourceProgressValue(move.from, kv.value());
      if (p.ok()) source.progress = *std::move(p);
    }
    source.bytes_at_last_flush = source.progress.bytes_copied;
    // A checkpoint another leader wrote covers imports this node holds only
    // if they were committed on the in-sync followers.
    if (!switched && source.progress.destination_epoch != 0 &&
        source.progress.destination_epoch != store_->epoch() && replication_ != nullptr &&
        replication_->DefaultSyncAcks() == 0 && replication_->FollowerCount() > 0) {
      source.progress.error =
          absl::StrCat("copy restarted: this shard's leader changed (epoch ",
                       source.progress.destination_epoch, " -> ", store_->epoch(),
                       ") and its acks are asynchronous, so the imports the "
                       "checkpoint covers may be lost");
      source.progress.phase.clear();
      source.progress.cursor.clear();
      ++source.progress.restarts;
    }
    run.sources.push_back(std::move(source));
  }
  LOG(INFO) << "Migration " << id << " (" << run.record.kind << " " << run.record.shard
            << (remove
                    ? absl::StrCat(", stage ", run.record.stage + 1, "/", run.record.stages.size())
                    : std::string())
            << "): phase " << run.record.phase << ", " << run.sources.size()
            << " sources, ring version " << run.ring.version << " -> " << run.record.to.version;

  if (!switched) {
    if (run.record.phase == "cutover") {
      // A cutover this driver (or an earlier leader) started and did not
      // finish: go back to catch-up in etcd first, then let the sources go.
      if (absl::Status s = AbortCutover(run, "the driver restarted during a cutover"); !s.ok()) {
        return s;
      }
    }
    if (absl::Status s = CopyAndCatchUp(run); !s.ok()) return s;
    if (IsOver(run.record.phase)) return absl::OkStatus();
  } else {
    options_.install_ring(run.after, run.record.to.version);
  }
  if (!Leading()) return absl::OkStatus();
  if (absl::Status s = CleanupSources(run); !s.ok()) return s;
  if (stopping() || !Leading()) return absl::OkStatus();
  if (remove && static_cast<size_t>(run.record.stage) + 1 < run.record.stages.size()) {
    return NextStage(run);
  }
  return Finish(run, "done");
}

absl::Status MigrationDriver::NextStage(Run& run) {
  // Guarded by the record's revision, as SetPhase: kvctl may have changed
  // the throttle or paused meanwhile, and that carries over.
  for (int attempt = 0; attempt < 10; ++attempt) {
    coord::MigrationRecord next = run.record;
    const size_t stage = static_cast<size_t>(run.record.stage) + 1;
    next.stage = static_cast<int>(stage);
    next.from = run.record.to;
    next.from_version = run.record.to.version;
    next.to = coord::RemoveStageRing(run.record.to, run.record.shard, run.record.stages[stage],
                                     /*last=*/stage + 1 == run.record.stages.size());
    next.phase = "copy";
    next.error.clear();
    next.cancel_requested = false;
    etcdserverpb::TxnRequest txn;
    const std::string key = coord::MigrationKey(options_.prefix, run.id);
    *txn.add_compare() = coord::ModRevisionIs(key, run.record_revision);
    *txn.add_success() = coord::PutOp(key, coord::MigrationValue(next));
    absl::StatusOr<etcdserverpb::TxnResponse> r = etcd_->Txn(txn);
    if (!r.ok()) return r.status();
    if (r->succeeded()) {
      LOG(INFO) << "Migration " << run.id << ": stage " << stage << "/" << run.record.stages.size()
                << " done; stage " << stage + 1 << " moves " << run.record.shard << "'s ranges to "
                << next.stages[stage] << " (ring version " << next.to.version << ")";
      run.record = next;
      run.record_revision = r->header().revision();
      return absl::OkStatus();
    }
    if (absl::Status s = LoadRecord(run); !s.ok()) return s;
    if (run.record.stage != static_cast<int>(stage) - 1) return absl::OkStatus();  // Advanced.
  }
  return absl::AbortedError("the migration record keeps changing under the driver");
}

absl::Status MigrationDriver::CopyAndCatchUp(Run& run) {
  bool was_paused = false;
  while (!stopping()) {
    if (!Leading()) return absl::OkStatus();
    if (!run.record_error.ok()) return std::exchange(run.record_error, absl::OkStatus());
    if (absl::Now() - run.record_read > kRecordRefresh) {
      if (absl::Status s = LoadRecord(run); !s.ok()) return s;
    }
    if (run.record.cancel_requested) return Cancel(run);
    if (run.record.paused) {
      // At once when the pause begins, so that the status shows where the
      // copy stopped.
      if (absl::Status s = FlushProgress(run, !was_paused); !s.ok()) return s;
      if (!was_paused) LOG(INFO) << "Migration " << run.id << ": paused";
      was_paused = true;
      WaitFor(options_.poll);
      continue;
    }
    if (was_paused) LOG(INFO) << "Migration " << run.id << ": resumed";
    was_paused = false;
    bool progressed = false;
    bool close = true;
    bool copying = false;
    bool halted = false;
    for (Source& source : run.sources) {
      // A pause or a cancel stops the round here, at the cursors reached,
      // not after the next batch (and throttle wait) of every source.
      if (Halted(run)) {
        halted = true;
        break;
      }
      bool p = false;
      absl::Status s = Step(run, source, /*throttled=*/true, &p);
      // Whether or not its step worked: a source that fails (its leader is
      // failing over) has not finished its copy either.
      if (source.progress.phase != "catchup") copying = true;
      if (!s.ok()) {
        source.progress.error = std::string(s.message());
        source.stub.reset();  // Ask etcd for the leader again.
        close = false;
        continue;
      }
      progressed = progressed || p;
      if (source.progress.phase != "catchup") {
        close = false;
      } else if (!source.lag_known ||
                 source.progress.source_index > source.progress.applied_index +
                                                    static_cast<uint64_t>(run.record.handoff_lag)) {
        close = false;
      }
    }
    // (A failed re-read in the last source's throttle wait halts it too.)
    if (halted || !run.record_error.ok()) continue;
    if (absl::Status s = FlushProgress(run, false); !s.ok()) return s;
    if (!copying && run.record.phase == "copy") {
      // The sources' records first: nobody is to see the migration in
      // catch-up while a source's record still says it copies.
      if (absl::Status s = FlushProgress(run, true); !s.ok()) return s;
      if (absl::Status s = SetPhase(run, "catchup"); !s.ok()) return s;
      KV_FAILPOINT_CRASH(failpoints::kDriverCatchupEntered);
    }
    if (close) {
      absl::StatusOr<bool> done = Cutover(run);
      if (!done.ok()) return done.status();
      if (*done) return absl::OkStatus();
      // Not now: the sources held their ranges for up to a pause; give
      // their writers a second before fencing them again.
      WaitFor(absl::Seconds(1));
      continue;
    }
    if (!progressed) WaitFor(absl::Milliseconds(20));
  }
  return absl::OkStatus();
}

absl::Status MigrationDriver::Step(Run& run, Source& source, bool throttled, bool* progressed) {
  if (source.stub == nullptr) {
    if (absl::Status s = ResolveSource(source); !s.ok()) return s;
  }
  const size_t max_bytes = static_cast<size_t>(
      std::clamp<int64_t>(run.record.throttle_bytes_per_second / 8, 64 << 10, 1 << 20));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + options_.rpc_timeout));
  coord::SourceProgress& p = source.progress;
  if (p.phase.empty()) {
    v1::MigrationBeginRequest request;
    request.set_migration_id(run.id);
    request.set_shard(source.name);
    RangesToProto(source.ranges, request.mutable_ranges());
    v1::MigrationBeginResponse response;
    absl::Status s = FromGrpcStatus(source.stub->Begin(&context, request, &response));
    if (!s.ok()) return s;
    p.phase = "copy";
    p.start_index = response.start_index();
    p.applied_index = p.start_index;
    p.applied_epoch = response.start_epoch();
    p.cursor.clear();
    p.keys_estimate = response.keys_estimate();
    p.bytes_estimate = response.bytes_estimate();
    *progressed = true;
    return FlushProgress(run, true);
  }
  if (p.phase == "copy") {
    v1::MigrationCopyRequest request;
    request.set_migration_id(run.id);
    request.set_shard(source.name);
    RangesToProto(source.ranges, request.mutable_ranges());
    std::string cursor;
    if (!absl::Base64Unescape(p.cursor, &cursor)) cursor.clear();
    request.set_cursor(cursor);
    request.set_max_bytes(max_bytes);
    v1::MigrationCopyResponse response;
    bool served = false;
    if (run.record.copy_from == "replica") {
      // Begin and everything after the copy stay on the leader; only the
      // pages come from a replica that holds I0 (0 would mean "leader only").
      request.set_min_index(std::max<uint64_t>(p.start_index, 1));
      absl::Status r = source.replica_stub != nullptr ? absl::OkStatus() : ResolveReplica(source);
      if (r.ok()) {
        grpc::ClientContext replica_context;
        replica_context.set_deadline(absl::ToChronoTime(absl::Now() + options_.rpc_timeout));
        r = FromGrpcStatus(source.replica_stub->Copy(&replica_context, request, &response));
        if (r.ok()) {
          served = true;
        } else {
          source.replica_stub.reset();  // Another replica, or this one, next page.
        }
      }
      if (!served) {
        if (!source.fallback_logged) {
          source.fallback_logged = true;
          LOG(WARNING) << "Migration " << run.id << ": copy of " << source.name
                       << " from a replica failed (" << r.message()
                       << "); pages that a replica cannot serve are copied from the leader"
                       << " (logged once)";
        }
        response.Clear();
      }
    }
    if (!served) {
      absl::Status s = FromGrpcStatus(source.stub->Copy(&context, request, &response));
      if (!s.ok()) return s;
    }
    if (MovedKeysChecksum(response.keys()) != response.checksum()) {
      return absl::DataLossError(
          absl::StrCat("a copy batch from ", source.name, " fails its checksum; asking again"));
    }
    uint64_t applied = 0;
    if (absl::Status i = Import(response.keys(), &applied); !i.ok()) return i;
    KV_FAILPOINT_CRASH(failpoints::kDriverCopyPageImported);
    uint64_t bytes = 0;
    for (const v1::MovedKey& k : response.keys()) bytes += k.key().size() + k.value().size();
    p.keys_copied += response.keys_size();
    p.bytes_copied += bytes;
    p.cursor = absl::Base64Escape(response.next_cursor());
    if (response.done()) {
      p.phase = "catchup";
      p.cursor.clear();
      LOG(INFO) << "Migration " << run.id << ": copy from " << source.name << " done ("
                << p.keys_copied << " keys, " << p.bytes_copied << " bytes); catching up from "
                << p.applied_index + 1;
    }
    p.error.clear();
    *progressed = true;
    if (!Throttle(run, bytes)) return absl::CancelledError("stopping");
    return absl::OkStatus();
  }
  // Catch-up.
  v1::MigrationCatchUpRequest request;
  request.set_migration_id(run.id);
  request.set_shard(source.name);
  RangesToProto(source.ranges, request.mutable_ranges());
  request.set_from_index(p.applied_index + 1);
  request.set_after_epoch(p.applied_epoch);
  request.set_max_bytes(max_bytes);
  v1::MigrationCatchUpResponse response;
  absl::Status s = FromGrpcStatus(source.stub->CatchUp(&context, request, &response));
  if (!s.ok()) {
    std::optional<ErrorInfo> info = ErrorInfoOf(s);
    if (info.has_value() && info->reason == kMigrationLogGone) {
      LOG(WARNING) << "Migration " << run.id << ": " << s.message();
      p.error = absl::StrCat("copy restarted: ", s.message());
      p.phase.clear();
      p.cursor.clear();
      ++p.restarts;
      *progressed = true;
      return FlushProgress(run, true);
    }
    return s;
  }
  if (MovedKeysChecksum(response.keys()) != response.checksum()) {
    return absl::DataLossError(
        absl::StrCat("a catch-up batch from ", source.name, " fails its checksum; asking again"));
  }
  uint64_t applied = 0;
  if (absl::Status i = Import(response.keys(), &applied); !i.ok()) return i;
  uint64_t bytes = 0;
  for (const v1::MovedKey& k : response.keys()) bytes += k.key().size() + k.value().size();
  p.source_index = response.committed_index();
  source.lag_known = true;
  if (response.next_index() > p.applied_index + 1) {
    p.applied_index = response.next_index() - 1;
    p.applied_epoch = response.last_epoch();
    *progressed = true;
  }
  p.bytes_copied += bytes;
  p.error.clear();
  if (throttled && !Throttle(run, bytes)) return absl::CancelledError("stopping");
  return absl::OkStatus();
}

absl::StatusOr<bool> MigrationDriver::Cutover(Run& run) {
  const absl::Time started = absl::Now();
  const absl::Duration budget =
      absl::Milliseconds(std::max<int64_t>(run.record.cutover_max_pause_ms, 1));
  // Versions this shard issues after the switch must be above every
  // imported one, so its epoch must be above every source's. When a source
  // failed over after this leader was elected it is not: fence nothing, and
  // take a newer epoch by a new election (this node or its replica wins it,
  // with a leader key created after every source's). The new leader resumes
  // from the checkpoints.
  for (Source& source : run.sources) {
    if (absl::Status s = ResolveSource(source); !s.ok()) return false;
    if (source.leader_epoch >= store_->epoch()) {
      const std::string why = absl::StrCat(
          "this shard's leader epoch ", store_->epoch(), " is not above the epoch ",
          source.leader_epoch, " of source ", source.name,
          "'s leader: electing a new leader of this shard for a newer epoch before the cutover");
      LOG(WARNING) << "Migration " << run.id << ": " << why;
      source.progress.error = why;
      if (absl::Status f = FlushProgress(run, true); !f.ok()) return f;
      if (!options_.renew_epoch) return absl::FailedPreconditionError(why);
      if (absl::Status r = options_.renew_epoch(why); !r.ok()) return r;
      return false;
    }
  }
  if (absl::Status s = SetPhase(run, "cutover"); !s.ok()) return s;
  // Fence every source: from here their moving ranges take no write. Each
  // source's leader (address, key revision for the Txn) is as the epoch
  // check above just read it: a change since makes the Txn fail.
  uint64_t max_source_epoch = 0;
  for (Source& source : run.sources) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(started + budget));
    v1::MigrationFenceRequest request;
    request.set_migration_id(run.id);
    request.set_shard(source.name);
    RangesToProto(source.ranges, request.mutable_ranges());
    request.set_to_ring_version(run.record.to.version);
    v1::MigrationFenceResponse response;
    absl::Status s = FromGrpcStatus(source.stub->Fence(&context, request, &response));
    if (!s.ok()) {
      if (absl::Status a =
              AbortCutover(run, absl::StrCat("fence of ", source.name, ": ", s.message()));
          !a.ok()) {
        return a;
      }
      return false;
    }
    source.fence_index = response.fence_index();
    source.epoch = response.epoch();
    max_source_epoch = std::max(max_source_epoch, source.epoch);
  }
  KV_FAILPOINT_CRASH(failpoints::kDriverSourcesFenced);
  // Apply every source's log through its fence index.
  for (;;) {
    bool all = true;
    for (Source& source : run.sources) {
      if (source.progress.applied_index >= source.fence_index) continue;
      all = false;
      bool progressed = false;
      if (absl::Status s = Step(run, source, /*throttled=*/false, &progressed); !s.ok()) {
        if (absl::Status a = AbortCutover(run, std::string(s.message())); !a.ok()) return a;
        return false;
      }
      if (source.progress.phase != "catchup") {
        // Its log no longer holds what the catch-up needs (LOG_GONE): the
        // copy starts again, and nothing may switch before it is done. (A
        // Begin here would move applied_index past the fence with nothing
        // copied.)
        if (absl::Status a =
                AbortCutover(run, absl::StrCat("source ", source.name,
                                               " must be copied again: ", source.progress.error));
            !a.ok()) {
          return a;
        }
        return false;
      }
    }
    if (all) break;
    if (absl::Now() - started > budget) {
      if (absl::Status a = AbortCutover(run,
                                        "the sources' logs were not applied through their "
                                        "fences within --cutover-max-pause");
          !a.ok()) {
        return a;
      }
      return false;
    }
  }
  // Versions this shard issues from now on must be above every imported one.
  if (store_->epoch() <= max_source_epoch) {
    if (absl::Status a = AbortCutover(
            run, absl::StrCat("this shard's leader epoch ", store_->epoch(),
                              " is not above a source's epoch ", max_source_epoch,
                              ": its versions could fall below imported ones; restart this "
                              "shard's leader so that it takes a newer epoch"));
        !a.ok()) {
      return a;
    }
    return false;
  }
  // One Txn: the ring the plan started from, every source's leader as
  // fenced, and this shard's leader key, all unchanged.
  absl::StatusOr<coord::RangeResult> mine =
      etcd_->Range(coord::ShardLeaderKey(options_.prefix, options_.shard));
  if (!mine.ok() || mine->kvs.empty()) {
    if (absl::Status a = AbortCutover(run, "this shard's leader key could not be read"); !a.ok()) {
      return a;
    }
    return false;
  }
  coord::MigrationRecord next = run.record;
  next.phase = "switched";
  next.error.clear();
  coord::RingRecord to = run.record.to;
  etcdserverpb::TxnRequest txn;
  const std::string record_key = coord::MigrationKey(options_.prefix, run.id);
  *txn.add_compare() = coord::ModRevisionIs(coord::RingKey(options_.prefix), run.ring_revision);
  *txn.add_compare() = coord::ModRevisionIs(record_key, run.record_revision);
  *txn.add_compare() = coord::ModRevisionIs(coord::ShardLeaderKey(options_.prefix, options_.shard),
                                            mine->kvs[0].mod_revision());
  for (const Source& source : run.sources) {
    *txn.add_compare() = coord::ModRevisionIs(coord::ShardLeaderKey(options_.prefix, source.name),
                                              source.leader_mod_revision);
  }
  *txn.add_success() = coord::PutOp(coord::RingKey(options_.prefix), coord::RingValue(to));
  *txn.add_success() = coord::PutOp(record_key, coord::MigrationValue(next));
  if (!Leading() || absl::Now() - started > budget) {
    if (absl::Status a = AbortCutover(run,
                                      "the cutover did not commit within "
                                      "--cutover-max-pause");
        !a.ok()) {
      return a;
    }
    return false;
  }
  absl::StatusOr<etcdserverpb::TxnResponse> r = etcd_->Txn(txn);
  if (!r.ok() || !r->succeeded()) {
    const std::string why =
        r.ok() ? "the ring, the migration or a shard's leader changed during the cutover"
               : std::string(r.status().message());
    // The Txn may have committed although the answer was lost: read back.
    absl::StatusOr<coord::RangeResult> now = etcd_->Range(coord::RingKey(options_.prefix));
    if (now.ok() && !now->kvs.empty()) {
      absl::StatusOr<coord::RingRecord> ring = coord::ParseRingValue(now->kvs[0].value());
      if (ring.ok() && ring->version >= to.version) {
        // It did: the record changed with it.
        if (absl::Status s = LoadRecord(run); !s.ok()) return s;
      } else {
        if (absl::Status a = AbortCutover(run, why); !a.ok()) return a;
        return false;
      }
    } else {
      return now.ok() ? absl::UnavailableError(why) : now.status();
    }
  } else {
    run.record = next;
    run.record_revision = r->header().revision();
  }
  KV_FAILPOINT_CRASH(failpoints::kDriverSwitched);
  options_.install_ring(run.after, to.version);
  const int64_t pause_ms = absl::ToInt64Milliseconds(absl::Now() - started);
  for (Source& source : run.sources) {
    source.progress.phase = "switched";
    source.progress.fence_index = source.fence_index;
    source.progress.last_cutover_pause_ms = pause_ms;
  }
  LOG(INFO) << "Migration " << run.id << ": cutover to ring version " << to.version
            << " committed; writes to the moved ranges paused " << pause_ms << " ms";
  if (absl::Status s = FlushProgress(run, true); !s.ok()) return s;
  return true;
}

absl::Status MigrationDriver::AbortCutover(Run& run, const std::string& why) {
  LOG(WARNING) << "Migration " << run.id << ": cutover abandoned, back to catch-up: " << why;
  for (Source& source : run.sources) {
    ++source.progress.retries;
    source.progress.error = absl::StrCat("cutover retried: ", why);
  }
  run.record.error = why;
  // Recorded in etcd first; only then may the sources take writes again, so
  // that a source never resumes on its own while the ring could still switch.
  if (absl::Status s = SetPhase(run, "catchup"); !s.ok()) return s;
  ReleaseSources(run, /*finished=*/false);
  return FlushProgress(run, true);
}

void MigrationDriver::ReleaseSources(Run& run, bool finished) {
  for (Source& source : run.sources) {
    if (source.stub == nullptr && !ResolveSource(source).ok()) continue;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + options_.rpc_timeout));
    v1::MigrationReleaseRequest request;
    request.set_migration_id(run.id);
    request.set_shard(source.name);
    request.set_finished(finished);
    v1::MigrationReleaseResponse response;
    const grpc::Status s = source.stub->Release(&context, request, &response);
    if (!s.ok()) {
      // A leader that cannot be reached now holds nothing for long: a new
      // leader starts without the hold, and this one sees the ring or the
      // next Release.
      LOG(WARNING) << "Migration " << run.id << ": release of " << source.name << ": "
                   << s.error_message();
      source.stub.reset();
    }
  }
}

bool MigrationDriver::AwaitRouters(Run& run) {
  const int64_t needed = run.record.to.version;
  const std::string prefix = coord::RoutersPrefix(options_.prefix);
  std::string reported;
  for (;;) {
    if (stopping() || !Leading()) return false;
    coord::RangeOptions all;
    all.prefix = true;
    absl::StatusOr<coord::RangeResult> routers = etcd_->Range(prefix, all);
    std::vector<std::string> behind;
    if (!routers.ok()) {
      behind.push_back(absl::StrCat("the routers' records (", routers.status().message(), ")"));
    } else {
      for (const mvccpb::KeyValue& kv : routers->kvs) {
        const std::string id = kv.key().substr(prefix.size());
        absl::StatusOr<coord::RouterRecord> router = coord::ParseRouterValue(id, kv.value());
        if (!router.ok()) {
          // Held, not skipped: a router that cannot be read might route by
          // the old ring.
          behind.push_back(absl::StrCat("router ", id, " (unreadable record)"));
        } else if (router->ring_version < needed) {
          behind.push_back(absl::StrCat("router ", id, " at ring version ", router->ring_version,
                                        " (needs ", needed, ")"));
        }
      }
    }
    if (behind.empty()) {
      if (!reported.empty()) {
        LOG(INFO) << "Migration " << run.id << ": every registered router routes by ring version "
                  << needed << " or later; removing the moved keys from the sources";
        // Not left on the sources whose cleanup comes later.
        for (Source& source : run.sources) {
          if (source.progress.error == reported) source.progress.error.clear();
        }
      }
      return true;
    }
    const std::string why = absl::StrCat("waiting for ", absl::StrJoin(behind, ", "),
                                         " before removing the moved keys");
    if (why != reported) {
      LOG(INFO) << "Migration " << run.id << ": " << why;
      reported = why;
      for (Source& source : run.sources) {
        if (source.progress.phase != "done") source.progress.error = why;
      }
      if (absl::Status f = FlushProgress(run, true); !f.ok()) {
        LOG(WARNING) << "Migration " << run.id << ": " << f;
        reported.clear();  // Say it again once etcd answers.
      }
    }
    WaitFor(options_.poll);
  }
}

absl::Status MigrationDriver::CleanupSources(Run& run) {
  if (run.record.phase != "cleanup") {
    if (absl::Status s = SetPhase(run, "cleanup"); !s.ok()) return s;
  }
  // The rule: the keys go only once no router can send a request
  // for them to their old owner (one that still did would be answered
  // WRONG_SHARD and retry, but a replica read there would miss the key).
  if (!AwaitRouters(run)) return absl::OkStatus();
  for (Source& source : run.sources) {
    if (source.progress.phase == "done") continue;
    source.progress.phase = "cleanup";
    source.progress.error.clear();
    std::string cursor;
    bool done = false;
    while (!done) {
      if (stopping() || !Leading()) return absl::OkStatus();
      if (source.stub == nullptr) {
        if (absl::Status s = ResolveSource(source); !s.ok()) {
          WaitFor(options_.poll);
          continue;
        }
      }
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + options_.rpc_timeout));
      v1::MigrationCleanupRequest request;
      request.set_migration_id(run.id);
      request.set_shard(source.name);
      request.set_ring_version(run.record.to.version);
      request.set_cursor(cursor);
      v1::MigrationCleanupResponse response;
      absl::Status s = FromGrpcStatus(source.stub->Cleanup(&context, request, &response));
      if (!s.ok()) {
        // Not on the new ring yet, or failing over: ask again.
        source.progress.error = std::string(s.message());
        source.stub.reset();
        WaitFor(options_.poll);
        continue;
      }
      source.progress.keys_cleaned += response.deleted();
      KV_FAILPOINT_CRASH(failpoints::kDriverCleanupPage);
      cursor = response.next_cursor();
      done = response.done();
      if (absl::Status f = FlushProgress(run, false); !f.ok()) return f;
      // A delete costs about a small key's bytes in the source's log.
      if (!Throttle(run, response.deleted() * 64)) return absl::OkStatus();
    }
    source.progress.phase = "done";
    source.progress.error.clear();
    LOG(INFO) << "Migration " << run.id << ": " << source.name << " removed "
              << source.progress.keys_cleaned << " keys it no longer owns";
  }
  return FlushProgress(run, true);
}

absl::Status MigrationDriver::Cancel(Run& run) {
  LOG(INFO) << "Migration " << run.id << ": cancelled; releasing the sources and removing "
            << "the imported keys";
  if (absl::Status s = SetPhase(run, "cancelled"); !s.ok()) return s;
  return Finish(run, "cancelled");
}

absl::Status MigrationDriver::Finish(Run& run, const std::string& phase) {
  if (phase == "cancelled") {
    ReleaseSources(run, /*finished=*/true);
    // The keys imported for a migration that will not happen: this shard
    // does not own them under the ring that stays.
    absl::StatusOr<coord::RangeResult> ring = etcd_->Range(coord::RingKey(options_.prefix));
    if (!ring.ok()) return ring.status();
    if (ring->kvs.empty()) return absl::FailedPreconditionError("no ring in etcd");
    absl::StatusOr<coord::RingRecord> record = coord::ParseRingValue(ring->kvs[0].value());
    if (!record.ok()) return record.status();
    if (std::find(record->shards.begin(), record->shards.end(), options_.shard) ==
        record->shards.end()) {
      // This shard owns nothing yet: everything it holds came from the migration.
      if (absl::Status s = PurgeNotOwned(nullptr); !s.ok()) return s;
    } else {
      absl::StatusOr<HashRing> current = coord::BuildRing(*record);
      if (!current.ok()) return current.status();
      if (absl::Status s = PurgeNotOwned(&*current); !s.ok()) return s;
    }
  } else if (run.record.phase != phase) {
    if (absl::Status s = SetPhase(run, phase); !s.ok()) return s;
  }
  // The migration is over: the next one may start.
  etcdserverpb::TxnRequest txn;
  const std::string active = coord::ActiveMigrationKey(options_.prefix);
  *txn.add_compare() = coord::ValueIs(active, coord::ActiveMigrationValue(run.id));
  *txn.add_success() = coord::DeleteOp(active);
  absl::StatusOr<etcdserverpb::TxnResponse> r = etcd_->Txn(txn);
  if (!r.ok()) return r.status();
  LOG(INFO) << "Migration " << run.id << ": " << phase;
  return absl::OkStatus();
}

absl::Status MigrationDriver::PurgeNotOwned(const HashRing* ring) {
  KvMap::ScanPosition position;
  for (;;) {
    if (stopping() || !Leading()) return absl::UnavailableError("stopped while removing keys");
    KvMap::ScanOptions options;
    options.limit = 1000;
    options.keys_only = true;
    KvMap::ScanPage page = store_->Scan(position, options);
    std::vector<Mutation> deletes;
    for (KvMap::ScannedEntry& e : page.entries) {
      if (ring != nullptr && ring->Owner(e.key) == options_.shard) continue;
      Mutation m;
      m.kind = Mutation::Kind::kDelete;
      m.key = std::move(e.key);
      m.if_version = e.version;
      deletes.push_back(std::move(m));
    }
    if (!deletes.empty()) {
      absl::Notification written;
      absl::Status status;
      store_->Write(
          std::move(deletes), Durability::kDefault, [&](std::vector<MutationResult> results) {
            for (const MutationResult& r : results) {
              if (!r.status.ok() && !absl::IsFailedPrecondition(r.status) && status.ok()) {
                status = r.status;
              }
            }
            written.Notify();
          });
      written.WaitForNotification();
      if (!status.ok()) return status;
    }
    if (!page.next.has_value()) return absl::OkStatus();
    position = *std::move(page.next);
  }
}

MigrationMetrics MigrationDriver::metrics() const {
  absl::MutexLock l(&metrics_mu_);
  return metrics_;
}

void MigrationDriver::PublishMetrics(const Run& run) {
  MigrationMetrics m;
  m.id = run.id;
  m.phase = run.record.phase;
  for (const Source& source : run.sources) {
    const coord::SourceProgress& p = source.progress;
    MigrationSourceMetrics s;
    s.source = source.name;
    s.keys_copied = p.keys_copied;
    s.bytes_copied = p.bytes_copied;
    // As kvctl reshard status counts it: unknown until the catch-up asked.
    if (p.source_index != 0 && !(p.phase == "copy" && p.applied_index == 0)) {
      s.catchup_lag_entries =
          p.source_index > p.applied_index ? p.source_index - p.applied_index : 0;
    }
    s.retries = p.retries;
    s.restarts = p.restarts;
    if (p.last_cutover_pause_ms > 0) {
      m.last_cutover_pause_seconds =
          std::max(m.last_cutover_pause_seconds.value_or(0), p.last_cutover_pause_ms / 1000.0);
    }
    m.sources.push_back(std::move(s));
  }
  absl::MutexLock l(&metrics_mu_);
  metrics_ = std::move(m);
}

}  // namespace kvstore

#include "common/storage/store.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/storage/log_format.h"
#include "common/storage/op.h"
#include "glog/logging.h"

namespace kvstore {
namespace {

constexpr int64_t kMicrosPerSecond = 1'000'000;
// An fsync slower than this is logged: it stalls every write waiting on it.
constexpr int64_t kSlowSyncMicros = 1'000'000;
// Active expiry reclaims at most this many keys per 100 ms tick, so it never
// competes with clients for long.
constexpr size_t kEvictionsPerTick = 20'000;

int64_t ExpiryFor(uint64_t ttl_ms, int64_t now_unix_ms) {
  if (ttl_ms == 0) return 0;
  return now_unix_ms + static_cast<int64_t>(ttl_ms);
}

}  // namespace

absl::StatusOr<FsyncPolicy> ParseFsyncPolicy(absl::string_view name) {
  if (name == "always") return FsyncPolicy::kAlways;
  if (name == "everysec") return FsyncPolicy::kEverySec;
  if (name == "no") return FsyncPolicy::kNo;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown fsync policy '", name, "' (expected always, everysec or no)"));
}

absl::string_view FsyncPolicyName(FsyncPolicy policy) {
  switch (policy) {
    case FsyncPolicy::kAlways:
      return "always";
    case FsyncPolicy::kEverySec:
      return "everysec";
    case FsyncPolicy::kNo:
      return "no";
  }
  return "unknown";
}

Store::Store(StoreOptions options)
    : options_(std::move(options)), opened_micros_(options_.clock->NowMicros()) {}

absl::StatusOr<std::unique_ptr<Store>> Store::Open(StoreOptions options) {
  if (options.dir.empty()) return absl::InvalidArgumentError("store needs a data directory");
  std::unique_ptr<Store> store(new Store(std::move(options)));
  if (absl::Status s = store->Recover(); !s.ok()) return s;
  store->log_thread_ = std::thread([s = store.get()] { s->LogThread(); });
  if (store->options_.background_maintenance) {
    store->maintenance_thread_ = std::thread([s = store.get()] { s->MaintenanceThread(); });
  }
  return store;
}

absl::Status Store::Recover() {
  FileSystem* fs = options_.fs;
  if (absl::Status s = fs->CreateDirs(options_.dir); !s.ok()) return s;
  const int64_t started = options_.clock->NowMicros();

  // The newest snapshot that loads cleanly; a damaged one is reported and skipped
  // (the log still reaches back to the one before it, see TakeSnapshot).
  absl::StatusOr<std::vector<SnapshotMeta>> snapshots = ListSnapshots(fs, options_.dir);
  if (!snapshots.ok()) return snapshots.status();
  std::optional<SnapshotMeta> loaded;
  const int64_t now = options_.clock->NowUnixMillis();
  for (const SnapshotMeta& candidate : *snapshots) {
    map_.Clear();
    absl::StatusOr<SnapshotMeta> meta = LoadSnapshot(
        fs, candidate.path,
        [&](absl::string_view key, absl::string_view value, uint64_t version, int64_t expire) {
          if (expire == 0 || expire > now) map_.Put(key, value, version, expire);
          return absl::OkStatus();
        });
    if (meta.ok()) {
      loaded = *std::move(meta);
      break;
    }
    LOG(ERROR) << "Skipping damaged snapshot: " << meta.status()
               << "; trying an older snapshot and a longer log replay";
  }
  if (!loaded.has_value()) {
    map_.Clear();
    if (!snapshots->empty()) {
      LOG(ERROR) << "No snapshot in " << options_.dir << " loads; replaying the whole log";
    }
  }
  const uint64_t snapshot_start = loaded ? loaded->start_index : 0;
  const uint64_t snapshot_end = loaded ? loaded->end_index : 0;

  uint64_t replayed = 0;
  uint64_t epoch = loaded ? loaded->epoch : 1;
  WalOptions wal_options;
  wal_options.segment_bytes = options_.segment_bytes;
  absl::StatusOr<std::unique_ptr<Wal>> wal =
      Wal::Open(fs, options_.dir, wal_options, snapshot_start + 1, [&](const WalRecord& record) {
        if (record.type != log::RecordType::kOp) {
          return absl::DataLossError(
              absl::StrCat("log record ", record.index, " in ", options_.dir, " has unknown type"));
        }
        OpView op;
        if (!DecodeOp(record.payload, &op)) {
          return absl::DataLossError(absl::StrCat("log record ", record.index, " in ", options_.dir,
                                                  " has a malformed payload"));
        }
        if (op.type == OpType::kPut && (op.expire_unix_ms == 0 || op.expire_unix_ms > now)) {
          map_.Put(op.key, op.value, op.version, op.expire_unix_ms);
        } else {
          map_.Erase(op.key);  // A delete, or a put that has expired since.
        }
        epoch = std::max(epoch, record.epoch);
        ++replayed;
        return absl::OkStatus();
      });
  if (!wal.ok()) return wal.status();
  wal_ = *std::move(wal);

  // The log must continue the snapshot without a gap.
  if (wal_->last_index() == 0) {
    if (snapshot_end > 0) {
      if (absl::Status s = wal_->Reset(snapshot_end + 1); !s.ok()) return s;
    }
  } else if (wal_->first_index() > snapshot_start + 1 || wal_->last_index() < snapshot_end) {
    return absl::DataLossError(absl::StrCat("log in ", options_.dir, " holds indexes ",
                                            wal_->first_index(), "..", wal_->last_index(),
                                            " but the snapshot needs ", snapshot_start + 1, "..",
                                            snapshot_end, " at least; segments are missing"));
  }

  absl::MutexLock l(&mu_);
  last_index_ = std::max(wal_->last_index(), snapshot_end);
  epoch_ = epoch;
  last_snapshot_ = loaded;
  last_snapshot_micros_ = options_.clock->NowMicros();
  LOG(INFO) << "Recovered " << options_.dir << ": "
            << (loaded ? absl::StrCat("snapshot at index ", snapshot_start, " (", loaded->entries,
                                      " entries)")
                       : std::string("no snapshot"))
            << ", replayed " << replayed << " log records, last index " << last_index_ << ", "
            << map_.Size() << " keys, in "
            << static_cast<double>(options_.clock->NowMicros() - started) / kMicrosPerSecond
            << " s";
  return absl::OkStatus();
}

Store::~Store() {
  if (absl::Status s = Close(); !s.ok()) LOG(ERROR) << "Closing the store: " << s;
}

absl::Status Store::Close() {
  {
    absl::MutexLock l(&mu_);
    closing_ = true;
  }
  if (maintenance_thread_.joinable()) maintenance_thread_.join();
  if (log_thread_.joinable()) log_thread_.join();
  absl::MutexLock l(&mu_);
  return fatal_;
}

bool Store::Get(absl::string_view key, std::string* value, uint64_t* version) const {
  return map_.Get(key, options_.clock->NowUnixMillis(), value, version);
}

void Store::Write(std::vector<Mutation> batch, Durability durability, WriteCallback done) {
  std::vector<MutationResult> results(batch.size());
  const bool needs_sync =
      durability == Durability::kFsynced ||
      (durability == Durability::kDefault && options_.fsync == FsyncPolicy::kAlways);
  absl::Status refused;
  {
    absl::MutexLock l(&mu_);
    if (!fatal_.ok()) {
      refused = fatal_;
    } else if (closing_) {
      refused = absl::UnavailableError("the store is shutting down");
    } else {
      const int64_t now = options_.clock->NowUnixMillis();
      bool wrote = false;
      std::string payload;
      for (size_t i = 0; i < batch.size(); ++i) {
        const Mutation& m = batch[i];
        const uint64_t current = map_.Version(m.key, now);
        if (m.if_version.has_value() && *m.if_version != current) {
          results[i].status = absl::FailedPreconditionError(
              absl::StrCat("version mismatch: expected ", *m.if_version, ", current version is ",
                           current, current == 0 ? " (key absent)" : ""));
          continue;
        }
        if (m.kind == Mutation::Kind::kDelete && current == 0) continue;  // Nothing to delete.
        const uint64_t index = ++last_index_;
        OpView op;
        op.version = index;
        op.key = m.key;
        if (m.kind == Mutation::Kind::kSet) {
          op.type = OpType::kPut;
          op.value = m.value;
          op.expire_unix_ms = ExpiryFor(m.ttl_ms, now);
        } else {
          op.type = OpType::kDelete;
        }
        payload.clear();
        EncodeOp(op, &payload);
        if (queued_records_.empty()) queued_first_index_ = index;
        log::AppendRecord(index, epoch_, log::RecordType::kOp, payload, &queued_records_);
        if (op.type == OpType::kPut) {
          map_.Put(op.key, op.value, op.version, op.expire_unix_ms);
        } else {
          map_.Erase(op.key);
        }
        results[i].version = index;
        results[i].applied = true;
        ++writes_since_snapshot_;
        wrote = true;
      }
      if (wrote) {
        // The callback runs once the log thread has this batch's last index in the log.
        waiters_.push_back(Pending{
            last_index_, needs_sync,
            [results = std::move(results), done = std::move(done)](const absl::Status& s) mutable {
              if (!s.ok()) {
                for (MutationResult& r : results) {
                  if (r.applied) {
                    r.status = s;
                    r.applied = false;
                  }
                }
              }
              done(std::move(results));
            }});
        return;
      }
    }
  }
  if (!refused.ok()) {
    for (MutationResult& r : results) r.status = refused;
  }
  done(std::move(results));
}

bool Store::HasLogWork() { return !queued_records_.empty() || !waiters_.empty() || closing_; }

void Store::Fail(const absl::Status& status) {
  LOG(ERROR) << "Write-ahead log failed; refusing all writes from now on: " << status;
  {
    absl::MutexLock l(&mu_);
    if (!fatal_.ok()) return;
    fatal_ = absl::InternalError(
        absl::StrCat("write-ahead log failed, the server must restart: ", status.message()));
  }
  if (options_.on_fatal_error) options_.on_fatal_error(status);
}

void Store::LogThread() {
  std::string records;
  std::deque<Pending> waiters;
  int64_t next_everysec = options_.clock->NowMicros() + kMicrosPerSecond;
  for (;;) {
    uint64_t first = 0;
    uint64_t last = 0;
    bool closing = false;
    absl::Status broken;
    {
      absl::MutexLock l(&mu_);
      const absl::Condition has_work(this, &Store::HasLogWork);
      if (options_.fsync == FsyncPolicy::kEverySec) {
        mu_.AwaitWithTimeout(has_work, absl::Seconds(1));
      } else {
        mu_.Await(has_work);
      }
      records.clear();
      records.swap(queued_records_);
      first = queued_first_index_;
      last = last_index_;
      waiters.swap(waiters_);
      closing = closing_;
      broken = fatal_;
    }

    // Hand the group to the OS, answer the writers that need no fsync, then
    // fsync once for all the others.
    absl::Status s = broken;
    bool any_sync = options_.fsync == FsyncPolicy::kAlways && !records.empty();
    for (const Pending& p : waiters) any_sync |= p.needs_sync;
    if (s.ok() && !records.empty()) {
      absl::MutexLock w(&wal_mu_);
      s = wal_->Append(records, first, last);
    }
    if (s.ok()) {
      for (Pending& p : waiters) {
        if (!p.needs_sync) std::exchange(p.done, nullptr)(absl::OkStatus());
      }
    }
    const int64_t now = options_.clock->NowMicros();
    const bool everysec_due = options_.fsync == FsyncPolicy::kEverySec && now >= next_everysec;
    if (s.ok() && (any_sync || everysec_due || closing)) {
      absl::MutexLock w(&wal_mu_);
      if (wal_->durable_index() < wal_->last_index()) {
        s = wal_->Sync();
        const int64_t took = options_.clock->NowMicros() - now;
        if (took > kSlowSyncMicros) {
          LOG(WARNING) << "Slow fsync of the log in " << options_.dir << ": "
                       << static_cast<double>(took) / kMicrosPerSecond << " s";
        }
      }
      if (everysec_due) next_everysec = now + kMicrosPerSecond;
    }
    if (!s.ok() && broken.ok()) Fail(s);
    for (Pending& p : waiters) {
      if (p.done) p.done(s.ok() ? absl::OkStatus() : absl::Status(s));
    }
    waiters.clear();

    if (closing) {
      absl::MutexLock l(&mu_);
      if (queued_records_.empty() && waiters_.empty()) {
        log_thread_done_ = true;
        return;
      }
    }
  }
}

absl::Status Store::SyncLog() {
  absl::Notification synced;
  absl::Status result;
  {
    absl::MutexLock l(&mu_);
    if (!fatal_.ok()) return fatal_;
    if (log_thread_done_) return absl::OkStatus();  // It synced everything on the way out.
    waiters_.push_back(Pending{last_index_, true, [&](const absl::Status& s) {
                                 result = s;
                                 synced.Notify();
                               }});
  }
  synced.WaitForNotification();
  return result;
}

absl::StatusOr<SnapshotMeta> Store::TakeSnapshot() {
  absl::MutexLock one_at_a_time(&snapshot_mu_);
  const int64_t started = options_.clock->NowMicros();
  uint64_t start_index = 0;
  uint64_t epoch = 0;
  {
    absl::MutexLock l(&mu_);
    if (closing_) return absl::UnavailableError("the store is shutting down");
    start_index = last_index_;
    epoch = epoch_;
    writes_since_snapshot_ = 0;
  }
  absl::StatusOr<std::unique_ptr<SnapshotWriter>> writer = SnapshotWriter::Create(
      options_.fs, options_.dir, start_index, epoch, options_.clock->NowUnixMillis());
  if (!writer.ok()) return writer.status();
  absl::Status added;
  map_.ForEach(options_.clock->NowUnixMillis(), [&](const KvMap::Item& item) {
    if (added.ok()) added = (*writer)->Add(item.key, item.value, item.version, item.expire_unix_ms);
  });
  if (!added.ok()) return added;

  // Everything the snapshot may hold must be durable in the log before the
  // snapshot is, so versions never go back and the log has no gap after it.
  const uint64_t end_index = last_index();
  if (absl::Status s = SyncLog(); !s.ok()) return s;
  absl::StatusOr<SnapshotMeta> meta = (*writer)->Commit(end_index);
  if (!meta.ok()) return meta.status();

  // Keep the log back to the oldest snapshot still kept, so a damaged newest
  // snapshot can fall back to the one before it.
  if (absl::Status s = PruneSnapshots(options_.fs, options_.dir, options_.snapshots_to_keep);
      !s.ok()) {
    LOG(WARNING) << "Removing old snapshots: " << s;
  }
  absl::StatusOr<std::vector<SnapshotMeta>> kept = ListSnapshots(options_.fs, options_.dir);
  if (kept.ok() && !kept->empty()) {
    absl::MutexLock w(&wal_mu_);
    if (absl::Status s = wal_->RemoveSegmentsThrough(kept->back().start_index); !s.ok()) {
      LOG(WARNING) << "Removing log segments covered by snapshots: " << s;
    }
  }
  const double seconds =
      static_cast<double>(options_.clock->NowMicros() - started) / kMicrosPerSecond;
  LOG(INFO) << "Snapshot " << meta->path << ": " << meta->entries << " keys, " << meta->bytes
            << " bytes, indexes " << meta->start_index << ".." << meta->end_index << ", " << seconds
            << " s";
  absl::MutexLock l(&mu_);
  last_snapshot_ = *meta;
  last_snapshot_seconds_ = seconds;
  last_snapshot_micros_ = options_.clock->NowMicros();
  return meta;
}

size_t Store::EvictExpired(size_t max) {
  return map_.EvictExpired(options_.clock->NowUnixMillis(), max);
}

void Store::MaintenanceThread() {
  for (;;) {
    {
      absl::MutexLock l(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&closing_), absl::Milliseconds(100))) return;
    }
    EvictExpired(kEvictionsPerTick);
    bool due = false;
    {
      absl::MutexLock l(&mu_);
      const int64_t age = options_.clock->NowMicros() - last_snapshot_micros_;
      due = (options_.snapshot_every_writes > 0 &&
             writes_since_snapshot_ >= options_.snapshot_every_writes) ||
            (options_.snapshot_every_seconds > 0 && writes_since_snapshot_ > 0 &&
             age >= options_.snapshot_every_seconds * kMicrosPerSecond);
    }
    if (due) {
      absl::StatusOr<SnapshotMeta> meta = TakeSnapshot();
      if (!meta.ok()) LOG(ERROR) << "Scheduled snapshot failed: " << meta.status();
    }
  }
}

StoreStatus Store::GetStatus() const {
  StoreStatus st;
  st.key_count = map_.Size();
  st.memory_bytes = map_.MemoryBytes();
  st.log_first_index = wal_->first_index();
  st.log_last_index = wal_->last_index();
  st.log_durable_index = wal_->durable_index();
  st.log_segments = wal_->segment_count();
  st.log_bytes = wal_->bytes();
  st.fsync = options_.fsync;
  absl::MutexLock l(&mu_);
  st.epoch = epoch_;
  st.last_index = last_index_;
  st.last_snapshot = last_snapshot_;
  st.last_snapshot_seconds = last_snapshot_seconds_;
  return st;
}

uint64_t Store::last_index() const {
  absl::MutexLock l(&mu_);
  return last_index_;
}

}  // namespace kvstore

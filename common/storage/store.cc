#include "common/storage/store.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/storage/log_format.h"
#include "common/storage/log_reader.h"
#include "common/storage/op.h"
#include "common/storage/storage_failpoints.h"
#include "common/storage/version.h"
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
  // The everysec schedule starts at open, not whenever the thread first runs.
  const int64_t first_fsync_due = store->options_.clock->NowMicros() + kMicrosPerSecond;
  store->log_thread_ =
      std::thread([s = store.get(), first_fsync_due] { s->LogThread(first_fsync_due); });
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
  uint64_t last_epoch = loaded ? loaded->epoch : 0;
  std::map<uint64_t, uint64_t> epoch_starts;
  if (loaded) epoch_starts[snapshot_start] = loaded->epoch;
  WalOptions wal_options;
  wal_options.segment_bytes = options_.segment_bytes;
  absl::StatusOr<std::unique_ptr<Wal>> wal =
      Wal::Open(fs, options_.dir, wal_options, snapshot_start + 1, [&](const WalRecord& record) {
        epoch = std::max(epoch, record.epoch);
        if (record.epoch != last_epoch) epoch_starts[record.index] = record.epoch;
        last_epoch = record.epoch;
        ++replayed;
        if (record.type == log::RecordType::kEpoch) return absl::OkStatus();
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
        return absl::OkStatus();
      });
  if (!wal.ok()) return wal.status();
  wal_ = *std::move(wal);

  // The log must continue the snapshot without a gap. It may end before the
  // snapshot's end index only on a replica that installed the snapshot and had
  // not yet received the log through that index: the state is then incomplete
  // until it has (see complete_index_).
  if (wal_->last_index() == 0) {
    if (snapshot_start > 0) {
      if (absl::Status s = wal_->Reset(snapshot_start + 1); !s.ok()) return s;
    }
  } else if (wal_->first_index() > snapshot_start + 1) {
    return absl::DataLossError(absl::StrCat("log in ", options_.dir, " holds indexes ",
                                            wal_->first_index(), "..", wal_->last_index(),
                                            " but the snapshot needs ", snapshot_start + 1, "..",
                                            snapshot_end, " at least; segments are missing"));
  }
  const uint64_t recovered_last = std::max(wal_->last_index(), snapshot_start);
  if (recovered_last < snapshot_end) {
    LOG(WARNING) << "The log in " << options_.dir << " ends at index " << recovered_last
                 << ", before the snapshot's end index " << snapshot_end
                 << ": this replica must receive the rest from its leader before it is whole";
  }
  {
    absl::MutexLock w(&written_mu_);
    written_index_ = recovered_last;
  }

  absl::MutexLock l(&mu_);
  last_index_ = recovered_last;
  locally_durable_ = recovered_last;
  last_epoch_ = last_epoch;
  epoch_starts_ = std::move(epoch_starts);
  complete_index_ = snapshot_end;
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

bool Store::Get(absl::string_view key, std::string* value, uint64_t* version,
                int64_t* expire_unix_ms) const {
  return map_.Get(key, options_.clock->NowUnixMillis(), value, version, expire_unix_ms);
}

KvMap::ScanPage Store::Scan(const KvMap::ScanPosition& from,
                            const KvMap::ScanOptions& options) const {
  return map_.Scan(from, options_.clock->NowUnixMillis(), options);
}

absl::Status Store::CheckReadable() const {
  if (install_generation() % 2 == 1) {
    return absl::UnavailableError("this node is installing a snapshot from its leader");
  }
  absl::MutexLock l(&mu_);
  if (last_index_ < complete_index_) {
    return absl::UnavailableError(
        absl::StrCat("this node is catching up after a snapshot install (log at index ",
                     last_index_, ", whole at ", complete_index_, ")"));
  }
  return absl::OkStatus();
}

void Store::Write(std::vector<Mutation> batch, Durability durability, WriteCallback done) {
  std::vector<MutationResult> results(batch.size());
  const bool needs_sync =
      durability == Durability::kFsynced ||
      (durability == Durability::kDefault && options_.fsync == FsyncPolicy::kAlways);
  absl::Status refused;
  bool flush_here = false;
  {
    absl::MutexLock l(&mu_);
    if (!fatal_.ok()) {
      refused = fatal_;
    } else if (closing_) {
      refused = absl::UnavailableError("the store is shutting down");
    } else if (fenced_) {
      refused = absl::UnavailableError(
          "this node is not leading now (it stepped down, or its epoch has not started); the "
          "write was not applied");
    } else if (last_index_ + batch.size() > kMaxVersionIndex) {
      refused = absl::ResourceExhaustedError(absl::StrCat(
          "log index ", last_index_, " is at the end of the version space of one epoch (",
          kMaxVersionIndex, "); restart or promote to start a new epoch"));
    } else if (last_index_ < complete_index_) {
      refused = absl::FailedPreconditionError(absl::StrCat(
          "this store is incomplete (log at index ", last_index_, ", its snapshot needs ",
          complete_index_, "): it must catch up from its leader before it takes writes"));
    } else {
      const int64_t now = options_.clock->NowUnixMillis();
      uint64_t first_written = 0;
      uint64_t conflict = 0;  // Newest in-flight write an unwritten answer saw.
      std::string payload;
      for (size_t i = 0; i < batch.size(); ++i) {
        Mutation& m = batch[i];
        uint64_t seen = 0;
        KeyInFlight* key_in_flight = nullptr;
        const uint64_t current = CurrentVersionLocked(m.key, now, &seen, &key_in_flight);
        if (m.if_version.has_value() && *m.if_version != current) {
          results[i].status = absl::FailedPreconditionError(
              absl::StrCat("version mismatch: expected ", *m.if_version, ", current version is ",
                           current, current == 0 ? " (key absent)" : ""));
          results[i].conflict_index = seen;
          conflict = std::max(conflict, seen);
          continue;
        }
        const bool import =
            m.kind == Mutation::Kind::kImport || m.kind == Mutation::Kind::kImportDelete;
        if (import) {
          // Against the version held whether or not it has expired: an older
          // copy must not come back in place of a newer one that expired.
          const uint64_t held =
              key_in_flight != nullptr && !key_in_flight->is_delete
                  ? key_in_flight->version
                  : (key_in_flight != nullptr
                         ? 0
                         : map_.Version(m.key, std::numeric_limits<int64_t>::min()));
          const bool expired =
              m.kind == Mutation::Kind::kImport && m.expire_unix_ms != 0 && m.expire_unix_ms <= now;
          if (m.version <= held || expired ||
              (m.kind == Mutation::Kind::kImportDelete && held == 0) || m.version == 0) {
            results[i].conflict_index = seen;
            conflict = std::max(conflict, seen);
            continue;
          }
        } else if (m.kind == Mutation::Kind::kDelete && current == 0) {  // Nothing to delete.
          results[i].conflict_index = seen;
          conflict = std::max(conflict, seen);
          continue;
        }
        const uint64_t index = ++last_index_;
        if (first_written == 0) first_written = index;
        OpView op;
        op.version = import ? m.version : MakeVersion(epoch_, index);
        op.key = m.key;
        if (m.kind == Mutation::Kind::kSet) {
          op.type = OpType::kPut;
          op.value = m.value;
          op.expire_unix_ms = ExpiryFor(m.ttl_ms, now);
        } else if (m.kind == Mutation::Kind::kImport) {
          op.type = OpType::kPut;
          op.value = m.value;
          op.expire_unix_ms = m.expire_unix_ms;
        } else {
          op.type = OpType::kDelete;
        }
        payload.clear();
        EncodeOp(op, &payload);
        if (queued_records_.empty()) queued_first_index_ = index;
        log::AppendRecord(index, epoch_, log::RecordType::kOp, payload, &queued_records_);
        // In flight until published (see store.h): conditions see it, reads not yet.
        // One lookup of the key: CurrentVersionLocked's entry, if it found one.
        KeyInFlight& key_state = key_in_flight != nullptr ? *key_in_flight : in_flight_keys_[m.key];
        key_state.version = op.version;
        key_state.expire_unix_ms = op.expire_unix_ms;
        key_state.is_delete = op.type == OpType::kDelete;
        key_state.index = index;
        ++key_state.count;
        // in_flight_ stays in index order: indexes only grow while it holds
        // anything (a snapshot install empties it before it lowers them).
        CHECK(in_flight_.empty() || in_flight_.back().index < index) << index;
        InFlightOp& in_flight = in_flight_.emplace_back();
        in_flight.index = index;
        in_flight.version = op.version;
        in_flight.expire_unix_ms = op.expire_unix_ms;
        in_flight.is_delete = key_state.is_delete;
        in_flight.key = std::move(m.key);
        in_flight.value = std::move(m.value);
        last_epoch_ = epoch_;
        results[i].version = op.version;
        results[i].index = index;
        results[i].applied = true;
        ++writes_since_snapshot_;
      }
      const bool wrote = first_written != 0;
      if (wrote || conflict != 0) {
        // The callback runs once this batch's last index is in the log (and
        // published, for explicit durability), and once the in-flight writes
        // its unwritten answers saw are published here.
        const bool sync = needs_sync || (conflict != 0 && options_.fsync == FsyncPolicy::kAlways);
        flush_here = !sync && options_.fsync != FsyncPolicy::kAlways && !flushing_;
        if (flush_here) flushing_ = true;  // Before unlocking: the log thread stays asleep.
        Pending pending{
            std::max(wrote ? last_index_ : 0, conflict), sync,
            [results = std::move(results), done = std::move(done)](const absl::Status& s) mutable {
              if (!s.ok()) {
                for (MutationResult& r : results) {
                  if (r.applied || r.conflict_index != 0) {
                    r.status = s;
                    r.applied = false;
                  }
                }
              }
              done(std::move(results));
            }};
        if (wrote && durability != Durability::kDefault) {
          pending.publish_first = first_written;
          pending.publish_last = last_index_;
        }
        waiters_.push_back(std::move(pending));
        done = nullptr;  // Moved into the waiter.
        // The first group is taken now, under this lock, rather than in
        // FlushInline under another: every unlock of mu_ evaluates the log
        // thread's wait condition, so a lock costs about as much as the rest
        // of a small write.
        if (flush_here) flush_here = TakeInlineGroupLocked(&inline_group_);
      }
    }
  }
  if (flush_here) FlushInline();
  if (done == nullptr) return;
  if (!refused.ok()) {
    for (MutationResult& r : results) r.status = refused;
  }
  done(std::move(results));
}

bool Store::HasLogWork() {
  return !flushing_ && (!queued_records_.empty() || !waiters_.empty() || closing_);
}

// Writes that need no fsync are put in the log by the writer's own thread
// rather than handed to the log thread: the handoff (a wakeup and two context
// switches per group) cost more than the write itself in the profile of a
// shard under load. Whoever holds flushing_ moves what is queued to the log;
// it takes what others queued meanwhile too (a group), for a few rounds at
// most, then leaves the rest to the log thread, as it does when a waiter
// needs an fsync or the store is closing.
bool Store::TakeInlineGroupLocked(InlineGroup* group) {
  bool sync_wanted = false;
  for (const Pending& p : waiters_) sync_wanted |= p.needs_sync;
  if (sync_wanted || closing_ || !fatal_.ok() || (queued_records_.empty() && waiters_.empty())) {
    flushing_ = false;  // The log thread wakes if anything is left.
    return false;
  }
  group->records.clear();
  group->records.swap(queued_records_);
  group->first = queued_first_index_;
  group->last = last_index_;
  group->waiters.swap(waiters_);
  return true;
}

void Store::FlushInline() {
  constexpr int kMaxRounds = 2;
  InlineGroup& group = inline_group_;  // Ours while we hold flushing_.
  std::string& records = group.records;
  std::deque<Pending>& waiters = group.waiters;
  for (int round = 0;; ++round) {
    if (round > 0) {
      absl::MutexLock l(&mu_);
      if (round == kMaxRounds) {
        flushing_ = false;  // The log thread wakes if anything is left.
        return;
      }
      if (!TakeInlineGroupLocked(&group)) return;
    }
    const uint64_t first = group.first;
    const uint64_t last = group.last;
    absl::Status s;
    if (!records.empty()) {
      {
        absl::MutexLock w(&wal_mu_);
        s = wal_->Append(records, first, last);
      }
      if (s.ok()) {
        absl::MutexLock w(&written_mu_);
        written_index_ = last;
      }
    }
    if (!s.ok()) {
      Fail(s);
    } else {
      PublishDurable(last, waiters, /*only_unsynced_waiters=*/false);
    }
    for (Pending& p : waiters) p.done(s);
    waiters.clear();
  }
}

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

void Store::LogThread(int64_t first_fsync_due) {
  std::string records;
  std::deque<Pending> waiters;
  int64_t next_everysec = first_fsync_due;
  for (;;) {
    uint64_t first = 0;
    uint64_t last = 0;
    bool closing = false;
    bool flusher = false;  // This round holds flushing_.
    absl::Status broken;
    {
      absl::MutexLock l(&mu_);
      const absl::Condition has_work(this, &Store::HasLogWork);
      if (options_.fsync == FsyncPolicy::kEverySec) {
        // Sleep until the fsync is due, not a second from now: a wakeup for
        // work just before it was due would put it off by up to a second.
        const int64_t until_due = next_everysec - options_.clock->NowMicros();
        mu_.AwaitWithTimeout(
            has_work, absl::Microseconds(std::clamp<int64_t>(until_due, 0, kMicrosPerSecond)));
      } else {
        mu_.Await(has_work);
      }
      // A writer flushing inline keeps what it took; this round may still
      // fsync what is already in the log (everysec).
      records.clear();
      if (!flushing_) {
        flusher = true;
        flushing_ = true;
        records.swap(queued_records_);
        first = queued_first_index_;
        last = last_index_;
        waiters.swap(waiters_);
        closing = closing_;
      }
      broken = fatal_;
    }

    // Hand the group to the OS, answer the writers that need no fsync, then
    // fsync once for all the others.
    absl::Status s = broken;
    bool any_sync = options_.fsync == FsyncPolicy::kAlways && !records.empty();
    for (const Pending& p : waiters) any_sync |= p.needs_sync;
    if (s.ok() && !records.empty()) {
      {
        absl::MutexLock w(&wal_mu_);
        s = wal_->Append(records, first, last);
      }
      if (s.ok()) {
        absl::MutexLock w(&written_mu_);
        written_index_ = last;
      }
    }
    if (s.ok()) {
      // In the log is durable enough under everysec and no; under "always"
      // only the explicit writes of the waiters answered now are published.
      PublishDurable(options_.fsync == FsyncPolicy::kAlways || records.empty() ? 0 : last, waiters,
                     /*only_unsynced_waiters=*/true);
      for (Pending& p : waiters) {
        bool ack_now = !p.needs_sync;
#ifdef KV_FAULT_CONTROLS
        ack_now |= options_.unsafe_ack_before_fsync;  // The control: before the fsync.
#endif
        if (ack_now) std::exchange(p.done, nullptr)(absl::OkStatus());
      }
    }
    const int64_t now = options_.clock->NowMicros();
    const bool everysec_due = options_.fsync == FsyncPolicy::kEverySec && now >= next_everysec;
    if (s.ok() && (any_sync || everysec_due || closing)) {
      absl::MutexLock w(&wal_mu_);
      if (wal_->durable_index() < wal_->last_index()) {
        s = wal_->Sync();
        const int64_t took = options_.clock->NowMicros() - now;
        if (options_.on_fsync) options_.on_fsync(absl::Microseconds(took));
        if (took > kSlowSyncMicros) {
          LOG(WARNING) << "Slow fsync of the log in " << options_.dir << ": "
                       << static_cast<double>(took) / kMicrosPerSecond << " s";
        }
      }
      if (everysec_due) next_everysec = now + kMicrosPerSecond;
    }
    if (!s.ok() && broken.ok()) Fail(s);
    if (s.ok()) {
      uint64_t synced = 0;
      if (options_.fsync == FsyncPolicy::kAlways) {
        absl::MutexLock w(&wal_mu_);
        synced = std::min(wal_->durable_index(), written_index());
      }
      PublishDurable(synced, waiters, /*only_unsynced_waiters=*/false);
    }
    for (Pending& p : waiters) {
      if (p.done) p.done(s.ok() ? absl::OkStatus() : absl::Status(s));
    }
    waiters.clear();

    absl::MutexLock l(&mu_);
    if (flusher) flushing_ = false;
    if (closing && queued_records_.empty() && waiters_.empty()) {
      log_thread_done_ = true;
      return;
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
    if (last_index_ < complete_index_) {
      return absl::FailedPreconditionError(
          absl::StrCat("no snapshot while the store is incomplete (log at index ", last_index_,
                       ", needs ", complete_index_, ")"));
    }
    // A write in flight is not in the map yet: the log replay after the
    // snapshot must start at or before it.
    start_index =
        in_flight_.empty() ? last_index_ : std::min(last_index_, in_flight_.front().index - 1);
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
    uint64_t through = kept->back().start_index;
    std::function<uint64_t()> floor;
    {
      absl::MutexLock l(&mu_);
      floor = retention_floor_;
    }
    // Followers still reading the log keep it, up to retain_log_bytes.
    const uint64_t needed = floor ? floor() : 0;
    if (needed > 0 && needed - 1 < through && wal_->bytes() <= options_.retain_log_bytes) {
      through = needed - 1;
    }
    uint64_t migration_floor = 0;
    {
      absl::MutexLock l(&mu_);
      migration_floor = migration_floor_;
    }
    if (migration_floor > 0 && migration_floor - 1 < through &&
        wal_->bytes() <= options_.migration_retain_log_bytes) {
      through = migration_floor - 1;
    }
    absl::MutexLock w(&wal_mu_);
    if (absl::Status s = wal_->RemoveSegmentsThrough(through); !s.ok()) {
      LOG(WARNING) << "Removing log segments covered by snapshots: " << s;
    }
  }
  const double seconds =
      static_cast<double>(options_.clock->NowMicros() - started) / kMicrosPerSecond;
  LOG(INFO) << "Snapshot " << meta->path << ": " << meta->entries << " keys, " << meta->bytes
            << " bytes, indexes " << meta->start_index << ".." << meta->end_index << ", " << seconds
            << " s";
  if (options_.on_snapshot) options_.on_snapshot(absl::Seconds(seconds));
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
  st.last_epoch = last_epoch_;
  st.complete_index = complete_index_;
  st.last_snapshot = last_snapshot_;
  st.last_snapshot_seconds = last_snapshot_seconds_;
  return st;
}

uint64_t Store::last_index() const {
  absl::MutexLock l(&mu_);
  return last_index_;
}

uint64_t Store::epoch() const {
  absl::MutexLock l(&mu_);
  return epoch_;
}

uint64_t Store::last_epoch() const {
  absl::MutexLock l(&mu_);
  return last_epoch_;
}

uint64_t Store::durable_index() const {
  if (options_.fsync == FsyncPolicy::kAlways)
    return std::min(wal_->durable_index(), written_index());
  return written_index();
}

void Store::Fence() {
  absl::MutexLock l(&mu_);
  fenced_ = true;
}

void Store::Unfence() {
  absl::MutexLock l(&mu_);
  fenced_ = false;
}

uint64_t Store::written_index() const {
  absl::MutexLock l(&written_mu_);
  return written_index_;
}

uint64_t Store::WaitForWritten(uint64_t after, absl::Duration timeout) const {
  absl::MutexLock l(&written_mu_);
  const auto past = [this, after]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(written_mu_) {
    return written_index_ > after;
  };
  written_mu_.AwaitWithTimeout(absl::Condition(&past), timeout);
  return written_index_;
}

void Store::SetLogRetentionFloor(std::function<uint64_t()> floor) {
  absl::MutexLock l(&mu_);
  retention_floor_ = std::move(floor);
}

void Store::SetMigrationRetentionFloor(uint64_t index) {
  absl::MutexLock l(&mu_);
  migration_floor_ = index;
}

uint64_t Store::published_through() const {
  absl::MutexLock l(&mu_);
  return in_flight_.empty() ? last_index_ : in_flight_.front().index - 1;
}

absl::StatusOr<SnapshotMeta> Store::NewestSnapshot() {
  absl::StatusOr<std::vector<SnapshotMeta>> snapshots = ListSnapshots(options_.fs, options_.dir);
  if (!snapshots.ok()) return snapshots.status();
  // Newest first. The log reaches back to the oldest snapshot kept (see
  // TakeSnapshot), so an older one serves as well, with a longer log after it.
  for (const SnapshotMeta& candidate : *snapshots) {
    absl::StatusOr<SnapshotMeta> verified = VerifySnapshot(options_.fs, candidate.path);
    if (verified.ok()) return verified;
    if (absl::IsNotFound(verified.status())) continue;  // Pruned meanwhile.
    LOG(ERROR) << "Snapshot " << candidate.path
               << " is damaged and will not be sent to a follower: " << verified.status();
  }
  if (!snapshots->empty()) {
    LOG(ERROR) << "No snapshot in " << options_.dir << " verifies; taking a new one";
  }
  return TakeSnapshot();
}

absl::Status Store::StartEpoch(uint64_t epoch, absl::string_view leader) {
  absl::Notification written;
  absl::Status result;
  {
    absl::MutexLock l(&mu_);
    if (!fatal_.ok()) return fatal_;
    if (closing_) return absl::UnavailableError("the store is shutting down");
    if (epoch <= epoch_) {
      return absl::FailedPreconditionError(
          absl::StrCat("epoch ", epoch, " is not above the current epoch ", epoch_));
    }
    if (epoch > kMaxVersionEpoch) {
      return absl::OutOfRangeError(absl::StrCat("epoch ", epoch, " is above the largest epoch a ",
                                                "version can carry, ", kMaxVersionEpoch));
    }
    if (last_index_ < complete_index_) {
      return absl::FailedPreconditionError(absl::StrCat(
          "this store is incomplete (log at index ", last_index_, ", its snapshot needs ",
          complete_index_, "): it cannot lead until it has caught up"));
    }
    epoch_ = epoch;
    last_epoch_ = epoch;
    const uint64_t index = ++last_index_;
    epoch_starts_[index] = epoch;
    fenced_ = false;  // Writes queue behind the epoch record.
    if (queued_records_.empty()) queued_first_index_ = index;
    log::AppendRecord(index, epoch, log::RecordType::kEpoch, leader, &queued_records_);
    waiters_.push_back(Pending{index, true, [&](const absl::Status& s) {
                                 result = s;
                                 written.Notify();
                               }});
  }
  written.WaitForNotification();
  if (result.ok()) LOG(INFO) << "Epoch " << epoch << " starts in " << options_.dir;
  return result;
}

bool Store::QueueUntilDurableLocked(uint64_t index,
                                    std::function<void(const absl::Status&)>* done) {
  if (durable_index() >= index || log_thread_done_) return false;
  waiters_.push_back(Pending{index, options_.fsync == FsyncPolicy::kAlways, std::move(*done)});
  return true;
}

void Store::WhenDurable(uint64_t index, std::function<void(const absl::Status&)> done) {
  absl::Status now;
  {
    absl::MutexLock l(&mu_);
    if (!fatal_.ok()) {
      now = fatal_;
    } else if (QueueUntilDurableLocked(index, &done)) {
      return;
    }
  }
  done(now);
}

uint64_t Store::CurrentVersionLocked(absl::string_view key, int64_t now_unix_ms, uint64_t* conflict,
                                     KeyInFlight** in_flight) {
  auto it = in_flight_keys_.find(key);
  if (it == in_flight_keys_.end()) {
    *conflict = 0;
    *in_flight = nullptr;
    return map_.Version(key, now_unix_ms);
  }
  const KeyInFlight& k = it->second;
  *conflict = k.index;
  *in_flight = &it->second;
  if (k.is_delete || (k.expire_unix_ms != 0 && k.expire_unix_ms <= now_unix_ms)) return 0;
  return k.version;
}

void Store::PublishOneLocked(InFlightOp& op) {
  auto k = in_flight_keys_.find(op.key);
  CHECK(k != in_flight_keys_.end()) << "in-flight write " << op.index << " has no key entry";
  if (op.version > k->second.published_version) {
    if (op.is_delete) {
      map_.Erase(op.key);
    } else {
      map_.Put(op.key, op.value, op.version, op.expire_unix_ms);
    }
    k->second.published_version = op.version;
  }
  if (--k->second.count == 0) in_flight_keys_.erase(k);
  op.published = true;
}

void Store::PopPublishedLocked() {
  while (!in_flight_.empty() && in_flight_.front().published) in_flight_.pop_front();
}

void Store::PublishThroughLocked(uint64_t through) {
  while (!in_flight_.empty() && in_flight_.front().index <= through) {
    PublishOneLocked(in_flight_.front());  // The front is never published already.
    in_flight_.pop_front();
    PopPublishedLocked();
  }
}

void Store::PublishRangeLocked(uint64_t first, uint64_t last) {
  auto it = std::lower_bound(in_flight_.begin(), in_flight_.end(), first,
                             [](const InFlightOp& op, uint64_t index) { return op.index < index; });
  for (; it != in_flight_.end() && it->index <= last; ++it) {
    if (!it->published) PublishOneLocked(*it);
  }
  PopPublishedLocked();
}

void Store::PublishDurable(uint64_t index, const std::deque<Pending>& answered,
                           bool only_unsynced_waiters) {
  absl::MutexLock l(&mu_);
  locally_durable_ = std::max(locally_durable_, index);
  PublishThroughLocked(commit_gate_ ? std::min(locally_durable_, commit_index_) : locally_durable_);
  for (const Pending& p : answered) {
    if (p.publish_last == 0 || (only_unsynced_waiters && p.needs_sync)) continue;
    PublishRangeLocked(p.publish_first, p.publish_last);
  }
}

void Store::SetCommitGate(bool on) {
  absl::MutexLock l(&mu_);
  commit_gate_ = on;
  commit_index_ = std::max(commit_index_, last_index_);
  if (!on) PublishThroughLocked(locally_durable_);
}

void Store::CommitThrough(uint64_t index) {
  absl::MutexLock l(&mu_);
  commit_index_ = std::max(commit_index_, index);
  if (commit_gate_) PublishThroughLocked(std::min(locally_durable_, commit_index_));
}

void Store::MakeVisible(uint64_t first, uint64_t last) {
  absl::MutexLock l(&mu_);
  PublishRangeLocked(first, std::min(last, locally_durable_));
}

uint64_t Store::EpochAtLocked(uint64_t index) const {
  if (index == 0 || index > last_index_) return 0;
  auto it = epoch_starts_.upper_bound(index);
  if (it == epoch_starts_.begin()) return 0;
  return std::prev(it)->second;
}

void Store::AppendReplicated(absl::string_view records,
                             std::function<void(const absl::Status&)> done) {
  absl::Status refused;
  {
    absl::MutexLock l(&mu_);
    if (!fatal_.ok()) {
      refused = fatal_;
    } else if (closing_) {
      refused = absl::UnavailableError("the store is shutting down");
    } else {
      // Check everything before applying anything.
      struct Parsed {
        log::RecordHeader header;
        absl::string_view payload;
        uint64_t offset;
      };
      std::vector<Parsed> fresh;
      log::LogReader reader(records, 0);
      log::LogRecord record;
      log::ReadStatus rs;
      uint64_t expected = last_index_ + 1;
      uint64_t resent_through = 0;
      while ((rs = reader.Next(&record)) == log::ReadStatus::kRecord) {
        if (record.header.epoch == 0) {
          // No leader writes epoch 0 (a store starts at 1), and EpochAtLocked
          // reads 0 as "unknown": a record of epoch 0 in this log would let a
          // diverged resend of its index be skipped as if it matched.
          refused = absl::InvalidArgumentError(
              absl::StrCat("replicated record ", record.header.index,
                           " has epoch 0, which no leader writes (epochs start at 1)"));
          break;
        }
        if (record.header.index < expected && fresh.empty()) {
          // A resend of a record this log holds: only if it is the same record.
          // The same index with another epoch means this log diverged from the
          // leader's there; skipping it would leave the follower silently
          // different (the stream breaks and the leader resyncs it whole).
          const uint64_t mine = EpochAtLocked(record.header.index);
          if (mine != 0 && mine != record.header.epoch) {
            refused = absl::FailedPreconditionError(absl::StrCat(
                "replicated record ", record.header.index, " has epoch ", record.header.epoch,
                " but this log holds index ", record.header.index, " from epoch ", mine,
                ": the logs diverged; the follower needs a full resync"));
            break;
          }
          resent_through = record.header.index;
          continue;
        }
        if (record.header.index != expected) {
          refused = absl::InvalidArgumentError(absl::StrCat(
              "replicated records jump from index ", expected - 1, " to ", record.header.index));
          break;
        }
        if (record.header.type == log::RecordType::kOp) {
          OpView op;
          if (!DecodeOp(record.payload, &op)) {
            refused = absl::InvalidArgumentError(
                absl::StrCat("replicated record ", record.header.index, " has a bad payload"));
            break;
          }
        }
        fresh.push_back(Parsed{record.header, record.payload, record.offset});
        ++expected;
      }
      if (refused.ok() && rs != log::ReadStatus::kEndOfInput) {
        refused = absl::InvalidArgumentError(absl::StrCat("replicated records are damaged at byte ",
                                                          reader.offset(), ": ",
                                                          log::ReadStatusName(rs)));
      }
      if (refused.ok() && !fresh.empty()) {
        // A node that follows shows its whole log, including writes it took
        // while it led that were never published (the leader's stream now
        // says which of them stand).
        PublishThroughLocked(last_index_);
        const int64_t now = options_.clock->NowUnixMillis();
        for (const Parsed& p : fresh) {
          epoch_ = std::max(epoch_, p.header.epoch);
          if (p.header.epoch != last_epoch_) epoch_starts_[p.header.index] = p.header.epoch;
          last_epoch_ = p.header.epoch;
          if (p.header.type != log::RecordType::kOp) continue;
          OpView op;
          // Decoded once above, before anything was applied: cannot fail here.
          CHECK(DecodeOp(p.payload, &op)) << "record " << p.header.index;
          if (op.type == OpType::kPut && (op.expire_unix_ms == 0 || op.expire_unix_ms > now)) {
            map_.Put(op.key, op.value, op.version, op.expire_unix_ms);
          } else {
            map_.Erase(op.key);
          }
        }
        if (queued_records_.empty()) queued_first_index_ = fresh.front().header.index;
        const absl::string_view tail = records.substr(fresh.front().offset);
        queued_records_.append(tail.data(), tail.size());
        last_index_ = fresh.back().header.index;
        writes_since_snapshot_ += fresh.size();
        waiters_.push_back(
            Pending{last_index_, options_.fsync == FsyncPolicy::kAlways, std::move(done)});
        return;
      }
      // Nothing new, but what was resent may still be on its way to disk: it
      // is confirmed only once it is as durable as a fresh append would be.
      if (refused.ok() && resent_through > 0 && QueueUntilDurableLocked(resent_through, &done)) {
        return;
      }
    }
  }
  // Refused, or a resend of records that are already durable here.
  done(refused);
}

absl::StatusOr<SnapshotMeta> Store::InstallSnapshot(const std::string& path) {
  absl::MutexLock one_at_a_time(&snapshot_mu_);
  absl::Status broken;
  absl::StatusOr<SnapshotMeta> result = InstallSnapshotLocked(path, &broken);
  if (!broken.ok()) Fail(broken);  // Without mu_ held.
  return result;
}

absl::StatusOr<SnapshotMeta> Store::InstallSnapshotLocked(const std::string& path,
                                                          absl::Status* broken) {
  absl::MutexLock l(&mu_);
  if (!fatal_.ok()) return fatal_;
  if (closing_) return absl::UnavailableError("the store is shutting down");
  // Let the log thread finish what is queued, so nothing lands after the reset.
  const auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return queued_records_.empty() && waiters_.empty() && !flushing_;
  };
  mu_.Await(absl::Condition(&idle));
  absl::MutexLock w(&wal_mu_);

  // Verify the whole file before touching anything: a snapshot that does not
  // read back cleanly leaves this store exactly as it was.
  absl::StatusOr<SnapshotMeta> verified = VerifySnapshot(options_.fs, path);
  if (!verified.ok()) {
    LOG(ERROR) << "Received snapshot " << path << " fails verification, keeping this node's "
               << "state (index " << last_index_ << "): " << verified.status();
    if (absl::Status s = options_.fs->Remove(path); !s.ok()) {
      LOG(WARNING) << "Removing the rejected snapshot " << path << ": " << s;
    }
    return verified.status();
  }
  ++installs_;  // Odd while the map is being replaced: reads are refused (see Readable).
  const int64_t now = options_.clock->NowUnixMillis();
  map_.Clear();
  in_flight_.clear();  // Their records go with the log.
  in_flight_keys_.clear();
  absl::StatusOr<SnapshotMeta> meta = LoadSnapshot(
      options_.fs, path,
      [&](absl::string_view key, absl::string_view value, uint64_t version, int64_t expire) {
        if (expire == 0 || expire > now) map_.Put(key, value, version, expire);
        return absl::OkStatus();
      });
  ++installs_;
  if (!meta.ok()) {
    // It verified a moment ago: the disk is failing. The old state is gone from
    // memory and disk and memory disagree; only a restart can recover.
    *broken = absl::DataLossError(absl::StrCat(
        "snapshot ", path, " verified but then failed to load: ", meta.status().message()));
    return *broken;
  }
  // Crash-safe order: the log first (an old snapshot with an empty log recovers
  // honestly to that snapshot's start), then the old snapshots, then the new one.
  absl::Status s = wal_->Reset(meta->start_index + 1);
  if (s.ok()) KV_FAILPOINT_CRASH(storage_failpoints::kInstallAfterLogReset);
  absl::StatusOr<std::vector<SnapshotMeta>> old = ListSnapshots(options_.fs, options_.dir);
  if (s.ok() && !old.ok()) s = old.status();
  if (s.ok()) {
    for (const SnapshotMeta& m : *old) {
      if (m.path == path) continue;
      if (s = options_.fs->Remove(m.path); !s.ok()) break;
    }
  }
  const std::string final_path = JoinPath(options_.dir, SnapshotFileName(meta->start_index));
  if (s.ok()) s = options_.fs->Rename(path, final_path);
  if (s.ok()) KV_FAILPOINT_CRASH(storage_failpoints::kInstallAfterRename);
  if (s.ok()) s = options_.fs->SyncDir(options_.dir);
  if (!s.ok()) {
    *broken = s;  // Half-installed: only a restart (recovery) can sort it out.
    return s;
  }
  meta->path = final_path;
  last_index_ = meta->start_index;
  locally_durable_ = meta->start_index;
  last_epoch_ = meta->epoch;
  epoch_starts_.clear();
  epoch_starts_[meta->start_index] = meta->epoch;
  epoch_ = std::max(epoch_, meta->epoch);
  complete_index_ = meta->end_index;
  last_snapshot_ = *meta;
  last_snapshot_micros_ = options_.clock->NowMicros();
  writes_since_snapshot_ = 0;
  {
    absl::MutexLock wi(&written_mu_);
    written_index_ = meta->start_index;
  }
  LOG(INFO) << "Installed snapshot " << final_path << ": " << meta->entries << " keys, indexes "
            << meta->start_index << ".." << meta->end_index;
  return meta;
}

}  // namespace kvstore

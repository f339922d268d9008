// The durable key-value store of one shard: KvMap in memory, Wal on disk,
// snapshots beside it. Storage only: no gRPC.
//
// Write path (group commit): Write() checks compare-and-set conditions, assigns
// log indexes and frames the records under one writer mutex, then queues them
// for the log thread. The log thread hands everything queued meanwhile to the
// OS in one write, fsyncs once if any waiting write asks for it (or the policy
// is "always"), and only then runs the writes' callbacks. So a write is
// acknowledged only after it is in the log, and an fsync covers every write
// that arrived while the previous one ran.
//
// Visibility: reads never wait for writes, and they see a write only once it
// would survive a crash as the configuration promises ("published"): in the log
// (everysec, no) or fsynced ("always"), and, while a commit gate is on (a
// leader with sync acks), once CommitThrough covers it. A write asking for an
// explicit durability is published when it is acknowledged. So a read never
// returns a write that a crash can still take back, and every acknowledged
// write is visible. Until then the write is "in flight": compare-and-set and
// deletes already see it (they are ordered after it in the log), but an answer
// that reveals it without writing anything (a version mismatch, a delete of a
// key it deleted) waits until it is published here (see conflict_index).
//
// A failed log write or fsync is never retried and never acknowledged: the store
// turns it into a sticky error (every later write fails) and calls
// on_fatal_error, which the server binaries set to crash so restart recovers.
#ifndef KVSTORE_COMMON_STORAGE_STORE_H_
#define KVSTORE_COMMON_STORAGE_STORE_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/storage/clock.h"
#include "common/storage/file_system.h"
#include "common/storage/kv_map.h"
#include "common/storage/snapshot.h"
#include "common/storage/wal.h"

namespace kvstore {

enum class FsyncPolicy { kAlways, kEverySec, kNo };
absl::StatusOr<FsyncPolicy> ParseFsyncPolicy(absl::string_view name);
absl::string_view FsyncPolicyName(FsyncPolicy policy);

// How durable a write must be before its callback runs.
enum class Durability {
  kDefault,  // As the fsync policy says: fsynced under "always", else written to the OS.
  kWritten,  // In the log, handed to the OS: survives a process crash.
  kFsynced,  // In the log and fsynced: survives a power cut.
};

struct StoreOptions {
  std::string dir;  // Holds wal-*.log segments and snap-*.snap files.
  FsyncPolicy fsync = FsyncPolicy::kEverySec;
  uint64_t segment_bytes = 64ull << 20;
  // Take a snapshot after this many writes (0 = never by count) ...
  uint64_t snapshot_every_writes = 1'000'000;
  // ... or this many seconds after the last one, if anything was written (0 = never by time).
  int64_t snapshot_every_seconds = 3600;
  size_t snapshots_to_keep = 2;
  FileSystem* fs = PosixFileSystem();
  Clock* clock = RealClock();
  // Runs the everysec fsync, active expiry and snapshot triggers in a thread.
  // Tests that drive time themselves turn it off and call the methods directly.
  bool background_maintenance = true;
#ifdef KV_FAULT_CONTROLS
  // Fault-suite control only (-DKV_FAULT_CONTROLS=ON, docs/reliability.md):
  // every waiter is answered once its records are handed to the OS, before
  // the fsync, so a power cut loses acknowledged writes. Never in a release.
  bool unsafe_ack_before_fsync = false;
#endif
  // Called once, from the log thread, when the log cannot be written or synced.
  std::function<void(const absl::Status&)> on_fatal_error;
  // Log kept for followers beyond what snapshots need (see SetLogRetentionFloor):
  // past this many bytes of log, segments go anyway and a follower that still
  // needed them gets a full resync.
  uint64_t retain_log_bytes = 1ull << 30;
  // Log kept for a resharding source (SetMigrationRetentionFloor).
  uint64_t migration_retain_log_bytes = 4ull << 30;
  // Observers for metrics, if set: each fsync of the log (on the log thread)
  // and each snapshot taken, with how long it took. Must not block.
  std::function<void(absl::Duration)> on_fsync;
  std::function<void(absl::Duration)> on_snapshot;
};

// One mutation of a batch.
struct Mutation {
  // kImport and kImportDelete carry a key moved from another shard
  // (docs/resharding.md): they keep that shard's `version` and absolute
  // `expire_unix_ms`, and are written only when `version` is above the
  // version this store holds for the key (expired or not), so replaying a
  // copy or a catch-up twice, or out of order, never moves a key backwards. An
  // import that has already expired, or an import delete of an absent key,
  // writes nothing. Neither takes `ttl_ms` or `if_version`.
  enum class Kind { kSet, kDelete, kImport, kImportDelete };
  Kind kind = Kind::kSet;
  std::string key;
  std::string value;
  uint64_t ttl_ms = 0;                 // 0 = never expires.
  std::optional<uint64_t> if_version;  // Compare-and-set: 0 = only if absent.
  uint64_t version = 0;                // kImport, kImportDelete only.
  int64_t expire_unix_ms = 0;          // kImport only; 0 = never expires.
};

struct MutationResult {
  // FAILED_PRECONDITION on a version mismatch (nothing written for this one);
  // UNAVAILABLE/INTERNAL when the store is closing or broken.
  absl::Status status;
  uint64_t version = 0;  // The write's version (0 when nothing was written); see version.h.
  uint64_t index = 0;    // The write's log index (0 when nothing was written).
  bool applied = false;  // For deletes: whether a key was removed.
  // When nothing was written (a version mismatch, a delete of an absent key)
  // because of a write still in flight: that write's index. The store answers
  // only once it is published here; a caller that publishes on more (replica
  // acks) must wait for this index as it would for its own write.
  uint64_t conflict_index = 0;
};

struct StoreStatus {
  uint64_t epoch = 0;
  uint64_t last_index = 0;
  uint64_t key_count = 0;
  uint64_t memory_bytes = 0;
  uint64_t log_first_index = 0;
  uint64_t log_last_index = 0;
  uint64_t log_durable_index = 0;
  uint32_t log_segments = 0;
  uint64_t log_bytes = 0;
  // Epoch of the record at last_index (0 when there is none).
  uint64_t last_epoch = 0;
  // The state is whole once last_index reaches this (a replica that installed a
  // fuzzy snapshot must replay the log through the snapshot's end index).
  uint64_t complete_index = 0;
  std::optional<SnapshotMeta> last_snapshot;
  double last_snapshot_seconds = 0;
  FsyncPolicy fsync = FsyncPolicy::kEverySec;
};

// Thread-safe. Callbacks run on the log thread or on the calling thread; they
// must not block and must not call Close().
class Store {
 public:
  using WriteCallback = std::function<void(std::vector<MutationResult>)>;

  // Recovers from `options.dir`: the newest snapshot that loads cleanly, then the
  // log after it. Fails with DataLoss (file and offset named) on damage that is
  // not a torn tail; see wal.h.
  static absl::StatusOr<std::unique_ptr<Store>> Open(StoreOptions options);

  // Flushes and fsyncs everything. Same as Close().
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Copies a live key's value, version and expiry (Unix ms, 0 = never; when
  // not null) as published (see the top of this file). False if absent or
  // expired.
  bool Get(absl::string_view key, std::string* value, uint64_t* version,
           int64_t* expire_unix_ms = nullptr) const;

  // One page of a scan of the live, published keys, from `from` (a default
  // position starts one). Holds no lock between pages; the guarantee and the
  // cost are KvMap::Scan's (kv_map.h). A reader checks CheckReadable and
  // install_generation() around it, as for Get.
  KvMap::ScanPage Scan(const KvMap::ScanPosition& from, const KvMap::ScanOptions& options) const;

  // Whether reads show a whole state: UNAVAILABLE while a snapshot install
  // replaces the map, or while the log has not yet reached an installed
  // snapshot's end index (a fuzzy snapshot alone may miss keys). A reader
  // checks it, reads, and discards what it read if install_generation()
  // changed meanwhile.
  absl::Status CheckReadable() const;
  uint64_t install_generation() const { return installs_.load(std::memory_order_acquire); }

  // Applies the batch in order and calls `done` exactly once with one result per
  // mutation, once every written mutation is as durable as `durability` asks.
  // Mutations are independent: one failing its condition does not stop the others.
  void Write(std::vector<Mutation> batch, Durability durability, WriteCallback done);

  // Writes a snapshot now and removes what it makes unnecessary (older snapshots
  // beyond snapshots_to_keep, log segments they cover). One at a time.
  absl::StatusOr<SnapshotMeta> TakeSnapshot();

  // Returns once everything written so far is fsynced.
  [[nodiscard]] absl::Status SyncLog();

  // Reclaims up to `max` expired keys; returns how many.
  size_t EvictExpired(size_t max);

  // Stops accepting writes, waits for queued ones, fsyncs. Idempotent.
  [[nodiscard]] absl::Status Close();

  StoreStatus GetStatus() const;
  uint64_t last_index() const;
  uint64_t epoch() const;
  // Epoch of the record at last_index() (0 when the store holds none).
  uint64_t last_epoch() const;
  // Highest index this store holds durably: fsynced under fsync=always, handed
  // to the OS under everysec and no (it then survives a crash of the process,
  // not of the machine). What a follower may acknowledge.
  uint64_t durable_index() const;

  // Commit gate (a leader with sync acks): while on, a write of default
  // durability is published only once it is durable here and CommitThrough
  // has reached its index. The replication layer calls CommitThrough with the
  // index its in-sync followers hold durably, before it acknowledges the
  // writes that waited for it. Turning the gate on starts the commit index at
  // the current last index (what was written before is already published).
  void SetCommitGate(bool on);
  void CommitThrough(uint64_t index);
  // Publishes the writes at indexes first..last now (those still in flight and
  // durable here): a write acknowledged on a condition other than the gate's
  // (a per-request replica count) is visible when it is acknowledged.
  void MakeVisible(uint64_t first, uint64_t last);

  // Write admission. A fenced store refuses Write (UNAVAILABLE, nothing
  // applied) until StartEpoch opens it again: a node that steps down fences its
  // store before it tells anyone its position, so no write admitted before the
  // step-down can take an index after it. A store opens unfenced.
  void Fence();
  // Opens a store fenced by Fence again without a new epoch: only for a
  // leader that fenced it to pause writes (a leadership transfer that did not
  // happen) and still leads the epoch it wrote last.
  void Unfence();
  const std::string& dir() const { return options_.dir; }
  FileSystem* fs() const { return options_.fs; }

  // ---- Replication, leader side -------------------------------------------

  // Highest index handed to the OS by the log thread (readable with a LogCursor).
  uint64_t written_index() const;
  // Waits until written_index() > after, or `timeout`; returns written_index().
  uint64_t WaitForWritten(uint64_t after, absl::Duration timeout) const;

  // Starts epoch `epoch` (> epoch()): writes an epoch record carrying `leader`,
  // fsynced, before returning. Every later record carries the new epoch.
  // FAILED_PRECONDITION if epoch <= epoch(), or if the store is not whole
  // (last_index < complete_index: it must not assign indexes yet).
  absl::Status StartEpoch(uint64_t epoch, absl::string_view leader);

  // The lowest log index some follower still needs (0: none). Snapshots then
  // keep log segments from there on, within retain_log_bytes.
  void SetLogRetentionFloor(std::function<uint64_t()> floor);
  // A second floor, for a resharding source (docs/resharding.md): the log
  // from `index` on is kept while it is at most
  // StoreOptions::migration_retain_log_bytes. 0 clears it.
  void SetMigrationRetentionFloor(uint64_t index);
  // Every write at or below this index is published (readable and part of any
  // scan that starts now); the writes above it are still in flight.
  uint64_t published_through() const;

  // Newest snapshot on disk that reads back whole (every checksum verified;
  // damaged ones are logged and skipped), taking a new one if none does.
  absl::StatusOr<SnapshotMeta> NewestSnapshot();

  // ---- Replication, follower side -----------------------------------------

  // Applies log records received from the leader (the storage format, indexes
  // first..last contiguous and checked) and appends them to this log unchanged.
  // Records at or below last_index() are skipped (a resend after a reconnect).
  // `done` runs once they are in the log and, under fsync=always, fsynced; it
  // gets an error (and nothing is applied) when the records are malformed,
  // leave a gap, or carry epoch 0 (which no leader writes).
  void AppendReplicated(absl::string_view records, std::function<void(const absl::Status&)> done);

  // Calls `done` once everything through `index` (<= last_index()) is as
  // durable as durable_index() counts, at once if it already is: a follower's
  // new stream acks what an old one delivered but had not yet made durable.
  void WhenDurable(uint64_t index, std::function<void(const absl::Status&)> done);

  // Replaces the whole state with the snapshot file at `path` (a complete file
  // in this store's directory, e.g. received from the leader): every snapshot
  // and log segment here is removed, the file becomes this store's snapshot and
  // the log restarts at its start_index + 1. The state is whole again once the
  // log reaches its end_index. The file is verified first: one that does not
  // read back whole is removed and changes nothing here (DATA_LOSS).
  //
  // Records at or below last_index() that AppendReplicated receives again are
  // skipped only when their epoch matches this log's (FAILED_PRECONDITION
  // otherwise: the logs diverged), and confirmed only once durable here.
  absl::StatusOr<SnapshotMeta> InstallSnapshot(const std::string& path);

 private:
  struct Pending {
    uint64_t last_index;  // Highest index this waiter needs in the log.
    bool needs_sync;
    std::function<void(const absl::Status&)> done;
    // Writes of this waiter published as soon as it is answered (explicit
    // durability); 0..0 = none.
    uint64_t publish_first = 0;
    uint64_t publish_last = 0;
  };
  // A write in the log (or queued for it) that reads do not see yet.
  struct InFlightOp {
    uint64_t index = 0;
    std::string key;
    std::string value;  // Moved from the Mutation; the map copies it once, when published.
    uint64_t version = 0;
    int64_t expire_unix_ms = 0;
    bool is_delete = false;
    // Published ahead of older writes (an explicit range): it stays, as a
    // tombstone, until every older one has left the front.
    bool published = false;
  };
  // Per key with writes in flight: the newest of them (what conditions see),
  // and the newest one published meanwhile (an older one published later must
  // not overwrite it).
  struct KeyInFlight {
    uint64_t version = 0;
    int64_t expire_unix_ms = 0;
    bool is_delete = false;
    uint64_t index = 0;
    uint64_t published_version = 0;
    uint32_t count = 0;
  };

  explicit Store(StoreOptions options);
  [[nodiscard]] absl::Status Recover();
  void LogThread(int64_t first_fsync_due);
  // A group of queued records and their waiters, taken by a writer that
  // flushes inline.
  struct InlineGroup {
    std::string records;
    uint64_t first = 0;  // Indexes of the records (when there are any).
    uint64_t last = 0;
    std::deque<Pending> waiters;
  };
  // With flushing_ set by the caller: moves what is queued to `group` and
  // returns true, or clears flushing_ and returns false when the log thread
  // must take it (a waiter needs an fsync, closing, broken, nothing queued).
  bool TakeInlineGroupLocked(InlineGroup* group) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves inline_group_, then what is queued meanwhile, to the log on the
  // calling thread (see store.cc). Called by a writer that took the group.
  void FlushInline();
  absl::StatusOr<SnapshotMeta> InstallSnapshotLocked(const std::string& path, absl::Status* broken);
  void MaintenanceThread();
  bool HasLogWork() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Queues `*done` (moved) to run once `index` is durable (see durable_index)
  // and returns true; false, leaving it, when that is already so.
  bool QueueUntilDurableLocked(uint64_t index, std::function<void(const absl::Status&)>* done)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Version a condition sees for `key`: the newest write in flight, else the
  // map's. *conflict = that write's index (0 when the map answered);
  // *in_flight = the key's entry in in_flight_keys_ (null when it has none),
  // valid until in_flight_keys_ next changes.
  uint64_t CurrentVersionLocked(absl::string_view key, int64_t now_unix_ms, uint64_t* conflict,
                                KeyInFlight** in_flight) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Publish in-flight writes: every one through `through`, in index order; or
  // those at first..last.
  void PublishThroughLocked(uint64_t through) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PublishRangeLocked(uint64_t first, uint64_t last) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Applies one unpublished write to the map and marks it published (it
  // leaves in_flight_ when it reaches the front: PopPublishedLocked).
  void PublishOneLocked(InFlightOp& op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PopPublishedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After everything through `index` became durable here (written, or fsynced
  // under "always"; 0 = nothing new): publishes what the gate allows, then the
  // explicit ranges of the waiters about to be answered (only those that need
  // no fsync, if `only_unsynced_waiters`). Takes mu_.
  void PublishDurable(uint64_t index, const std::deque<Pending>& answered,
                      bool only_unsynced_waiters);
  // Epoch of this log's record at `index` (0 when unknown: outside the log).
  uint64_t EpochAtLocked(uint64_t index) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Makes the log error sticky and tells on_fatal_error. Call without mu_ held.
  void Fail(const absl::Status& status);

  const StoreOptions options_;
  KvMap map_;
  const int64_t opened_micros_;

  // Writers: CAS checks, index assignment, framing and map updates.
  mutable absl::Mutex mu_;
  uint64_t last_index_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t epoch_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t last_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t complete_index_ ABSL_GUARDED_BY(mu_) = 0;
  // First index of each epoch in this log (and the snapshot's start), for
  // EpochAtLocked.
  std::map<uint64_t, uint64_t> epoch_starts_ ABSL_GUARDED_BY(mu_);
  bool fenced_ ABSL_GUARDED_BY(mu_) = false;
  // Writes not yet published, in index order (appended as Write assigns
  // indexes, under mu_), and their keys (see the top). The front is never a
  // published one; a write published out of order waits as a tombstone.
  std::deque<InFlightOp> in_flight_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, KeyInFlight> in_flight_keys_ ABSL_GUARDED_BY(mu_);
  // Highest index durable here as the policy counts it (published up to the gate).
  uint64_t locally_durable_ ABSL_GUARDED_BY(mu_) = 0;
  bool commit_gate_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t commit_index_ ABSL_GUARDED_BY(mu_) = 0;
  // Counts snapshot installs' starts and ends: odd while the map is replaced.
  std::atomic<uint64_t> installs_{0};
  std::function<uint64_t()> retention_floor_ ABSL_GUARDED_BY(mu_);
  uint64_t migration_floor_ ABSL_GUARDED_BY(mu_) = 0;
  std::string queued_records_ ABSL_GUARDED_BY(mu_);  // Framed, not yet in the log.
  uint64_t queued_first_index_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<Pending> waiters_ ABSL_GUARDED_BY(mu_);
  absl::Status fatal_ ABSL_GUARDED_BY(mu_);
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  bool log_thread_done_ ABSL_GUARDED_BY(mu_) = false;
  // Held by whoever moves records from queued_records_ to the log (the log
  // thread or a writer in FlushInline), from taking them until their waiters
  // are answered: one at a time, so the log gets them in index order.
  bool flushing_ ABSL_GUARDED_BY(mu_) = false;
  // Used only by the writer that holds flushing_ for FlushInline (set and
  // cleared under mu_, so one at a time); a member so that its buffers are
  // reused from one group to the next.
  InlineGroup inline_group_;
  uint64_t writes_since_snapshot_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<SnapshotMeta> last_snapshot_ ABSL_GUARDED_BY(mu_);
  double last_snapshot_seconds_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_snapshot_micros_ ABSL_GUARDED_BY(mu_) = 0;

  // The log is used by one thread at a time: the log thread, or a snapshot
  // pruning segments. Never held together with mu_.
  absl::Mutex wal_mu_;
  std::unique_ptr<Wal> wal_;  // Set in Recover(); mutated under wal_mu_.

  absl::Mutex snapshot_mu_;  // One snapshot at a time.

  // written_index_: set by the log thread after each append; its own mutex so
  // that followers' senders waiting on it never contend with writers.
  mutable absl::Mutex written_mu_;
  uint64_t written_index_ ABSL_GUARDED_BY(written_mu_) = 0;

  std::thread log_thread_;
  std::thread maintenance_thread_;
};

}  // namespace kvstore

#endif  // KVSTORE_COMMON_STORAGE_STORE_H_

// The keys and values of a cluster in etcd, under one prefix (--etcd-prefix,
// default /kvstore/<cluster>), as docs/failover.md §1 lists them. Values are
// JSON objects so that `etcdctl get --prefix` is readable. Pure: no I/O.
//
//   <P>/cluster                     {format, epoch_base, vnodes}
//   <P>/shards/<s>/spec             {format}
//   <P>/shards/<s>/leader           {id, addr, epoch}        (LeaderKey, leader_key.h)
//   <P>/shards/<s>/members/<id>     {addr, state, last_epoch, durable_index}
//   <P>/shards/<s>/isr              {epoch, members}          (the leader, guarded)
//   <P>/shards/<s>/position         {epoch, index, max_lag, unix_ms} (the leader, guarded; async)
//   <P>/shards/<s>/handoff          HandoffRecord (kvctl promote, guarded by the leader key)
//   <P>/shards/<s>/last_handoff     HandoffOutcome (the old leader, guarded)
//   <P>/ring                        {format, version, vnodes, shards[, draining]}
//   <P>/migrations/active           {id}    (create-if-absent: one at a time)
//   <P>/migrations/<id>             MigrationRecord           (kvctl creates; the driver advances)
//   <P>/migrations/<id>/sources/<s> SourceProgress            (the driver; add)
//   <P>/migrations/<id>/sources/<s>/to/<d>  SourceProgress    (the driver; remove,
//                                   one per stage)
//   <P>/routers/<id>                RouterRecord  (each router, on its own lease)
#ifndef KVSTORE_COMMON_COORD_SCHEMA_H_
#define KVSTORE_COMMON_COORD_SCHEMA_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/ring/hash_ring.h"

namespace kvstore::coord {

// Above any epoch a static-mode cluster reaches (each restart or promotion
// adds one): the epoch_base `kvctl cluster init` uses when it cannot ask the
// nodes, so moving to etcd mode never lowers an epoch.
inline constexpr int64_t kDefaultEpochBase = int64_t{1} << 20;

// "/kvstore/<cluster>", or "/kvstore/default" for an unnamed cluster.
std::string DefaultPrefix(absl::string_view cluster);
// The prefix without trailing slashes ("/" stays "").
std::string NormalizePrefix(absl::string_view prefix);

std::string ClusterKey(absl::string_view prefix);
// Every key of every shard: "<P>/shards/".
std::string ShardsPrefix(absl::string_view prefix);
// Every key of shard `shard`: "<P>/shards/<s>/".
std::string ShardPrefix(absl::string_view prefix, absl::string_view shard);
std::string ShardSpecKey(absl::string_view prefix, absl::string_view shard);
std::string ShardLeaderKey(absl::string_view prefix, absl::string_view shard);
std::string MembersPrefix(absl::string_view prefix, absl::string_view shard);
std::string MemberKey(absl::string_view prefix, absl::string_view shard, absl::string_view id);
std::string IsrKey(absl::string_view prefix, absl::string_view shard);

struct ClusterRecord {
  int format = 1;
  int64_t epoch_base = 0;
  int vnodes = 0;
};
std::string ClusterValue(const ClusterRecord& record);
// INVALID_ARGUMENT when it is not what ClusterValue writes.
absl::StatusOr<ClusterRecord> ParseClusterValue(absl::string_view value);

// What a member says of itself. state: "leader", "replica", "deposed" (its
// role), or what keeps its store from being whole: "installing" (a snapshot
// install has not completed), "empty" (it holds no entry at all).
struct MemberRecord {
  std::string id;
  std::string addr;
  std::string state;
  uint64_t last_epoch = 0;
  uint64_t durable_index = 0;
  bool operator==(const MemberRecord& o) const {
    return id == o.id && addr == o.addr && state == o.state && last_epoch == o.last_epoch &&
           durable_index == o.durable_index;
  }
  bool operator!=(const MemberRecord& o) const { return !(*this == o); }
};
// The id is the key's last part, not part of the value.
std::string MemberValue(const MemberRecord& record);
absl::StatusOr<MemberRecord> ParseMemberValue(absl::string_view id, absl::string_view value);

// The in-sync set of a sync-mode leadership: the leader of `epoch` and the
// followers that hold every write it acknowledged (docs/failover.md). Ids,
// sorted, the leader first.
struct IsrRecord {
  int64_t epoch = 0;
  std::vector<std::string> members;
  bool Contains(absl::string_view id) const;
};
std::string IsrValue(const IsrRecord& record);
absl::StatusOr<IsrRecord> ParseIsrValue(absl::string_view value);

// Where the last leader of a shard had got to (async mode): written by the
// leader, guarded by its leader key, at most every member refresh, and NOT on
// a lease, so it outlives the leader. An election refuses a member more than
// `max_lag` entries behind `index` (the leader's --max-lag-on-failover; 0 =
// no limit): losing that many acknowledged writes needs an operator's
// `kvctl promote --force`.
struct PositionRecord {
  int64_t epoch = 0;
  uint64_t index = 0;  // The leader's durable index.
  uint64_t max_lag = 0;
  int64_t unix_ms = 0;
  bool operator==(const PositionRecord& o) const {
    return epoch == o.epoch && index == o.index && max_lag == o.max_lag;
  }
};
std::string PositionKey(absl::string_view prefix, absl::string_view shard);
std::string PositionValue(const PositionRecord& record);
absl::StatusOr<PositionRecord> ParsePositionValue(absl::string_view value);

// A graceful leadership transfer asked for by `kvctl promote SHARD [--to ID]`
// (docs/failover.md §8a): the leader `from`, whose leadership's leader key
// has create revision `leader_create_revision`, pauses writes until `to`
// holds its whole log, then resigns; the election prefers `to`
// (coord::ChooseCandidate) until `deadline_unix_ms`. Not on a lease: the new
// leader deletes it once elected, and any leader deletes one past its
// deadline or meant for another leadership. `id` is chosen by kvctl and
// names the request in the outcome.
struct HandoffRecord {
  std::string id;
  std::string from;
  std::string to;
  int64_t leader_create_revision = 0;
  int64_t deadline_unix_ms = 0;
  bool force = false;  // Hand off even to a member that is behind or ineligible.
  bool operator==(const HandoffRecord& o) const {
    return id == o.id && from == o.from && to == o.to &&
           leader_create_revision == o.leader_create_revision &&
           deadline_unix_ms == o.deadline_unix_ms && force == o.force;
  }
  bool operator!=(const HandoffRecord& o) const { return !(*this == o); }
};
std::string HandoffKey(absl::string_view prefix, absl::string_view shard);
std::string HandoffValue(const HandoffRecord& record);
absl::StatusOr<HandoffRecord> ParseHandoffValue(absl::string_view value);

// What the old leader did with handoff `id`: result "transferred" (it resigned
// after `to` reached `leader_index`, or with force `lacked` entries short of
// it) or "not_caught_up" (writes resumed, nothing changed), and how long its
// writes were paused.
struct HandoffOutcome {
  std::string id;
  std::string from;
  std::string to;
  std::string result;
  int64_t pause_ms = 0;
  uint64_t leader_index = 0;  // The old leader's last index while paused.
  uint64_t lacked = 0;        // Entries `to` lacked when the leader resigned or gave up.
  int64_t epoch = 0;          // The old leader's epoch.
  bool operator==(const HandoffOutcome& o) const {
    return id == o.id && from == o.from && to == o.to && result == o.result &&
           pause_ms == o.pause_ms && leader_index == o.leader_index && lacked == o.lacked &&
           epoch == o.epoch;
  }
};
inline constexpr char kHandoffTransferred[] = "transferred";
inline constexpr char kHandoffNotCaughtUp[] = "not_caught_up";
std::string LastHandoffKey(absl::string_view prefix, absl::string_view shard);
std::string HandoffOutcomeValue(const HandoffOutcome& outcome);
absl::StatusOr<HandoffOutcome> ParseHandoffOutcomeValue(absl::string_view value);

// The leader key's value as a plain record (what a watch or a reader that
// does not need revisions sees). epoch is 0 until the winner confirmed it.
struct LeaderValueRecord {
  std::string id;
  std::string addr;
  int64_t epoch = 0;
};
absl::StatusOr<LeaderValueRecord> ParseLeaderJson(absl::string_view value);

// The ring every router routes by and every shard checks ownership by
// (docs/ring.md, docs/resharding.md). The tokens of each shard are its name
// and "#" and 0 .. vnodes-1, hashed (common/ring/hash_ring.h); `shards` is
// sorted. `version` grows by one with each cutover. `draining` names the
// shard a removal is moving out and the shards it has handed its ranges to
// (HashRing's drain rule, docs/ring.md); its JSON field
// {"draining": {"shard", "handed_to"}} is absent when no shard drains.
struct RingRecord {
  int format = 1;
  int64_t version = 0;
  int vnodes = 0;
  std::vector<std::string> shards;
  RingDrain draining;
};
std::string RingKey(absl::string_view prefix);
// Sorts the shard names (and handed_to).
std::string RingValue(RingRecord record);
// INVALID_ARGUMENT when it is not what RingValue writes (or lists a name
// twice, or drains a shard not in it, or hands to one not in it).
absl::StatusOr<RingRecord> ParseRingValue(absl::string_view value);
// The ring every node, router and tool computes owners by: the record's
// shards, vnodes and drain. The one way from a RingRecord to a HashRing.
absl::StatusOr<HashRing> BuildRing(const RingRecord& record);
// The ring stage `destination` of removing `shard` publishes after `from`:
// one version later, `shard` draining into from's handed_to plus
// `destination`; or, for the last stage, the ring without `shard` (which
// owns the same: see HashRing).
RingRecord RemoveStageRing(const RingRecord& from, absl::string_view shard,
                           absl::string_view destination, bool last);

// One resharding (docs/resharding.md). kvctl creates it (phase "copy") with
// `<P>/migrations/active` in one Txn; the driver (the leader of `shard`)
// advances the phase; kvctl may set `throttle_bytes_per_second`, `paused` and
// `cancel_requested`.
struct MigrationRecord {
  std::string id;
  std::string kind;   // "add" or "remove"
  std::string shard;  // The shard added or removed.
  // The ring it (a remove: its current stage) starts from and the one it
  // publishes at cutover (to.version == from_version + 1). `from` is absent
  // in an add record written before removals existed: its ring is then `to`
  // without `shard`.
  int64_t from_version = 0;
  std::optional<RingRecord> from;
  RingRecord to;
  // A remove moves `shard`'s ranges to one destination per stage, in this
  // order; `stage` is the index of the one in progress, driven by the leader
  // of stages[stage]. Empty for an add.
  std::vector<std::string> stages;
  int stage = 0;
  // copy -> catchup -> cutover -> switched -> cleanup -> done; or, from any
  // phase before switched, -> cancelled. "catchup" is entered again when a
  // cutover does not commit within cutover_max_pause_ms.
  std::string phase;
  int64_t throttle_bytes_per_second = 32 << 20;
  bool paused = false;
  bool cancel_requested = false;
  int64_t cutover_max_pause_ms = 1000;
  int64_t handoff_lag = 1000;        // Entries behind the source at which cutover starts.
  std::string copy_from = "leader";  // "leader" or "replica"
  int64_t created_unix_ms = 0;
  int64_t finished_unix_ms = 0;
  std::string error;  // The last error the driver met (empty when none).
};
std::string MigrationsPrefix(absl::string_view prefix);    // "<P>/migrations/"
std::string ActiveMigrationKey(absl::string_view prefix);  // "<P>/migrations/active"
std::string MigrationKey(absl::string_view prefix, absl::string_view id);
std::string MigrationSourcesPrefix(absl::string_view prefix, absl::string_view id);
std::string MigrationSourceKey(absl::string_view prefix, absl::string_view id,
                               absl::string_view source);
// Where the driver keeps the progress of `source` in `record`'s current
// step: MigrationSourceKey for an add; for a remove one key per stage,
// "<P>/migrations/<id>/sources/<source>/to/<stages[stage]>".
std::string MigrationProgressKey(absl::string_view prefix, const MigrationRecord& record,
                                 absl::string_view source);
// The source named by a key under MigrationSourcesPrefix: the part before
// any "/to/<destination>".
std::string ProgressKeySource(absl::string_view key_after_sources_prefix);
std::string ActiveMigrationValue(absl::string_view id);
absl::StatusOr<std::string> ParseActiveMigrationValue(absl::string_view value);
std::string MigrationValue(const MigrationRecord& record);
absl::StatusOr<MigrationRecord> ParseMigrationValue(absl::string_view value);

// What the driver reports of one source shard of a migration.
struct SourceProgress {
  std::string source;          // The key's last part, not part of the value.
  std::string destination;     // The shard that receives its ranges.
  std::string phase;           // copy, catchup, fenced, switched, cleanup, done
  uint64_t start_index = 0;    // I0: the source log index the copy started after.
  std::string cursor;          // Copy position (opaque, base64 of the scan cursor).
  uint64_t applied_index = 0;  // Source log index applied on the destination.
  uint64_t applied_epoch = 0;  // Epoch of the source's record at applied_index.
  // The destination leader's epoch when it wrote this: a leader of another
  // epoch trusts the checkpoint only if the imports it covers were committed
  // on the in-sync followers (sync acks).
  uint64_t destination_epoch = 0;
  uint64_t source_index = 0;  // Source's committed index when last asked.
  uint64_t fence_index = 0;
  uint64_t keys_copied = 0;
  uint64_t bytes_copied = 0;
  uint64_t keys_estimate = 0;
  uint64_t bytes_estimate = 0;
  uint64_t keys_cleaned = 0;
  double rate_bytes_per_second = 0;
  int64_t last_cutover_pause_ms = 0;
  int64_t retries = 0;   // Cutovers that did not commit in time.
  int64_t restarts = 0;  // Copies restarted from the beginning, and why in `error`.
  std::string error;
  int64_t updated_unix_ms = 0;
};
std::string SourceProgressValue(const SourceProgress& progress);
absl::StatusOr<SourceProgress> ParseSourceProgressValue(absl::string_view source,
                                                        absl::string_view value);

// What a router in etcd mode says of itself, on its own lease (so the key
// goes when the router does): the ring and topology it routes by now. The
// cleanup of a migration waits until every registered router reports the
// migration's ring version (docs/resharding.md).
struct RouterRecord {
  std::string id;  // The key's last part, not part of the value.
  std::string addr;
  int64_t ring_version = 0;       // Of the routing table in use (0: no ring key).
  int64_t topology_revision = 0;  // The etcd revision that table reflects.
  int64_t started_unix_ms = 0;
  bool operator==(const RouterRecord& o) const {
    return id == o.id && addr == o.addr && ring_version == o.ring_version &&
           topology_revision == o.topology_revision && started_unix_ms == o.started_unix_ms;
  }
};
std::string RoutersPrefix(absl::string_view prefix);  // "<P>/routers/"
std::string RouterKey(absl::string_view prefix, absl::string_view id);
std::string RouterValue(const RouterRecord& record);
// INVALID_ARGUMENT when it is not what RouterValue writes.
absl::StatusOr<RouterRecord> ParseRouterValue(absl::string_view id, absl::string_view value);

}  // namespace kvstore::coord

#endif  // KVSTORE_COMMON_COORD_SCHEMA_H_

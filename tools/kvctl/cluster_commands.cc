#include "tools/kvctl/cluster_commands.h"

#include <algorithm>
#include <map>
#include <optional>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/coord/eligibility.h"
#include "common/coord/schema.h"
#include "common/coord/txn.h"
#include "nlohmann/json.hpp"

namespace kvstore {
namespace {

struct ShardView {
  std::optional<mvccpb::KeyValue> leader;
  std::vector<coord::MemberRecord> members;
  std::optional<coord::IsrRecord> isr;
  std::optional<coord::PositionRecord> position;  // The last async leader's.
  std::optional<coord::HandoffRecord> handoff;    // A pending graceful transfer.
  std::optional<coord::HandoffOutcome> last_handoff;
  bool has_spec = false;
};

// The kv of the Range at `index` of a Txn's answer, when it found the key.
std::optional<mvccpb::KeyValue> RangeAnswer(const etcdserverpb::TxnResponse& response, int index) {
  if (index >= response.responses_size() || !response.responses(index).has_response_range() ||
      response.responses(index).response_range().kvs_size() != 1) {
    return std::nullopt;
  }
  return response.responses(index).response_range().kvs(0);
}

nlohmann::json RingJson(const coord::RingRecord& ring) {
  nlohmann::json out = {
      {"version", ring.version}, {"vnodes", ring.vnodes}, {"shards", ring.shards}};
  if (!ring.draining.empty()) {
    out["draining"] = {{"shard", ring.draining.shard}, {"handed_to", ring.draining.handed_to}};
  }
  return out;
}

// ", draining s1 (handed to s0,s2)" or nothing.
std::string DrainText(const coord::RingRecord& ring) {
  if (ring.draining.empty()) return "";
  return absl::StrCat(", draining ", ring.draining.shard, " (handed to ",
                      ring.draining.handed_to.empty() ? std::string("none yet")
                                                      : absl::StrJoin(ring.draining.handed_to, ","),
                      ")");
}

// A cluster initialised before `cluster init` wrote the ring: writes ring
// version 1 with the shards that have a spec and the cluster record's vnodes
// (what the routers route by), if the topology file says the same, guarded by
// the cluster record it read.
absl::StatusOr<std::string> AddMissingRing(coord::EtcdClient* etcd, const std::string& prefix,
                                           const Topology& topology,
                                           const mvccpb::KeyValue& cluster_kv, bool json) {
  absl::StatusOr<coord::ClusterRecord> cluster = coord::ParseClusterValue(cluster_kv.value());
  if (!cluster.ok()) return cluster.status();
  const std::string shards_prefix = coord::ShardsPrefix(prefix);
  coord::RangeOptions all;
  all.prefix = true;
  absl::StatusOr<coord::RangeResult> range = etcd->Range(shards_prefix, all);
  if (!range.ok()) return range.status();
  coord::RingRecord ring;
  ring.version = 1;
  ring.vnodes = cluster->vnodes;
  for (const mvccpb::KeyValue& kv : range->kvs) {
    absl::string_view rest = absl::string_view(kv.key()).substr(shards_prefix.size());
    if (absl::ConsumeSuffix(&rest, "/spec") && !absl::StrContains(rest, '/')) {
      ring.shards.emplace_back(rest);
    }
  }
  std::sort(ring.shards.begin(), ring.shards.end());
  std::vector<std::string> file_names = topology.ShardNames();
  std::sort(file_names.begin(), file_names.end());
  const std::string cluster_key = coord::ClusterKey(prefix);
  if (file_names != ring.shards || topology.vnodes != ring.vnodes) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s exists already and %s does not, but the cluster in etcd (shards %s, vnodes %d) is "
        "not the one in the file (shards %s, vnodes %d); nothing was written",
        cluster_key, coord::RingKey(prefix), absl::StrJoin(ring.shards, ","), ring.vnodes,
        absl::StrJoin(file_names, ","), topology.vnodes));
  }
  etcdserverpb::TxnRequest txn;
  *txn.add_compare() = coord::ModRevisionIs(cluster_key, cluster_kv.mod_revision());
  *txn.add_compare() = coord::CreateRevisionIs(coord::RingKey(prefix), 0);
  *txn.add_success() = coord::PutOp(coord::RingKey(prefix), coord::RingValue(ring));
  absl::StatusOr<etcdserverpb::TxnResponse> response = etcd->Txn(txn);
  if (!response.ok()) return response.status();
  if (!response->succeeded()) {
    return absl::AbortedError(absl::StrCat(cluster_key, " or ", coord::RingKey(prefix),
                                           " changed meanwhile; nothing was written, try again"));
  }
  if (json) {
    nlohmann::json out = {{"prefix", coord::NormalizePrefix(prefix)},
                          {"already_initialised", true},
                          {"ring", RingJson(ring)},
                          {"revision", response->header().revision()}};
    return out.dump() + "\n";
  }
  return absl::StrFormat(
      "%s was initialised already; wrote the ring it lacked: version 1, vnodes %d, shards %s\n",
      coord::NormalizePrefix(prefix), ring.vnodes, absl::StrJoin(ring.shards, ","));
}
}  // namespace

absl::StatusOr<std::string> ClusterInit(coord::EtcdClient* etcd, const std::string& prefix,
                                        const Topology& topology, const EpochProbe& epoch_of,
                                        bool json) {
  uint64_t highest = 0;
  std::vector<std::string> asked;
  std::vector<std::string> unreachable;
  for (const ShardTopology& shard : topology.shards) {
    std::vector<std::string> nodes = shard.replicas;
    nodes.insert(nodes.begin(), shard.leader);
    for (const std::string& address : nodes) {
      absl::StatusOr<uint64_t> epoch = epoch_of(address);
      if (!epoch.ok()) {
        unreachable.push_back(address);
        continue;
      }
      asked.push_back(address);
      highest = std::max(highest, *epoch);
    }
  }
  coord::ClusterRecord record;
  record.epoch_base =
      std::max<int64_t>(coord::kDefaultEpochBase, static_cast<int64_t>(highest) + 1);
  record.vnodes = topology.vnodes;

  std::vector<std::string> names = topology.ShardNames();
  coord::RingRecord ring;
  ring.version = 1;
  ring.vnodes = topology.vnodes;
  ring.shards = names;

  // The cluster record, the ring version 1 and the specs appear together or
  // not at all: a router or shard never sees a cluster without its ring.
  const std::string cluster_key = coord::ClusterKey(prefix);
  const std::string ring_key = coord::RingKey(prefix);
  etcdserverpb::TxnRequest txn;
  *txn.add_compare() = coord::CreateRevisionIs(cluster_key, 0);
  *txn.add_compare() = coord::CreateRevisionIs(ring_key, 0);
  *txn.add_success() = coord::PutOp(cluster_key, coord::ClusterValue(record));
  *txn.add_success() = coord::PutOp(ring_key, coord::RingValue(ring));
  for (const ShardTopology& shard : topology.shards) {
    *txn.add_success() = coord::PutOp(coord::ShardSpecKey(prefix, shard.name), R"({"format":1})");
  }
  *txn.add_failure() = coord::RangeOp(cluster_key);
  *txn.add_failure() = coord::RangeOp(ring_key);
  absl::StatusOr<etcdserverpb::TxnResponse> response = etcd->Txn(txn);
  if (!response.ok()) return response.status();
  if (!response->succeeded()) {
    const std::optional<mvccpb::KeyValue> existing_cluster = RangeAnswer(*response, 0);
    const std::optional<mvccpb::KeyValue> existing_ring = RangeAnswer(*response, 1);
    if (existing_cluster && !existing_ring) {
      // Initialised before the ring was kept in etcd: add it, as the routers
      // route now.
      return AddMissingRing(etcd, prefix, topology, *existing_cluster, json);
    }
    if (existing_cluster) {
      return absl::FailedPreconditionError(
          absl::StrCat(cluster_key, " exists already (", existing_cluster->value(),
                       "): the cluster is initialised; nothing was written"));
    }
    return absl::FailedPreconditionError(absl::StrCat(
        ring_key, " exists already (", existing_ring ? existing_ring->value() : std::string("?"),
        ") but ", cluster_key, " does not; nothing was written"));
  }
  if (json) {
    nlohmann::json out = {{"prefix", coord::NormalizePrefix(prefix)},
                          {"epoch_base", record.epoch_base},
                          {"vnodes", record.vnodes},
                          {"shards", names},
                          {"nodes_asked", asked},
                          {"nodes_unreachable", unreachable},
                          {"highest_epoch_found", highest},
                          {"ring", RingJson(ring)},
                          {"revision", response->header().revision()}};
    return out.dump() + "\n";
  }
  return absl::StrFormat(
      "initialised %s: epoch_base=%d vnodes=%d shards=%s ring_version=1 (asked %d of %d nodes for "
      "their epoch, highest %d%s)\n",
      coord::NormalizePrefix(prefix), record.epoch_base, record.vnodes, absl::StrJoin(names, ","),
      asked.size(), asked.size() + unreachable.size(), highest,
      unreachable.empty() ? std::string()
                          : absl::StrCat("; unreachable: ", absl::StrJoin(unreachable, ",")));
}

absl::StatusOr<std::string> ClusterStatus(coord::EtcdClient* etcd, const std::string& prefix,
                                          bool json) {
  const std::string root = coord::NormalizePrefix(prefix) + "/";
  coord::RangeOptions all;
  all.prefix = true;
  absl::StatusOr<coord::RangeResult> range = etcd->Range(root, all);
  if (!range.ok()) return range.status();
  std::optional<coord::ClusterRecord> cluster;
  std::optional<absl::StatusOr<coord::RingRecord>> ring;
  std::optional<std::string> active_id;
  std::map<std::string, std::string> migrations;  // id -> record value
  std::map<std::string, ShardView> shards;
  std::vector<absl::StatusOr<coord::RouterRecord>> routers;  // In id order.
  for (const mvccpb::KeyValue& kv : range->kvs) {
    const std::string key = kv.key().substr(root.size());
    if (absl::StartsWith(key, "routers/")) {
      routers.push_back(coord::ParseRouterValue(key.substr(8), kv.value()));
      continue;
    }
    if (key == "cluster") {
      absl::StatusOr<coord::ClusterRecord> parsed = coord::ParseClusterValue(kv.value());
      if (!parsed.ok()) return parsed.status();
      cluster = *parsed;
      continue;
    }
    if (key == "ring") {
      ring = coord::ParseRingValue(kv.value());
      continue;
    }
    if (key == "migrations/active") {
      absl::StatusOr<std::string> id = coord::ParseActiveMigrationValue(kv.value());
      active_id = id.ok() ? *id : std::string("?");
      continue;
    }
    if (absl::StartsWith(key, "migrations/")) {
      const std::string id = key.substr(11);
      if (id.find('/') == std::string::npos) migrations[id] = kv.value();
      continue;
    }
    if (!absl::StartsWith(key, "shards/")) continue;
    const std::string rest = key.substr(7);
    const size_t slash = rest.find('/');
    if (slash == std::string::npos) continue;
    ShardView& shard = shards[rest.substr(0, slash)];
    const std::string what = rest.substr(slash + 1);
    if (what == "leader") {
      shard.leader = kv;
    } else if (what == "isr") {
      absl::StatusOr<coord::IsrRecord> isr = coord::ParseIsrValue(kv.value());
      if (isr.ok()) shard.isr = *isr;
    } else if (what == "position") {
      absl::StatusOr<coord::PositionRecord> position = coord::ParsePositionValue(kv.value());
      if (position.ok()) shard.position = *position;
    } else if (what == "handoff") {
      absl::StatusOr<coord::HandoffRecord> handoff = coord::ParseHandoffValue(kv.value());
      if (handoff.ok()) shard.handoff = *handoff;
    } else if (what == "last_handoff") {
      absl::StatusOr<coord::HandoffOutcome> outcome = coord::ParseHandoffOutcomeValue(kv.value());
      if (outcome.ok()) shard.last_handoff = *outcome;
    } else if (what == "spec") {
      shard.has_spec = true;
    } else if (absl::StartsWith(what, "members/")) {
      absl::StatusOr<coord::MemberRecord> member =
          coord::ParseMemberValue(what.substr(8), kv.value());
      if (member.ok()) shard.members.push_back(*member);
    }
  }
  if (!cluster) {
    return absl::NotFoundError(
        absl::StrCat(coord::ClusterKey(prefix), " is missing: run kvctl cluster init first"));
  }
  nlohmann::json out_json = {{"prefix", coord::NormalizePrefix(prefix)},
                             {"revision", range->revision},
                             {"epoch_base", cluster->epoch_base},
                             {"vnodes", cluster->vnodes},
                             {"shards", nlohmann::json::array()}};
  std::string text = absl::StrFormat("cluster %s: epoch_base=%d vnodes=%d revision=%d\n",
                                     coord::NormalizePrefix(prefix), cluster->epoch_base,
                                     cluster->vnodes, range->revision);
  if (!ring) {
    out_json["ring"] = nullptr;
    absl::StrAppend(&text,
                    "ring: none in etcd (kvctl cluster init --config=FILE adds it to a cluster "
                    "initialised without one)\n");
  } else if (!ring->ok()) {
    out_json["ring"] = {{"error", std::string(ring->status().message())}};
    absl::StrAppend(&text, "ring: unreadable: ", ring->status().message(), "\n");
  } else {
    out_json["ring"] = RingJson(**ring);
    absl::StrAppend(&text, absl::StrFormat("ring: version %d, vnodes %d, shards %s%s\n",
                                           (*ring)->version, (*ring)->vnodes,
                                           absl::StrJoin((*ring)->shards, ","), DrainText(**ring)));
  }
  out_json["migration"] = nullptr;
  if (active_id) {
    nlohmann::json m = {{"id", *active_id}};
    std::string line = absl::StrCat("migration: ", *active_id);
    auto it = migrations.find(*active_id);
    absl::StatusOr<coord::MigrationRecord> record =
        it == migrations.end() ? absl::NotFoundError("its record is missing")
                               : coord::ParseMigrationValue(it->second);
    if (record.ok()) {
      m["kind"] = record->kind;
      m["shard"] = record->shard;
      m["phase"] = record->phase;
      m["paused"] = record->paused;
      m["cancel_requested"] = record->cancel_requested;
      absl::StrAppend(
          &line, absl::StrFormat(" %s-shard %s, ring version %d -> %d, phase %s%s%s", record->kind,
                                 record->shard, record->from_version, record->to.version,
                                 record->phase, record->paused ? " (paused)" : "",
                                 record->cancel_requested ? " (cancel requested)" : ""));
    } else {
      m["error"] = std::string(record.status().message());
      absl::StrAppend(&line, " (", record.status().message(), ")");
    }
    out_json["migration"] = m;
    absl::StrAppend(&text, line, "; kvctl reshard status for more\n");
  }
  // The routers registered in etcd (docs/router.md); one behind the ring
  // holds a migration's cleanup (docs/resharding.md).
  const int64_t ring_version = ring && ring->ok() ? (*ring)->version : 0;
  out_json["routers"] = nlohmann::json::array();
  if (routers.empty()) absl::StrAppend(&text, "routers: none registered\n");
  for (const absl::StatusOr<coord::RouterRecord>& router : routers) {
    if (!router.ok()) {
      out_json["routers"].push_back({{"error", std::string(router.status().message())}});
      absl::StrAppend(&text, "router: unreadable: ", router.status().message(), "\n");
      continue;
    }
    const bool behind = router->ring_version < ring_version;
    out_json["routers"].push_back({{"id", router->id},
                                   {"addr", router->addr},
                                   {"ring_version", router->ring_version},
                                   {"topology_revision", router->topology_revision},
                                   {"started_unix_ms", router->started_unix_ms},
                                   {"behind", behind}});
    absl::StrAppend(
        &text,
        absl::StrFormat(
            "router %s at %s: ring version %d, topology revision %d%s\n", router->id, router->addr,
            router->ring_version, router->topology_revision,
            behind ? absl::StrFormat(" BEHIND (the ring in etcd is version %d)", ring_version)
                   : std::string()));
  }
  for (const auto& [name, shard] : shards) {
    nlohmann::json s = {{"name", name}};
    std::string leader_id;
    if (shard.leader) {
      absl::StatusOr<coord::LeaderValueRecord> leader =
          coord::ParseLeaderJson(shard.leader->value());
      const int64_t epoch = cluster->epoch_base + shard.leader->create_revision();
      int64_t ttl_left = -1;
      if (shard.leader->lease() != 0) {
        absl::StatusOr<int64_t> left = etcd->LeaseTimeToLive(shard.leader->lease());
        if (left.ok()) ttl_left = *left;
      }
      leader_id = leader.ok() ? leader->id : "?";
      const std::string addr = leader.ok() ? leader->addr : "?";
      s["leader"] = {
          {"id", leader_id}, {"addr", addr}, {"epoch", epoch}, {"lease_seconds_left", ttl_left}};
      absl::StrAppend(&text,
                      absl::StrFormat("shard %s: leader %s at %s, epoch %d, lease %ds left\n", name,
                                      leader_id, addr, epoch, ttl_left));
    } else {
      s["leader"] = nullptr;
      absl::StrAppend(&text, absl::StrFormat("shard %s: NO LEADER\n", name));
    }
    if (shard.isr) {
      s["isr"] = {{"epoch", shard.isr->epoch}, {"members", shard.isr->members}};
      absl::StrAppend(&text, absl::StrFormat("  in-sync set (epoch %d): [%s]\n", shard.isr->epoch,
                                             absl::StrJoin(shard.isr->members, ",")));
    } else {
      s["isr"] = nullptr;
    }
    if (shard.position && !shard.isr) {
      s["last_leader_position"] = {{"epoch", shard.position->epoch},
                                   {"index", shard.position->index},
                                   {"max_lag_on_failover", shard.position->max_lag},
                                   {"unix_ms", shard.position->unix_ms}};
      if (shard.position->max_lag > 0) {
        absl::StrAppend(&text, absl::StrFormat("  last leader position: epoch %d, index %d "
                                               "(--max-lag-on-failover=%d)\n",
                                               shard.position->epoch, shard.position->index,
                                               shard.position->max_lag));
      }
    } else {
      s["last_leader_position"] = nullptr;
    }
    const int64_t now_ms = absl::ToUnixMillis(absl::Now());
    if (shard.handoff) {
      const coord::HandoffRecord& h = *shard.handoff;
      const int64_t left_ms = h.deadline_unix_ms - now_ms;
      s["handoff"] = {{"id", h.id},
                      {"from", h.from},
                      {"to", h.to},
                      {"force", h.force},
                      {"deadline_unix_ms", h.deadline_unix_ms},
                      {"deadline_ms_left", left_ms},
                      {"expired", left_ms < 0}};
      absl::StrAppend(
          &text, absl::StrFormat(
                     "  handoff pending: %s -> %s%s, %s (request %s)\n", h.from, h.to,
                     h.force ? " (--force)" : "",
                     left_ms >= 0 ? absl::StrFormat("deadline in %.1fs", left_ms / 1000.0)
                                  : absl::StrFormat("past its deadline by %.1fs: ignored, the next "
                                                    "leader deletes it",
                                                    -left_ms / 1000.0),
                     h.id));
    } else {
      s["handoff"] = nullptr;
    }
    if (shard.last_handoff) {
      const coord::HandoffOutcome& o = *shard.last_handoff;
      s["last_handoff"] = {
          {"id", o.id},         {"from", o.from},         {"to", o.to},
          {"result", o.result}, {"pause_ms", o.pause_ms}, {"leader_index", o.leader_index},
          {"lacked", o.lacked}, {"epoch", o.epoch}};
      absl::StrAppend(
          &text, absl::StrFormat("  last handoff: %s -> %s %s, writes paused %d ms%s\n", o.from,
                                 o.to, o.result, o.pause_ms,
                                 o.lacked > 0 ? absl::StrFormat(", %d entries lacked", o.lacked)
                                              : std::string()));
    } else {
      s["last_handoff"] = nullptr;
    }
    const coord::Election election =
        coord::ChooseCandidate(shard.members, shard.isr ? &*shard.isr : nullptr,
                               shard.position ? &*shard.position : nullptr,
                               shard.handoff ? &*shard.handoff : nullptr, now_ms);
    nlohmann::json members = nlohmann::json::array();
    for (size_t i = 0; i < shard.members.size(); ++i) {
      const coord::MemberRecord& m = shard.members[i];
      const coord::MemberVerdict& v = election.verdicts[i];
      members.push_back({{"id", m.id},
                         {"addr", m.addr},
                         {"state", m.state},
                         {"last_epoch", m.last_epoch},
                         {"durable_index", m.durable_index},
                         {"eligible", v.eligible},
                         {"reason", v.reason}});
      absl::StrAppend(&text,
                      absl::StrFormat("  member %s %s %s last_epoch=%d durable_index=%d %s\n", m.id,
                                      m.addr, m.state, m.last_epoch, m.durable_index,
                                      v.eligible ? std::string("eligible")
                                                 : absl::StrCat("not eligible: ", v.reason)));
    }
    s["members"] = members;
    s["candidate"] = election.candidate;
    if (!election.candidate.empty()) {
      if (!shard.leader) {
        absl::StrAppend(&text, "  next leader: ", election.candidate, "\n");
      }
    } else {
      s["why_no_candidate"] = election.why_none;
      absl::StrAppend(&text, "  no failover possible: ", election.why_none, "\n");
    }
    out_json["shards"].push_back(s);
  }
  if (json) return out_json.dump() + "\n";
  return text;
}

absl::StatusOr<std::string> ClusterForgetShard(coord::EtcdClient* etcd, const std::string& prefix,
                                               const std::string& shard, bool json) {
  if (absl::Status s = CheckShardName(shard); !s.ok()) return s;
  const std::string ring_key = coord::RingKey(prefix);
  const std::string active_key = coord::ActiveMigrationKey(prefix);
  const std::string shard_prefix = coord::ShardPrefix(prefix, shard);
  for (int attempt = 0; attempt < 5; ++attempt) {
    absl::StatusOr<coord::RangeResult> ring = etcd->Range(ring_key);
    if (!ring.ok()) return ring.status();
    if (ring->kvs.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          ring_key, " is missing: without a ring kvctl cannot tell that ", shard, " owns nothing"));
    }
    absl::StatusOr<coord::RingRecord> record = coord::ParseRingValue(ring->kvs[0].value());
    if (!record.ok()) return record.status();
    if (std::find(record->shards.begin(), record->shards.end(), shard) != record->shards.end()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "shard ", shard, " is in the ring (version ", record->version,
          "): it owns keys; remove it first with 'kvctl reshard remove-shard ", shard, "'"));
    }
    coord::RangeOptions all;
    all.prefix = true;
    absl::StatusOr<coord::RangeResult> keys = etcd->Range(shard_prefix, all);
    if (!keys.ok()) return keys.status();
    if (keys->kvs.empty()) {
      return absl::NotFoundError(absl::StrCat("shard ", shard, " has no key under ", shard_prefix));
    }
    etcdserverpb::TxnRequest txn;
    *txn.add_compare() = coord::ModRevisionIs(ring_key, ring->kvs[0].mod_revision());
    *txn.add_compare() = coord::CreateRevisionIs(active_key, 0);
    *txn.add_success() = coord::DeleteOp(shard_prefix, /*prefix=*/true);
    *txn.add_failure() = coord::RangeOp(active_key);
    absl::StatusOr<etcdserverpb::TxnResponse> r = etcd->Txn(txn);
    if (!r.ok()) return r.status();
    if (r->succeeded()) {
      const int64_t deleted =
          r->responses_size() > 0 ? r->responses(0).response_delete_range().deleted() : 0;
      if (json) {
        return nlohmann::json({{"shard", shard}, {"deleted", deleted}}).dump() + "\n";
      }
      return absl::StrFormat("forgot shard %s: deleted %d keys under %s\n", shard, deleted,
                             shard_prefix);
    }
    if (std::optional<mvccpb::KeyValue> active = RangeAnswer(*r, 0); active.has_value()) {
      absl::StatusOr<std::string> id = coord::ParseActiveMigrationValue(active->value());
      return absl::FailedPreconditionError(
          absl::StrCat("migration ", id.ok() ? *id : active->value(),
                       " is active: forget a shard once no migration runs"));
    }
    // The ring changed meanwhile: look again.
  }
  return absl::UnavailableError("the ring kept changing while kvctl read it; try again");
}

}  // namespace kvstore

#include "tools/kvctl/cluster_commands.h"

#include <algorithm>
#include <map>
#include <optional>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
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
  bool has_spec = false;
};

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
  record.epoch_base = std::max<int64_t>(coord::kDefaultEpochBase, static_cast<int64_t>(highest) + 1);
  record.vnodes = topology.vnodes;

  const std::string cluster_key = coord::ClusterKey(prefix);
  etcdserverpb::TxnRequest txn;
  *txn.add_compare() = coord::CreateRevisionIs(cluster_key, 0);
  *txn.add_success() = coord::PutOp(cluster_key, coord::ClusterValue(record));
  for (const ShardTopology& shard : topology.shards) {
    *txn.add_success() =
        coord::PutOp(coord::ShardSpecKey(prefix, shard.name), R"({"format":1})");
  }
  *txn.add_failure() = coord::RangeOp(cluster_key);
  absl::StatusOr<etcdserverpb::TxnResponse> response = etcd->Txn(txn);
  if (!response.ok()) return response.status();
  if (!response->succeeded()) {
    std::string existing;
    if (response->responses_size() == 1 && response->responses(0).has_response_range() &&
        response->responses(0).response_range().kvs_size() == 1) {
      existing = response->responses(0).response_range().kvs(0).value();
    }
    return absl::FailedPreconditionError(absl::StrCat(
        cluster_key, " exists already (", existing,
        "): the cluster is initialised; nothing was written"));
  }
  std::vector<std::string> names = topology.ShardNames();
  if (json) {
    nlohmann::json out = {{"prefix", coord::NormalizePrefix(prefix)},
                          {"epoch_base", record.epoch_base},
                          {"vnodes", record.vnodes},
                          {"shards", names},
                          {"nodes_asked", asked},
                          {"nodes_unreachable", unreachable},
                          {"highest_epoch_found", highest},
                          {"revision", response->header().revision()}};
    return out.dump() + "\n";
  }
  return absl::StrFormat(
      "initialised %s: epoch_base=%d vnodes=%d shards=%s (asked %d of %d nodes for their epoch, "
      "highest %d%s)\n",
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
  std::map<std::string, ShardView> shards;
  for (const mvccpb::KeyValue& kv : range->kvs) {
    const std::string key = kv.key().substr(root.size());
    if (key == "cluster") {
      absl::StatusOr<coord::ClusterRecord> parsed = coord::ParseClusterValue(kv.value());
      if (!parsed.ok()) return parsed.status();
      cluster = *parsed;
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
    } else if (what == "spec") {
      shard.has_spec = true;
    } else if (absl::StartsWith(what, "members/")) {
      absl::StatusOr<coord::MemberRecord> member =
          coord::ParseMemberValue(what.substr(8), kv.value());
      if (member.ok()) shard.members.push_back(*member);
    }
  }
  if (!cluster) {
    return absl::NotFoundError(absl::StrCat(coord::ClusterKey(prefix),
                                            " is missing: run kvctl cluster init first"));
  }
  nlohmann::json out_json = {{"prefix", coord::NormalizePrefix(prefix)},
                             {"revision", range->revision},
                             {"epoch_base", cluster->epoch_base},
                             {"vnodes", cluster->vnodes},
                             {"shards", nlohmann::json::array()}};
  std::string text = absl::StrFormat("cluster %s: epoch_base=%d vnodes=%d revision=%d\n",
                                     coord::NormalizePrefix(prefix), cluster->epoch_base,
                                     cluster->vnodes, range->revision);
  for (const auto& [name, shard] : shards) {
    nlohmann::json s = {{"name", name}};
    std::string leader_id;
    if (shard.leader) {
      absl::StatusOr<coord::LeaderValueRecord> leader = coord::ParseLeaderJson(shard.leader->value());
      const int64_t epoch = cluster->epoch_base + shard.leader->create_revision();
      int64_t ttl_left = -1;
      if (shard.leader->lease() != 0) {
        absl::StatusOr<int64_t> left = etcd->LeaseTimeToLive(shard.leader->lease());
        if (left.ok()) ttl_left = *left;
      }
      leader_id = leader.ok() ? leader->id : "?";
      const std::string addr = leader.ok() ? leader->addr : "?";
      s["leader"] = {{"id", leader_id}, {"addr", addr}, {"epoch", epoch},
                     {"lease_seconds_left", ttl_left}};
      absl::StrAppend(&text, absl::StrFormat("shard %s: leader %s at %s, epoch %d, lease %ds left\n",
                                             name, leader_id, addr, epoch, ttl_left));
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
    const coord::Election election =
        coord::ChooseCandidate(shard.members, shard.isr ? &*shard.isr : nullptr);
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
      absl::StrAppend(&text, absl::StrFormat("  member %s %s %s last_epoch=%d durable_index=%d %s\n",
                                             m.id, m.addr, m.state, m.last_epoch, m.durable_index,
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

}  // namespace kvstore

#include "services/router/etcd_topology.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/coord/schema.h"
#include "glog/logging.h"

namespace kvstore {
namespace {

constexpr absl::string_view kShards = "shards/";
constexpr absl::string_view kRing = "ring";

struct ShardKeys {
  std::optional<coord::LeaderValueRecord> leader;
  std::map<std::string, std::string> members;  // id -> address
};

}  // namespace

absl::StatusOr<Topology> TopologyFromEtcd(const std::map<std::string, std::string>& entries,
                                          const Topology* previous) {
  auto cluster = entries.find("cluster");
  if (cluster == entries.end()) {
    return absl::FailedPreconditionError(
        "the cluster is not initialised in etcd (kvctl cluster init)");
  }
  absl::StatusOr<coord::ClusterRecord> record = coord::ParseClusterValue(cluster->second);
  if (!record.ok()) return record.status();
  std::optional<coord::RingRecord> ring;
  if (auto it = entries.find(std::string(kRing)); it != entries.end()) {
    absl::StatusOr<coord::RingRecord> parsed = coord::ParseRingValue(it->second);
    if (!parsed.ok()) return parsed.status();
    ring = *std::move(parsed);
  }
  std::map<std::string, ShardKeys> shards;
  if (ring) {
    // Only the ring's shards own keys: a shard group that registered
    // without being given ranges yet is not routed to.
    for (const std::string& name : ring->shards) shards.try_emplace(name);
  }
  for (const auto& [key, value] : entries) {
    if (!absl::StartsWith(key, kShards)) continue;
    const absl::string_view rest = absl::string_view(key).substr(kShards.size());
    const size_t slash = rest.find('/');
    if (slash == absl::string_view::npos || slash == 0) continue;
    const std::string name(rest.substr(0, slash));
    if (ring && shards.find(name) == shards.end()) continue;
    ShardKeys& shard = shards[name];
    const absl::string_view what = rest.substr(slash + 1);
    if (what == "leader") {
      absl::StatusOr<coord::LeaderValueRecord> leader = coord::ParseLeaderJson(value);
      if (leader.ok()) shard.leader = *leader;
    } else if (absl::StartsWith(what, "members/")) {
      const std::string id(what.substr(8));
      absl::StatusOr<coord::MemberRecord> member = coord::ParseMemberValue(id, value);
      if (member.ok() && !member->addr.empty()) shard.members[id] = member->addr;
    }
  }
  if (shards.empty()) return absl::FailedPreconditionError("no shard in etcd");
  Topology topology;
  if (record->vnodes > 0) topology.vnodes = record->vnodes;
  if (ring) {
    // As the shards build it (services/node/ring_feed.h): no default.
    if (ring->vnodes < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("ring version ", ring->version, " has no vnodes"));
    }
    topology.vnodes = ring->vnodes;
    topology.ring_version = ring->version;
    topology.drain = ring->draining;
  }
  for (const auto& [name, keys] : shards) {
    ShardTopology shard;
    shard.name = name;
    if (keys.leader && !keys.leader->addr.empty()) {
      shard.leader = keys.leader->addr;
      shard.leader_epoch = keys.leader->epoch > 0 ? static_cast<uint64_t>(keys.leader->epoch) : 0;
    } else if (previous != nullptr) {
      for (const ShardTopology& p : previous->shards) {
        if (p.name != name) continue;
        shard.leader = p.leader;
        shard.leader_epoch = p.leader_epoch;
      }
    }
    for (const auto& [id, addr] : keys.members) {
      if (shard.leader.empty()) shard.leader = addr;
      if (addr != shard.leader &&
          std::find(shard.replicas.begin(), shard.replicas.end(), addr) == shard.replicas.end()) {
        shard.replicas.push_back(addr);
      }
    }
    if (shard.leader.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("shard ", name, " has neither a leader nor a member in etcd yet"));
    }
    topology.shards.push_back(std::move(shard));
  }
  return topology;
}

bool SameTopology(const Topology& a, const Topology& b) {
  if (a.vnodes != b.vnodes || a.ring_version != b.ring_version || a.drain != b.drain ||
      a.shards.size() != b.shards.size()) {
    return false;
  }
  for (size_t i = 0; i < a.shards.size(); ++i) {
    if (a.shards[i].name != b.shards[i].name || a.shards[i].leader != b.shards[i].leader ||
        a.shards[i].leader_epoch != b.shards[i].leader_epoch ||
        a.shards[i].replicas != b.shards[i].replicas) {
      return false;
    }
  }
  return true;
}

EtcdTopologySource::EtcdTopologySource(coord::EtcdClient* client, const std::string& prefix)
    : client_(client), prefix_(coord::NormalizePrefix(prefix) + "/") {
  coord::TopologyViewOptions options;
  options.prefix = prefix_;
  options.on_snapshot = [this](std::shared_ptr<const coord::TopologySnapshot> snapshot) {
    OnSnapshot(*snapshot);
  };
  view_ = std::make_unique<coord::TopologyView>(client, std::move(options));
  refresher_ = std::thread([this] { RefreshLoop(); });
}

EtcdTopologySource::~EtcdTopologySource() { Stop(); }

void EtcdTopologySource::Stop() {
  view_->Stop();
  std::vector<std::function<void()>> left;
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
    left.swap(refresh_waiting_);
  }
  if (refresher_.joinable()) refresher_.join();
  for (auto& done : left) done();
}

void EtcdTopologySource::Refresh(std::function<void()> done) {
  {
    absl::MutexLock l(&mu_);
    if (!stopping_) {
      refresh_waiting_.push_back(std::move(done));
      return;
    }
  }
  done();
}

void EtcdTopologySource::RefreshLoop() {
  for (;;) {
    std::vector<std::function<void()>> batch;
    {
      absl::MutexLock l(&mu_);
      const auto asked = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !refresh_waiting_.empty();
      };
      mu_.Await(absl::Condition(&asked));
      if (stopping_) return;
      batch.swap(refresh_waiting_);
    }
    coord::RangeOptions range;
    range.prefix = true;
    absl::StatusOr<coord::RangeResult> read = client_->Range(prefix_, range);
    if (read.ok()) {
      std::map<std::string, std::string> entries;
      for (const mvccpb::KeyValue& kv : read->kvs) {
        absl::string_view key = kv.key();
        if (absl::ConsumePrefix(&key, prefix_)) entries.emplace(std::string(key), kv.value());
      }
      Apply(entries, read->revision);
    } else {
      LOG_EVERY_N(WARNING, 20) << "fresh read of " << prefix_ << ": " << read.status();
    }
    for (auto& done : batch) done();
  }
}

void EtcdTopologySource::OnSnapshot(const coord::TopologySnapshot& snapshot) {
  Apply(*snapshot.entries, snapshot.revision);
}

void EtcdTopologySource::Apply(const std::map<std::string, std::string>& entries,
                               int64_t revision) {
  absl::MutexLock apply(&apply_mu_);
  std::function<void(const Topology&)> on_change;
  Topology changed;
  {
    absl::MutexLock l(&mu_);
    // The watch may lag a fresh read: an older state is not applied over it.
    if (revision <= applied_revision_) return;
    applied_revision_ = revision;
    revision_.store(revision, std::memory_order_relaxed);
    absl::StatusOr<Topology> topology = TopologyFromEtcd(entries, current_ ? &*current_ : nullptr);
    if (!topology.ok()) {
      if (last_error_ != topology.status().message()) {
        last_error_ = std::string(topology.status().message());
        LOG(WARNING) << "etcd revision " << revision
                     << ": keeping the current topology: " << last_error_;
      }
      return;
    }
    last_error_.clear();
    if (entries.count(std::string(kRing)) == 0 && !warned_no_ring_) {
      warned_no_ring_ = true;
      LOG(WARNING) << "etcd revision " << revision
                   << ": no ring key (the cluster was initialised by an older kvctl): routing by "
                      "every shard registered in etcd, so a shard group that registers changes "
                      "the owners of keys it holds no data for";
    }
    if (current_ && SameTopology(*current_, *topology)) return;
    current_ = *topology;
    changed = *std::move(topology);
    on_change = on_change_;
  }
  if (on_change) on_change(changed);
}

absl::StatusOr<Topology> EtcdTopologySource::Start(absl::Duration timeout) {
  view_->Start();
  absl::MutexLock l(&mu_);
  const auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return current_.has_value(); };
  if (!mu_.AwaitWithTimeout(absl::Condition(&ready), timeout)) {
    return absl::UnavailableError(
        absl::StrCat("no topology from etcd within ", absl::FormatDuration(timeout),
                     last_error_.empty() ? std::string(" (etcd unreachable?)")
                                         : absl::StrCat(": ", last_error_)));
  }
  handed_ = current_;
  return *current_;
}

void EtcdTopologySource::Follow(std::function<void(const Topology&)> on_change) {
  absl::MutexLock apply(&apply_mu_);
  std::optional<Topology> missed;
  {
    absl::MutexLock l(&mu_);
    on_change_ = on_change;
    if (current_ && (!handed_ || !SameTopology(*current_, *handed_))) missed = current_;
  }
  if (missed) on_change(*missed);
}

}  // namespace kvstore

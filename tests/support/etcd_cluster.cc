#include "tests/support/etcd_cluster.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/topology/topology.h"
#include "tests/support/router_process.h"

#ifndef KV_SHARD_BIN
#error "KV_SHARD_BIN must name the kv-shard binary (see tests/CMakeLists.txt)"
#endif
#ifndef KV_REPLICA_BIN
#error "KV_REPLICA_BIN must name the kv-replica binary (see tests/CMakeLists.txt)"
#endif

namespace kvstore::testing {

MigrationTotals Sum(const std::map<std::string, coord::SourceProgress>& progress) {
  MigrationTotals t;
  for (const auto& [name, p] : progress) {
    t.keys_copied += p.keys_copied;
    t.bytes_copied += p.bytes_copied;
    t.restarts += p.restarts;
    t.retries += p.retries;
    t.phases.insert(p.phase);
    ++t.sources;
    if (!p.error.empty()) absl::StrAppend(&t.errors, name, ": ", p.error, "; ");
  }
  return t;
}

EtcdCluster::EtcdCluster(std::string root, std::string prefix)
    : root_(std::move(root)), prefix_(std::move(prefix)) {}

absl::Status EtcdCluster::Start() {
  if (absl::Status s = etcd_.Start(); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(s.message(), "\n", etcd_.LogTail()));
  }
  coord::EtcdClientOptions options;
  options.endpoints = etcd_.endpoint();
  absl::StatusOr<std::unique_ptr<coord::EtcdClient>> client = coord::EtcdClient::Create(options);
  if (!client.ok()) return client.status();
  client_ = *std::move(client);
  return absl::OkStatus();
}

std::vector<std::string> EtcdCluster::NodeFlags(const std::string& shard, const std::string& id,
                                                const ShardGroupOptions& options) const {
  std::vector<std::string> flags = {absl::StrCat("--shard=", shard),
                                    absl::StrCat("--node-id=", id),
                                    absl::StrCat("--etcd-endpoints=", etcd_.endpoint()),
                                    absl::StrCat("--etcd-prefix=", prefix_),
                                    "--lease-ttl=2s",
                                    "--fsync=everysec"};
  if (options.replicas > 0 && options.sync_acks) {
    flags.insert(flags.end(), {"--ack=sync", "--sync-acks=1", "--sync-timeout-ms=2000"});
  }
  if (options.metrics) {
    flags.insert(flags.end(),
                 {"--metrics-listen=127.0.0.1:0",
                  absl::StrCat("--metrics-port-file=", root_, "/", id, ".metrics-port")});
  }
  flags.insert(flags.end(), options.extra_flags.begin(), options.extra_flags.end());
  return flags;
}

absl::Status EtcdCluster::StartShardGroup(const std::string& shard,
                                          const ShardGroupOptions& options) {
  for (int i = 0; i <= options.replicas; ++i) {
    const std::string id = absl::StrCat(shard, "-n", i + 1);
    auto node = std::make_unique<ServerProcess>(absl::StrCat(root_, "/", id),
                                                i == 0 ? KV_SHARD_BIN : KV_REPLICA_BIN, id);
    if (absl::Status s = node->Start(NodeFlags(shard, id, options)); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat(id, ": ", s.message(), "\n", node->LogTail()));
    }
    groups_[shard].push_back(node.get());
    nodes_.push_back(std::move(node));
  }
  return absl::OkStatus();
}

std::vector<ServerProcess*> EtcdCluster::Group(const std::string& shard) const {
  auto it = groups_.find(shard);
  return it == groups_.end() ? std::vector<ServerProcess*>{} : it->second;
}

ServerProcess* EtcdCluster::NodeAt(const std::string& address) const {
  for (const auto& n : nodes_) {
    if (n->running() && n->address() == address) return n.get();
  }
  return nullptr;
}

absl::Status EtcdCluster::Init(const std::vector<std::string>& shards) {
  Topology topology;
  for (const std::string& shard : shards) {
    const std::vector<ServerProcess*> group = Group(shard);
    if (group.empty()) return absl::FailedPreconditionError(absl::StrCat("no group ", shard));
    ShardTopology t;
    t.name = shard;
    t.leader = group[0]->address();
    for (size_t i = 1; i < group.size(); ++i) t.replicas.push_back(group[i]->address());
    topology.shards.push_back(std::move(t));
  }
  const std::string topology_file = absl::StrCat(root_, "/topology.yaml");
  if (absl::Status s = WriteTopologyFile(topology_file, topology); !s.ok()) return s;
  const KvctlResult init = Kvctl({absl::StrCat("--config=", topology_file), "cluster", "init"});
  if (init.exit_code != 0) {
    return absl::InternalError(absl::StrCat("kvctl cluster init: ", init.ToString()));
  }
  for (const std::string& shard : shards) {
    if (absl::StatusOr<std::string> leader = AwaitLeader(shard); !leader.ok()) {
      return leader.status();
    }
  }
  return absl::OkStatus();
}

std::optional<std::string> EtcdCluster::LeaderOf(const std::string& shard) const {
  absl::StatusOr<coord::RangeResult> range = client_->Range(coord::ShardLeaderKey(prefix_, shard));
  if (!range.ok() || range->kvs.empty()) return std::nullopt;
  absl::StatusOr<coord::LeaderValueRecord> value = coord::ParseLeaderJson(range->kvs[0].value());
  if (!value.ok() || value->epoch == 0) return std::nullopt;
  absl::StatusOr<v1::StatusResponse> status = FetchStatus(value->addr, absl::Seconds(1));
  if (!status.ok() || status->role() != "leader" || !status->ready()) return std::nullopt;
  return value->addr;
}

absl::StatusOr<std::string> EtcdCluster::AwaitLeader(const std::string& shard,
                                                     absl::Duration timeout) const {
  std::optional<std::string> leader;
  if (!WaitFor(
          [&] {
            leader = LeaderOf(shard);
            return leader.has_value();
          },
          absl::Now() + timeout, absl::Milliseconds(50))) {
    return absl::DeadlineExceededError(
        absl::StrCat("no leader for ", shard, " within ", absl::FormatDuration(timeout)));
  }
  return *leader;
}

absl::StatusOr<std::string> EtcdCluster::KillLeaderAndRestart(const std::string& shard) {
  absl::StatusOr<std::string> old = AwaitLeader(shard);
  if (!old.ok()) return old.status();
  ServerProcess* victim = NodeAt(*old);
  if (victim == nullptr) {
    return absl::NotFoundError(absl::StrCat("no node of ours serves ", *old));
  }
  if (absl::StatusOr<ExitStatus> killed = victim->KillHard(); !killed.ok()) {
    return killed.status();
  }
  std::optional<std::string> next;
  if (!WaitFor(
          [&] {
            next = LeaderOf(shard);
            return next.has_value() && *next != *old;
          },
          absl::Now() + absl::Seconds(15), absl::Milliseconds(50))) {
    return absl::DeadlineExceededError(
        absl::StrCat("no new leader of ", shard, " after the kill of ", *old));
  }
  if (absl::Status s = victim->Restart(); !s.ok()) return s;
  return *next;
}

std::vector<std::string> EtcdCluster::RouterFlags() const {
  return {absl::StrCat("--etcd-endpoints=", etcd_.endpoint()),
          absl::StrCat("--etcd-prefix=", prefix_), "--forward-timeout-ms=2000"};
}

KvctlResult EtcdCluster::Kvctl(std::vector<std::string> args, absl::Duration timeout) const {
  args.insert(args.begin(),
              {absl::StrCat("--etcd=", etcd_.endpoint()), absl::StrCat("--etcd-prefix=", prefix_)});
  return RunKvctl("", args, timeout);
}

absl::StatusOr<coord::RingRecord> EtcdCluster::Ring() const {
  absl::StatusOr<coord::RangeResult> range = client_->Range(coord::RingKey(prefix_));
  if (!range.ok()) return range.status();
  if (range->kvs.empty()) return absl::NotFoundError("no ring in etcd");
  return coord::ParseRingValue(range->kvs[0].value());
}

std::string EtcdCluster::ActiveMigrationId() const {
  absl::StatusOr<coord::RangeResult> range = client_->Range(coord::ActiveMigrationKey(prefix_));
  if (!range.ok() || range->kvs.empty()) return "";
  absl::StatusOr<std::string> id = coord::ParseActiveMigrationValue(range->kvs[0].value());
  return id.ok() ? *id : "";
}

std::optional<coord::MigrationRecord> EtcdCluster::Migration(const std::string& id) const {
  absl::StatusOr<coord::RangeResult> range = client_->Range(coord::MigrationKey(prefix_, id));
  if (!range.ok() || range->kvs.empty()) return std::nullopt;
  absl::StatusOr<coord::MigrationRecord> record = coord::ParseMigrationValue(range->kvs[0].value());
  if (!record.ok()) return std::nullopt;
  return *std::move(record);
}

std::map<std::string, coord::SourceProgress> EtcdCluster::Progress(const std::string& id) const {
  std::map<std::string, coord::SourceProgress> out;
  coord::RangeOptions options;
  options.prefix = true;
  const std::string prefix = coord::MigrationSourcesPrefix(prefix_, id);
  absl::StatusOr<coord::RangeResult> range = client_->Range(prefix, options);
  if (!range.ok()) return out;
  for (const mvccpb::KeyValue& kv : range->kvs) {
    const std::string source = kv.key().substr(prefix.size());
    absl::StatusOr<coord::SourceProgress> p = coord::ParseSourceProgressValue(source, kv.value());
    if (p.ok()) out[source] = *std::move(p);
  }
  return out;
}

std::string EtcdCluster::MigrationStatusText(const std::string& id) const {
  const KvctlResult status = Kvctl({"reshard", "status", id});
  return status.out + status.err;
}

absl::Status EtcdCluster::EnableFailpoint(ServerProcess& node, const std::string& failpoint) const {
  const pid_t pid = node.process().pid();
  const std::string log = absl::StrCat(root_, "/fiu-ctrl-", pid, ".log");
  ChildProcess fiu;
  if (absl::Status s = fiu.Start("/usr/bin/fiu-ctrl",
                                 {"-f", absl::StrCat(node.data_dir(), "/fiu-ctrl"), "-c",
                                  absl::StrCat("enable name=", failpoint), absl::StrCat(pid)},
                                 log);
      !s.ok()) {
    return s;
  }
  absl::StatusOr<ExitStatus> exit = fiu.WaitExit(absl::Now() + absl::Seconds(10));
  if (!exit.ok()) return exit.status();
  if (!exit->Clean()) {
    return absl::InternalError(
        absl::StrCat("fiu-ctrl: ", exit->ToString(), " ", ReadFileOrEmpty(log)));
  }
  return absl::OkStatus();
}

std::string EtcdCluster::Logs(size_t node_bytes) const {
  std::string out;
  for (const auto& n : nodes_) {
    absl::StrAppend(&out, "--- ", n->log_path(), ":\n", n->LogTail(node_bytes));
  }
  absl::StrAppend(&out, "--- etcd:\n", etcd_.LogTail(1500));
  return out;
}

std::optional<uint64_t> EtcdCluster::KeyCount(const std::string& address) {
  absl::StatusOr<v1::StatusResponse> status = FetchStatus(address, absl::Seconds(2));
  if (!status.ok()) return std::nullopt;
  return status->key_count();
}

}  // namespace kvstore::testing

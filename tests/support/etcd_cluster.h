// A cluster in etcd mode for integration tests: a one-member etcd (temp dir,
// free ports), shard groups of one kv-shard and kv-replicas with automatic
// failover, and what the resharding tests ask of etcd and kvctl (the
// leaders, the ring, a migration's record and its sources' progress).
//
// Methods report failures as values (Status, empty optional, "" ids), never
// through gtest, so a caller says what the failure means with its own
// ASSERT. One thread at a time, except LeaderOf, KeyCount and the etcd
// reads, which any thread may call while the test thread starts and kills
// nodes.
#ifndef KVSTORE_TESTS_SUPPORT_ETCD_CLUSTER_H_
#define KVSTORE_TESTS_SUPPORT_ETCD_CLUSTER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/coord/etcd_client.h"
#include "common/coord/schema.h"
#include "tests/support/etcd_process.h"
#include "tests/support/process.h"

namespace kvstore::testing {

// How StartShardGroup starts a group's nodes.
struct ShardGroupOptions {
  int replicas = 1;  // kv-replicas besides the kv-shard.
  // With replicas: --ack=sync --sync-acks=1 --sync-timeout-ms=2000.
  bool sync_acks = true;
  // --metrics-listen=127.0.0.1:0, its port in MetricsPortFile(node).
  bool metrics = false;
  std::vector<std::string> extra_flags;  // Appended to every node's flags.
};

// Sums over the sources of a migration, as the driver last reported them.
struct MigrationTotals {
  uint64_t keys_copied = 0;
  uint64_t bytes_copied = 0;
  int64_t restarts = 0;
  int64_t retries = 0;
  std::set<std::string> phases;  // Of the sources.
  size_t sources = 0;
  std::string errors;  // "source: error; " for each source with one.
};
MigrationTotals Sum(const std::map<std::string, coord::SourceProgress>& progress);

class EtcdCluster {
 public:
  // Nodes live in `root`/<node id>; `prefix` is --etcd-prefix.
  EtcdCluster(std::string root, std::string prefix);
  EtcdCluster(const EtcdCluster&) = delete;
  EtcdCluster& operator=(const EtcdCluster&) = delete;

  // Starts etcd and the client the queries below use.
  absl::Status Start();

  const std::string& prefix() const { return prefix_; }
  const std::string& endpoint() const { return etcd_.endpoint(); }
  EtcdProcess& etcd() { return etcd_; }
  coord::EtcdClient& client() { return *client_; }

  // The node `id` of `shard`: --shard --node-id --etcd-endpoints
  // --etcd-prefix --lease-ttl=2s --fsync=everysec, then as `options` says.
  std::vector<std::string> NodeFlags(const std::string& shard, const std::string& id,
                                     const ShardGroupOptions& options = {}) const;
  // Starts "<shard>-n1" (kv-shard) and "<shard>-n2".. (kv-replica).
  absl::Status StartShardGroup(const std::string& shard, const ShardGroupOptions& options = {});
  // Every node started, in start order, and those of one shard.
  const std::vector<std::unique_ptr<ServerProcess>>& nodes() const { return nodes_; }
  std::vector<ServerProcess*> Group(const std::string& shard) const;
  // The running node serving at `address`; nullptr when none does.
  ServerProcess* NodeAt(const std::string& address) const;
  // Where a node started with ShardGroupOptions::metrics writes its port.
  static std::string MetricsPortFile(const ServerProcess& node) {
    return node.dir() + ".metrics-port";
  }

  // `kvctl cluster init` with `shards` (their groups' first nodes as
  // leaders), then waits until each has a ready leader.
  absl::Status Init(const std::vector<std::string>& shards);

  // The address in `shard`'s leader key, if that node answers as a ready
  // leader.
  std::optional<std::string> LeaderOf(const std::string& shard) const;
  absl::StatusOr<std::string> AwaitLeader(const std::string& shard,
                                          absl::Duration timeout = absl::Seconds(20)) const;
  // Kills `shard`'s leader with SIGKILL, waits for another node to lead it,
  // and starts the killed node again (it follows the new leader). Returns
  // the new leader's address.
  absl::StatusOr<std::string> KillLeaderAndRestart(const std::string& shard);

  // A router's flags in this cluster (with --forward-timeout-ms=2000).
  std::vector<std::string> RouterFlags() const;
  // kvctl --etcd=... --etcd-prefix=... `args`.
  KvctlResult Kvctl(std::vector<std::string> args,
                    absl::Duration timeout = absl::Seconds(20)) const;

  absl::StatusOr<coord::RingRecord> Ring() const;
  // The active migration's id; "" when none is active (or etcd is away).
  std::string ActiveMigrationId() const;
  std::optional<coord::MigrationRecord> Migration(const std::string& id) const;
  // Each source's progress as the driver last wrote it (empty when etcd
  // does not answer).
  std::map<std::string, coord::SourceProgress> Progress(const std::string& id) const;
  // `kvctl reshard status ID`, for a failure message.
  std::string MigrationStatusText(const std::string& id) const;

  // Enables a libfiu failpoint in a running node (fault builds) through its
  // fiu-ctrl fifo.
  absl::Status EnableFailpoint(ServerProcess& node, const std::string& failpoint) const;

  // The tails of every node's log and etcd's.
  std::string Logs(size_t node_bytes = 2500) const;

  // The key count `address` reports in Admin.Status.
  static std::optional<uint64_t> KeyCount(const std::string& address);

 private:
  const std::string root_;
  const std::string prefix_;
  EtcdProcess etcd_;
  std::unique_ptr<coord::EtcdClient> client_;
  std::vector<std::unique_ptr<ServerProcess>> nodes_;
  std::map<std::string, std::vector<ServerProcess*>> groups_;
};

}  // namespace kvstore::testing

#endif  // KVSTORE_TESTS_SUPPORT_ETCD_CLUSTER_H_

// kvctl's etcd-mode commands (docs/failover.md): `cluster init` writes the
// cluster's keys once, `cluster status` reads them back per shard,
// `cluster forget-shard` deletes a removed shard's keys. Each
// returns the text to print, or the error to report; kvctl.cc maps errors to
// its exit codes.
#ifndef KVSTORE_TOOLS_KVCTL_CLUSTER_COMMANDS_H_
#define KVSTORE_TOOLS_KVCTL_CLUSTER_COMMANDS_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "common/coord/etcd_client.h"
#include "common/topology/topology.h"

namespace kvstore {

// The epoch a node reports (Admin.Status), or why it could not be asked.
using EpochProbe = std::function<absl::StatusOr<uint64_t>(const std::string& address)>;

// Writes <P>/cluster {format, epoch_base, vnodes}, <P>/ring version 1 (the
// shards and vnodes of `topology`) and <P>/shards/<s>/spec for every shard of
// `topology`, in one Txn that fails if <P>/cluster or <P>/ring exists
// (FAILED_PRECONDITION naming it). epoch_base is above every epoch the nodes
// of `topology` report and at least coord::kDefaultEpochBase, so moving from
// static mode never lowers an epoch. A cluster initialised before the ring
// was kept in etcd gets only its ring (version 1: the shards with a spec and
// the cluster's vnodes), if the file names the same shards and vnodes.
absl::StatusOr<std::string> ClusterInit(coord::EtcdClient* etcd, const std::string& prefix,
                                        const Topology& topology, const EpochProbe& epoch_of,
                                        bool json);

// The ring (version, vnodes, shards) and the active migration (id, kind,
// shard, phase), if any; then per shard: the leader (id, address, epoch, lease
// time left), each member's state and position and whether it is eligible,
// and who would be elected (or why nobody can be).
absl::StatusOr<std::string> ClusterStatus(coord::EtcdClient* etcd, const std::string& prefix,
                                          bool json);

// Deletes every key of shard `shard` (<P>/shards/<shard>/: spec, leader,
// members, in-sync set) once it is retired: in one Txn guarded by the ring
// (which must not list it) and by <P>/migrations/active (which must not
// exist). FAILED_PRECONDITION while the ring lists it or a migration is
// active; NOT_FOUND when it has no key. Stop the group's processes first, or
// they register again.
absl::StatusOr<std::string> ClusterForgetShard(coord::EtcdClient* etcd, const std::string& prefix,
                                               const std::string& shard, bool json);

}  // namespace kvstore

#endif  // KVSTORE_TOOLS_KVCTL_CLUSTER_COMMANDS_H_

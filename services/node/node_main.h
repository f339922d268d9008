// main() of kv-shard and kv-replica: the same process (store, KeyValue, Admin,
// Replication services, a ReplicationNode) started as a leader or a follower.
// Both take the same flags, since a replica can be promoted.
#ifndef KVSTORE_SERVICES_NODE_NODE_MAIN_H_
#define KVSTORE_SERVICES_NODE_NODE_MAIN_H_

namespace kvstore {

enum class NodeKind { kShard, kReplica };

int NodeMain(int argc, char** argv, NodeKind kind);

}  // namespace kvstore

#endif  // KVSTORE_SERVICES_NODE_NODE_MAIN_H_

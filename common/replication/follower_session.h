// The follower's side of one replication stream: accepts the leader (after the
// checks of ReplicationNode::AcceptLeader) or refuses it, states its position,
// applies and logs what the leader sends (entries, or a snapshot followed by
// entries), and acks the index it holds durably, for as long as the stream
// lasts and stays the node's current one.
#ifndef KVSTORE_COMMON_REPLICATION_FOLLOWER_SESSION_H_
#define KVSTORE_COMMON_REPLICATION_FOLLOWER_SESSION_H_

#include "absl/status/status.h"
#include "common/replication/node.h"
#include "common/replication/transport.h"

namespace kvstore {

// Runs one stream to its end on the calling thread (it starts one more, for
// acks, and joins it). `node` and `stream` must outlive the call. Returns why
// the stream ended: OK when the leader closed it or was refused, an error
// otherwise (ABORTED when a newer leader's stream replaced it).
absl::Status RunFollowerSession(ReplicationNode* node, FollowerStream* stream);

}  // namespace kvstore

#endif  // KVSTORE_COMMON_REPLICATION_FOLLOWER_SESSION_H_

// What a node says of itself in its member key (coord::MemberRecord): its
// address, role or why its store is not whole, and its position (last epoch,
// durable index), read from the node and its store.
#ifndef KVSTORE_COMMON_FAILOVER_MEMBER_REPORT_H_
#define KVSTORE_COMMON_FAILOVER_MEMBER_REPORT_H_

#include <string>

#include "common/coord/schema.h"
#include "common/replication/node.h"

namespace kvstore {

// Thread-safe (the node and store are).
coord::MemberRecord ReportMember(ReplicationNode* node, const std::string& id,
                                 const std::string& addr);

}  // namespace kvstore

#endif  // KVSTORE_COMMON_FAILOVER_MEMBER_REPORT_H_

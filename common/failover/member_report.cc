#include "common/failover/member_report.h"

namespace kvstore {

coord::MemberRecord ReportMember(ReplicationNode* node, const std::string& id,
                                 const std::string& addr) {
  const StoreStatus st = node->store()->GetStatus();
  coord::MemberRecord record;
  record.id = id;
  record.addr = addr;
  record.last_epoch = st.last_epoch;
  record.durable_index = node->store()->durable_index();
  const Role role = node->role();
  if (role == Role::kLeader) {
    record.state = "leader";
  } else if (st.last_index < st.complete_index) {
    record.state = "installing";
  } else if (st.last_index == 0) {
    record.state = "empty";
  } else {
    record.state = RoleName(role);
  }
  return record;
}

}  // namespace kvstore

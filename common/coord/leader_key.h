// LeaderKey: leadership of one shard as a key in etcd bound to the holder's
// lease (`<prefix>/shards/<s>/leader`, docs/failover.md).
//
// Campaign is a create-if-absent Txn (the key's create_revision == 0) that
// puts {id, addr} bound to the lease. The winner's epoch is
//
//   epoch = epoch_base + the key's create revision
//
// etcd revisions increase across the whole store, so every win of any shard's
// key gets a higher epoch than every win before it, cluster-wide. The epoch is
// then written into the value ({id, addr, epoch}) by a guarded put, for people
// and tools reading etcd; the authority is always the create revision.
//
// Leadership ends when the key is deleted (Resign, or etcd expiring the
// lease). GuardedTxn runs ops only while the key still has our create
// revision, so the writes of a deposed holder fail even if it does not know yet
// (a key deleted and created again has a new create revision).
//
// Stateless apart from its configuration: thread-safe.
#ifndef KVSTORE_COMMON_COORD_LEADER_KEY_H_
#define KVSTORE_COMMON_COORD_LEADER_KEY_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/coord/etcd_client.h"
#include "etcd/etcdserverpb/rpc.pb.h"

namespace kvstore::coord {

// Who holds the key, as etcd has it.
struct LeaderRecord {
  std::string id;
  std::string addr;
  int64_t epoch = 0;  // epoch_base + create_revision.
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t lease_id = 0;
};

// A won campaign: the token every guarded write and Resign takes.
struct Leadership {
  std::string key;
  std::string id;
  std::string addr;
  int64_t lease_id = 0;
  int64_t create_revision = 0;
  int64_t epoch = 0;
};

struct CampaignResult {
  bool won = false;
  Leadership leadership;  // Set when won.
  // The holder seen by the campaign (ourselves when won); empty if the key
  // vanished between the Txn and the read (the lease just expired).
  std::optional<LeaderRecord> holder;
};

// The value stored under a leader key; ParseLeaderValue reads it back.
std::string LeaderValue(const std::string& id, const std::string& addr, int64_t epoch);
// INVALID_ARGUMENT (naming the key) when it is not what LeaderValue writes.
absl::Status ParseLeaderValue(const mvccpb::KeyValue& kv, LeaderRecord* record);

class LeaderKey {
 public:
  // `client` must outlive this. `epoch_base` comes from the cluster's record.
  LeaderKey(EtcdClient* client, std::string key, int64_t epoch_base);

  const std::string& key() const { return key_; }
  int64_t EpochOf(int64_t create_revision) const { return epoch_base_ + create_revision; }

  // One attempt (no waiting for the key to free up). won=false with the
  // current holder when the key is taken. A key already held by `lease_id`
  // (a retried campaign whose first attempt got through) counts as won.
  // On an error the outcome is unknown: campaign again with the same lease,
  // or revoke it.
  absl::StatusOr<CampaignResult> Campaign(int64_t lease_id, const std::string& id,
                                          const std::string& addr);

  // Runs `ops` if the key still has leadership's create revision and every
  // compare of `compares` holds. FAILED_PRECONDITION, naming the current
  // holder, when the leadership is gone (nothing ran). When only `compares`
  // failed, the response with succeeded=false.
  absl::StatusOr<etcdserverpb::TxnResponse> GuardedTxn(
      const Leadership& leadership, const std::vector<etcdserverpb::Compare>& compares,
      const std::vector<etcdserverpb::RequestOp>& ops);

  // Deletes the key if it is still this leadership's. OK also when it was
  // already gone: afterwards this leadership does not hold the key.
  absl::Status Resign(const Leadership& leadership);

  // The current holder (a linearizable read); nullopt when nobody leads.
  absl::StatusOr<std::optional<LeaderRecord>> Holder();

 private:
  absl::StatusOr<std::optional<LeaderRecord>> RecordFrom(const etcdserverpb::RangeResponse& range);
  // Writes the epoch into our value (a guarded put that keeps the lease).
  absl::StatusOr<CampaignResult> Confirm(Leadership leadership);

  EtcdClient* const client_;
  const std::string key_;
  const int64_t epoch_base_;
};

}  // namespace kvstore::coord

#endif  // KVSTORE_COMMON_COORD_LEADER_KEY_H_

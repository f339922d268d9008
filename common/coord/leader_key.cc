#include "common/coord/leader_key.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/coord/txn.h"
#include "glog/logging.h"
#include "nlohmann/json.hpp"

namespace kvstore::coord {

std::string LeaderValue(const std::string& id, const std::string& addr, int64_t epoch) {
  nlohmann::json value = {{"id", id}, {"addr", addr}, {"epoch", epoch}};
  return value.dump();
}

absl::Status ParseLeaderValue(const mvccpb::KeyValue& kv, LeaderRecord* record) {
  nlohmann::json value = nlohmann::json::parse(kv.value(), nullptr, /*allow_exceptions=*/false);
  if (!value.is_object() || !value.contains("id") || !value["id"].is_string() ||
      !value.contains("addr") || !value["addr"].is_string()) {
    return absl::InvalidArgumentError(absl::StrCat("leader key ", kv.key(), ": value \"",
                                                   kv.value(), "\" is not {id, addr, epoch}"));
  }
  record->id = value["id"].get<std::string>();
  record->addr = value["addr"].get<std::string>();
  record->create_revision = kv.create_revision();
  record->mod_revision = kv.mod_revision();
  record->lease_id = kv.lease();
  return absl::OkStatus();
}

LeaderKey::LeaderKey(EtcdClient* client, std::string key, int64_t epoch_base)
    : client_(client), key_(std::move(key)), epoch_base_(epoch_base) {}

absl::StatusOr<std::optional<LeaderRecord>> LeaderKey::RecordFrom(
    const etcdserverpb::RangeResponse& range) {
  if (range.kvs_size() == 0) return std::optional<LeaderRecord>();
  LeaderRecord record;
  if (absl::Status s = ParseLeaderValue(range.kvs(0), &record); !s.ok()) return s;
  record.epoch = EpochOf(record.create_revision);
  return std::optional<LeaderRecord>(std::move(record));
}

absl::StatusOr<CampaignResult> LeaderKey::Campaign(int64_t lease_id, const std::string& id,
                                                   const std::string& addr) {
  etcdserverpb::TxnRequest txn;
  *txn.add_compare() = CreateRevisionIs(key_, 0);
  // The epoch is not known before the put has a revision: 0 until Confirm.
  *txn.add_success() = PutOp(key_, LeaderValue(id, addr, 0), lease_id);
  *txn.add_failure() = RangeOp(key_);
  absl::StatusOr<etcdserverpb::TxnResponse> response = client_->Txn(txn);
  if (!response.ok()) return response.status();

  Leadership leadership;
  leadership.key = key_;
  leadership.id = id;
  leadership.addr = addr;
  leadership.lease_id = lease_id;
  if (response->succeeded()) {
    // A Txn that writes is one revision: the put's, so the key's creation.
    leadership.create_revision = response->header().revision();
    leadership.epoch = EpochOf(leadership.create_revision);
    return Confirm(std::move(leadership));
  }

  CampaignResult result;
  if (response->responses_size() != 1 || !response->responses(0).has_response_range()) {
    return absl::InternalError(absl::StrCat("campaign for ", key_, ": unexpected Txn answer"));
  }
  absl::StatusOr<std::optional<LeaderRecord>> holder =
      RecordFrom(response->responses(0).response_range());
  if (!holder.ok()) return holder.status();
  result.holder = std::move(*holder);
  if (result.holder.has_value() && result.holder->lease_id == lease_id && lease_id != 0) {
    // Our own earlier attempt created it (a retry after an unanswered call).
    leadership.create_revision = result.holder->create_revision;
    leadership.epoch = result.holder->epoch;
    return Confirm(std::move(leadership));
  }
  return result;
}

absl::StatusOr<CampaignResult> LeaderKey::Confirm(Leadership leadership) {
  absl::StatusOr<etcdserverpb::TxnResponse> response =
      GuardedTxn(leadership, {},
                 {PutOp(key_, LeaderValue(leadership.id, leadership.addr, leadership.epoch),
                        leadership.lease_id)});
  CampaignResult result;
  if (!response.ok()) {
    if (response.status().code() != absl::StatusCode::kFailedPrecondition) {
      return response.status();
    }
    // Lost between the two writes (the lease expired): not a win.
    absl::StatusOr<std::optional<LeaderRecord>> holder = Holder();
    if (!holder.ok()) return holder.status();
    result.holder = std::move(*holder);
    return result;
  }
  result.won = true;
  LeaderRecord me;
  me.id = leadership.id;
  me.addr = leadership.addr;
  me.epoch = leadership.epoch;
  me.create_revision = leadership.create_revision;
  me.mod_revision = response->header().revision();
  me.lease_id = leadership.lease_id;
  result.holder = std::move(me);
  result.leadership = std::move(leadership);
  LOG(INFO) << "won " << key_ << " as " << result.leadership.id << " at create revision "
            << result.leadership.create_revision << ", epoch " << result.leadership.epoch;
  return result;
}

absl::StatusOr<etcdserverpb::TxnResponse> LeaderKey::GuardedTxn(
    const Leadership& leadership, const std::vector<etcdserverpb::Compare>& compares,
    const std::vector<etcdserverpb::RequestOp>& ops) {
  if (leadership.key != key_ || leadership.create_revision <= 0) {
    return absl::FailedPreconditionError(absl::StrCat("not a leadership of ", key_, " (key ",
                                                      leadership.key, ", create revision ",
                                                      leadership.create_revision, ")"));
  }
  // The failure branch reads the key, so one round trip tells a lost
  // leadership from a failed compare of the caller's.
  etcdserverpb::TxnRequest txn;
  *txn.add_compare() = CreateRevisionIs(key_, leadership.create_revision);
  for (const etcdserverpb::Compare& c : compares) *txn.add_compare() = c;
  for (const etcdserverpb::RequestOp& op : ops) *txn.add_success() = op;
  *txn.add_failure() = RangeOp(key_);
  absl::StatusOr<etcdserverpb::TxnResponse> response = client_->Txn(txn);
  if (!response.ok()) return response.status();
  if (response->succeeded()) return response;

  // The failure branch read the key: whose is it now?
  const etcdserverpb::ResponseOp& read = response->responses(response->responses_size() - 1);
  const auto& kvs = read.response_range().kvs();
  if (kvs.empty() || kvs[0].create_revision() != leadership.create_revision) {
    std::string holder = "nobody";
    if (!kvs.empty()) {
      LeaderRecord record;
      holder = ParseLeaderValue(kvs[0], &record).ok()
                   ? absl::StrCat(record.id, " at ", record.addr, ", epoch ",
                                  EpochOf(kvs[0].create_revision()))
                   : std::string("an unreadable value");
    }
    return absl::FailedPreconditionError(absl::StrCat("leadership of ", key_, " at epoch ",
                                                      leadership.epoch,
                                                      " is gone; the key is now held by ", holder));
  }
  // Still ours: one of the caller's compares failed. Drop our read from the
  // answer so the caller sees only what it asked for.
  response->mutable_responses()->RemoveLast();
  return response;
}

absl::Status LeaderKey::Resign(const Leadership& leadership) {
  absl::StatusOr<etcdserverpb::TxnResponse> response = GuardedTxn(leadership, {}, {DeleteOp(key_)});
  if (!response.ok() && response.status().code() != absl::StatusCode::kFailedPrecondition) {
    return response.status();
  }
  if (response.ok()) {
    LOG(INFO) << leadership.id << " resigned " << key_ << " (epoch " << leadership.epoch << ")";
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<LeaderRecord>> LeaderKey::Holder() {
  absl::StatusOr<RangeResult> range = client_->Range(key_);
  if (!range.ok()) return range.status();
  etcdserverpb::RangeResponse as_response;
  for (mvccpb::KeyValue& kv : range->kvs) *as_response.add_kvs() = std::move(kv);
  return RecordFrom(as_response);
}

}  // namespace kvstore::coord

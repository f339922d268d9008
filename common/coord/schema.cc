#include "common/coord/schema.h"

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace kvstore::coord {
namespace {

nlohmann::json ParseObject(absl::string_view value) {
  return nlohmann::json::parse(value.begin(), value.end(), nullptr, /*allow_exceptions=*/false);
}

bool IsUnsigned(const nlohmann::json& object, const char* field) {
  return object.contains(field) && object[field].is_number_integer() && object[field] >= 0;
}

}  // namespace

std::string NormalizePrefix(absl::string_view prefix) {
  while (!prefix.empty() && prefix.back() == '/') prefix.remove_suffix(1);
  return std::string(prefix);
}

std::string DefaultPrefix(absl::string_view cluster) {
  return absl::StrCat("/kvstore/", cluster.empty() ? absl::string_view("default") : cluster);
}

std::string ClusterKey(absl::string_view prefix) {
  return absl::StrCat(NormalizePrefix(prefix), "/cluster");
}
std::string ShardsPrefix(absl::string_view prefix) {
  return absl::StrCat(NormalizePrefix(prefix), "/shards/");
}
std::string ShardPrefix(absl::string_view prefix, absl::string_view shard) {
  return absl::StrCat(ShardsPrefix(prefix), shard, "/");
}
std::string ShardSpecKey(absl::string_view prefix, absl::string_view shard) {
  return absl::StrCat(ShardPrefix(prefix, shard), "spec");
}
std::string ShardLeaderKey(absl::string_view prefix, absl::string_view shard) {
  return absl::StrCat(ShardPrefix(prefix, shard), "leader");
}
std::string MembersPrefix(absl::string_view prefix, absl::string_view shard) {
  return absl::StrCat(ShardPrefix(prefix, shard), "members/");
}
std::string MemberKey(absl::string_view prefix, absl::string_view shard, absl::string_view id) {
  return absl::StrCat(MembersPrefix(prefix, shard), id);
}

std::string IsrKey(absl::string_view prefix, absl::string_view shard) {
  return absl::StrCat(ShardPrefix(prefix, shard), "isr");
}

bool IsrRecord::Contains(absl::string_view id) const {
  for (const std::string& m : members) {
    if (m == id) return true;
  }
  return false;
}

std::string IsrValue(const IsrRecord& record) {
  nlohmann::json value = {{"epoch", record.epoch}, {"members", record.members}};
  return value.dump();
}

absl::StatusOr<IsrRecord> ParseIsrValue(absl::string_view value) {
  const nlohmann::json object = ParseObject(value);
  bool ok = object.is_object() && IsUnsigned(object, "epoch") && object.contains("members") &&
            object["members"].is_array();
  if (ok) {
    for (const auto& m : object["members"]) ok = ok && m.is_string();
  }
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("in-sync set \"", value, "\" is not {epoch, members: [id...]}"));
  }
  IsrRecord record;
  record.epoch = object["epoch"].get<int64_t>();
  for (const auto& m : object["members"]) record.members.push_back(m.get<std::string>());
  return record;
}

std::string ClusterValue(const ClusterRecord& record) {
  nlohmann::json value = {
      {"format", record.format}, {"epoch_base", record.epoch_base}, {"vnodes", record.vnodes}};
  return value.dump();
}

absl::StatusOr<ClusterRecord> ParseClusterValue(absl::string_view value) {
  const nlohmann::json object = ParseObject(value);
  if (!object.is_object() || !IsUnsigned(object, "format") || !IsUnsigned(object, "epoch_base") ||
      !IsUnsigned(object, "vnodes")) {
    return absl::InvalidArgumentError(
        absl::StrCat("cluster record \"", value, "\" is not {format, epoch_base, vnodes}"));
  }
  ClusterRecord record;
  record.format = object["format"].get<int>();
  record.epoch_base = object["epoch_base"].get<int64_t>();
  record.vnodes = object["vnodes"].get<int>();
  if (record.format != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("cluster record format ", record.format, " is not supported (1 is)"));
  }
  return record;
}

std::string MemberValue(const MemberRecord& record) {
  nlohmann::json value = {{"addr", record.addr},
                          {"state", record.state},
                          {"last_epoch", record.last_epoch},
                          {"durable_index", record.durable_index}};
  return value.dump();
}

absl::StatusOr<MemberRecord> ParseMemberValue(absl::string_view id, absl::string_view value) {
  const nlohmann::json object = ParseObject(value);
  if (!object.is_object() || !object.contains("addr") || !object["addr"].is_string() ||
      !object.contains("state") || !object["state"].is_string() ||
      !IsUnsigned(object, "last_epoch") || !IsUnsigned(object, "durable_index")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "member ", id, ": \"", value, "\" is not {addr, state, last_epoch, durable_index}"));
  }
  MemberRecord record;
  record.id = std::string(id);
  record.addr = object["addr"].get<std::string>();
  record.state = object["state"].get<std::string>();
  record.last_epoch = object["last_epoch"].get<uint64_t>();
  record.durable_index = object["durable_index"].get<uint64_t>();
  return record;
}

absl::StatusOr<LeaderValueRecord> ParseLeaderJson(absl::string_view value) {
  const nlohmann::json object = ParseObject(value);
  if (!object.is_object() || !object.contains("id") || !object["id"].is_string() ||
      !object.contains("addr") || !object["addr"].is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat("leader value \"", value, "\" is not {id, addr, epoch}"));
  }
  LeaderValueRecord record;
  record.id = object["id"].get<std::string>();
  record.addr = object["addr"].get<std::string>();
  if (IsUnsigned(object, "epoch")) record.epoch = object["epoch"].get<int64_t>();
  return record;
}

}  // namespace kvstore::coord

#include "common/coord/schema.h"

#include <algorithm>
#include <set>
#include <type_traits>

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

std::string PositionKey(absl::string_view prefix, absl::string_view shard) {
  return absl::StrCat(ShardPrefix(prefix, shard), "position");
}

std::string PositionValue(const PositionRecord& record) {
  nlohmann::json value = {{"epoch", record.epoch},
                          {"index", record.index},
                          {"max_lag", record.max_lag},
                          {"unix_ms", record.unix_ms}};
  return value.dump();
}

absl::StatusOr<PositionRecord> ParsePositionValue(absl::string_view value) {
  const nlohmann::json object = ParseObject(value);
  if (!object.is_object() || !IsUnsigned(object, "epoch") || !IsUnsigned(object, "index") ||
      !IsUnsigned(object, "max_lag") || !IsUnsigned(object, "unix_ms")) {
    return absl::InvalidArgumentError(
        absl::StrCat("leader position \"", value, "\" is not {epoch, index, max_lag, unix_ms}"));
  }
  PositionRecord record;
  record.epoch = object["epoch"].get<int64_t>();
  record.index = object["index"].get<uint64_t>();
  record.max_lag = object["max_lag"].get<uint64_t>();
  record.unix_ms = object["unix_ms"].get<int64_t>();
  return record;
}

std::string HandoffKey(absl::string_view prefix, absl::string_view shard) {
  return absl::StrCat(ShardPrefix(prefix, shard), "handoff");
}

std::string HandoffValue(const HandoffRecord& record) {
  nlohmann::json value = {{"id", record.id},
                          {"from", record.from},
                          {"to", record.to},
                          {"leader_create_revision", record.leader_create_revision},
                          {"deadline_unix_ms", record.deadline_unix_ms},
                          {"force", record.force}};
  return value.dump();
}

absl::StatusOr<HandoffRecord> ParseHandoffValue(absl::string_view value) {
  const nlohmann::json object = ParseObject(value);
  if (!object.is_object() || !object.contains("id") || !object["id"].is_string() ||
      !object.contains("from") || !object["from"].is_string() || !object.contains("to") ||
      !object["to"].is_string() || !IsUnsigned(object, "leader_create_revision") ||
      !IsUnsigned(object, "deadline_unix_ms") || !object.contains("force") ||
      !object["force"].is_boolean()) {
    return absl::InvalidArgumentError(
        absl::StrCat("handoff \"", value,
                     "\" is not {id, from, to, leader_create_revision, deadline_unix_ms, force}"));
  }
  HandoffRecord record;
  record.id = object["id"].get<std::string>();
  record.from = object["from"].get<std::string>();
  record.to = object["to"].get<std::string>();
  record.leader_create_revision = object["leader_create_revision"].get<int64_t>();
  record.deadline_unix_ms = object["deadline_unix_ms"].get<int64_t>();
  record.force = object["force"].get<bool>();
  return record;
}

std::string LastHandoffKey(absl::string_view prefix, absl::string_view shard) {
  return absl::StrCat(ShardPrefix(prefix, shard), "last_handoff");
}

std::string HandoffOutcomeValue(const HandoffOutcome& outcome) {
  nlohmann::json value = {{"id", outcome.id},
                          {"from", outcome.from},
                          {"to", outcome.to},
                          {"result", outcome.result},
                          {"pause_ms", outcome.pause_ms},
                          {"leader_index", outcome.leader_index},
                          {"lacked", outcome.lacked},
                          {"epoch", outcome.epoch}};
  return value.dump();
}

absl::StatusOr<HandoffOutcome> ParseHandoffOutcomeValue(absl::string_view value) {
  const nlohmann::json object = ParseObject(value);
  const auto is_string = [&object](const char* name) {
    return object.contains(name) && object[name].is_string();
  };
  if (!object.is_object() || !is_string("id") || !is_string("from") || !is_string("to") ||
      !is_string("result") || !IsUnsigned(object, "pause_ms") ||
      !IsUnsigned(object, "leader_index") || !IsUnsigned(object, "lacked") ||
      !IsUnsigned(object, "epoch")) {
    return absl::InvalidArgumentError(
        absl::StrCat("handoff outcome \"", value,
                     "\" is not {id, from, to, result, pause_ms, leader_index, lacked, epoch}"));
  }
  HandoffOutcome outcome;
  outcome.id = object["id"].get<std::string>();
  outcome.from = object["from"].get<std::string>();
  outcome.to = object["to"].get<std::string>();
  outcome.result = object["result"].get<std::string>();
  outcome.pause_ms = object["pause_ms"].get<int64_t>();
  outcome.leader_index = object["leader_index"].get<uint64_t>();
  outcome.lacked = object["lacked"].get<uint64_t>();
  outcome.epoch = object["epoch"].get<int64_t>();
  return outcome;
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

std::string RingKey(absl::string_view prefix) {
  return absl::StrCat(NormalizePrefix(prefix), "/ring");
}

std::string RingValue(RingRecord record) {
  std::sort(record.shards.begin(), record.shards.end());
  nlohmann::json value = {{"format", record.format},
                          {"version", record.version},
                          {"vnodes", record.vnodes},
                          {"shards", record.shards}};
  if (!record.draining.empty()) {
    std::sort(record.draining.handed_to.begin(), record.draining.handed_to.end());
    value["draining"] = {{"shard", record.draining.shard},
                         {"handed_to", record.draining.handed_to}};
  }
  return value.dump();
}

absl::StatusOr<HashRing> BuildRing(const RingRecord& record) {
  return HashRing::Build(record.shards, record.vnodes, record.draining);
}

RingRecord RemoveStageRing(const RingRecord& from, absl::string_view shard,
                           absl::string_view destination, bool last) {
  RingRecord next = from;
  next.version = from.version + 1;
  if (last) {
    next.shards.erase(std::remove(next.shards.begin(), next.shards.end(), shard),
                      next.shards.end());
    next.draining = RingDrain();
    return next;
  }
  next.draining.shard = std::string(shard);
  std::vector<std::string>& handed = next.draining.handed_to;
  if (std::find(handed.begin(), handed.end(), destination) == handed.end()) {
    handed.push_back(std::string(destination));
  }
  std::sort(handed.begin(), handed.end());
  return next;
}

absl::StatusOr<RingRecord> ParseRingValue(absl::string_view value) {
  const nlohmann::json object = ParseObject(value);
  bool ok = object.is_object() && IsUnsigned(object, "format") && IsUnsigned(object, "version") &&
            IsUnsigned(object, "vnodes") && object.contains("shards") &&
            object["shards"].is_array() && !object["shards"].empty();
  if (ok) {
    for (const auto& s : object["shards"])
      ok = ok && s.is_string() && !s.get<std::string>().empty();
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ring record \"", value, "\" is not {format, version, vnodes, shards: [name...]}"));
  }
  RingRecord record;
  record.format = object["format"].get<int>();
  record.version = object["version"].get<int64_t>();
  record.vnodes = object["vnodes"].get<int>();
  std::set<std::string> seen;
  for (const auto& s : object["shards"]) {
    record.shards.push_back(s.get<std::string>());
    if (!seen.insert(record.shards.back()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("ring record lists shard ", record.shards.back(), " twice"));
    }
  }
  if (record.format != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("ring record format ", record.format, " is not supported (1 is)"));
  }
  std::sort(record.shards.begin(), record.shards.end());
  if (object.contains("draining")) {
    const nlohmann::json& d = object["draining"];
    bool drain_ok = d.is_object() && d.contains("shard") && d["shard"].is_string() &&
                    d.contains("handed_to") && d["handed_to"].is_array();
    if (drain_ok) {
      for (const auto& h : d["handed_to"]) drain_ok = drain_ok && h.is_string();
    }
    if (!drain_ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ring record \"", value, "\": draining is not {shard, handed_to: [name...]}"));
    }
    record.draining.shard = d["shard"].get<std::string>();
    for (const auto& h : d["handed_to"]) {
      record.draining.handed_to.push_back(h.get<std::string>());
    }
    std::sort(record.draining.handed_to.begin(), record.draining.handed_to.end());
    if (!record.draining.empty() && !seen.count(record.draining.shard)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ring record drains shard ", record.draining.shard, ", which it does not list"));
    }
    for (size_t i = 0; i < record.draining.handed_to.size(); ++i) {
      const std::string& h = record.draining.handed_to[i];
      if (record.draining.empty() || !seen.count(h) || h == record.draining.shard ||
          (i > 0 && h == record.draining.handed_to[i - 1])) {
        return absl::InvalidArgumentError(absl::StrCat("ring record hands shard ",
                                                       record.draining.shard, " to ", h,
                                                       ": not another shard it lists, or twice"));
      }
    }
  }
  return record;
}

std::string MigrationsPrefix(absl::string_view prefix) {
  return absl::StrCat(NormalizePrefix(prefix), "/migrations/");
}
std::string ActiveMigrationKey(absl::string_view prefix) {
  return absl::StrCat(MigrationsPrefix(prefix), "active");
}
std::string MigrationKey(absl::string_view prefix, absl::string_view id) {
  return absl::StrCat(MigrationsPrefix(prefix), id);
}
std::string MigrationSourcesPrefix(absl::string_view prefix, absl::string_view id) {
  return absl::StrCat(MigrationKey(prefix, id), "/sources/");
}
std::string MigrationSourceKey(absl::string_view prefix, absl::string_view id,
                               absl::string_view source) {
  return absl::StrCat(MigrationSourcesPrefix(prefix, id), source);
}

std::string MigrationProgressKey(absl::string_view prefix, const MigrationRecord& record,
                                 absl::string_view source) {
  if (record.kind != "remove" || record.stage < 0 ||
      static_cast<size_t>(record.stage) >= record.stages.size()) {
    return MigrationSourceKey(prefix, record.id, source);
  }
  return absl::StrCat(MigrationSourceKey(prefix, record.id, source), "/to/",
                      record.stages[record.stage]);
}

std::string ProgressKeySource(absl::string_view key_after_sources_prefix) {
  const size_t to = key_after_sources_prefix.find("/to/");
  return std::string(to == absl::string_view::npos ? key_after_sources_prefix
                                                   : key_after_sources_prefix.substr(0, to));
}

std::string ActiveMigrationValue(absl::string_view id) {
  nlohmann::json value = {{"id", std::string(id)}};
  return value.dump();
}

absl::StatusOr<std::string> ParseActiveMigrationValue(absl::string_view value) {
  const nlohmann::json object = ParseObject(value);
  if (!object.is_object() || !object.contains("id") || !object["id"].is_string()) {
    return absl::InvalidArgumentError(absl::StrCat("active migration \"", value, "\" is not {id}"));
  }
  return object["id"].get<std::string>();
}

namespace {

nlohmann::json RingJson(const RingRecord& ring) { return nlohmann::json::parse(RingValue(ring)); }

template <typename T>
bool Take(const nlohmann::json& object, const char* field, T* out) {
  if (!object.contains(field)) return true;  // Optional: keep the default.
  const nlohmann::json& v = object[field];
  if constexpr (std::is_same_v<T, std::string>) {
    if (!v.is_string()) return false;
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) return false;
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!v.is_number()) return false;
  } else {
    if (!v.is_number_integer()) return false;
    if (std::is_unsigned_v<T> && v < 0) return false;
  }
  *out = v.get<T>();
  return true;
}

}  // namespace

std::string MigrationValue(const MigrationRecord& r) {
  nlohmann::json value = {{"id", r.id},
                          {"kind", r.kind},
                          {"shard", r.shard},
                          {"from_version", r.from_version},
                          {"to", RingJson(r.to)},
                          {"phase", r.phase},
                          {"throttle_bytes_per_second", r.throttle_bytes_per_second},
                          {"paused", r.paused},
                          {"cancel_requested", r.cancel_requested},
                          {"cutover_max_pause_ms", r.cutover_max_pause_ms},
                          {"handoff_lag", r.handoff_lag},
                          {"copy_from", r.copy_from},
                          {"created_unix_ms", r.created_unix_ms},
                          {"finished_unix_ms", r.finished_unix_ms},
                          {"error", r.error}};
  if (r.from.has_value()) value["from"] = RingJson(*r.from);
  if (r.kind == "remove") {
    value["stages"] = r.stages;
    value["stage"] = r.stage;
  }
  return value.dump();
}

absl::StatusOr<MigrationRecord> ParseMigrationValue(absl::string_view value) {
  const nlohmann::json object = ParseObject(value);
  MigrationRecord r;
  bool ok = object.is_object() && object.contains("id") && object.contains("kind") &&
            object.contains("shard") && object.contains("phase") && object.contains("to");
  ok = ok && Take(object, "id", &r.id) && Take(object, "kind", &r.kind) &&
       Take(object, "shard", &r.shard) && Take(object, "from_version", &r.from_version) &&
       Take(object, "phase", &r.phase) &&
       Take(object, "throttle_bytes_per_second", &r.throttle_bytes_per_second) &&
       Take(object, "paused", &r.paused) && Take(object, "cancel_requested", &r.cancel_requested) &&
       Take(object, "cutover_max_pause_ms", &r.cutover_max_pause_ms) &&
       Take(object, "handoff_lag", &r.handoff_lag) && Take(object, "copy_from", &r.copy_from) &&
       Take(object, "created_unix_ms", &r.created_unix_ms) &&
       Take(object, "finished_unix_ms", &r.finished_unix_ms) && Take(object, "error", &r.error);
  if (ok) {
    absl::StatusOr<RingRecord> to = ParseRingValue(object["to"].dump());
    if (!to.ok()) return to.status();
    r.to = *std::move(to);
  }
  if (ok && object.contains("from")) {
    absl::StatusOr<RingRecord> from = ParseRingValue(object["from"].dump());
    if (!from.ok()) return from.status();
    r.from = *std::move(from);
  }
  ok = ok && Take(object, "stage", &r.stage);
  if (ok && object.contains("stages")) {
    ok = object["stages"].is_array();
    for (const auto& s : object["stages"]) {
      ok = ok && s.is_string();
      if (ok) r.stages.push_back(s.get<std::string>());
    }
  }
  if (!ok || r.id.empty() || (r.kind != "add" && r.kind != "remove")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "migration record \"", value, "\" is not {id, kind: add|remove, shard, phase, to, ...}"));
  }
  return r;
}

std::string SourceProgressValue(const SourceProgress& p) {
  nlohmann::json value = {{"destination", p.destination},
                          {"phase", p.phase},
                          {"start_index", p.start_index},
                          {"cursor", p.cursor},
                          {"applied_index", p.applied_index},
                          {"applied_epoch", p.applied_epoch},
                          {"destination_epoch", p.destination_epoch},
                          {"source_index", p.source_index},
                          {"fence_index", p.fence_index},
                          {"keys_copied", p.keys_copied},
                          {"bytes_copied", p.bytes_copied},
                          {"keys_estimate", p.keys_estimate},
                          {"bytes_estimate", p.bytes_estimate},
                          {"keys_cleaned", p.keys_cleaned},
                          {"rate_bytes_per_second", p.rate_bytes_per_second},
                          {"last_cutover_pause_ms", p.last_cutover_pause_ms},
                          {"retries", p.retries},
                          {"restarts", p.restarts},
                          {"error", p.error},
                          {"updated_unix_ms", p.updated_unix_ms}};
  return value.dump();
}

absl::StatusOr<SourceProgress> ParseSourceProgressValue(absl::string_view source,
                                                        absl::string_view value) {
  const nlohmann::json object = ParseObject(value);
  SourceProgress p;
  p.source = std::string(source);
  const bool ok =
      object.is_object() && Take(object, "destination", &p.destination) &&
      Take(object, "phase", &p.phase) && Take(object, "start_index", &p.start_index) &&
      Take(object, "cursor", &p.cursor) && Take(object, "applied_index", &p.applied_index) &&
      Take(object, "applied_epoch", &p.applied_epoch) &&
      Take(object, "destination_epoch", &p.destination_epoch) &&
      Take(object, "source_index", &p.source_index) &&
      Take(object, "fence_index", &p.fence_index) && Take(object, "keys_copied", &p.keys_copied) &&
      Take(object, "bytes_copied", &p.bytes_copied) &&
      Take(object, "keys_estimate", &p.keys_estimate) &&
      Take(object, "bytes_estimate", &p.bytes_estimate) &&
      Take(object, "keys_cleaned", &p.keys_cleaned) &&
      Take(object, "rate_bytes_per_second", &p.rate_bytes_per_second) &&
      Take(object, "last_cutover_pause_ms", &p.last_cutover_pause_ms) &&
      Take(object, "retries", &p.retries) && Take(object, "restarts", &p.restarts) &&
      Take(object, "error", &p.error) && Take(object, "updated_unix_ms", &p.updated_unix_ms);
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("progress of source ", source, ": \"", value, "\" is not a SourceProgress"));
  }
  return p;
}

std::string RoutersPrefix(absl::string_view prefix) {
  return absl::StrCat(NormalizePrefix(prefix), "/routers/");
}
std::string RouterKey(absl::string_view prefix, absl::string_view id) {
  return absl::StrCat(RoutersPrefix(prefix), id);
}

std::string RouterValue(const RouterRecord& record) {
  nlohmann::json value = {{"addr", record.addr},
                          {"ring_version", record.ring_version},
                          {"topology_revision", record.topology_revision},
                          {"started_unix_ms", record.started_unix_ms}};
  return value.dump();
}

absl::StatusOr<RouterRecord> ParseRouterValue(absl::string_view id, absl::string_view value) {
  const nlohmann::json object = ParseObject(value);
  if (!object.is_object() || !object.contains("addr") || !object["addr"].is_string() ||
      !IsUnsigned(object, "ring_version") || !IsUnsigned(object, "topology_revision") ||
      !IsUnsigned(object, "started_unix_ms")) {
    return absl::InvalidArgumentError(
        absl::StrCat("router ", id, ": \"", value,
                     "\" is not {addr, ring_version, topology_revision, started_unix_ms}"));
  }
  RouterRecord record;
  record.id = std::string(id);
  record.addr = object["addr"].get<std::string>();
  record.ring_version = object["ring_version"].get<int64_t>();
  record.topology_revision = object["topology_revision"].get<int64_t>();
  record.started_unix_ms = object["started_unix_ms"].get<int64_t>();
  return record;
}

}  // namespace kvstore::coord

#include "tools/kvcheck/summary.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace kvstore::check {
namespace {

// nlohmann's ordered_json keeps insertion order: the order written here.
using Json = nlohmann::ordered_json;

Json Counts(const WriteCounts& c) {
  Json j;
  j["writes"] = c.writes;
  j["ok"] = c.ok;
  j["fail"] = c.fail;
  j["info"] = c.info;
  j["mismatches"] = c.mismatches;
  const double share = c.OkShare();
  j["ok_share"] = share < 0 ? Json(nullptr) : Json(share);
  return j;
}

Json Availability(const AvailabilityFigures& a) {
  Json j;
  Json windows = Json::array();
  for (const WindowFigures& f : a.windows) {
    Json w;
    w["fault"] = f.window.fault;
    w["step"] = f.window.step;
    w["start_s"] = f.window.start_ns / 1e9;
    w["end_s"] = f.end_ns / 1e9;
    w["open"] = f.window.end_ns == kOpenWindow;
    w.update(Counts(f.counts));
    windows.push_back(w);
  }
  j["windows"] = windows;
  j["during"] = Counts(a.during);
  j["during"]["seconds"] = a.seconds;
  j["outside"] = Counts(a.outside);
  return j;
}

Json InvokeIs(const History& h, const std::vector<int>& ids) {
  Json out = Json::array();
  for (int id : ids) out.push_back(h.ops[id].invoke_i);
  return out;
}

}  // namespace

std::string SummaryJson(const History& h, const Report& r) {
  Json j;
  j["valid"] = r.valid();

  Json ops;
  int64_t total = 0;
  std::map<std::string, int64_t> by_outcome;
  for (const auto& [f, outcomes] : r.ops) {
    for (const auto& [outcome, n] : outcomes) {
      total += n;
      by_outcome[outcome] += n;
    }
  }
  ops["total"] = total;
  for (const char* o : {"ok", "fail", "info"}) ops[o] = by_outcome[o];
  Json by_f;
  for (const auto& [f, outcomes] : r.ops) {
    Json one;
    for (const char* o : {"ok", "fail", "info"}) {
      auto it = outcomes.find(o);
      one[o] = it == outcomes.end() ? 0 : it->second;
    }
    by_f[f] = one;
  }
  ops["by_f"] = by_f;
  j["ops"] = ops;

  const DurabilityFigures& d = r.durability;
  Json dur;
  dur["keys_with_final_read"] = d.keys_with_final_read;
  dur["acked"] = d.acked;
  dur["acked_without_final_read"] = d.acked_without_final_read;
  dur["lost"] = d.lost;
  dur["recovered"] = d.recovered;
  dur["phantom"] = d.phantom;
  dur["lost_ops"] = InvokeIs(h, d.lost_ops);
  dur["recovered_ops"] = InvokeIs(h, d.recovered_ops);
  dur["phantom_ops"] = InvokeIs(h, d.phantom_ops);
  j["durability"] = dur;
  if (r.availability.has_value()) j["availability"] = Availability(*r.availability);

  Json lin;
  std::map<Verdict, int64_t> count;
  Json invalid = Json::array(), unknown = Json::array();
  int64_t states = 0;
  for (const auto& [key, k] : r.keys) {
    ++count[k.verdict];
    states += k.states;
    if (k.verdict == Verdict::kInvalid) invalid.push_back(key);
    if (k.verdict == Verdict::kUnknown) unknown.push_back(key);
  }
  lin["keys"] = r.keys.size();
  lin["valid"] = count[Verdict::kValid];
  lin["invalid"] = count[Verdict::kInvalid];
  lin["unknown"] = count[Verdict::kUnknown];
  lin["invalid_keys"] = invalid;
  lin["unknown_keys"] = unknown;
  lin["states"] = states;
  j["linearizability"] = lin;
  j["stale_leader_reads"] = r.StaleReads();
  j["reads_behind_lost_writes"] = r.ReadsBehindLostWrites();

  Json violations = Json::array();
  std::map<std::string, int64_t> by_kind;
  for (const Violation& v : r.violations) {
    ++by_kind[ViolationKindName(v.kind)];
    Json one;
    one["kind"] = ViolationKindName(v.kind);
    one["key"] = v.key;
    one["message"] = v.message;
    one["ops"] = InvokeIs(h, v.ops);
    violations.push_back(one);
  }
  Json kinds = Json::object();
  for (const auto& [kind, n] : by_kind) kinds[kind] = n;
  j["violations_by_kind"] = kinds;
  j["violations"] = violations;
  return j.dump(2) + "\n";
}

std::string SummaryText(const History& h, const Report& r) {
  int64_t invalid = 0, unknown = 0;
  for (const auto& [key, k] : r.keys) {
    invalid += k.verdict == Verdict::kInvalid;
    unknown += k.verdict == Verdict::kUnknown;
  }
  const DurabilityFigures& d = r.durability;
  std::string s = absl::StrCat(r.valid() ? "VALID" : "INVALID", ": ", h.ops.size(), " ops, ", r.keys.size(),
                               " keys (", invalid, " not linearizable, ", unknown, " undecided); acked ",
                               d.acked, ", lost ", d.lost, ", recovered ", d.recovered, ", phantom ",
                               d.phantom, "\n");
  absl::StrAppend(&s, "stale leader reads: ", r.StaleReads(),
                  "; reads behind a lost write: ", r.ReadsBehindLostWrites(), "\n");
  if (r.availability.has_value()) {
    for (const std::string& line : AvailabilityLines(*r.availability, ""))
      absl::StrAppend(&s, line, "\n");
  }
  constexpr size_t kShown = 10;
  for (size_t i = 0; i < std::min(kShown, r.violations.size()); ++i) {
    const Violation& v = r.violations[i];
    absl::StrAppend(&s, "  ", ViolationKindName(v.kind), " [", v.key, "]: ", v.message, "\n");
  }
  if (r.violations.size() > kShown) {
    absl::StrAppend(&s, "  ... and ", r.violations.size() - kShown, " more in summary.json\n");
  }
  return s;
}

}  // namespace kvstore::check

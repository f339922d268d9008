#include "tools/kvcheck/cheap_checks.h"

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/storage/version.h"

namespace kvstore::check {
namespace {

bool IsReadOf(const Op& op) { return op.f == Fn::kGet && op.outcome == Outcome::kOk && op.found; }

// An ok write whose answer carries the version it got.
bool HasWriteVersion(const Op& op) {
  return op.outcome == Outcome::kOk &&
         (op.WritesValue() || (op.f == Fn::kDelete && op.deleted));
}

void CheckReadSources(const History& h, const absl::flat_hash_map<std::string, int>& writer,
                      std::vector<Violation>* out) {
  for (const Op& r : h.ops) {
    if (!IsReadOf(r)) continue;
    auto it = writer.find(r.read_value);
    if (it == writer.end() || h.ops[it->second].key != r.key) {
      out->push_back({ViolationKind::kInventedRead, r.key,
                      absl::StrCat("read ", r.read_value, " which no write of ", r.key,
                                   " wrote: ", DescribeOp(r)),
                      {r.id}});
      continue;
    }
    const Op& w = h.ops[it->second];
    if (w.invoke_pos > r.complete_pos) {
      out->push_back({ViolationKind::kInventedRead, r.key,
                      absl::StrCat("read ", r.read_value, " before its write was invoked: ",
                                   DescribeOp(r), "; the write: ", DescribeOp(w)),
                      {r.id, w.id}});
    } else if (w.outcome == Outcome::kFail) {
      out->push_back({ViolationKind::kPhantom, r.key,
                      absl::StrCat("read ", r.read_value, " of a write that failed: ", DescribeOp(r),
                                   "; the write: ", DescribeOp(w)),
                      {r.id, w.id}});
    }
  }
}

void CheckOneVersionPerValue(const History& h, const absl::flat_hash_map<std::string, int>& writer,
                             std::vector<Violation>* out) {
  // Per written value, its versions in order of first sight and who saw each.
  std::map<int, std::vector<std::pair<uint64_t, int>>> seen;  // writer id -> (version, op)
  auto see = [&](int w, uint64_t version, int op) {
    auto& v = seen[w];
    for (const auto& [known, by] : v) {
      if (known == version) return;
    }
    v.push_back({version, op});
  };
  for (const Op& op : h.ops) {
    if (op.WritesValue() && op.outcome == Outcome::kOk) see(op.id, op.version, op.id);
    if (IsReadOf(op)) {
      auto it = writer.find(op.read_value);
      if (it != writer.end() && h.ops[it->second].key == op.key) see(it->second, op.version, op.id);
    }
  }
  for (const auto& [w, versions] : seen) {
    if (versions.size() < 2) continue;
    const Op& write = h.ops[w];
    Violation v{ViolationKind::kDoubleApply, write.key,
                absl::StrCat("value ", write.value, " seen with ", versions.size(), " versions:"),
                {w}};
    for (const auto& [version, by] : versions) {
      absl::StrAppend(&v.message, " ", version, " (", DescribeOp(h.ops[by]), ")");
      if (by != w) v.ops.push_back(by);
    }
    out->push_back(std::move(v));
  }
}

void CheckVersionsUnique(const History& h, const absl::flat_hash_map<std::string, int>& writer,
                         std::vector<Violation>* out) {
  // (key, version) -> the write it belongs to and the op that showed it.
  std::map<std::pair<std::string, uint64_t>, std::pair<int, int>> owner;
  std::map<std::pair<std::string, uint64_t>, bool> reported;
  auto claim = [&](const std::string& key, uint64_t version, int write, int by) {
    auto [it, fresh] = owner.try_emplace({key, version}, write, by);
    if (fresh || it->second.first == write || reported[{key, version}]) return;
    reported[{key, version}] = true;
    const Op& first = h.ops[it->second.second];
    const Op& second = h.ops[by];
    out->push_back({ViolationKind::kVersionReuse, key,
                    absl::StrCat("version ", version, " of ", key, " is used twice: ", DescribeOp(first),
                                 " and ", DescribeOp(second)),
                    {second.id, first.id}});
  };
  for (const Op& op : h.ops) {
    if (HasWriteVersion(op)) claim(op.key, op.version, op.id, op.id);
    if (IsReadOf(op)) {
      auto it = writer.find(op.read_value);
      if (it != writer.end() && h.ops[it->second].key == op.key) claim(op.key, op.version, it->second, op.id);
    }
  }
}

// Invokes and completions of ok writes with a version, in history order:
// (pos, is_completion, op).
std::vector<std::tuple<int64_t, bool, int>> WriteEvents(const History& h) {
  std::vector<std::tuple<int64_t, bool, int>> events;
  for (const Op& op : h.ops) {
    if (!HasWriteVersion(op)) continue;
    events.emplace_back(op.invoke_pos, false, op.id);
    events.emplace_back(op.complete_pos, true, op.id);
  }
  std::sort(events.begin(), events.end());
  return events;
}

void CheckVersionsIncrease(const History& h, std::vector<Violation>* out) {
  const std::vector<std::tuple<int64_t, bool, int>> events = WriteEvents(h);
  // Per key, the highest version completed so far and its op; per op in
  // flight, the one that had completed when it was invoked.
  absl::flat_hash_map<std::string, int> highest;
  absl::flat_hash_map<int, int> bound;
  for (const auto& [pos, completion, id] : events) {
    const Op& op = h.ops[id];
    auto it = highest.find(op.key);
    if (!completion) {
      if (it != highest.end()) bound[id] = it->second;
      continue;
    }
    if (auto b = bound.find(id); b != bound.end()) {
      const Op& before = h.ops[b->second];
      if (op.version <= before.version) {
        out->push_back({ViolationKind::kVersionRegression, op.key,
                        absl::StrCat("version ", op.version, " is not above ", before.version,
                                     " of a write that completed before it was invoked: ", DescribeOp(op),
                                     " after ", DescribeOp(before)),
                        {op.id, before.id}});
      }
    }
    if (it == highest.end()) {
      highest[op.key] = id;
    } else if (op.version > h.ops[it->second].version) {
      it->second = id;
    }
  }
}

// The history is one shard's, so a version's epoch names one leadership,
// and one leadership is one node (docs/replication.md: "one epoch has exactly
// one leader identity"). Ops without a "node" are left out.
void CheckOneNodePerEpoch(const History& h, std::vector<Violation>* out) {
  std::map<uint64_t, int> first;  // epoch -> first ok write of it that names a node
  std::set<std::pair<uint64_t, std::string>> reported;
  for (const Op& op : h.ops) {
    if (!HasWriteVersion(op) || op.node.empty()) continue;
    const uint64_t epoch = VersionEpoch(op.version);
    auto [it, fresh] = first.try_emplace(epoch, op.id);
    const Op& earlier = h.ops[it->second];
    if (fresh || earlier.node == op.node || !reported.insert({epoch, op.node}).second) continue;
    out->push_back(
        {ViolationKind::kEpochTwoNodes,
         op.key,
         absl::StrCat("epoch ", epoch, " acknowledged by two nodes: ", op.node, " (",
                      DescribeOp(op), ") and ", earlier.node, " (", DescribeOp(earlier), ")"),
         {op.id, earlier.id}});
  }
}

// Once a write of epoch E was acknowledged, the leaderships before E are
// over: a write invoked after that answer and acknowledged in an older epoch
// came from a leader that kept acknowledging after it was replaced (a stale
// leader, e.g. one that did not fence itself when its lease ran out). Any key.
void CheckNoStaleEpochAck(const History& h, std::vector<Violation>* out) {
  const std::vector<std::tuple<int64_t, bool, int>> events = WriteEvents(h);
  int newest = -1;                      // Completed write of the highest epoch so far.
  absl::flat_hash_map<int, int> bound;  // Op in flight -> `newest` at its invoke.
  for (const auto& [pos, completion, id] : events) {
    const Op& op = h.ops[id];
    if (!completion) {
      if (newest >= 0) bound[id] = newest;
      continue;
    }
    if (auto b = bound.find(id); b != bound.end()) {
      const Op& before = h.ops[b->second];
      if (VersionEpoch(op.version) < VersionEpoch(before.version)) {
        out->push_back({ViolationKind::kStaleEpochAck,
                        op.key,
                        absl::StrCat("acknowledged in epoch ", VersionEpoch(op.version),
                                     op.node.empty() ? "" : absl::StrCat(" by ", op.node),
                                     " after epoch ", VersionEpoch(before.version),
                                     " had acknowledged a write: ", DescribeOp(op), " after ",
                                     DescribeOp(before)),
                        {op.id, before.id}});
      }
    }
    if (newest < 0 || VersionEpoch(op.version) > VersionEpoch(h.ops[newest].version)) newest = id;
  }
}

// The version of its key a leader read showed (0 = absent), when it shows
// one: see cheap_checks.h, stale-read.
std::optional<uint64_t> ShownVersion(const Op& op) {
  if (op.outcome == Outcome::kFail) return op.current_version;
  if (op.outcome != Outcome::kOk) return std::nullopt;
  switch (op.f) {
    case Fn::kGet:
      return op.found ? op.version : 0;
    case Fn::kCas:
      return op.if_version;
    case Fn::kDelete:
      return op.deleted ? op.if_version : std::optional<uint64_t>(0);
    case Fn::kSet:
      return std::nullopt;
  }
  return std::nullopt;
}

// Whether delete `d` can have taken effect after write `w` and before read
// `r` completed, leaving the key absent.
bool DeleteCanFollow(const Op& d, const Op& w, const Op& r) {
  if (d.invoke_pos > r.complete_pos) return false;
  if (d.outcome == Outcome::kOk) return d.deleted && d.version > w.version;
  if (d.outcome == Outcome::kInfo) return !d.if_version.has_value() || *d.if_version >= w.version;
  return false;
}

// Versions of a key only grow, so the newest state acknowledged before a read
// was invoked is that of the ok write with the highest version completed by
// then; a leader read must show it or a later one.
void CheckNoStaleRead(const History& h, std::vector<Violation>* out) {
  struct Acked {
    int64_t complete_pos;
    int newest;  // The op of the highest version among this and the earlier entries.
  };
  absl::flat_hash_map<std::string, std::vector<Acked>> acked;  // key -> by completion
  absl::flat_hash_map<std::string, std::vector<int>> deletes;
  std::vector<int> by_completion;
  for (const Op& op : h.ops) {
    if (HasWriteVersion(op)) by_completion.push_back(op.id);
    if (op.f == Fn::kDelete) deletes[op.key].push_back(op.id);
  }
  std::sort(by_completion.begin(), by_completion.end(),
            [&](int a, int b) { return h.ops[a].complete_pos < h.ops[b].complete_pos; });
  for (int id : by_completion) {
    const Op& op = h.ops[id];
    std::vector<Acked>& list = acked[op.key];
    int newest = id;
    if (!list.empty() && h.ops[list.back().newest].version > op.version)
      newest = list.back().newest;
    list.push_back({op.complete_pos, newest});
  }
  for (const Op& r : h.ops) {
    const std::optional<uint64_t> shown = ShownVersion(r);
    if (!shown.has_value()) continue;
    auto it = acked.find(r.key);
    if (it == acked.end()) continue;
    const std::vector<Acked>& list = it->second;
    auto before =
        std::lower_bound(list.begin(), list.end(), r.invoke_pos,
                         [](const Acked& a, int64_t pos) { return a.complete_pos < pos; });
    if (before == list.begin()) continue;
    const Op& w = h.ops[std::prev(before)->newest];
    bool stale;
    if (*shown != 0) {
      stale = *shown < w.version;
    } else if (w.f == Fn::kDelete) {
      stale = false;
    } else {
      stale = true;
      for (int d : deletes[r.key]) {
        if (DeleteCanFollow(h.ops[d], w, r)) stale = false;
      }
    }
    if (!stale) continue;
    out->push_back({ViolationKind::kStaleRead,
                    r.key,
                    absl::StrCat("read ", r.key,
                                 *shown == 0 ? " absent" : absl::StrCat(" at version ", *shown),
                                 ", behind a write acknowledged before the read was invoked: ",
                                 DescribeOp(r), "; the write: ", DescribeOp(w)),
                    {r.id, w.id}});
  }
}

}  // namespace

void MarkReadsBehindLostWrites(const History& h, const std::vector<int>& lost_ops,
                               std::vector<Violation>* violations) {
  const absl::flat_hash_set<int> lost(lost_ops.begin(), lost_ops.end());
  absl::flat_hash_map<std::string, std::vector<int>> writes, deletes;  // key -> op ids
  // node -> (completion, epoch) of the ok writes it acknowledged, by completion.
  absl::flat_hash_map<std::string, std::vector<std::pair<int64_t, uint64_t>>> acks;
  for (const Op& op : h.ops) {
    if (HasWriteVersion(op)) writes[op.key].push_back(op.id);
    if (op.f == Fn::kDelete) deletes[op.key].push_back(op.id);
    if (HasWriteVersion(op) && !op.node.empty())
      acks[op.node].push_back({op.complete_pos, VersionEpoch(op.version)});
  }
  for (auto& [node, list] : acks) std::sort(list.begin(), list.end());
  // The newest epoch `node` had acknowledged a write in when `r` completed
  // (0: none, or the node is unknown). Epochs only grow on a node.
  auto epoch_of = [&](const Op& r) -> uint64_t {
    auto it = acks.find(r.node);
    if (r.node.empty() || it == acks.end()) return 0;
    uint64_t newest = 0;
    for (const auto& [pos, epoch] : it->second) {
      if (pos >= r.complete_pos) break;
      newest = std::max(newest, epoch);
    }
    return newest;
  };
  for (Violation& v : *violations) {
    if (v.kind != ViolationKind::kStaleRead || v.ops.empty()) continue;
    const Op& r = h.ops[v.ops[0]];
    const std::optional<uint64_t> shown = ShownVersion(r);
    if (!shown.has_value()) continue;
    const uint64_t read_epoch = epoch_of(r);
    int missed = 0;
    bool all_lost = true;
    for (int id : writes[r.key]) {
      const Op& w = h.ops[id];
      if (w.complete_pos >= r.invoke_pos || w.version <= *shown) continue;
      if (*shown == 0) {
        // Absent: a delete is what the read shows, and a set a delete can
        // have removed before the read is not missed.
        if (w.f == Fn::kDelete) continue;
        bool explained = false;
        for (int d : deletes[r.key]) explained = explained || DeleteCanFollow(h.ops[d], w, r);
        if (explained) continue;
      }
      ++missed;
      // Lost: the final state lacks it, or the node that answered the read
      // leads a newer epoch than the write's without it (a later write of
      // the key may have hidden the loss from the final read). That node leads
      // a newer epoch when it acknowledged a write of one before the read
      // completed, or when another node acknowledged the write and the read
      // showed a state of the write's epoch: only a leader answers a leader
      // read, and the write's epoch had one leader (epoch-two-nodes).
      const bool newer_leader_lacks_it =
          VersionEpoch(w.version) < read_epoch ||
          (!r.node.empty() && !w.node.empty() && r.node != w.node && *shown != 0 &&
           VersionEpoch(*shown) == VersionEpoch(w.version));
      all_lost = all_lost && (lost.contains(id) || newer_leader_lacks_it);
    }
    if (missed == 0 || !all_lost) continue;
    v.kind = ViolationKind::kReadBehindLostWrite;
    v.message =
        absl::StrCat("read ", r.key, *shown == 0 ? " absent" : absl::StrCat(" at version ", *shown),
                     ", behind ", missed, " acknowledged write", missed == 1 ? "" : "s", " that ",
                     missed == 1 ? "was" : "were", " lost later: ", DescribeOp(r),
                     "; the newest: ", DescribeOp(h.ops[v.ops.size() > 1 ? v.ops[1] : v.ops[0]]));
  }
}

std::vector<Violation> RunCheapChecks(const History& h) {
  absl::flat_hash_map<std::string, int> writer;  // value -> its write (values are unique)
  for (const Op& op : h.ops) {
    if (op.WritesValue()) writer[op.value] = op.id;
  }
  std::vector<Violation> out;
  CheckReadSources(h, writer, &out);
  CheckOneVersionPerValue(h, writer, &out);
  CheckVersionsUnique(h, writer, &out);
  CheckVersionsIncrease(h, &out);
  CheckOneNodePerEpoch(h, &out);
  CheckNoStaleEpochAck(h, &out);
  CheckNoStaleRead(h, &out);
  return out;
}

}  // namespace kvstore::check

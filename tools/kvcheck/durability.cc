#include "tools/kvcheck/durability.h"

#include "absl/container/flat_hash_map.h"

namespace kvstore::check {
namespace {

bool Acked(const Op& op) {
  return op.outcome == Outcome::kOk && (op.WritesValue() || (op.f == Fn::kDelete && op.deleted));
}

// Whether a delete can explain that the key is absent at the final read `end`
// although `w` was acked.
bool SupersededByDelete(const Op& w, const Op& d, const Op& end) {
  if (d.f != Fn::kDelete || d.key != w.key || d.invoke_pos > end.complete_pos) return false;
  if (d.outcome == Outcome::kOk) return d.deleted && d.version > w.version;
  if (d.outcome == Outcome::kInfo) return !d.if_version.has_value() || *d.if_version >= w.version;
  return false;
}

}  // namespace

DurabilityFigures ComputeDurability(const History& h) {
  // Per key, its last ok final get (by completion).
  absl::flat_hash_map<std::string, const Op*> final_read;
  for (const Op& op : h.ops) {
    if (!op.final_phase || op.f != Fn::kGet || op.outcome != Outcome::kOk) continue;
    const Op*& last = final_read[op.key];
    if (last == nullptr || op.complete_pos > last->complete_pos) last = &op;
  }
  absl::flat_hash_map<std::string, std::vector<const Op*>> deletes;
  for (const Op& op : h.ops) {
    if (op.f == Fn::kDelete) deletes[op.key].push_back(&op);
  }

  DurabilityFigures fig;
  fig.keys_with_final_read = static_cast<int64_t>(final_read.size());
  for (const auto& [key, op] : final_read) fig.final_read[key] = op->id;
  for (const Op& op : h.ops) {
    if (!op.IsWrite()) continue;
    if (Acked(op)) ++fig.acked;
    auto it = final_read.find(op.key);
    // A write invoked after the final read is not judged by it.
    if (it == final_read.end() || op.invoke_pos > it->second->complete_pos) {
      if (Acked(op)) ++fig.acked_without_final_read;
      continue;
    }
    const Op& end = *it->second;
    const bool holds_value = op.WritesValue() && end.found && end.read_value == op.value;
    if (op.outcome == Outcome::kInfo && holds_value) {
      ++fig.recovered;
      fig.recovered_ops.push_back(op.id);
    }
    if (op.outcome == Outcome::kFail && holds_value) {
      ++fig.phantom;
      fig.phantom_ops.push_back(op.id);
    }
    if (!Acked(op)) continue;
    bool lost;
    if (op.f == Fn::kDelete) {
      lost = end.found && end.version <= op.version;
    } else if (end.found) {
      lost = end.version < op.version || (end.version == op.version && !holds_value);
    } else {
      lost = true;
      for (const Op* d : deletes[op.key]) {
        if (SupersededByDelete(op, *d, end)) lost = false;
      }
    }
    if (lost) {
      ++fig.lost;
      fig.lost_ops.push_back(op.id);
    }
  }
  return fig;
}

}  // namespace kvstore::check

#include "tools/kvcheck/explain.h"

#include <algorithm>
#include <set>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvstore::check {
namespace {

int64_t LastPos(const Op& op) { return op.complete_pos == kNoEvent ? op.invoke_pos : op.complete_pos; }

int64_t Evident(const History& h, const Violation& v) {
  int64_t pos = -1;
  for (int id : v.ops) pos = std::max(pos, LastPos(h.ops[id]));
  return v.ops.empty() ? INT64_MAX : pos;
}

std::string Event(const Op& op, bool invoke, int64_t t0) {
  const int64_t i = invoke ? op.invoke_i : op.complete_i;
  const int64_t t = (invoke ? op.invoke_t_ns : op.complete_t_ns) - t0;
  std::string s = absl::StrFormat("i=%-6d t=+%.6fs proc %-4d ", i, t / 1e9, op.proc);
  if (invoke) {
    absl::StrAppend(&s, "invoke ", FnName(op.f), " ", op.key);
    if (op.WritesValue()) absl::StrAppend(&s, " ", op.value);
    if (op.if_version.has_value()) absl::StrAppend(&s, " if_version=", *op.if_version);
    return s;
  }
  absl::StrAppend(&s, OutcomeName(op.outcome), " ", FnName(op.f));
  if (op.outcome == Outcome::kOk) {
    if (op.f == Fn::kGet) {
      absl::StrAppend(&s, op.found ? absl::StrCat(" found ", op.read_value, " version=", op.version)
                                   : std::string(" not found"));
    } else if (op.f == Fn::kDelete && !op.deleted) {
      absl::StrAppend(&s, " deleted=false");
    } else {
      absl::StrAppend(&s, " version=", op.version);
    }
  }
  if (op.current_version.has_value()) absl::StrAppend(&s, " current_version=", *op.current_version);
  return s;
}

}  // namespace

Explanation Explain(const History& h, const Report& r, absl::string_view key) {
  Explanation out;
  const Violation* first = nullptr;
  for (const Violation& v : r.violations) {
    if (v.key != key) continue;
    if (first == nullptr || Evident(h, v) < Evident(h, *first)) first = &v;
  }
  if (first == nullptr) {
    const bool known = std::any_of(h.ops.begin(), h.ops.end(), [&](const Op& op) { return op.key == key; });
    out.text = known ? absl::StrCat("no violation for key ", key, "\n")
                     : absl::StrCat("no op of key ", key, " in the history\n");
    return out;
  }
  out.violated = true;
  out.text = absl::StrCat(ViolationKindName(first->kind), " [", key, "]: ", first->message, "\n");
  if (first->ops.empty()) {
    absl::StrAppend(&out.text, "(no window: the search names no op)\n");
    return out;
  }

  // The named ops and the writes of what they read.
  absl::flat_hash_map<std::string, int> writer;
  for (const Op& op : h.ops) {
    if (op.WritesValue() && op.key == key) writer[op.value] = op.id;
  }
  std::set<int> named(first->ops.begin(), first->ops.end());
  bool from_a_read_write = false;
  for (int id : first->ops) {
    const Op& op = h.ops[id];
    if (op.f == Fn::kGet && op.found) {
      if (auto it = writer.find(op.read_value); it != writer.end()) {
        named.insert(it->second);
        from_a_read_write = true;
      }
    }
  }
  int64_t lo = INT64_MAX, hi = -1;
  for (int id : named) {
    lo = std::min(lo, h.ops[id].invoke_pos);
    hi = std::max(hi, LastPos(h.ops[id]));
  }
  // Unless a read names the write it starts from, the state they started
  // from: the last ok write completed before lo. A stale read names the
  // write it missed, which is where its story starts.
  const bool names_its_start = from_a_read_write || first->kind == ViolationKind::kStaleRead ||
                               first->kind == ViolationKind::kReadBehindLostWrite;
  const Op* before = nullptr;
  for (const Op& op : h.ops) {
    if (names_its_start) break;
    if (op.key != key || !op.IsWrite() || op.outcome != Outcome::kOk || op.complete_pos >= lo) continue;
    if (before == nullptr || op.complete_pos > before->complete_pos) before = &op;
  }
  if (before != nullptr) {
    named.insert(before->id);
    lo = before->invoke_pos;
  }

  std::vector<std::tuple<int64_t, int, bool>> events;  // (pos, op, invoke)
  for (const Op& op : h.ops) {
    if (op.key != key) continue;
    if (op.invoke_pos >= lo && op.invoke_pos <= hi) events.emplace_back(op.invoke_pos, op.id, true);
    if (op.complete_pos != kNoEvent && op.complete_pos >= lo && op.complete_pos <= hi) {
      events.emplace_back(op.complete_pos, op.id, false);
    }
  }
  std::sort(events.begin(), events.end());
  const int64_t t0 = h.ops.empty() ? 0 : h.ops.front().invoke_t_ns;
  absl::StrAppend(&out.text, "window: ", events.size(), " events of ", key, " (t from the first event of the history)\n");
  for (const auto& [pos, id, invoke] : events) {
    absl::StrAppend(&out.text, named.count(id) ? "* " : "  ", Event(h.ops[id], invoke, t0), "\n");
  }
  return out;
}

}  // namespace kvstore::check

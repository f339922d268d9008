#include "tools/kvcheck/linearizability.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tools/kvcheck/model.h"

namespace kvstore::check {
namespace {

// The search's own view of the key: model ops and the event list.
struct KeyProblem {
  std::vector<ModelOp> ops;
  std::vector<int> history_id;        // Model op -> History::ops id.
  std::vector<std::string> value_of;  // Value id -> value (id 0 unused).
  // Events in history order: (position, model op, is_call).
  std::vector<std::tuple<int64_t, int, bool>> events;
};

KeyProblem Build(const History& h, const std::vector<int>& ids) {
  KeyProblem p;
  p.value_of.push_back("");
  absl::flat_hash_map<std::string, int> value_id;
  auto id_of = [&](const std::string& v) {
    auto [it, fresh] = value_id.try_emplace(v, static_cast<int>(p.value_of.size()));
    if (fresh) p.value_of.push_back(v);
    return it->second;
  };
  // An info write's version is whatever a read of its value saw (the first
  // one: a second, different one is a double apply, reported elsewhere).
  absl::flat_hash_map<std::string, uint64_t> read_version;
  for (int id : ids) {
    const Op& op = h.ops[id];
    if (op.f == Fn::kGet && op.outcome == Outcome::kOk && op.found) {
      read_version.try_emplace(op.read_value, op.version);
    }
  }
  for (int id : ids) {
    const Op& op = h.ops[id];
    ModelOp m;
    m.certain = op.outcome != Outcome::kInfo;
    if (op.outcome == Outcome::kFail) {
      if (!op.current_version.has_value() || op.f == Fn::kGet) continue;
      m.kind = ModelOp::Kind::kVersionRead;
      m.version = *op.current_version;
    } else if (op.f == Fn::kGet) {
      if (!m.certain) continue;
      m.kind = ModelOp::Kind::kRead;
      m.found = op.found;
      if (op.found) {
        m.value = id_of(op.read_value);
        m.version = op.version;
      }
    } else if (op.WritesValue()) {
      m.kind = ModelOp::Kind::kWrite;
      m.value = id_of(op.value);
      m.if_version = op.if_version;
      if (m.certain) {
        m.version = op.version;
      } else if (auto it = read_version.find(op.value); it != read_version.end()) {
        m.version = it->second;
      }
    } else {
      m.kind = ModelOp::Kind::kDelete;
      m.if_version = op.if_version;
      m.deleted = op.deleted;
      m.version = op.version;
    }
    const int mid = static_cast<int>(p.ops.size());
    p.ops.push_back(m);
    p.history_id.push_back(id);
    p.events.emplace_back(op.invoke_pos, mid, true);
    if (m.certain) p.events.emplace_back(op.complete_pos, mid, false);
  }
  std::sort(p.events.begin(), p.events.end());
  return p;
}

// A memo entry: which ops are linearized, and the state they leave.
struct Config {
  std::vector<uint64_t> done;
  RegisterState state;
  bool operator==(const Config& o) const { return state == o.state && done == o.done; }
  template <typename H>
  friend H AbslHashValue(H h, const Config& c) {
    return H::combine(std::move(h), c.state, c.done);
  }
};

// The events as a doubly linked list with a sentinel at 0, so linearizing an
// op unlinks its call and completion and backing up relinks them in O(1).
class EventList {
 public:
  explicit EventList(const KeyProblem& p) {
    const size_t n = p.events.size() + 1;
    prev_.resize(n);
    next_.resize(n);
    op_.assign(n, -1);
    is_call_.assign(n, false);
    match_.assign(n, 0);
    std::vector<int> call_of(p.ops.size(), 0);
    for (size_t e = 1; e < n; ++e) {
      const auto& [pos, op, call] = p.events[e - 1];
      op_[e] = op;
      is_call_[e] = call;
      if (call) {
        call_of[op] = static_cast<int>(e);
      } else {
        match_[call_of[op]] = static_cast<int>(e);
      }
    }
    for (size_t e = 0; e < n; ++e) {
      prev_[e] = static_cast<int>((e + n - 1) % n);
      next_[e] = static_cast<int>((e + 1) % n);
    }
  }
  int First() const { return next_[0]; }
  int Next(int e) const { return next_[e]; }
  bool End(int e) const { return e == 0; }
  int Op(int e) const { return op_[e]; }
  bool IsCall(int e) const { return is_call_[e]; }
  void Lift(int call) {
    Unlink(call);
    if (match_[call] != 0) Unlink(match_[call]);
  }
  void Unlift(int call) {
    if (match_[call] != 0) Relink(match_[call]);
    Relink(call);
  }

 private:
  void Unlink(int e) {
    next_[prev_[e]] = next_[e];
    prev_[next_[e]] = prev_[e];
  }
  void Relink(int e) {
    next_[prev_[e]] = e;
    prev_[next_[e]] = e;
  }
  std::vector<int> prev_, next_, op_, match_;
  std::vector<bool> is_call_;
};

int64_t SteadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

const char* VerdictName(Verdict v) {
  switch (v) {
    case Verdict::kValid: return "valid";
    case Verdict::kInvalid: return "invalid";
    case Verdict::kUnknown: return "unknown";
  }
  return "?";
}

KeyResult CheckLinearizable(const History& h, const std::vector<int>& ids, const SearchLimits& limits) {
  const KeyProblem p = Build(h, ids);
  EventList list(p);
  const std::function<int64_t()> now = limits.now_ns ? limits.now_ns : SteadyNowNs;
  const int64_t deadline =
      limits.time_limit_ms > 0 ? now() + limits.time_limit_ms * 1'000'000 : INT64_MAX;
  const int64_t entry_bytes =
      static_cast<int64_t>(sizeof(Config) + 16 + ((p.ops.size() + 63) / 64) * sizeof(uint64_t));

  int required = 0;
  for (const ModelOp& op : p.ops) required += op.certain ? 1 : 0;
  absl::flat_hash_set<Config> memo;
  Config cur{std::vector<uint64_t>((p.ops.size() + 63) / 64, 0), RegisterState{}};
  struct Frame {
    int call;
    RegisterState before;
  };
  std::vector<Frame> stack;
  KeyResult result;
  int64_t stuck_pos = -1;
  std::vector<RegisterState> stuck_states;

  auto flip = [&](int op) { cur.done[op / 64] ^= uint64_t{1} << (op % 64); };
  int e = list.First();
  for (int64_t steps = 0;; ++steps) {
    if (required == 0) {
      result.verdict = Verdict::kValid;
      break;
    }
    if ((steps & 1023) == 1023) {
      if (now() > deadline) {
        result.verdict = Verdict::kUnknown;
        result.detail = absl::StrCat("time limit of ", limits.time_limit_ms, " ms reached after ",
                                     memo.size(), " states");
        break;
      }
      if (static_cast<int64_t>(memo.size()) * entry_bytes > limits.max_memo_bytes) {
        result.verdict = Verdict::kUnknown;
        result.detail = absl::StrCat("memory limit of ", limits.max_memo_bytes >> 20, " MiB reached after ",
                                     memo.size(), " states");
        break;
      }
    }
    if (!list.End(e) && list.IsCall(e)) {
      const int op = list.Op(e);
      std::optional<RegisterState> next = Step(cur.state, p.ops[op]);
      if (next.has_value()) {
        const RegisterState before = cur.state;
        flip(op);
        cur.state = *next;
        if (memo.insert(cur).second) {
          stack.push_back({e, before});
          list.Lift(e);
          if (p.ops[op].certain) --required;
          e = list.First();
          continue;
        }
        flip(op);
        cur.state = before;
      }
      e = list.Next(e);
      continue;
    }
    // A completion whose op is not linearized (or, defensively, the end with
    // ops left): this order cannot work, undo the last choice.
    if (!list.End(e)) {
      const int64_t pos = std::get<0>(p.events[e - 1]);
      if (pos > stuck_pos) {
        stuck_pos = pos;
        result.stuck_op = p.history_id[list.Op(e)];
        stuck_states.clear();
      }
      if (pos == stuck_pos && stuck_states.size() < 4 &&
          std::find(stuck_states.begin(), stuck_states.end(), cur.state) == stuck_states.end()) {
        stuck_states.push_back(cur.state);
      }
    }
    if (stack.empty()) {
      result.verdict = Verdict::kInvalid;
      break;
    }
    const Frame f = stack.back();
    stack.pop_back();
    const int op = list.Op(f.call);
    flip(op);
    cur.state = f.before;
    list.Unlift(f.call);
    if (p.ops[op].certain) ++required;
    e = list.Next(f.call);
  }
  result.states = static_cast<int64_t>(memo.size());
  if (result.verdict != Verdict::kInvalid) {
    result.stuck_op = -1;
  } else {
    std::vector<std::string> states;
    for (const RegisterState& s : stuck_states) states.push_back(DescribeState(s, p.value_of[s.value]));
    result.detail = absl::StrCat("the key could be ", absl::StrJoin(states, " or "), " there");
  }
  return result;
}

}  // namespace kvstore::check

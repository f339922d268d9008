#include "tools/kvcheck/checker.h"

#include "absl/strings/str_cat.h"
#include "tools/kvcheck/cheap_checks.h"
#include "tools/kvcheck/replica_reads.h"

namespace kvstore::check {

int64_t Report::Count(ViolationKind kind) const {
  int64_t n = 0;
  for (const Violation& v : violations) n += v.kind == kind;
  return n;
}

Report Check(const History& h, const CheckOptions& options) {
  Report r;
  for (const Op& op : h.ops) ++r.ops[FnName(op.f)][OutcomeName(op.outcome)];

  r.violations = RunCheapChecks(h);
  // Replica reads: counted apart, and checked only for their sources.
  for (const Op& op : h.replica_reads) ++r.ops["read-any"][OutcomeName(op.outcome)];
  for (Violation& v : CheckReplicaReads(h)) r.violations.push_back(std::move(v));

  for (const auto& [key, ids] : OpsByKey(h)) {
    KeyResult k = CheckLinearizable(h, ids, options.search);
    if (k.verdict == Verdict::kInvalid) {
      Violation v{ViolationKind::kNotLinearizable, key, absl::StrCat("no order of the ops of ", key, " fits"), {}};
      if (k.stuck_op >= 0) {
        absl::StrAppend(&v.message, ": ", DescribeOp(h.ops[k.stuck_op]), " cannot take effect; ", k.detail);
        v.ops.push_back(k.stuck_op);
      }
      r.violations.push_back(std::move(v));
    } else if (k.verdict == Verdict::kUnknown) {
      r.violations.push_back({ViolationKind::kUndecided, key,
                              absl::StrCat("linearizability of ", key, " undecided: ", k.detail), {}});
    }
    r.keys.emplace(key, std::move(k));
  }

  if (options.fault_windows.has_value())
    r.availability = ComputeAvailability(h, *options.fault_windows);

  r.durability = ComputeDurability(h);
  MarkReadsBehindLostWrites(h, r.durability.lost_ops, &r.violations);
  for (int id : r.durability.lost_ops) {
    const Op& op = h.ops[id];
    const int end = r.durability.final_read.at(op.key);
    r.violations.push_back({ViolationKind::kLostWrite, op.key,
                            absl::StrCat("acknowledged write missing at the end: ", DescribeOp(op),
                                         "; final read: ", DescribeOp(h.ops[end])),
                            {id, end}});
  }
  return r;
}

}  // namespace kvstore::check

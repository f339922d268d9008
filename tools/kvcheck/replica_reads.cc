#include "tools/kvcheck/replica_reads.h"

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace kvstore::check {

std::vector<Violation> CheckReplicaReads(const History& h) {
  std::vector<Violation> out;
  if (h.replica_reads.empty()) return out;
  // Written values are unique in a history (ParseHistory refuses a repeat).
  absl::flat_hash_map<std::string, int> writer;
  for (const Op& op : h.ops) {
    if (op.WritesValue()) writer.emplace(op.value, op.id);
  }
  for (const Op& r : h.replica_reads) {
    if (r.outcome != Outcome::kOk || !r.found) continue;  // Absent is a stale read at worst.
    auto it = writer.find(r.read_value);
    if (it == writer.end() || h.ops[it->second].key != r.key) {
      out.push_back({ViolationKind::kInventedRead,
                     r.key,
                     absl::StrCat("replica read of ", r.read_value, " which no write of ", r.key,
                                  " wrote: ", DescribeOp(r)),
                     {}});
      continue;
    }
    const Op& w = h.ops[it->second];
    // A read that completed before the write's invoke was even recorded.
    if (r.complete_pos != kNoEvent && w.invoke_pos > r.complete_pos) {
      out.push_back({ViolationKind::kInventedRead,
                     r.key,
                     absl::StrCat("replica read of ", r.read_value,
                                  " before its write was invoked: ", DescribeOp(r),
                                  "; the write: ", DescribeOp(w)),
                     {w.id}});
    } else if (w.outcome == Outcome::kFail) {
      out.push_back({ViolationKind::kPhantom,
                     r.key,
                     absl::StrCat("replica read of ", r.read_value, " of a write that failed: ",
                                  DescribeOp(r), "; the write: ", DescribeOp(w)),
                     {w.id}});
    }
  }
  return out;
}

}  // namespace kvstore::check

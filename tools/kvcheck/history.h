// A recorded history of client operations (docs/reliability.md, "History
// format"): JSON Lines written by the fault driver, one event per line, paired
// here into operations. Parsing is strict: a history the checker would have to
// guess about is refused, naming the line and the reason, so that a driver bug
// cannot pass for a valid run.
#ifndef KVSTORE_TOOLS_KVCHECK_HISTORY_H_
#define KVSTORE_TOOLS_KVCHECK_HISTORY_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvstore::check {

// kCas is a set with if_version (a "set" line carrying if_version is one too).
enum class Fn { kGet, kSet, kCas, kDelete };
enum class Outcome {
  kOk,
  kFail,  // Definitely not applied.
  kInfo,  // Outcome unknown: may take effect at any time after the invoke, or never.
};

const char* FnName(Fn f);            // "get", "set", "cas", "delete"
const char* OutcomeName(Outcome o);  // "ok", "fail", "info"

// Where an event sits in the history: lines are in real-time order (the
// driver writes the invoke before sending and the completion after the answer).
inline constexpr int64_t kNoEvent = -1;

struct Op {
  int id = 0;  // Index in History::ops, which is ordered by invoke.
  int64_t proc = 0;
  Fn f = Fn::kGet;
  std::string key;
  Outcome outcome = Outcome::kInfo;
  bool final_phase = false;  // "phase":"final" on either line: a read after healing.

  // Events: 0-based position of the line among the history's events, the
  // line's "i" and "t_ns". complete_pos is kNoEvent when the history ended
  // with the op still in flight (it is then an info op).
  int64_t invoke_pos = kNoEvent;
  int64_t complete_pos = kNoEvent;
  int64_t invoke_i = 0;
  int64_t complete_i = 0;
  int64_t invoke_t_ns = 0;
  int64_t complete_t_ns = 0;
  int invoke_line = 0;  // 1-based line numbers in the file, for messages.
  int complete_line = 0;

  // Request: the written value (set, cas) and the precondition (cas, delete).
  std::string value;
  std::optional<uint64_t> if_version;

  // Results. get ok: found, read_value, version. set/cas ok: version.
  // delete ok: deleted, version (when deleted). A fail may carry the version
  // the server saw (a CAS or conditional-delete mismatch): a read of it.
  bool found = false;
  std::string read_value;
  uint64_t version = 0;
  bool deleted = false;
  std::optional<uint64_t> current_version;
  // The node that answered ("node" on the completion line; "" when the
  // history does not say), for the per-epoch checks (cheap_checks.h).
  std::string node;
  // f "read-any": a get with read_mode ANY_REPLICA, which may be stale. Kept
  // in History::replica_reads, apart from the ops the model checks.
  bool replica_read = false;

  bool IsWrite() const { return f != Fn::kGet; }
  // Set or cas: writes `value`.
  bool WritesValue() const { return f == Fn::kSet || f == Fn::kCas; }
  // The op never completes for the checker: info, or unfinished at the end.
  bool Open() const { return outcome == Outcome::kInfo; }
};

struct History {
  std::vector<Op> ops;  // Ordered by invoke_pos; op.id == index.
  // "read-any" ops (f kGet, replica_read set), ordered by invoke_pos; op.id
  // == index here. They are not in `ops`: a replica read may be stale, so it
  // is not linearizable and no check of `ops` applies to it; replica_reads.h
  // checks them only for reading values that were written and did not fail.
  std::vector<Op> replica_reads;
  int64_t events = 0;  // Lines holding an event.
};

// Parses a whole history. Blank lines are skipped. On a malformed line, or a
// written value that is not unique, the error is INVALID_ARGUMENT and its
// message starts "line N: ".
absl::StatusOr<History> ParseHistory(absl::string_view text);

// Reads and parses a file; NOT_FOUND etc. name the path.
absl::StatusOr<History> ReadHistoryFile(const std::string& path);

// Op ids per key, each list in invoke order; keys sorted (stable output).
std::map<std::string, std::vector<int>> OpsByKey(const History& h);

// "cas r2 c3-17 if_version=41 (proc 3, i=17..18)" for messages; a replica
// read is "read-any r2 -> ok ...".
std::string DescribeOp(const Op& op);

}  // namespace kvstore::check

#endif  // KVSTORE_TOOLS_KVCHECK_HISTORY_H_

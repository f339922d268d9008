// The sequential specification one key must follow: a versioned register
// (docs/reliability.md, "Checker"). Pure functions on small values, so the
// linearizability search can copy and hash states freely.
//
// Versions are the shard's log indices: every write that changes the key gets
// one greater than any earlier version of the key, including that of the
// delete which removed it. An `info` write that no read revealed has an
// unknown version; the state then only knows a least possible version, and
// the first observation of the version (a CAS's if_version, a mismatch's
// current version) pins it.
#ifndef KVSTORE_TOOLS_KVCHECK_MODEL_H_
#define KVSTORE_TOOLS_KVCHECK_MODEL_H_

#include <cstdint>
#include <optional>
#include <string>

namespace kvstore::check {

struct RegisterState {
  bool present = false;
  int value = 0;         // Value id (> 0) when present; values are unique per write.
  uint64_t version = 0;  // The version, or when !exact the least it can be. When
                         // absent: that of the delete that removed the key (0 if none).
  bool exact = true;

  bool operator==(const RegisterState& o) const {
    return present == o.present && value == o.value && version == o.version && exact == o.exact;
  }
  template <typename H>
  friend H AbslHashValue(H h, const RegisterState& s) {
    return H::combine(std::move(h), s.present, s.value, s.version, s.exact);
  }
};

// One operation as the model sees it (values as ids, outcome folded in).
struct ModelOp {
  enum class Kind {
    kRead,         // get ok: found, value, version.
    kVersionRead,  // A mismatch that named the current version (0 = absent).
    kWrite,        // set or cas: value, if_version, version (0 = unknown).
    kDelete,       // if_version; certain: deleted and version; else deletes if it can.
  };
  Kind kind = Kind::kRead;
  bool certain = true;  // false: an info write, which may also never happen.
  int value = 0;
  bool found = false;
  bool deleted = false;
  std::optional<uint64_t> if_version;
  uint64_t version = 0;
};

// The state after `op` takes effect in `s`, or nullopt if it cannot take effect
// there. An uncertain op that would change nothing also yields nullopt: never
// happening is always an option for it, and the search need not try both.
std::optional<RegisterState> Step(const RegisterState& s, const ModelOp& op);

// "absent", "v3@17", "v3@>=17" for messages; `value_name` maps ids to values.
std::string DescribeState(const RegisterState& s, const std::string& value_name);

}  // namespace kvstore::check

#endif  // KVSTORE_TOOLS_KVCHECK_MODEL_H_

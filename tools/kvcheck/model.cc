#include "tools/kvcheck/model.h"

#include "absl/strings/str_cat.h"

namespace kvstore::check {
namespace {

// Whether the key's current version can be `want` (0 = absent); pins an
// unknown version to it.
bool VersionIs(RegisterState* s, uint64_t want) {
  if (want == 0) return !s->present;
  if (!s->present) return false;
  if (s->exact) return s->version == want;
  if (want < s->version) return false;
  s->version = want;
  s->exact = true;
  return true;
}

// Whether a write may get `version` (0 = unknown) in *s, and the version the
// state has after it. A known version must exceed the current one; an unknown
// one does, so its least value is one more.
bool NextVersion(const RegisterState& s, uint64_t version, RegisterState* next) {
  if (version == 0) {
    next->version = s.version + 1;
    next->exact = false;
    return true;
  }
  if (version <= s.version) return false;
  next->version = version;
  next->exact = true;
  return true;
}

}  // namespace

std::optional<RegisterState> Step(const RegisterState& state, const ModelOp& op) {
  RegisterState s = state;
  switch (op.kind) {
    case ModelOp::Kind::kRead:
      if (!op.found) {
        if (s.present) return std::nullopt;
        return s;
      }
      if (!s.present || s.value != op.value || !VersionIs(&s, op.version)) return std::nullopt;
      return s;

    case ModelOp::Kind::kVersionRead:
      if (!VersionIs(&s, op.version)) return std::nullopt;
      return s;

    case ModelOp::Kind::kWrite: {
      if (op.if_version.has_value() && !VersionIs(&s, *op.if_version)) return std::nullopt;
      RegisterState next;
      next.present = true;
      next.value = op.value;
      if (!NextVersion(s, op.version, &next)) return std::nullopt;
      return next;
    }

    case ModelOp::Kind::kDelete: {
      if (op.certain && !op.deleted) {
        // The store deletes nothing when the key is absent, and an if_version
        // other than 0 on an absent key is a mismatch, which fails.
        if (s.present || op.if_version.value_or(0) != 0) return std::nullopt;
        return s;
      }
      // It deletes (or, uncertain, would delete): the key must be there.
      if (!s.present) return std::nullopt;
      if (op.if_version.has_value() && (*op.if_version == 0 || !VersionIs(&s, *op.if_version))) {
        return std::nullopt;
      }
      RegisterState next;
      next.present = false;
      if (!NextVersion(s, op.certain ? op.version : 0, &next)) return std::nullopt;
      return next;
    }
  }
  return std::nullopt;
}

std::string DescribeState(const RegisterState& s, const std::string& value_name) {
  if (!s.present) return "absent";
  return absl::StrCat(value_name, "@", s.exact ? "" : ">=", s.version);
}

}  // namespace kvstore::check

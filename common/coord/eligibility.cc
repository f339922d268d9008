#include "common/coord/eligibility.h"

#include <tuple>

#include "absl/strings/str_cat.h"

namespace kvstore::coord {
namespace {

bool Whole(const MemberRecord& m) { return m.state != "installing"; }
bool Empty(const MemberRecord& m) { return m.state == "empty"; }
std::tuple<uint64_t, uint64_t> Position(const MemberRecord& m) {
  return {m.last_epoch, m.durable_index};
}
std::string Describe(const MemberRecord& m) {
  return absl::StrCat(m.id, " (epoch ", m.last_epoch, ", index ", m.durable_index, ", ", m.state,
                      ")");
}

}  // namespace

Election ChooseCandidate(const std::vector<MemberRecord>& members) {
  Election election;
  if (members.empty()) {
    election.why_none = "no live member";
    return election;
  }
  bool someone_holds_data = false;
  const MemberRecord* top = &members[0];
  for (const MemberRecord& m : members) {
    someone_holds_data = someone_holds_data || !Empty(m);
    if (Position(m) > Position(*top)) top = &m;
  }
  for (const MemberRecord& m : members) {
    MemberVerdict verdict;
    verdict.id = m.id;
    if (!Whole(m)) {
      verdict.reason = "its store is not whole (" + m.state + ")";
    } else if (Empty(m) && someone_holds_data) {
      verdict.reason = "it holds no data while other members do";
    } else if (Position(m) < Position(*top)) {
      verdict.reason = absl::StrCat("behind ", Describe(*top));
    } else {
      verdict.eligible = true;
      if (election.candidate.empty() || m.id < election.candidate) election.candidate = m.id;
    }
    election.verdicts.push_back(std::move(verdict));
  }
  if (election.candidate.empty()) {
    election.why_none = absl::StrCat("the most advanced member, ", Describe(*top),
                                     ", cannot lead: its store is not whole; nobody else may "
                                     "lead without losing what it holds");
  }
  return election;
}

}  // namespace kvstore::coord

#include "services/node/ownership_gate.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/server/grpc_status.h"
#include "glog/logging.h"

namespace kvstore {
namespace {

// The admission this thread holds, if any, so that a nested Admit on the
// same thread (a write started from another write's callback, inside
// Store::Write) takes no second reader lock: absl::Mutex lets a waiting
// writer block new readers, so a second lock would wait for HoldAndRun, which
// waits for the first.
struct ThreadAdmission {
  const OwnershipGate* gate = nullptr;
  int depth = 0;
};
thread_local ThreadAdmission thread_admission;

absl::Status WrongShard(const std::string& self, const std::string& owner, int64_t version) {
  return WithErrorInfo(
      absl::FailedPreconditionError(absl::StrCat(
          "wrong shard: under ring version ", version, " the key belongs to shard ", owner,
          ", not to ", self, "; nothing was done: re-read the ring and send it there")),
      {kReasonWrongShard,
       {{kMetadataRingVersion, std::to_string(version)}, {kMetadataOwner, owner}}});
}

absl::Status RangeMoving(const std::string& self, int64_t version) {
  return WithErrorInfo(absl::UnavailableError(absl::StrCat(
                           "range moving: the key's range is being moved from shard ", self,
                           " to another shard (ring version ", version,
                           "); nothing was done: retry once the ring has changed, or in a moment")),
                       {kReasonRangeMoving, {{kMetadataRingVersion, std::to_string(version)}}});
}

}  // namespace

OwnershipGate::OwnershipGate(std::string shard) : shard_(std::move(shard)) {}

bool OwnershipGate::enabled() const {
  absl::ReaderMutexLock lock(&mu_);
  return ring_ != nullptr;
}

void OwnershipGate::SetRing(std::shared_ptr<const HashRing> ring, int64_t version) {
  if (ring == nullptr) return;
  int self = -1;
  for (size_t i = 0; i < ring->shards().size(); ++i) {
    if (ring->shards()[i] == shard_) self = static_cast<int>(i);
  }
  absl::MutexLock lock(&mu_);
  if (ring_ != nullptr && version <= version_) return;
  ring_ = std::move(ring);
  version_ = version;
  self_ = self;
}

int64_t OwnershipGate::ring_version() const {
  absl::ReaderMutexLock lock(&mu_);
  return version_;
}

std::shared_ptr<const HashRing> OwnershipGate::ring() const {
  absl::ReaderMutexLock lock(&mu_);
  return ring_;
}

void OwnershipGate::SetHeld(RangeSet held, int64_t until_version) {
  absl::MutexLock lock(&mu_);
  held_until_ = held.empty() ? 0 : until_version;
  held_ = std::move(held);
}

absl::Status OwnershipGate::Check(absl::string_view key) const {
  const uint64_t position = HashRing::KeyHash(key);
  int64_t version = 0;
  std::string owner;
  {
    absl::ReaderMutexLock lock(&mu_);
    if (ring_ == nullptr) return absl::OkStatus();
    version = version_;
    if (version_ < held_until_ && held_.Contains(position)) return RangeMoving(shard_, version);
    const int index = ring_->OwnerOfPosition(position);
    if (index == self_) return absl::OkStatus();
    owner = ring_->shards()[static_cast<size_t>(index)];
  }
  return WrongShard(shard_, owner, version);
}

bool OwnershipGate::Owns(absl::string_view key) const {
  const uint64_t position = HashRing::KeyHash(key);
  absl::ReaderMutexLock lock(&mu_);
  return ring_ == nullptr || ring_->OwnerOfPosition(position) == self_;
}

ABSL_NO_THREAD_SAFETY_ANALYSIS OwnershipGate::Admission OwnershipGate::Admit() const {
  ThreadAdmission& mine = thread_admission;
  if (mine.gate == this) {
    ++mine.depth;
    return Admission(this, /*untracked=*/false);
  }
  admission_mu_.ReaderLock();
  if (mine.gate != nullptr) return Admission(this, /*untracked=*/true);
  mine.gate = this;
  mine.depth = 1;
  return Admission(this, /*untracked=*/false);
}

OwnershipGate::Admission::Admission(Admission&& other) noexcept
    : gate_(other.gate_), untracked_(other.untracked_) {
  other.gate_ = nullptr;
}

ABSL_NO_THREAD_SAFETY_ANALYSIS OwnershipGate::Admission::~Admission() {
  if (gate_ == nullptr) return;
  if (untracked_) {
    gate_->admission_mu_.ReaderUnlock();
    return;
  }
  ThreadAdmission& mine = thread_admission;
  CHECK(mine.gate == gate_) << "an ownership admission was released on another thread";
  if (--mine.depth == 0) {
    mine.gate = nullptr;
    gate_->admission_mu_.ReaderUnlock();
  }
}

void OwnershipGate::HoldAndRun(RangeSet held, int64_t until_version,
                               const std::function<void()>& fn) {
  CHECK(thread_admission.gate != this) << "HoldAndRun inside an admission would wait for itself";
  absl::MutexLock exclusive(&admission_mu_);
  SetHeld(std::move(held), until_version);
  fn();
}

}  // namespace kvstore

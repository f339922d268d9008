#include "services/router/ownership_retry.h"

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "common/server/grpc_status.h"

namespace kvstore {
namespace {

OwnershipRefusal::Kind KindOf(int code, const std::string& reason) {
  if (code == grpc::StatusCode::FAILED_PRECONDITION && reason == kReasonWrongShard) {
    return OwnershipRefusal::Kind::kWrongShard;
  }
  if (code == grpc::StatusCode::UNAVAILABLE && reason == kReasonRangeMoving) {
    return OwnershipRefusal::Kind::kRangeMoving;
  }
  return OwnershipRefusal::Kind::kNone;
}

}  // namespace

OwnershipRefusal RefusalOf(const grpc::Status& status) {
  OwnershipRefusal refusal;
  if (status.ok()) return refusal;
  const std::optional<ErrorInfo> info = ErrorInfoOf(status);
  if (!info) return refusal;
  refusal.kind = KindOf(status.error_code(), info->reason);
  auto version = info->metadata.find(kMetadataRingVersion);
  int64_t v = 0;
  if (version != info->metadata.end() && absl::SimpleAtoi(version->second, &v) && v >= 0) {
    refusal.ring_version = v;
  }
  return refusal;
}

OwnershipRefusal RefusalOf(const v1::KeyError& error) {
  OwnershipRefusal refusal;
  if (error.code() == 0 || error.reason().empty()) return refusal;
  refusal.kind = KindOf(error.code(), error.reason());
  return refusal;
}

RingWaiters::RingWaiters() {
  thread_ = std::thread([this] { Run(); });
}

RingWaiters::~RingWaiters() { Stop(); }

void RingWaiters::SetVersion(int64_t version) {
  absl::MutexLock lock(&mu_);
  version_ = version;
  changed_.Signal();
}

void RingWaiters::Poke() {
  absl::MutexLock lock(&mu_);
  changed_.Signal();
}

size_t RingWaiters::waiting() const {
  absl::MutexLock lock(&mu_);
  return waiters_.size();
}

bool RingWaiters::ReadyLocked(const Waiter& w, absl::Time now) const {
  return version_ >= w.at_least || (w.released != nullptr && w.released->load()) ||
         w.deadline <= now;
}

void RingWaiters::Wait(int64_t at_least, std::shared_ptr<std::atomic<bool>> released,
                       absl::Time deadline, std::function<void(bool)> fn) {
  bool now = false;
  bool stopped = false;
  {
    absl::MutexLock lock(&mu_);
    Waiter w{at_least, std::move(released), deadline, std::move(fn)};
    stopped = stopping_;
    now = stopped || ReadyLocked(w, absl::Now());
    if (now) {
      fn = std::move(w.fn);
    } else {
      waiters_.push_back(std::move(w));
      changed_.Signal();
    }
  }
  if (now) fn(!stopped);
}

void RingWaiters::Stop() {
  std::list<Waiter> left;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
    left.swap(waiters_);
    changed_.Signal();
  }
  if (thread_.joinable()) thread_.join();
  for (Waiter& w : left) w.fn(false);
}

void RingWaiters::Run() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    const absl::Time now = absl::Now();
    std::vector<std::function<void(bool)>> ready;
    absl::Time next = absl::InfiniteFuture();
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      if (ReadyLocked(*it, now)) {
        ready.push_back(std::move(it->fn));
        it = waiters_.erase(it);
      } else {
        next = std::min(next, it->deadline);
        ++it;
      }
    }
    if (!ready.empty()) {
      mu_.Unlock();
      for (auto& fn : ready) fn(true);
      mu_.Lock();
      continue;
    }
    changed_.WaitWithDeadline(&mu_, next);
  }
}

}  // namespace kvstore

// The pieces of the router's handling of ownership refusals
// (services/router/ownership_retry.h): which statuses are refusals, and
// RingWaiters, which runs a callback once the ring version passes a mark, a
// fresh read is in, or a deadline comes.
#include "services/router/ownership_retry.h"

#include <atomic>
#include <memory>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/server/grpc_status.h"
#include "gtest/gtest.h"

namespace kvstore {
namespace {

using Kind = OwnershipRefusal::Kind;

TEST(OwnershipRefusalTest, ARefusalNeedsItsCodeAndReasonAndReadsTheRingVersion) {
  const grpc::Status wrong = ToGrpcStatus(WithErrorInfo(
      absl::FailedPreconditionError("x"), {kReasonWrongShard, {{kMetadataRingVersion, "7"}}}));
  EXPECT_EQ(RefusalOf(wrong).kind, Kind::kWrongShard);
  EXPECT_EQ(RefusalOf(wrong).ring_version, 7);
  const grpc::Status moving =
      ToGrpcStatus(WithErrorInfo(absl::UnavailableError("x"), {kReasonRangeMoving, {}}));
  EXPECT_EQ(RefusalOf(moving).kind, Kind::kRangeMoving);
  EXPECT_EQ(RefusalOf(moving).ring_version, -1);
  // The reason with another code, or the code alone, is no refusal.
  EXPECT_FALSE(
      RefusalOf(ToGrpcStatus(WithErrorInfo(absl::UnavailableError("x"), {kReasonWrongShard, {}}))));
  EXPECT_FALSE(RefusalOf(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "version mismatch")));
  EXPECT_FALSE(RefusalOf(grpc::Status::OK));

  v1::KeyError error;
  error.set_code(grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_FALSE(RefusalOf(error));
  error.set_reason(kReasonWrongShard);
  EXPECT_EQ(RefusalOf(error).kind, Kind::kWrongShard);
  EXPECT_EQ(RefusalOf(error).ring_version, -1);
}

TEST(OwnershipRefusalTest, EachKindIsFollowedOnce) {
  OwnershipRetries retries;
  EXPECT_TRUE(retries.Allows(Kind::kWrongShard));
  const OwnershipRetries left = retries.After(Kind::kRangeMoving);
  EXPECT_FALSE(left.Allows(Kind::kRangeMoving));
  EXPECT_TRUE(left.Allows(Kind::kWrongShard));
  EXPECT_FALSE(left.After(Kind::kWrongShard).Allows(Kind::kWrongShard));
  EXPECT_FALSE(retries.Allows(Kind::kNone));
}

TEST(RingWaitersTest, AWaiterAlreadyPastItsMarkRunsAtOnceOnTheCallingThread) {
  RingWaiters waiters;
  waiters.SetVersion(3);
  bool ran = false;
  waiters.Wait(3, nullptr, absl::InfiniteFuture(), [&](bool go_on) { ran = go_on; });
  EXPECT_TRUE(ran);
  EXPECT_EQ(waiters.waiting(), 0u);
}

TEST(RingWaitersTest, AWaiterRunsWhenTheVersionReachesItsMark) {
  RingWaiters waiters;
  waiters.SetVersion(1);
  absl::Notification ran;
  std::atomic<bool> result{false};
  waiters.Wait(2, nullptr, absl::InfiniteFuture(), [&](bool go_on) {
    result = go_on;
    ran.Notify();
  });
  EXPECT_EQ(waiters.waiting(), 1u);
  waiters.SetVersion(2);
  ASSERT_TRUE(ran.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(result.load());
}

TEST(RingWaitersTest, AWaiterRunsWhenReleasedOrAtItsDeadline) {
  RingWaiters waiters;
  auto released = std::make_shared<std::atomic<bool>>(false);
  absl::Notification on_release, on_deadline;
  waiters.Wait(9, released, absl::InfiniteFuture(), [&](bool) { on_release.Notify(); });
  const absl::Time start = absl::Now();
  waiters.Wait(9, nullptr, start + absl::Milliseconds(100), [&](bool) { on_deadline.Notify(); });
  released->store(true);
  waiters.Poke();
  ASSERT_TRUE(on_release.WaitForNotificationWithTimeout(absl::Seconds(10)));
  ASSERT_TRUE(on_deadline.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(100));
}

TEST(RingWaitersTest, StoppingRunsTheWaitersWithFalseAndLaterWaitsAtOnce) {
  RingWaiters waiters;
  int stopped = 0;
  waiters.Wait(5, nullptr, absl::InfiniteFuture(), [&](bool go_on) { stopped += go_on ? 0 : 1; });
  waiters.Stop();
  EXPECT_EQ(stopped, 1);
  waiters.Wait(5, nullptr, absl::InfiniteFuture(), [&](bool go_on) { stopped += go_on ? 0 : 1; });
  EXPECT_EQ(stopped, 2);
}

}  // namespace
}  // namespace kvstore

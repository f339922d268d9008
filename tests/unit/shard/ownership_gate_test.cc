// OwnershipGate: WRONG_SHARD for keys of other shards under the ring, with
// the owner and the ring's version; RANGE_MOVING for held ranges until the
// ring reaches the hold's version; admissions that a HoldAndRun waits for.
#include "services/node/ownership_gate.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/server/grpc_status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvstore {
namespace {

using ::testing::HasSubstr;

std::shared_ptr<const HashRing> Ring(std::vector<std::string> shards) {
  absl::StatusOr<HashRing> ring = HashRing::Build(std::move(shards), 64);
  EXPECT_TRUE(ring.ok()) << ring.status();
  return std::make_shared<const HashRing>(*std::move(ring));
}

// The first `n` keys "key-<i>" that `shard` owns under `ring`.
std::vector<std::string> KeysOf(const HashRing& ring, const std::string& shard, int n) {
  std::vector<std::string> keys;
  for (int i = 0; static_cast<int>(keys.size()) < n; ++i) {
    std::string key = absl::StrCat("key-", i);
    if (ring.Owner(key) == shard) keys.push_back(std::move(key));
  }
  return keys;
}

// The one position of `key`, as a held range.
RangeSet Only(const std::string& key) {
  const uint64_t position = HashRing::KeyHash(key);
  return RangeSet({{position, position}});
}

TEST(OwnershipGateTest, WithoutARingEveryKeyIsAllowed) {
  OwnershipGate gate("s0");
  EXPECT_FALSE(gate.enabled());
  EXPECT_EQ(gate.ring_version(), 0);
  for (int i = 0; i < 100; ++i) {
    EXPECT_TRUE(gate.Check(absl::StrCat("k", i)).ok());
    EXPECT_TRUE(gate.Owns(absl::StrCat("k", i)));
  }
}

TEST(OwnershipGateTest, AKeyOfAnotherShardIsWrongShardNamingTheOwnerAndTheRingVersion) {
  OwnershipGate gate("s0");
  std::shared_ptr<const HashRing> ring = Ring({"s0", "s1"});
  EXPECT_EQ(gate.ring(), nullptr);
  gate.SetRing(ring, 3);
  EXPECT_TRUE(gate.enabled());
  EXPECT_EQ(gate.ring_version(), 3);
  EXPECT_EQ(gate.ring(), ring);
  for (const std::string& key : KeysOf(*ring, "s0", 20)) {
    EXPECT_TRUE(gate.Check(key).ok()) << key;
    EXPECT_TRUE(gate.Owns(key)) << key;
  }
  for (const std::string& key : KeysOf(*ring, "s1", 20)) {
    const absl::Status s = gate.Check(key);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << key;
    EXPECT_THAT(s.message(), HasSubstr("wrong shard"));
    EXPECT_THAT(s.message(), HasSubstr("shard s1"));
    EXPECT_THAT(s.message(), HasSubstr("ring version 3"));
    EXPECT_FALSE(gate.Owns(key)) << key;
    // The details survive the trip through a gRPC status, as a client gets them.
    const std::optional<ErrorInfo> info = ErrorInfoOf(ToGrpcStatus(s));
    ASSERT_TRUE(info.has_value());
    EXPECT_EQ(info->reason, kReasonWrongShard);
    EXPECT_EQ(info->metadata.at(kMetadataRingVersion), "3");
    EXPECT_EQ(info->metadata.at(kMetadataOwner), "s1");
  }
}

TEST(OwnershipGateTest, AShardThatIsNotInTheRingOwnsNothing) {
  OwnershipGate gate("s9");
  gate.SetRing(Ring({"s0", "s1"}), 1);
  for (int i = 0; i < 100; ++i) {
    const std::string key = absl::StrCat("k", i);
    EXPECT_EQ(gate.Check(key).code(), absl::StatusCode::kFailedPrecondition) << key;
    EXPECT_FALSE(gate.Owns(key)) << key;
  }
}

TEST(OwnershipGateTest, ARingNotNewerThanTheCurrentOneIsIgnored) {
  OwnershipGate gate("s0");
  std::shared_ptr<const HashRing> both = Ring({"s0", "s1"});
  const std::string of_s1 = KeysOf(*both, "s1", 1)[0];
  gate.SetRing(both, 5);
  gate.SetRing(Ring({"s0"}), 5);  // The same version again: ignored.
  gate.SetRing(Ring({"s0"}), 4);  // An older one (a late event): ignored.
  gate.SetRing(nullptr, 9);
  EXPECT_EQ(gate.ring_version(), 5);
  EXPECT_FALSE(gate.Check(of_s1).ok());
  gate.SetRing(Ring({"s0"}), 6);  // s1 removed: s0 owns every key.
  EXPECT_EQ(gate.ring_version(), 6);
  EXPECT_TRUE(gate.Check(of_s1).ok());
}

TEST(OwnershipGateTest, AHeldRangeIsRangeMovingUntilTheRingReachesTheHoldsVersion) {
  OwnershipGate gate("s0");
  std::shared_ptr<const HashRing> before = Ring({"s0", "s1"});
  gate.SetRing(before, 1);
  // The keys s2 takes from s0 when it joins: held for the cutover to version 2.
  std::shared_ptr<const HashRing> after = Ring({"s0", "s1", "s2"});
  std::vector<RingMove> moves = DiffRings(*before, *after);
  RangeSet moving;
  for (const RingMove& m : moves) {
    if (m.from == "s0") moving = m.ranges;
  }
  ASSERT_FALSE(moving.empty());
  std::string moved, kept;
  for (const std::string& key : KeysOf(*before, "s0", 200)) {
    (moving.ContainsKey(key) ? moved : kept) = key;
  }
  ASSERT_FALSE(moved.empty());
  ASSERT_FALSE(kept.empty());

  gate.SetHeld(moving, 2);
  const absl::Status s = gate.Check(moved);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr("being moved"));
  EXPECT_THAT(s.message(), HasSubstr("retry"));
  const std::optional<ErrorInfo> info = ErrorInfoOf(ToGrpcStatus(s));
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->reason, kReasonRangeMoving);
  EXPECT_EQ(info->metadata.at(kMetadataRingVersion), "1");
  EXPECT_TRUE(gate.Owns(moved));  // Still this shard's, for scans.
  EXPECT_TRUE(gate.Check(kept).ok());

  // The cutover's ring ends the hold by itself: the key is s2's now.
  gate.SetRing(after, 2);
  const std::optional<ErrorInfo> now = ErrorInfoOf(gate.Check(moved));
  ASSERT_TRUE(now.has_value());
  EXPECT_EQ(now->reason, kReasonWrongShard);
  EXPECT_EQ(now->metadata.at(kMetadataOwner), "s2");
  EXPECT_TRUE(gate.Check(kept).ok());
}

TEST(OwnershipGateTest, AnEmptyHoldReleasesAndAHoldForAPastVersionHoldsNothing) {
  OwnershipGate gate("s0");
  std::shared_ptr<const HashRing> ring = Ring({"s0", "s1"});
  gate.SetRing(ring, 4);
  const std::string key = KeysOf(*ring, "s0", 1)[0];
  gate.SetHeld(Only(key), 5);
  EXPECT_EQ(gate.Check(key).code(), absl::StatusCode::kUnavailable);
  gate.SetHeld(RangeSet(), 5);
  EXPECT_TRUE(gate.Check(key).ok());
  gate.SetHeld(Only(key), 4);  // The ring is at 4 already.
  EXPECT_TRUE(gate.Check(key).ok());
}

TEST(OwnershipGateTest, HoldAndRunWaitsForOpenAdmissionsAndAdmitsNothingWhileItsFunctionRuns) {
  OwnershipGate gate("s0");
  std::shared_ptr<const HashRing> ring = Ring({"s0", "s1"});
  gate.SetRing(ring, 1);
  const std::string key = KeysOf(*ring, "s0", 1)[0];

  std::optional<OwnershipGate::Admission> open(gate.Admit());
  ASSERT_TRUE(gate.Check(key).ok());  // A write between Check and Store::Write.
  absl::Notification fn_started, let_fn_finish, fn_finished;
  std::thread holder([&] {
    gate.HoldAndRun(Only(key), 2, [&] {
      fn_started.Notify();
      let_fn_finish.WaitForNotification();
    });
    fn_finished.Notify();
  });
  // While the admission is open the function does not run (a bounded look,
  // not a synchronisation: it is the absence being checked).
  EXPECT_FALSE(fn_started.WaitForNotificationWithTimeout(absl::Milliseconds(100)));
  open.reset();
  ASSERT_TRUE(fn_started.WaitForNotificationWithTimeout(absl::Seconds(10)));

  // A write arriving now waits for the function, then sees the hold.
  std::atomic<bool> admitted{false};
  absl::Status after_hold;
  std::thread writer([&] {
    OwnershipGate::Admission a = gate.Admit();
    admitted = true;
    after_hold = gate.Check(key);
  });
  EXPECT_FALSE(fn_finished.WaitForNotificationWithTimeout(absl::Milliseconds(100)));
  EXPECT_FALSE(admitted.load());
  let_fn_finish.Notify();
  holder.join();
  writer.join();
  EXPECT_TRUE(admitted.load());
  EXPECT_EQ(ErrorInfoOf(after_hold).value_or(ErrorInfo{}).reason, kReasonRangeMoving);
}

TEST(OwnershipGateTest, ANestedAdmissionOnTheSameThreadDoesNotWaitForAWaitingHold) {
  OwnershipGate gate("s0");
  gate.SetRing(Ring({"s0", "s1"}), 1);
  std::optional<OwnershipGate::Admission> outer(gate.Admit());
  absl::Notification ran;
  std::thread holder([&] { gate.HoldAndRun(RangeSet(), 2, [&] { ran.Notify(); }); });
  // Give the holder time to queue on the lock; the nested admission must not
  // wait behind it (it would wait for this thread: a deadlock).
  EXPECT_FALSE(ran.WaitForNotificationWithTimeout(absl::Milliseconds(100)));
  {
    OwnershipGate::Admission inner = gate.Admit();
    OwnershipGate::Admission moved = std::move(inner);
  }
  EXPECT_FALSE(ran.HasBeenNotified());
  outer.reset();
  ASSERT_TRUE(ran.WaitForNotificationWithTimeout(absl::Seconds(10)));
  holder.join();
}

TEST(OwnershipGateTest, ChecksRunWhileRingsAndHoldsChangeOnOtherThreads) {
  OwnershipGate gate("s0");
  std::shared_ptr<const HashRing> a = Ring({"s0", "s1"});
  std::shared_ptr<const HashRing> b = Ring({"s0", "s1", "s2"});
  gate.SetRing(a, 1);
  std::atomic<bool> stop{false};
  std::atomic<int> odd{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&, t] {
      for (int i = 0; !stop.load(); ++i) {
        OwnershipGate::Admission admission = gate.Admit();
        const absl::Status s = gate.Check(absl::StrCat("k", t, "-", i % 1000));
        if (!s.ok() && !absl::IsFailedPrecondition(s) && !absl::IsUnavailable(s)) ++odd;
      }
    });
  }
  for (int v = 2; v < 200; ++v) {
    gate.SetRing(v % 2 == 0 ? b : a, v);
    gate.HoldAndRun(Only(absl::StrCat("k0-", v)), v + 1, [] {});
  }
  stop = true;
  for (std::thread& t : readers) t.join();
  EXPECT_EQ(odd.load(), 0);
  EXPECT_EQ(gate.ring_version(), 199);
}

}  // namespace
}  // namespace kvstore

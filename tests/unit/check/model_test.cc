// The versioned register on its own: which steps the model accepts, and what
// state they leave (the rules of docs/reliability.md, "Checker").
#include "tools/kvcheck/model.h"

#include "gtest/gtest.h"

namespace kvstore::check {
namespace {

constexpr int kA = 1;
constexpr int kB = 2;

RegisterState Present(int value, uint64_t version, bool exact = true) { return {true, value, version, exact}; }
RegisterState Absent(uint64_t version = 0) { return {false, 0, version, true}; }

ModelOp Write(int value, uint64_t version, std::optional<uint64_t> if_version = std::nullopt,
              bool certain = true) {
  ModelOp op;
  op.kind = ModelOp::Kind::kWrite;
  op.value = value;
  op.version = version;
  op.if_version = if_version;
  op.certain = certain;
  return op;
}
ModelOp Read(bool found, int value = 0, uint64_t version = 0) {
  ModelOp op;
  op.kind = ModelOp::Kind::kRead;
  op.found = found;
  op.value = value;
  op.version = version;
  return op;
}
ModelOp Del(bool certain, bool deleted, uint64_t version, std::optional<uint64_t> if_version = std::nullopt) {
  ModelOp op;
  op.kind = ModelOp::Kind::kDelete;
  op.certain = certain;
  op.deleted = deleted;
  op.version = version;
  op.if_version = if_version;
  return op;
}
ModelOp SawVersion(uint64_t v) {
  ModelOp op;
  op.kind = ModelOp::Kind::kVersionRead;
  op.version = v;
  return op;
}

TEST(RegisterModelTest, WriteMustGetAVersionAboveTheCurrentOne) {
  EXPECT_EQ(Step(Present(kA, 5), Write(kB, 6)), Present(kB, 6));
  EXPECT_FALSE(Step(Present(kA, 5), Write(kB, 5)).has_value());
  EXPECT_FALSE(Step(Present(kA, 5), Write(kB, 4)).has_value());
}

TEST(RegisterModelTest, WriteAfterDeleteMustGetAVersionAboveTheDelete) {
  EXPECT_FALSE(Step(Absent(9), Write(kA, 8)).has_value());
  EXPECT_EQ(Step(Absent(9), Write(kA, 10)), Present(kA, 10));
}

TEST(RegisterModelTest, CasAppliesOnlyWhenIfVersionIsTheCurrentVersion) {
  EXPECT_EQ(Step(Present(kA, 5), Write(kB, 7, 5)), Present(kB, 7));
  EXPECT_FALSE(Step(Present(kA, 5), Write(kB, 7, 4)).has_value());
  EXPECT_EQ(Step(Absent(), Write(kB, 7, 0)), Present(kB, 7));
  EXPECT_FALSE(Step(Present(kA, 5), Write(kB, 7, 0)).has_value()) << "0 means only if absent";
}

TEST(RegisterModelTest, GetMustReturnExactlyTheState) {
  EXPECT_TRUE(Step(Present(kA, 5), Read(true, kA, 5)).has_value());
  EXPECT_FALSE(Step(Present(kA, 5), Read(true, kA, 6)).has_value());
  EXPECT_FALSE(Step(Present(kA, 5), Read(true, kB, 5)).has_value());
  EXPECT_FALSE(Step(Present(kA, 5), Read(false)).has_value());
  EXPECT_TRUE(Step(Absent(3), Read(false)).has_value());
}

TEST(RegisterModelTest, DeleteOfAbsentKeyDeletesNothing) {
  EXPECT_EQ(Step(Absent(3), Del(true, false, 0)), Absent(3));
  EXPECT_EQ(Step(Absent(3), Del(true, false, 0, 0)), Absent(3)) << "if_version 0 matches an absent key";
  EXPECT_FALSE(Step(Absent(3), Del(true, false, 0, 4)).has_value()) << "a mismatch fails, it is no ok";
  EXPECT_FALSE(Step(Present(kA, 5), Del(true, false, 0)).has_value());
  EXPECT_EQ(Step(Present(kA, 5), Del(true, true, 6)), Absent(6));
  EXPECT_FALSE(Step(Absent(3), Del(true, true, 6)).has_value());
}

TEST(RegisterModelTest, UncertainOpThatChangesNothingIsLeftToNeverHappening) {
  EXPECT_FALSE(Step(Absent(), Del(false, false, 0)).has_value());
  EXPECT_FALSE(Step(Present(kA, 5), Write(kB, 0, 4, false)).has_value());
}

TEST(RegisterModelTest, UnknownVersionIsPinnedByItsFirstObservation) {
  // An info write nobody read: at least one above the version before it.
  std::optional<RegisterState> s = Step(Present(kA, 5), Write(kB, 0, std::nullopt, false));
  ASSERT_EQ(s, Present(kB, 6, false));
  EXPECT_FALSE(Step(*s, SawVersion(5)).has_value());
  EXPECT_EQ(Step(*s, SawVersion(9)), Present(kB, 9));
  EXPECT_EQ(Step(*s, Write(kA + 10, 12, 9)), Present(kA + 10, 12)) << "a CAS pins it to its if_version";
  EXPECT_TRUE(Step(*s, Write(kA + 10, 7)).has_value()) << "6 is possible, so 7 is above it";
  EXPECT_FALSE(Step(*s, Write(kA + 10, 6)).has_value());
}

}  // namespace
}  // namespace kvstore::check

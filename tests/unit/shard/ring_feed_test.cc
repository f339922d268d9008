// The ring a node builds from <P>/ring's value (services/node/ring_feed.h):
// the same owners as the router's, and no ring from a value that makes none.
#include "services/node/ring_feed.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/coord/schema.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvstore {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(RingFromValueTest, BuildsTheRecordsShardsAndVnodesAtItsVersion) {
  coord::RingRecord record;
  record.version = 4;
  record.vnodes = 128;
  record.shards = {"s2", "s0", "s1"};
  absl::StatusOr<VersionedRing> ring = RingFromValue(coord::RingValue(record));
  ASSERT_TRUE(ring.ok()) << ring.status();
  EXPECT_EQ(ring->version, 4);
  EXPECT_EQ(ring->ring->vnodes(), 128);
  EXPECT_THAT(ring->ring->shards(), ElementsAre("s0", "s1", "s2"));
  absl::StatusOr<HashRing> same = HashRing::Build({"s1", "s2", "s0"}, 128);
  ASSERT_TRUE(same.ok());
  for (int i = 0; i < 1000; ++i) {
    const std::string key = absl::StrCat("k", i);
    ASSERT_EQ(ring->ring->Owner(key), same->Owner(key)) << key;
  }
}

TEST(RingFromValueTest, AValueThatMakesNoRingIsInvalidArgument) {
  EXPECT_EQ(RingFromValue("not json").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RingFromValue(R"({"format":1,"version":2,"vnodes":8,"shards":[]})").status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<VersionedRing> no_vnodes =
      RingFromValue(R"({"format":1,"version":2,"vnodes":0,"shards":["s0"]})");
  EXPECT_EQ(no_vnodes.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(no_vnodes.status().message(), HasSubstr("ring version 2"));
}

}  // namespace
}  // namespace kvstore

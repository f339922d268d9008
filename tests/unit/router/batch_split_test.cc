// Splitting a batch by shard and gathering the answers in the caller's order.
#include "services/router/batch_split.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvstore {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Shard of position i in the tests below: i % 3, but shard 2 first appears at 2.
int ShardOfPosition(int i) { return i % 3; }

TEST(RouterBatchSplitTest, GroupsPositionsByShardInFirstAppearanceOrder) {
  std::vector<int> owners = {2, 0, 2, 1, 0, 2};
  std::vector<ShardSlice> slices = SplitByShard(6, [&](int i) { return owners[i]; });
  ASSERT_EQ(slices.size(), 3u);
  EXPECT_EQ(slices[0].shard, 2);
  EXPECT_THAT(slices[0].positions, ElementsAre(0, 2, 5));
  EXPECT_EQ(slices[1].shard, 0);
  EXPECT_THAT(slices[1].positions, ElementsAre(1, 4));
  EXPECT_EQ(slices[2].shard, 1);
  EXPECT_THAT(slices[2].positions, ElementsAre(3));
}

TEST(RouterBatchSplitTest, EmptyBatchHasNoSlices) {
  EXPECT_TRUE(SplitByShard(0, ShardOfPosition).empty());
}

TEST(RouterBatchSplitTest, SliceRequestsKeepKeysItemsReadModeAndAck) {
  v1::MultiGetRequest get;
  get.set_read_mode(v1::READ_MODE_ANY_REPLICA);
  v1::MultiSetRequest set;
  set.mutable_ack()->set_mode(v1::ACK_MODE_LEADER_FSYNC);
  for (int i = 0; i < 5; ++i) {
    get.add_keys("k" + std::to_string(i));
    v1::SetItem* item = set.add_items();
    item->set_key("k" + std::to_string(i));
    item->set_value("v" + std::to_string(i));
    item->set_ttl_ms(i);
    if (i == 3) item->set_if_version(7);
  }
  std::vector<ShardSlice> slices = SplitByShard(5, ShardOfPosition);
  ASSERT_EQ(slices[0].shard, 0);  // Positions 0 and 3.

  v1::MultiGetRequest get0 = SliceRequest(get, slices[0]);
  EXPECT_THAT(get0.keys(), ElementsAre("k0", "k3"));
  EXPECT_EQ(get0.read_mode(), v1::READ_MODE_ANY_REPLICA);

  v1::MultiSetRequest set0 = SliceRequest(set, slices[0]);
  ASSERT_EQ(set0.items_size(), 2);
  EXPECT_EQ(set0.items(1).key(), "k3");
  EXPECT_EQ(set0.items(1).value(), "v3");
  EXPECT_EQ(set0.items(1).ttl_ms(), 3u);
  EXPECT_TRUE(set0.items(1).has_if_version());
  EXPECT_FALSE(set0.items(0).has_if_version());
  EXPECT_EQ(set0.ack().mode(), v1::ACK_MODE_LEADER_FSYNC);
}

TEST(RouterBatchSplitTest, GatherPutsEachShardsAnswersAtTheCallersPositions) {
  std::vector<ShardSlice> slices = SplitByShard(7, ShardOfPosition);
  v1::MultiGetResponse out;
  PrepareResults(7, &out);
  // Answer the slices in reverse order; each value names its position.
  for (auto it = slices.rbegin(); it != slices.rend(); ++it) {
    v1::MultiGetResponse answer;
    for (int position : it->positions) {
      v1::GetResult* r = answer.add_results();
      r->set_found(true);
      r->set_value("value-" + std::to_string(position));
      r->set_version(100 + position);
    }
    GatherResults(*it, "shard", &answer, &out);
  }
  ASSERT_EQ(out.results_size(), 7);
  for (int i = 0; i < 7; ++i) {
    EXPECT_EQ(out.results(i).value(), "value-" + std::to_string(i));
    EXPECT_EQ(out.results(i).version(), 100u + i);
    EXPECT_FALSE(out.results(i).has_error());
  }
}

TEST(RouterBatchSplitTest, PerItemErrorsFromAShardStayOnTheirItem) {
  std::vector<ShardSlice> slices = SplitByShard(4, ShardOfPosition);  // 0:{0,3} 1:{1} 2:{2}
  v1::MultiSetResponse out;
  PrepareResults(4, &out);
  v1::MultiSetResponse answer;
  answer.add_results()->set_version(5);
  v1::KeyError* error = answer.add_results()->mutable_error();
  error->set_code(9);
  error->set_message("version mismatch: current version 4");
  GatherResults(slices[0], "shard shard-0 at h:1", &answer, &out);
  EXPECT_EQ(out.results(0).version(), 5u);
  EXPECT_EQ(out.results(3).error().code(), 9);
  EXPECT_EQ(out.results(3).error().message(), "version mismatch: current version 4");
  EXPECT_FALSE(out.results(1).has_error());  // Not answered yet: untouched.
}

TEST(RouterBatchSplitTest, AFailedShardMarksEachOfItsKeysAndNoOther) {
  std::vector<ShardSlice> slices = SplitByShard(6, ShardOfPosition);
  v1::MultiGetResponse out;
  PrepareResults(6, &out);
  out.mutable_results(1)->set_found(true);  // Anything there is replaced.
  FailSlice(slices[1], "shard shard-1 at 127.0.0.1:9", absl::UnavailableError("connection refused"),
            &out);
  for (int i = 0; i < 6; ++i) {
    if (i % 3 == 1) {
      EXPECT_FALSE(out.results(i).found());
      EXPECT_EQ(out.results(i).error().code(), static_cast<int>(absl::StatusCode::kUnavailable));
      EXPECT_EQ(out.results(i).error().message(),
                "shard shard-1 at 127.0.0.1:9: connection refused");
    } else {
      EXPECT_FALSE(out.results(i).has_error()) << i;
    }
  }
}

TEST(RouterBatchSplitTest, AnswerWithTheWrongNumberOfResultsFailsTheSlice) {
  std::vector<ShardSlice> slices = SplitByShard(6, ShardOfPosition);
  v1::MultiGetResponse out;
  PrepareResults(6, &out);
  v1::MultiGetResponse short_answer;
  short_answer.add_results()->set_found(true);  // One result for two keys.
  GatherResults(slices[0], "shard shard-0 at h:1", &short_answer, &out);
  for (int position : slices[0].positions) {
    EXPECT_EQ(out.results(position).error().code(), static_cast<int>(absl::StatusCode::kInternal));
    EXPECT_THAT(out.results(position).error().message(),
                HasSubstr("shard shard-0 at h:1: answered 1 results for 2 items"));
  }
}

}  // namespace
}  // namespace kvstore

#include "common/coord/txn.h"

#include <string>

#include "gtest/gtest.h"

namespace kvstore::coord {
namespace {

TEST(PrefixEndTest, IncrementsTheLastByte) { EXPECT_EQ(PrefixEnd("/kv/a"), "/kv/b"); }

TEST(PrefixEndTest, DropsTrailingFfBytes) {
  EXPECT_EQ(PrefixEnd(std::string("a\xff\xff", 3)), "b");
}

TEST(PrefixEndTest, AllFfOrEmptyMeansEveryKeyFromThere) {
  EXPECT_EQ(PrefixEnd(std::string("\xff", 1)), std::string(1, '\0'));
  EXPECT_EQ(PrefixEnd(""), std::string(1, '\0'));
}

TEST(TxnBuildersTest, CreateRevisionCompareAndLeasedPut) {
  etcdserverpb::Compare c = CreateRevisionIs("/k", 0);
  EXPECT_EQ(c.target(), etcdserverpb::Compare::CREATE);
  EXPECT_EQ(c.result(), etcdserverpb::Compare::EQUAL);
  EXPECT_EQ(c.target_union_case(), etcdserverpb::Compare::kCreateRevision);
  etcdserverpb::RequestOp put = PutOp("/k", "v", 7);
  ASSERT_TRUE(put.has_request_put());
  EXPECT_EQ(put.request_put().lease(), 7);
  etcdserverpb::RequestOp del = DeleteOp("/p/", /*prefix=*/true);
  EXPECT_EQ(del.request_delete_range().range_end(), "/p0");
}

}  // namespace
}  // namespace kvstore::coord

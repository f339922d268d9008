// The Scan cursor formats (common/kv/scan_cursor.h): round trips, and every
// malformed or foreign cursor refused as INVALID_ARGUMENT.
#include "common/kv/scan_cursor.h"

#include <string>

#include "gtest/gtest.h"

namespace kvstore {
namespace {

TEST(ScanCursorTest, EmptyCursorsAreTheStart) {
  absl::StatusOr<NodeScanCursor> node = DecodeNodeCursor("");
  ASSERT_TRUE(node.ok());
  EXPECT_EQ(node->hash, 0u);
  EXPECT_FALSE(node->after_key.has_value());
  absl::StatusOr<RouterScanCursor> router = DecodeRouterCursor("");
  ASSERT_TRUE(router.ok());
  EXPECT_EQ(router->position, 0u);
  EXPECT_EQ(router->node_cursor, "");
}

TEST(ScanCursorTest, NodeCursorRoundTripsWithAndWithoutKey) {
  for (const NodeScanCursor& in :
       {NodeScanCursor{0xfedcba9876543210ull, std::nullopt},
        NodeScanCursor{42, std::string("k\0ey", 4)}, NodeScanCursor{~0ull, std::string("z")}}) {
    absl::StatusOr<NodeScanCursor> out = DecodeNodeCursor(EncodeNodeCursor(in));
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->hash, in.hash);
    EXPECT_EQ(out->after_key, in.after_key);
  }
}

TEST(ScanCursorTest, RouterCursorRoundTripsAShardsCursor) {
  RouterScanCursor in{7, "shard-b", EncodeNodeCursor({99, std::string("key")})};
  absl::StatusOr<RouterScanCursor> out = DecodeRouterCursor(EncodeRouterCursor(in));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->position, 7u);
  EXPECT_EQ(out->shard, "shard-b");
  EXPECT_EQ(out->node_cursor, in.node_cursor);
  RouterScanCursor start_of_shard{1, "shard-a", ""};
  out = DecodeRouterCursor(EncodeRouterCursor(start_of_shard));
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->node_cursor, "");
}

TEST(ScanCursorTest, MalformedAndForeignCursorsAreInvalidArgument) {
  const std::string node = EncodeNodeCursor({5, std::nullopt});
  const std::string router = EncodeRouterCursor({1, "shard-a", node});
  struct Case {
    const char* what;
    std::string bytes;
    bool for_router;
  };
  for (const Case& c : {
           Case{"unknown format byte", "xyz", false},
           Case{"node cursor cut short", node.substr(0, 5), false},
           Case{"a router's cursor sent to a node", router, false},
           Case{"unknown format byte", "xyz", true},
           Case{"router cursor cut in its header", router.substr(0, 3), true},
           Case{"router cursor cut in the shard name", router.substr(0, 8), true},
           Case{"a node's cursor sent to a router", node, true},
       }) {
    const absl::Status s =
        c.for_router ? DecodeRouterCursor(c.bytes).status() : DecodeNodeCursor(c.bytes).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.what;
  }
}

}  // namespace
}  // namespace kvstore

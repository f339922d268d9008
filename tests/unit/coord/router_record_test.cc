// The router registration record (<P>/routers/<id>, common/coord/schema.h):
// what RouterValue writes ParseRouterValue reads back, and what it refuses.
#include <string>

#include "common/coord/schema.h"
#include "gtest/gtest.h"

namespace kvstore::coord {
namespace {

TEST(RouterRecordTest, KeysLiveUnderThePrefixsRoutersFolder) {
  EXPECT_EQ(RoutersPrefix("/kvstore/c1/"), "/kvstore/c1/routers/");
  EXPECT_EQ(RouterKey("/kvstore/c1", "r-127.0.0.1:7000"), "/kvstore/c1/routers/r-127.0.0.1:7000");
}

TEST(RouterRecordTest, ValueRoundTripsWithTheIdFromTheKey) {
  RouterRecord record;
  record.id = "r1";
  record.addr = "127.0.0.1:7000";
  record.ring_version = 4;
  record.topology_revision = 1234;
  record.started_unix_ms = 1764770000000;
  const std::string value = RouterValue(record);
  EXPECT_EQ(value.find("r1"), std::string::npos) << "the id is the key's, not the value's";
  absl::StatusOr<RouterRecord> parsed = ParseRouterValue("r1", value);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, record);
}

TEST(RouterRecordTest, MalformedValuesAreRefusedNamingTheRouter) {
  const char* bad[] = {
      "",
      "not json",
      "[]",
      R"({"ring_version":1,"topology_revision":2,"started_unix_ms":3})",
      R"({"addr":"a","topology_revision":2,"started_unix_ms":3})",
      R"({"addr":"a","ring_version":-1,"topology_revision":2,"started_unix_ms":3})",
      R"({"addr":"a","ring_version":"1","topology_revision":2,"started_unix_ms":3})",
      R"({"addr":7,"ring_version":1,"topology_revision":2,"started_unix_ms":3})",
  };
  for (const char* value : bad) {
    absl::StatusOr<RouterRecord> parsed = ParseRouterValue("rx", value);
    ASSERT_FALSE(parsed.ok()) << value;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << value;
    EXPECT_NE(parsed.status().message().find("router rx"), std::string::npos) << parsed.status();
  }
}

}  // namespace
}  // namespace kvstore::coord

// The one parser of byte sizes (common/config/units.h), as the nodes'
// --migration-retention-bytes takes them; rates share it (reshard_plan_test).
#include "common/config/units.h"

#include <cstdint>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvstore {
namespace {

using ::testing::HasSubstr;

TEST(ParseByteSizeTest, PlainBytesAndBinaryUnitsInAnyCase) {
  struct Case {
    const char* text;
    int64_t bytes;
  } good[] = {
      {"4294967296", int64_t{4} << 30},
      {"4GiB", int64_t{4} << 30},
      {"512MiB", 512 << 20},
      {"512 mib", 512 << 20},
      {"1.5KiB", 1536},
      {"64KiB", 64 << 10},
      {"100B", 100},
      {" 1 ", 1},
  };
  for (const Case& c : good) {
    absl::StatusOr<int64_t> size = ParseByteSize(c.text);
    ASSERT_TRUE(size.ok()) << c.text << ": " << size.status();
    EXPECT_EQ(*size, c.bytes) << c.text;
  }
}

TEST(ParseByteSizeTest, RefusesRatesNonsenseZeroAndOverflowNamingTheForms) {
  const char* bad[] = {"",       "big", "4GB",     "-1MiB",         "0", "0.5", "1e6",
                       "4GiB/s", "MiB", "1..5MiB", "99999999999GiB"};
  for (const char* text : bad) {
    absl::StatusOr<int64_t> size = ParseByteSize(text);
    EXPECT_FALSE(size.ok()) << text << " -> " << (size.ok() ? *size : 0);
    if (!size.ok()) {
      EXPECT_THAT(size.status().message(), HasSubstr("512MiB")) << "names the forms";
      EXPECT_THAT(size.status().message(), HasSubstr("size")) << text;
    }
  }
}

}  // namespace
}  // namespace kvstore

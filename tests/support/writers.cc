#include "tests/support/writers.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "tests/support/process.h"

namespace kvstore {
namespace testing {

std::string Describe(const grpc::Status& s) {
  return absl::StrCat("code ", s.error_code(), ": ", s.error_message());
}

std::string MakeValue(const std::string& key, uint64_t tag) {
  std::string v = absl::StrFormat("%s=%016x;", key, tag);
  v.resize(std::max<size_t>(v.size(), 100), '.');
  return v;
}

uint64_t Seed(const char* test) {
  const uint64_t seed = TestSeed();
  std::printf("[  SEED    ] %s: KV_TEST_SEED=%llu\n", test, static_cast<unsigned long long>(seed));
  ::testing::Test::RecordProperty("seed", std::to_string(seed));
  return seed;
}

}  // namespace testing
}  // namespace kvstore

// The id a router registers as by default (services/router/router_registration.h):
// its HOST:PORT, with the machine's name for a wildcard host.
#include "services/router/router_registration.h"

#include <unistd.h>

#include <string>

#include "gtest/gtest.h"

namespace kvstore {
namespace {

std::string HostName() {
  char name[256] = {};
  EXPECT_EQ(gethostname(name, sizeof(name) - 1), 0);
  return name;
}

TEST(DefaultRouterIdTest, IsTheBoundHostAndPortSoRoutersOnOneMachineDiffer) {
  EXPECT_EQ(DefaultRouterId("127.0.0.1:7000"), "127.0.0.1:7000");
  EXPECT_NE(DefaultRouterId("127.0.0.1:7000"), DefaultRouterId("127.0.0.1:7001"));
  EXPECT_EQ(DefaultRouterId("[::1]:7000"), "[::1]:7000");
}

TEST(DefaultRouterIdTest, AWildcardHostBecomesTheMachinesName) {
  const std::string host = HostName();
  ASSERT_FALSE(host.empty());
  EXPECT_EQ(DefaultRouterId("0.0.0.0:7000"), host + ":7000");
  EXPECT_EQ(DefaultRouterId("[::]:7000"), host + ":7000");
  EXPECT_EQ(DefaultRouterId(":7000"), host + ":7000");
}

}  // namespace
}  // namespace kvstore

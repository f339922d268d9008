// The /metrics endpoint over loopback, with httplib's client.
#include "common/metrics/http_server.h"

#include <stdlib.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "httplib.h"

namespace kvstore {
namespace {

class MetricsHttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    registry_.AddCollector([](ExpositionWriter* w) {
      w->Family("kvstore_test_value", "A value.", MetricType::kGauge);
      w->Sample("kvstore_test_value", {}, 7);
    });
  }
  MetricsRegistry registry_;
};

TEST_F(MetricsHttpServerTest, ServesTheRegistryAtMetrics) {
  auto server = MetricsHttpServer::Start({"127.0.0.1:0", ""}, &registry_);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);
  EXPECT_EQ((*server)->address(), absl::StrCat("127.0.0.1:", (*server)->port()));
  httplib::Client client("127.0.0.1", (*server)->port());
  httplib::Result res = client.Get("/metrics");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, registry_.Scrape());
  EXPECT_EQ(res->get_header_value("Content-Type"), kExpositionContentType);
  httplib::Result other = client.Get("/");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 404);
}

TEST_F(MetricsHttpServerTest, PortInUseIsUnavailable) {
  auto first = MetricsHttpServer::Start({"127.0.0.1:0", ""}, &registry_);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second =
      MetricsHttpServer::Start({absl::StrCat("127.0.0.1:", (*first)->port()), ""}, &registry_);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
}

TEST_F(MetricsHttpServerTest, MalformedAddressIsInvalidArgument) {
  for (const char* bad : {"", "9100", "127.0.0.1:", "127.0.0.1:70000", "host:x"}) {
    EXPECT_EQ(MetricsHttpServer::Start({bad, ""}, &registry_).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST_F(MetricsHttpServerTest, WritesThePortFile) {
  char dir_template[] = "/tmp/kv_metrics_test.XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string path = absl::StrCat(dir_template, "/metrics.port");
  auto server = MetricsHttpServer::Start({"127.0.0.1:0", path}, &registry_);
  ASSERT_TRUE(server.ok()) << server.status();
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, (*server)->address());
  unlink(path.c_str());
  rmdir(dir_template);
}

TEST_F(MetricsHttpServerTest, StopRightAfterStartReturnsAndFreesThePort) {
  for (int i = 0; i < 20; ++i) {
    auto server = MetricsHttpServer::Start({"127.0.0.1:0", ""}, &registry_);
    ASSERT_TRUE(server.ok()) << server.status();
    const int port = (*server)->port();
    (*server)->Stop();
    (*server)->Stop();  // Idempotent.
    httplib::Client client("127.0.0.1", port);
    client.set_connection_timeout(1);
    EXPECT_FALSE(client.Get("/metrics")) << "still serving on " << port;
  }
}

}  // namespace
}  // namespace kvstore

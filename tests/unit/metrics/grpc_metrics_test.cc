// Per-RPC counts and latency: the recording itself, its bound on method
// names, and the interceptor on a real in-process GrpcServer.
#include "common/metrics/grpc_metrics.h"

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/server/server.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "kvstore/v1/admin.grpc.pb.h"
#include "tests/unit/metrics/exposition_parser.h"

namespace kvstore {
namespace {

using ::kvstore::testing::ParsedScrape;
using ::kvstore::testing::ParseExposition;

ParsedScrape Scrape(const GrpcServerMetrics& m) {
  ExpositionWriter w;
  m.Write(&w);
  return ParseExposition(w.Finish());
}

constexpr char kGet[] = "/kvstore.v1.KeyValue/Get";

TEST(GrpcServerMetricsTest, CountsByMethodAndCodeWithLatency) {
  GrpcServerMetrics m;
  m.RecordStarted(kGet);
  m.RecordHandled(kGet, grpc::StatusCode::OK, absl::Milliseconds(1));
  m.RecordStarted(kGet);
  m.RecordHandled(kGet, grpc::StatusCode::NOT_FOUND, absl::Milliseconds(30));
  m.RecordStarted("/kvstore.v1.KeyValue/Set");
  const ParsedScrape s = Scrape(m);
  ASSERT_EQ(s.error, "");
  EXPECT_EQ(s.Value("kvstore_grpc_server_started_total", {{"method", kGet}}), 2);
  EXPECT_EQ(s.Value("kvstore_grpc_server_handled_total", {{"method", kGet}, {"code", "OK"}}), 1);
  EXPECT_EQ(s.Value("kvstore_grpc_server_handled_total", {{"method", kGet}, {"code", "NOT_FOUND"}}),
            1);
  // Codes never seen have no series, except OK, so a rate of it always exists.
  EXPECT_EQ(s.Value("kvstore_grpc_server_handled_total",
                    {{"method", "/kvstore.v1.KeyValue/Set"}, {"code", "OK"}}),
            0);
  EXPECT_FALSE(
      s.Value("kvstore_grpc_server_handled_total", {{"method", kGet}, {"code", "UNAVAILABLE"}})
          .has_value());
  EXPECT_EQ(s.Value("kvstore_grpc_server_handling_seconds_count", {{"method", kGet}}), 2);
  EXPECT_EQ(
      s.Value("kvstore_grpc_server_handling_seconds_bucket", {{"method", kGet}, {"le", "0.001"}}),
      1);
  EXPECT_EQ(
      s.Value("kvstore_grpc_server_handling_seconds_bucket", {{"method", kGet}, {"le", "0.05"}}),
      2);
  EXPECT_DOUBLE_EQ(
      s.Value("kvstore_grpc_server_handling_seconds_sum", {{"method", kGet}}).value_or(0), 0.031);
}

TEST(GrpcServerMetricsTest, MethodsBeyondTheLimitAreCountedAsOther) {
  GrpcServerMetrics m;
  const int total = GrpcServerMetrics::kMaxMethods + 10;
  for (int i = 0; i < total; ++i) {
    const std::string method = absl::StrCat("/svc/M", i);
    m.RecordStarted(method);
    m.RecordHandled(method, grpc::StatusCode::UNIMPLEMENTED, absl::ZeroDuration());
  }
  const ParsedScrape s = Scrape(m);
  ASSERT_EQ(s.error, "");
  EXPECT_EQ(s.Count("kvstore_grpc_server_started_total"), GrpcServerMetrics::kMaxMethods + 1);
  EXPECT_EQ(s.Value("kvstore_grpc_server_handled_total",
                    {{"method", "other"}, {"code", "UNIMPLEMENTED"}}),
            10);
  // A method that got a slot keeps it.
  m.RecordHandled("/svc/M0", grpc::StatusCode::OK, absl::ZeroDuration());
  EXPECT_EQ(m.Handled("/svc/M0", grpc::StatusCode::OK), 1u);
}

TEST(GrpcServerMetricsTest, ConcurrentCallsOnManyMethodsAreAllCounted) {
  GrpcServerMetrics m;
  constexpr int kThreads = 6;
  constexpr int kCalls = 5000;
  constexpr int kMethods = 5;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&m] {
      for (int i = 0; i < kCalls; ++i) {
        // Every thread races to create the same few methods first.
        const std::string method = absl::StrCat("/svc/M", i % kMethods);
        m.RecordStarted(method);
        m.RecordHandled(method, grpc::StatusCode::OK, absl::Microseconds(10));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const ParsedScrape s = Scrape(m);
  ASSERT_EQ(s.error, "");
  EXPECT_EQ(s.Count("kvstore_grpc_server_started_total"), kMethods);
  for (int k = 0; k < kMethods; ++k) {
    const std::string method = absl::StrCat("/svc/M", k);
    EXPECT_EQ(m.Handled(method, grpc::StatusCode::OK), uint64_t{kThreads} * kCalls / kMethods);
    EXPECT_EQ(s.Value("kvstore_grpc_server_handling_seconds_count", {{"method", method}}),
              kThreads * kCalls / kMethods);
  }
}

// Admin with Status only; Snapshot and Promote stay UNIMPLEMENTED.
class StatusOnlyAdmin : public v1::Admin::CallbackService {
  grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext* context, const v1::StatusRequest*,
                                   v1::StatusResponse* response) override {
    response->set_role("test");
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

TEST(GrpcServerMetricsTest, InterceptorCountsEachCallBeforeTheClientSeesIt) {
  GrpcServerMetrics metrics;
  StatusOnlyAdmin admin;
  ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.services = {&admin};
  options.interceptors = [&metrics] { return metrics.InterceptorFactories(); };
  absl::StatusOr<std::unique_ptr<GrpcServer>> server = GrpcServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::Admin::NewStub(
      grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials()));
  constexpr int kCalls = 3;
  for (int i = 0; i < kCalls; ++i) {
    grpc::ClientContext context;
    v1::StatusResponse response;
    ASSERT_TRUE(stub->Status(&context, v1::StatusRequest(), &response).ok());
    // Recorded before the status went out: no waiting needed.
    EXPECT_EQ(metrics.Handled("/kvstore.v1.Admin/Status", grpc::StatusCode::OK),
              static_cast<uint64_t>(i + 1));
  }
  grpc::ClientContext context;
  v1::SnapshotResponse snapshot;
  EXPECT_EQ(stub->Snapshot(&context, v1::SnapshotRequest(), &snapshot).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(metrics.Handled("/kvstore.v1.Admin/Snapshot", grpc::StatusCode::UNIMPLEMENTED), 1u);

  const ParsedScrape s = Scrape(metrics);
  ASSERT_EQ(s.error, "");
  EXPECT_EQ(s.Value("kvstore_grpc_server_handling_seconds_count",
                    {{"method", "/kvstore.v1.Admin/Status"}}),
            kCalls);
  (*server)->Shutdown();
}

TEST(GrpcCodeNameTest, NamesEveryCode) {
  EXPECT_EQ(GrpcCodeName(grpc::StatusCode::OK), "OK");
  EXPECT_EQ(GrpcCodeName(grpc::StatusCode::DEADLINE_EXCEEDED), "DEADLINE_EXCEEDED");
  EXPECT_EQ(GrpcCodeName(grpc::StatusCode::UNAUTHENTICATED), "UNAUTHENTICATED");
  EXPECT_EQ(GrpcCodeName(static_cast<grpc::StatusCode>(99)), "UNKNOWN");
}

}  // namespace
}  // namespace kvstore

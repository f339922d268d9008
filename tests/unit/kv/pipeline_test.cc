// ServePipeline's reactor on a real server on 127.0.0.1, in front of a fake
// backend: what a stream holds in memory when its client does not read.
#include "common/kv/pipeline.h"

#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace kvstore {
namespace {

// Answers every Get at once, on the calling thread, with a value of
// `value_bytes`; fails every other kind of request.
class LargeAnswers final : public PipelineBackend {
 public:
  explicit LargeAnswers(size_t value_bytes) : value_(value_bytes, 'v') {}
  void PipelineGet(Deadline, const v1::GetRequest*, v1::GetResponse* response, Done done) override {
    response->set_found(true);
    response->set_value(value_);
    done(grpc::Status::OK);
  }
  void PipelineSet(Deadline, const v1::SetRequest*, v1::SetResponse*, Done done) override {
    done(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "Set"));
  }
  void PipelineDelete(Deadline, const v1::DeleteRequest*, v1::DeleteResponse*, Done done) override {
    done(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "Delete"));
  }
  void PipelineMultiGet(Deadline, const v1::MultiGetRequest*, v1::MultiGetResponse*,
                        Done done) override {
    done(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "MultiGet"));
  }
  void PipelineMultiSet(Deadline, const v1::MultiSetRequest*, v1::MultiSetResponse*,
                        Done done) override {
    done(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "MultiSet"));
  }

 private:
  const std::string value_;
};

class PipelineService final : public v1::KeyValue::CallbackService {
 public:
  PipelineService(PipelineBackend* backend, size_t max_held_bytes, PipelineCounters* counters)
      : backend_(backend), max_held_bytes_(max_held_bytes), counters_(counters) {}
  grpc::ServerBidiReactor<v1::PipelineRequests, v1::PipelineResponses>* Pipeline(
      grpc::CallbackServerContext* context) override {
    return ServePipeline(context, grpc::Status::OK, backend_, kDefaultPipelineMaxInFlight,
                         max_held_bytes_, counters_);
  }

 private:
  PipelineBackend* const backend_;
  const size_t max_held_bytes_;
  PipelineCounters* const counters_;
};

// Polls `done` until it holds or 20 s pass.
bool Eventually(const std::function<bool()>& done) {
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (!done()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return true;
}

class PipelineHeldBytesTest : public ::testing::TestWithParam<bool> {
 protected:
  static constexpr size_t kValueBytes = 64 << 10;
  static constexpr size_t kMaxHeldBytes = 1 << 20;
  static constexpr int kRequests = 2000;  // 128 MiB of answers.

  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = v1::KeyValue::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override { server_->Shutdown(std::chrono::system_clock::now()); }

  LargeAnswers backend_{kValueBytes};
  PipelineCounters counters_;
  PipelineService service_{&backend_, kMaxHeldBytes, &counters_};
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::KeyValue::Stub> stub_;
};

INSTANTIATE_TEST_SUITE_P(Messages, PipelineHeldBytesTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "AllInOne" : "OneEach";
                         });

// A client that sends many large-answer requests and reads nothing: the
// stream stops taking requests once its answers waiting to be written reach
// the bound, and resumes as they drain, so every answer still arrives.
TEST_P(PipelineHeldBytesTest, AClientThatDoesNotReadHoldsBoundedAnswersThenGetsThemAll) {
  const bool one_message = GetParam();
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  auto stream = stub_->Pipeline(&context);
  std::thread writer([&] {
    v1::PipelineRequests message;
    for (int i = 0; i < kRequests; ++i) {
      v1::PipelineRequest* r = message.add_requests();
      r->set_id(i);
      r->mutable_get()->set_key("k");
      if (!one_message || i == kRequests - 1) {
        if (!stream->Write(message)) return;
        message.Clear();
      }
    }
    stream->WritesDone();
  });

  // Until the stream stops reading for its answers' bytes, or holds far more
  // than it may.
  ASSERT_TRUE(Eventually([&] {
    return counters_.reads_paused_for_bytes.load() > 0 ||
           counters_.peak_held_bytes.load() > 8 * kMaxHeldBytes;
  }));
  // One answer may cross the bound: it is counted once it exists.
  const size_t slack = kValueBytes + 64;
  EXPECT_LE(counters_.peak_held_bytes.load(), kMaxHeldBytes + slack);

  std::map<uint64_t, size_t> answered;  // id -> value bytes
  v1::PipelineResponses message;
  while (answered.size() < static_cast<size_t>(kRequests) && stream->Read(&message)) {
    for (const v1::PipelineResponse& a : message.responses()) {
      EXPECT_EQ(a.status().code(), 0) << a.status().message();
      answered[a.id()] = a.get().value().size();
    }
  }
  writer.join();
  EXPECT_FALSE(stream->Read(&message));
  grpc::Status status = stream->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(answered.size(), static_cast<size_t>(kRequests));
  for (const auto& [id, bytes] : answered) ASSERT_EQ(bytes, kValueBytes) << id;
  EXPECT_LE(counters_.peak_held_bytes.load(), kMaxHeldBytes + slack);
  EXPECT_EQ(counters_.held_bytes.load(), 0u);
}

}  // namespace
}  // namespace kvstore

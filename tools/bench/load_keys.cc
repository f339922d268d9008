// kv-load: writes N keys of a fixed value size into a kvstore server with
// MultiSet, several batches in flight, and prints the rate. Used by
// tools/bench/memory-restart to fill a shard; kvbench is the general tool.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "gflags/gflags.h"
#include "kvstore/v1/kv.grpc.pb.h"

DEFINE_string(addr, "127.0.0.1:50051", "Server address");
DEFINE_uint64(keys, 1000000, "Number of keys to write: key:0000000000 ...");
DEFINE_uint64(value_size, 100, "Bytes per value");
DEFINE_uint64(batch, 1000, "Keys per MultiSet");
DEFINE_uint64(threads, 4, "Concurrent MultiSet streams");
DEFINE_uint64(first, 0, "Number of the first key");

int main(int argc, char** argv) {
  gflags::SetUsageMessage("Usage: kv-load --addr=HOST:PORT --keys=N --value_size=B");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(256 << 20);
  auto channel = grpc::CreateCustomChannel(FLAGS_addr, grpc::InsecureChannelCredentials(), args);
  auto stub = kvstore::v1::KeyValue::NewStub(channel);
  const std::string value(FLAGS_value_size, 'v');
  std::atomic<uint64_t> next{0};
  std::atomic<uint64_t> errors{0};
  const uint64_t batches = (FLAGS_keys + FLAGS_batch - 1) / FLAGS_batch;
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> workers;
  for (uint64_t t = 0; t < FLAGS_threads; ++t) {
    workers.emplace_back([&] {
      for (uint64_t b = next++; b < batches; b = next++) {
        kvstore::v1::MultiSetRequest request;
        const uint64_t end = std::min(FLAGS_keys, (b + 1) * FLAGS_batch);
        for (uint64_t i = b * FLAGS_batch; i < end; ++i) {
          kvstore::v1::SetItem* item = request.add_items();
          item->set_key(absl::StrFormat("key:%010d", FLAGS_first + i));
          item->set_value(value);
        }
        kvstore::v1::MultiSetResponse response;
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
        grpc::Status s = stub->MultiSet(&context, request, &response);
        if (!s.ok()) {
          ++errors;
          std::fprintf(stderr, "kv-load: MultiSet: %s\n", s.error_message().c_str());
          continue;
        }
        for (const auto& r : response.results()) {
          if (r.error().code() != 0) ++errors;
        }
      }
    });
  }
  for (std::thread& w : workers) w.join();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("wrote %llu keys in %.2f s (%.0f keys/s), %llu errors\n",
              static_cast<unsigned long long>(FLAGS_keys), seconds,
              static_cast<double>(FLAGS_keys) / seconds,
              static_cast<unsigned long long>(errors.load()));
  return errors.load() == 0 ? 0 : 1;
}

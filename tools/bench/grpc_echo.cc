// grpc-echo: the transport's ceiling, "one gRPC hop" (design §6). A minimal
// server of kvstore.v1.KeyValue on gRPC's callback API that stores nothing:
// Get answers found with a fixed value of --value_size bytes (the size of a
// stored value, so the answer is as large as a real Get's), Set answers a
// version; every other method is UNIMPLEMENTED. Each handler finishes at once
// on gRPC's own thread, as a shard's Get does.
//
// Its client is kvbench (`--target=kvstore://HOST:PORT --preload=false`), the
// same callback-API client, requests and message sizes as every other
// kvstore row of tools/bench/compare, so "unary direct to a shard / through
// the router as a fraction of one hop" compares servers, not clients.
//
//   grpc-echo --listen=127.0.0.1:0 [--port_file=FILE] [--value_size=100]
//
// Runs until SIGTERM or SIGINT.
#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>

#include "gflags/gflags.h"
#include "grpcpp/grpcpp.h"
#include "kvstore/v1/kv.grpc.pb.h"

DEFINE_string(listen, "127.0.0.1:0", "HOST:PORT to serve on (port 0: any free port)");
DEFINE_string(port_file, "", "If set, the bound port is written there once serving");
DEFINE_uint64(value_size, 100, "Bytes of the value every Get answers");

namespace {

class EchoService final : public kvstore::v1::KeyValue::CallbackService {
 public:
  explicit EchoService(std::string value) : value_(std::move(value)) {}

  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* context,
                                const kvstore::v1::GetRequest* /*request*/,
                                kvstore::v1::GetResponse* response) override {
    response->set_found(true);
    response->set_value(value_);
    response->set_version(1);
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* Set(grpc::CallbackServerContext* context,
                                const kvstore::v1::SetRequest* /*request*/,
                                kvstore::v1::SetResponse* response) override {
    response->set_version(1);
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  const std::string value_;
};

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage("one gRPC hop: a KeyValue server that stores nothing (see the source)");
  // SIGTERM and SIGINT blocked in every thread (gRPC's inherit the mask):
  // main waits for one below, then stops the server.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  EchoService service(std::string(FLAGS_value_size, 'v'));
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(FLAGS_listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "grpc-echo: cannot serve on %s\n", FLAGS_listen.c_str());
    return 1;
  }
  if (!FLAGS_port_file.empty()) {
    const std::string tmp = FLAGS_port_file + ".tmp";
    std::ofstream(tmp) << port << "\n";
    if (std::rename(tmp.c_str(), FLAGS_port_file.c_str()) != 0) {
      std::fprintf(stderr, "grpc-echo: cannot write %s\n", FLAGS_port_file.c_str());
      return 1;
    }
  }
  std::fprintf(stderr, "grpc-echo: serving on port %d\n", port);
  int signal = 0;
  sigwait(&signals, &signal);
  server->Shutdown();
  return 0;
}

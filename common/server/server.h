// gRPC server bootstrap shared by every kvstore server: listening address
// (port 0 picks a free port), grpc.health.v1 health, server reflection, message
// size limits, a port file for scripts, and a graceful stop on SIGTERM/SIGINT.
//
// Typical main():
//   kvstore::BlockTerminationSignals();           // before any thread starts
//   ... parse flags, build services ...
//   auto server = kvstore::GrpcServer::Start(options);
//   int sig = (*server)->WaitForTerminationSignal();
//   (*server)->Shutdown();                        // then close storage
#ifndef KVSTORE_COMMON_SERVER_SERVER_H_
#define KVSTORE_COMMON_SERVER_SERVER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/support/server_interceptor.h"

namespace kvstore {

// Call first thing in main(), before any thread starts (gRPC's included):
// blocks SIGTERM and SIGINT in the calling thread, and so in every thread
// created after it, so that WaitForTerminationSignal can sigwait for them.
// Without it a signal may be delivered to another thread and kill the process.
void BlockTerminationSignals();

// Debian's Abseil is built with assertions on, so absl::Mutex records every
// lock order in a global graph to detect deadlocks: measured at several per
// cent of a shard's CPU under load. Servers call this first thing in main();
// tests keep the detection.
void DisableMutexDeadlockDetection();

struct ServerOptions {
  // HOST:PORT ("127.0.0.1:0", "[::]:50051"); port 0 picks a free port.
  std::string listen;
  // Not owned; each must outlive the GrpcServer.
  std::vector<grpc::Service*> services;
  // How long Shutdown lets in-flight RPCs run before cancelling them.
  int64_t shutdown_grace_ms = 10000;
  // If set, "HOST:PORT\n" with the bound port is written here after binding,
  // atomically (temporary file + rename), so a reader never sees a partial line.
  std::string port_file;
  // Largest message received or sent, in bytes.
  int max_message_bytes = 64 << 20;
  // Credentials of the listening port (TLS, common/security/credentials.h);
  // null means plaintext.
  std::shared_ptr<grpc::ServerCredentials> credentials;
  // Full names of registered services whose health reports NOT_SERVING from
  // Start until SetServiceServing(name, true): up, but not ready to serve yet
  // (a replica's "kvstore.v1.KeyValue" until it has caught up). "" is not
  // affected: it says the process answers.
  std::vector<std::string> not_ready_services;
  // If set, called once by Start: interceptors for every RPC (metrics,
  // common/metrics/grpc_metrics.h). What they use must outlive the server.
  std::function<
      std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>()>
      interceptors;
};

// Writes `content` to `path` atomically (temporary file + rename), as Start
// writes its port file: a reader sees no file or all of it.
absl::Status WritePortFile(const std::string& path, const std::string& content);

// A started gRPC server. Health (grpc.health.v1.Health) reports SERVING for ""
// and for each registered service's full name ("kvstore.v1.KeyValue") from
// Start until SetServing(false) or Shutdown (those in not_ready_services: from
// SetServiceServing(name, true)). All methods are thread-safe.
class GrpcServer {
 public:
  // Binds, registers the services, health and reflection, and starts serving.
  // InvalidArgument for a malformed address, Unavailable when the address
  // cannot be bound (in use, not local), Internal when the port file cannot be
  // written. Not to be called concurrently with another Start (gRPC's health
  // default is a process-wide setting).
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(ServerOptions options);

  // Shuts down (with the grace period) if Shutdown was not called.
  ~GrpcServer();
  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  // The bound port (the chosen one when listening on port 0).
  int port() const { return port_; }
  // The listen host with the bound port, e.g. "127.0.0.1:41234".
  std::string address() const { return address_; }

  // Sets the health status of "" and of every registered service. No effect
  // after Shutdown.
  void SetServing(bool serving);
  // Sets the health status of one service (its full name). No effect after
  // Shutdown.
  void SetServiceServing(const std::string& service, bool serving);

  // Blocks until SIGTERM or SIGINT arrives and returns the signal number.
  // Requires BlockTerminationSignals() at the start of main().
  int WaitForTerminationSignal();

  // Health goes NOT_SERVING for good, new RPCs are refused, in-flight RPCs may
  // finish until shutdown_grace_ms has passed, then they are cancelled.
  // Returns when every RPC is done: a reactor that never calls Finish (not
  // even once cancelled) keeps it waiting. A concurrent caller waits for the
  // first; later calls return at once.
  void Shutdown();

 private:
  GrpcServer(ServerOptions options, std::unique_ptr<grpc::Server> server,
             std::vector<std::string> service_names, int port, std::string address);

  const ServerOptions options_;
  const std::unique_ptr<grpc::Server> server_;
  // Full names of the services the server registered (ours and gRPC's own).
  const std::vector<std::string> service_names_;
  const int port_;
  const std::string address_;

  absl::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace kvstore

#endif  // KVSTORE_COMMON_SERVER_SERVER_H_

#include "common/server/server.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "glog/logging.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/impl/server_builder_option.h"
#include "grpcpp/impl/server_builder_plugin.h"
#include "grpcpp/impl/server_initializer.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace kvstore {
namespace {

sigset_t TerminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

// grpc::Service has no public name; the server learns each name from the
// service's method paths ("/kvstore.v1.KeyValue/Get") and shows the list only
// to builder plugins, which is how reflection gets it too. This plugin copies
// the list out so health can report each service.
class ServiceNamesPlugin : public grpc::ServerBuilderPlugin {
 public:
  explicit ServiceNamesPlugin(std::vector<std::string>* names) : names_(names) {}
  std::string name() override { return "kvstore_service_names"; }
  void InitServer(grpc::ServerInitializer*) override {}
  void Finish(grpc::ServerInitializer* si) override { *names_ = *si->GetServiceList(); }
  void ChangeArguments(const std::string&, void*) override {}

 private:
  std::vector<std::string>* names_;
};

// Options are the one per-builder way to add a plugin (InternalAddPluginFactory
// is process-wide).
class ServiceNamesOption : public grpc::ServerBuilderOption {
 public:
  explicit ServiceNamesOption(std::vector<std::string>* names) : names_(names) {}
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    plugins->push_back(std::make_unique<ServiceNamesPlugin>(names_));
  }

 private:
  std::vector<std::string>* names_;
};

bool IsUnixSocket(const std::string& listen) {
  return absl::StartsWith(listen, "unix:") || absl::StartsWith(listen, "unix-abstract:");
}

// Splits "HOST:PORT" (HOST may be "[v6]").
absl::Status ParseListen(const std::string& listen, std::string* host, int* port) {
  const size_t colon = listen.rfind(':');
  if (listen.empty() || colon == std::string::npos || colon == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen address '", listen, "' is not HOST:PORT (port 0 picks a free one)"));
  }
  *host = listen.substr(0, colon);
  if (!absl::SimpleAtoi(absl::string_view(listen).substr(colon + 1), port) || *port < 0 ||
      *port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen address '", listen, "' has no valid port (0..65535)"));
  }
  return absl::OkStatus();
}

absl::Status ErrnoError(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", strerror(errno)));
}

// Writes `content` to `path` so that readers see either no file or all of it.
absl::Status WriteFileAtomically(const std::string& path, const std::string& content) {
  const std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("cannot create", tmp);
  size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      absl::Status s = ErrnoError("cannot write", tmp);
      close(fd);
      unlink(tmp.c_str());
      return s;
    }
    done += static_cast<size_t>(n);
  }
  if (close(fd) != 0) {
    absl::Status s = ErrnoError("cannot close", tmp);
    unlink(tmp.c_str());
    return s;
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status s = ErrnoError("cannot rename to", path);
    unlink(tmp.c_str());
    return s;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WritePortFile(const std::string& path, const std::string& content) {
  return WriteFileAtomically(path, content);
}

void DisableMutexDeadlockDetection() {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
}

void BlockTerminationSignals() {
  const sigset_t set = TerminationSignals();
  const int rc = pthread_sigmask(SIG_BLOCK, &set, nullptr);
  CHECK_EQ(rc, 0) << "pthread_sigmask: " << strerror(rc);
}

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(ServerOptions options) {
  // Unix sockets have no port: address() is the listen string and port() 0.
  const bool unix_socket = IsUnixSocket(options.listen);
  std::string host;
  int requested_port = 0;
  if (!unix_socket) {
    if (absl::Status s = ParseListen(options.listen, &host, &requested_port); !s.ok()) return s;
  }

  grpc::EnableDefaultHealthCheckService(true);
  // Calling it is what links the reflection plugin in (its self-registration
  // lives in a static library object nothing else references).
  static const bool reflection_registered = [] {
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    return true;
  }();
  (void)reflection_registered;

  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(
      options.listen,
      options.credentials != nullptr ? options.credentials : grpc::InsecureServerCredentials(),
      &bound_port);
  // gRPC sets SO_REUSEPORT by default, which would let two servers share a
  // port silently; a port in use must be an error.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  if (options.interceptors) builder.experimental().SetInterceptorCreators(options.interceptors());
  for (grpc::Service* service : options.services) builder.RegisterService(service);
  std::vector<std::string> service_names;
  builder.SetOption(std::make_unique<ServiceNamesOption>(&service_names));

  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || bound_port == 0) {
    if (server != nullptr) server->Shutdown();
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.listen,
                     ": the port is in use or the host is not an address of this machine"));
  }

  if (unix_socket) bound_port = 0;
  const std::string address = unix_socket ? options.listen : absl::StrCat(host, ":", bound_port);
  const std::string port_file = options.port_file;
  auto result = std::unique_ptr<GrpcServer>(new GrpcServer(
      std::move(options), std::move(server), std::move(service_names), bound_port, address));
  // SERVING for "" and each service, except those not ready yet: never a
  // moment of SERVING for them.
  if (grpc::HealthCheckServiceInterface* health = result->server_->GetHealthCheckService()) {
    const std::vector<std::string>& not_ready = result->options_.not_ready_services;
    health->SetServingStatus("", true);
    for (const std::string& name : result->service_names_) {
      health->SetServingStatus(
          name, std::find(not_ready.begin(), not_ready.end(), name) == not_ready.end());
    }
    for (const std::string& name : not_ready) health->SetServingStatus(name, false);
  }
  // Last, so that whoever waits for the file finds health already SERVING.
  if (!port_file.empty()) {
    if (absl::Status s = WriteFileAtomically(port_file, address + "\n"); !s.ok()) {
      return absl::InternalError(absl::StrCat("port file: ", s.message()));  // Shuts down.
    }
  }
  return result;
}

GrpcServer::GrpcServer(ServerOptions options, std::unique_ptr<grpc::Server> server,
                       std::vector<std::string> service_names, int port, std::string address)
    : options_(std::move(options)),
      server_(std::move(server)),
      service_names_(std::move(service_names)),
      port_(port),
      address_(std::move(address)) {}

GrpcServer::~GrpcServer() { Shutdown(); }

void GrpcServer::SetServing(bool serving) {
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus("", serving);
  for (const std::string& name : service_names_) health->SetServingStatus(name, serving);
}

void GrpcServer::SetServiceServing(const std::string& service, bool serving) {
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus(service, serving);
}

int GrpcServer::WaitForTerminationSignal() {
  const sigset_t set = TerminationSignals();
  // Blocking here too makes sigwait well-defined in this thread; other threads
  // must have blocked them from the start (BlockTerminationSignals).
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  for (;;) {
    int signal = 0;
    const int rc = sigwait(&set, &signal);
    if (rc == 0) return signal;
    CHECK_EQ(rc, EINTR) << "sigwait: " << strerror(rc);
  }
}

void GrpcServer::Shutdown() {
  absl::MutexLock lock(&mu_);  // A second caller waits for the first to finish.
  if (shut_down_) return;
  shut_down_ = true;
  // Frozen at NOT_SERVING: load balancers and probes stop sending new calls.
  if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) {
    health->Shutdown();
  }
  const auto deadline = std::chrono::system_clock::now() +
                        std::chrono::milliseconds(std::max<int64_t>(options_.shutdown_grace_ms, 0));
  LOG(INFO) << "Stopping the gRPC server on " << address_ << ": in-flight calls have "
            << options_.shutdown_grace_ms << " ms";
  server_->Shutdown(deadline);  // Refuses new calls; cancels what is left at the deadline.
  server_->Wait();
}

}  // namespace kvstore

#include "common/metrics/http_server.h"

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/server/server.h"
#include "glog/logging.h"
#include "httplib.h"

namespace kvstore {
namespace {

// Splits "HOST:PORT"; HOST may be "[v6]", returned without the brackets.
absl::Status ParseListen(const std::string& listen, std::string* host, int* port) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(absl::string_view(listen).substr(colon + 1), port) || *port < 0 ||
      *port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics address '", listen, "' is not HOST:PORT with a port 0..65535 (0 picks one)"));
  }
  *host = listen.substr(0, colon);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  return absl::OkStatus();
}

// httplib's default also sets SO_REUSEPORT, which would let two servers share
// a port silently; a port in use must be an error.
void ReuseAddressOnly(int sock) {
  int yes = 1;
  setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    MetricsHttpOptions options, const MetricsRegistry* registry) {
  std::string host;
  int port = 0;
  if (absl::Status s = ParseListen(options.listen, &host, &port); !s.ok()) return s;

  auto server = std::make_unique<httplib::Server>();
  server->set_socket_options(ReuseAddressOnly);
  server->new_task_queue = [] { return new httplib::ThreadPool(2); };
  server->set_keep_alive_timeout(2);
  server->Get("/metrics", [registry](const httplib::Request&, httplib::Response& res) {
    res.set_content(registry->Scrape(), kExpositionContentType);
  });
  int bound = -1;
  if (port == 0) {
    bound = server->bind_to_any_port(host);
  } else if (server->bind_to_port(host, port)) {
    bound = port;
  }
  if (bound <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", options.listen,
                     ": the port is in use or the host is not an address of this machine"));
  }
  const bool v6 = host.find(':') != std::string::npos;
  std::string address = v6 ? absl::StrCat("[", host, "]:", bound) : absl::StrCat(host, ":", bound);
  std::unique_ptr<MetricsHttpServer> result(
      new MetricsHttpServer(std::move(server), bound, std::move(address)));
  auto ended = std::make_shared<std::atomic<bool>>(false);
  result->thread_ = std::thread([s = result->server_.get(), ended] {
    if (!s->listen_after_bind()) LOG(ERROR) << "The metrics HTTP server stopped with an error";
    ended->store(true);
  });
  // httplib's stop() does nothing until the loop runs, so a Stop() right
  // after Start() would never end the thread: wait for it to run (or end).
  while (!result->server_->is_running() && !ended->load()) {
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  if (!options.port_file.empty()) {
    if (absl::Status s = WritePortFile(options.port_file, result->address_ + "\n"); !s.ok()) {
      return absl::InternalError(absl::StrCat("metrics port file: ", s.message()));  // Stops.
    }
  }
  return result;
}

MetricsHttpServer::MetricsHttpServer(std::unique_ptr<httplib::Server> server, int port,
                                     std::string address)
    : server_(std::move(server)), port_(port), address_(std::move(address)) {}

MetricsHttpServer::~MetricsHttpServer() { Stop(); }

void MetricsHttpServer::Stop() {
  if (!thread_.joinable()) return;
  server_->stop();
  thread_.join();
}

}  // namespace kvstore

// The HTTP endpoint Prometheus scrapes: GET /metrics returns the registry's
// text (exposition format 0.0.4); any other path is 404. Served by
// cpp-httplib on a thread of its own with two workers, so a scrape never
// runs on a gRPC thread.
#ifndef KVSTORE_COMMON_METRICS_HTTP_SERVER_H_
#define KVSTORE_COMMON_METRICS_HTTP_SERVER_H_

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "common/metrics/metrics.h"

namespace httplib {
class Server;
}

namespace kvstore {

struct MetricsHttpOptions {
  // HOST:PORT ("127.0.0.1:9100", "[::]:0"); port 0 picks a free port.
  std::string listen;
  // If set, "HOST:PORT\n" with the bound port is written here once serving,
  // atomically (as the gRPC server's port file).
  std::string port_file;
};

class MetricsHttpServer {
 public:
  // Binds and starts serving `registry`, which must outlive the server.
  // InvalidArgument for a malformed address, Unavailable when it cannot be
  // bound (in use, not local), Internal when the port file cannot be written.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(MetricsHttpOptions options,
                                                                  const MetricsRegistry* registry);
  // Stops (Stop()).
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  int port() const { return port_; }
  // The listen host with the bound port, e.g. "127.0.0.1:41234".
  const std::string& address() const { return address_; }

  // Stops accepting and returns once the serving thread is done. Idempotent;
  // not to be called concurrently with itself.
  void Stop();

 private:
  MetricsHttpServer(std::unique_ptr<httplib::Server> server, int port, std::string address);

  const std::unique_ptr<httplib::Server> server_;
  const int port_;
  const std::string address_;
  std::thread thread_;
};

}  // namespace kvstore

#endif  // KVSTORE_COMMON_METRICS_HTTP_SERVER_H_

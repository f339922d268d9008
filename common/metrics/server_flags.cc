// The metrics flags every kvstore server binary takes; see server_metrics.h
// and docs/metrics.md.
#include "common/metrics/server_metrics.h"
#include "gflags/gflags.h"

DEFINE_string(metrics_listen, "",
              "Serve Prometheus metrics over HTTP at /metrics on this HOST:PORT (port 0 picks a "
              "free one; empty = no metrics). See docs/metrics.md");
DEFINE_string(metrics_port_file, "",
              "If set with --metrics-listen, write the metrics endpoint's bound HOST:PORT here "
              "once serving (for scripts and tests)");

namespace kvstore {

MetricsHttpOptions MetricsFlagsFromCommandLine() {
  return MetricsHttpOptions{FLAGS_metrics_listen, FLAGS_metrics_port_file};
}

}  // namespace kvstore

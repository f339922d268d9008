#include "tests/fuzz/fuzz_support.h"

#include "glog/logging.h"

namespace kvstore::fuzz {

void QuietLogs() {
  FLAGS_minloglevel = google::GLOG_ERROR;
  FLAGS_logtostderr = true;
}

}  // namespace kvstore::fuzz

#include "tools/kvfault/history_recorder.h"

#include <cerrno>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace kvstore::fault {

int64_t HistoryRecorder::SteadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int64_t HistoryRecorder::NowNs() const { return SteadyNs() - start_ns_; }

HistoryRecorder::~HistoryRecorder() { (void)Close(); }

absl::Status HistoryRecorder::Open(const std::string& path) {
  absl::MutexLock l(&mu_);
  file_ = std::fopen(path.c_str(), "w");
  if (file_ == nullptr) {
    return absl::InternalError(absl::StrCat("open ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

void HistoryRecorder::Record(const Event& e) {
  nlohmann::ordered_json j;
  absl::MutexLock l(&mu_);
  if (file_ == nullptr || !error_.ok()) return;
  // The clock is read under the lock, so t_ns never decreases down the file.
  const int64_t t = std::max(NowNs(), last_t_);
  last_t_ = t;
  j["i"] = next_i_++;
  j["t_ns"] = t;
  j["proc"] = e.proc;
  j["type"] = e.type;
  j["f"] = e.f;
  j["key"] = e.key;
  if (e.value) j["value"] = *e.value;
  if (e.if_version) j["if_version"] = *e.if_version;
  if (e.found) j["found"] = *e.found;
  if (e.deleted) j["deleted"] = *e.deleted;
  if (e.version) j["version"] = *e.version;
  if (e.current_version) j["current_version"] = *e.current_version;
  if (e.final_phase) j["phase"] = "final";
  if (e.error) j["error"] = *e.error;
  if (e.node) j["node"] = *e.node;
  if (e.type == "invoke") {
    invoked_t_[e.proc] = t;
  } else if (auto it = invoked_t_.find(e.proc); it != invoked_t_.end()) {
    if (e.type == "ok" && e.f != "get" && it->second > newest_acked_.invoke_t_ns) {
      newest_acked_ = AckedWrite{it->second, e.key};
    }
    invoked_t_.erase(it);
  }
  if (e.type == "ok" && e.f != "get") acked_writes_.fetch_add(1, std::memory_order_release);
  const std::string line = j.dump() + "\n";
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size()) {
    error_ = absl::InternalError(absl::StrCat("writing the history: ", std::strerror(errno)));
  }
}

HistoryRecorder::AckedWrite HistoryRecorder::NewestAckedWrite() const {
  absl::MutexLock l(&mu_);
  return newest_acked_;
}

absl::Status HistoryRecorder::Close() {
  absl::MutexLock l(&mu_);
  if (file_ == nullptr) return error_;
  if (std::fclose(file_) != 0 && error_.ok()) {
    error_ = absl::InternalError(absl::StrCat("closing the history: ", std::strerror(errno)));
  }
  file_ = nullptr;
  return error_;
}

}  // namespace kvstore::fault

// Writes the history of a run as JSON Lines in the format kvcheck reads
// (docs/reliability.md, "History format"): one event per line, "i" strictly
// increasing and "t_ns" from one steady clock of the driver, both taken under
// the lock that orders the lines, so the file order is the real-time order.
// Thread-safe.
#ifndef KVSTORE_TOOLS_KVFAULT_HISTORY_RECORDER_H_
#define KVSTORE_TOOLS_KVFAULT_HISTORY_RECORDER_H_

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace kvstore::fault {

// One line's content, apart from "i" and "t_ns".
struct Event {
  int64_t proc = 0;
  std::string type;  // "invoke", "ok", "fail", "info".
  std::string f;     // "get", "set", "cas", "delete".
  std::string key;
  std::optional<std::string> value;  // Written value (set/cas), or the value read.
  std::optional<uint64_t> if_version;
  std::optional<bool> found;    // ok get.
  std::optional<bool> deleted;  // ok delete.
  std::optional<uint64_t> version;
  std::optional<uint64_t> current_version;  // fail of a version mismatch.
  std::optional<std::string> error;         // A note for people; kvcheck ignores it.
  std::optional<std::string> node;          // The node the request went to (completions).
  bool final_phase = false;
};

class HistoryRecorder {
 public:
  HistoryRecorder() = default;
  ~HistoryRecorder();
  HistoryRecorder(const HistoryRecorder&) = delete;
  HistoryRecorder& operator=(const HistoryRecorder&) = delete;

  absl::Status Open(const std::string& path);
  // Appends one line. Write errors become sticky and are returned by Close.
  void Record(const Event& e);
  // Nanoseconds on the history's clock (for the nemesis log).
  int64_t NowNs() const;
  // Acknowledged writes recorded so far (ok set/cas/delete), so the nemesis
  // can time a power cut after an acknowledgement.
  int64_t acked_writes() const { return acked_writes_.load(std::memory_order_acquire); }
  // The acknowledged write invoked last (not the one acknowledged last): the
  // t_ns of its invoke line, or -1 before any acknowledgement, and its key.
  // A write invoked after a moment was handed to the servers after it, so a
  // power cut can be proved to drop it (nemesis.cc, until_acked_unsynced_s).
  struct AckedWrite {
    int64_t invoke_t_ns = -1;
    std::string key;
  };
  AckedWrite NewestAckedWrite() const;
  absl::Status Close();

 private:
  const int64_t start_ns_ = SteadyNs();
  static int64_t SteadyNs();

  std::atomic<int64_t> acked_writes_{0};
  mutable absl::Mutex mu_;
  FILE* file_ ABSL_GUARDED_BY(mu_) = nullptr;
  int64_t next_i_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t last_t_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  // Open operations' invoke times, by proc (one operation at a time each).
  std::map<int64_t, int64_t> invoked_t_ ABSL_GUARDED_BY(mu_);
  AckedWrite newest_acked_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvstore::fault

#endif  // KVSTORE_TOOLS_KVFAULT_HISTORY_RECORDER_H_

// When a power cut provably drops a write a client was told is done: the
// moment the power-loss controls (docs/reliability.md, "Controls") must cut
// at, because a cut that drops only unacknowledged bytes proves nothing about
// acknowledgements. Decided from the power-loss journal (what each node's
// fsyncs made durable) and the history (when the acknowledged write was
// invoked), never from the servers' word. No processes, no I/O: the nemesis
// feeds it (nemesis.cc, `until_acked_unsynced_s`).
#ifndef KVSTORE_TOOLS_KVFAULT_ACKED_CUT_H_
#define KVSTORE_TOOLS_KVFAULT_ACKED_CUT_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <vector>

namespace kvstore::fault {

// One node's data files at one moment, by inode: their sizes, and then (read
// after the sizes) their durable lengths from its journal.
struct FilesState {
  std::map<uint64_t, int64_t> size;
  std::map<uint64_t, int64_t> durable;
};

// A write W invoked after a sample reached every node after it, so each node
// appended W's bytes past its files' sizes at that sample. If since then no
// node has made durable any byte past those sizes (every durable length that
// changed is still at most its file's size at the sample; a file new since
// counts as size 0), W's bytes are durable on none of them, and a power cut
// of them all drops W whatever the servers would have done next. Sufficient,
// not necessary: another write's bytes made durable since the sample count
// against it too, so the caller samples often and retries. Under sync acks
// with --fsync=always it can never hold for an acknowledged write (each node
// fsynced it before the client was answered). Not thread-safe.
class AckedCutWatch {
 public:
  // Samples kept; older ones are dropped (an acknowledgement that slow is
  // not worth proving).
  static constexpr size_t kMaxSamples = 4096;

  // `nodes`: one state per target, always in the same order; `t_ns` read
  // after all of them, on the history's clock.
  void AddSample(int64_t t_ns, std::vector<FilesState> nodes);

  // Whether a write invoked at `invoke_t_ns` (on the same clock) is durable
  // on none of the targets, given their durable lengths now, read after its
  // acknowledgement was seen. Uses the newest sample taken before the
  // invoke, and drops the older ones: call it with non-decreasing times.
  bool DurableNowhere(int64_t invoke_t_ns,
                      const std::vector<std::map<uint64_t, int64_t>>& durable_now);

  size_t samples() const { return samples_.size(); }

 private:
  struct Sample {
    int64_t t_ns = 0;
    std::vector<FilesState> nodes;
  };
  std::deque<Sample> samples_;
};

}  // namespace kvstore::fault

#endif  // KVSTORE_TOOLS_KVFAULT_ACKED_CUT_H_

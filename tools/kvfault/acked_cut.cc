#include "tools/kvfault/acked_cut.h"

#include <utility>

namespace kvstore::fault {

void AckedCutWatch::AddSample(int64_t t_ns, std::vector<FilesState> nodes) {
  samples_.push_back(Sample{t_ns, std::move(nodes)});
  if (samples_.size() > kMaxSamples) samples_.pop_front();
}

bool AckedCutWatch::DurableNowhere(int64_t invoke_t_ns,
                                   const std::vector<std::map<uint64_t, int64_t>>& durable_now) {
  // Strictly before: a sample read at the invoke's instant may already hold
  // the write's bytes.
  while (samples_.size() >= 2 && samples_[1].t_ns < invoke_t_ns) samples_.pop_front();
  if (samples_.empty() || samples_.front().t_ns >= invoke_t_ns) return false;
  const Sample& before = samples_.front();
  if (before.nodes.size() != durable_now.size()) return false;
  for (size_t k = 0; k < durable_now.size(); ++k) {
    const FilesState& then = before.nodes[k];
    for (const auto& [ino, durable] : durable_now[k]) {
      auto was = then.durable.find(ino);
      // Unchanged since the sample: its fsync began before the write existed.
      if (was != then.durable.end() && was->second == durable) continue;
      auto size = then.size.find(ino);
      if (durable > (size == then.size.end() ? 0 : size->second)) return false;
    }
  }
  return true;
}

}  // namespace kvstore::fault

#include "tools/kvbench/kvstore_requests.h"

#include "absl/status/status.h"

namespace kvstore::bench {

namespace v1 = ::kvstore::v1;

std::string CodeName(int code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

void FillGet(const BenchConfig& config, const KeyChooser& keys, std::mt19937_64& rng,
             v1::GetRequest* request) {
  FormatKey(keys.Next(rng), request->mutable_key());
  request->set_read_mode(static_cast<v1::ReadMode>(config.read_mode));
}

void FillSet(const BenchConfig& config, const KeyChooser& keys, const std::string& value,
             std::mt19937_64& rng, v1::SetRequest* request) {
  FormatKey(keys.Next(rng), request->mutable_key());
  if (request->value().size() != value.size()) request->set_value(value);
  request->mutable_ack()->set_mode(static_cast<v1::AckMode>(config.ack_mode));
  request->mutable_ack()->set_replicas(config.ack_replicas);
}

void FillMultiGet(const BenchConfig& config, const KeyChooser& keys, std::mt19937_64& rng,
                  v1::MultiGetRequest* request) {
  auto* names = request->mutable_keys();
  while (static_cast<uint64_t>(names->size()) < config.batch) names->Add();
  for (std::string& name : *names) FormatKey(keys.Next(rng), &name);
  request->set_read_mode(static_cast<v1::ReadMode>(config.read_mode));
}

void FillMultiSet(const BenchConfig& config, const KeyChooser& keys, const std::string& value,
                  std::mt19937_64& rng, v1::MultiSetRequest* request) {
  auto* items = request->mutable_items();
  while (static_cast<uint64_t>(items->size()) < config.batch) items->Add()->set_value(value);
  for (v1::SetItem& item : *items) FormatKey(keys.Next(rng), item.mutable_key());
  request->mutable_ack()->set_mode(static_cast<v1::AckMode>(config.ack_mode));
  request->mutable_ack()->set_replicas(config.ack_replicas);
}

void CountAnswer(const BenchConfig& config, int code, const v1::MultiGetResponse* multi_get,
                 const v1::MultiSetResponse* multi_set, std::chrono::steady_clock::duration elapsed,
                 RunControl* control, SlotStats* stats) {
  const bool measuring = control->phase.load(std::memory_order_acquire) == Phase::kMeasure;
  if (code != 0) {
    if (measuring) {
      ++stats->calls;
      stats->AddError(CodeName(code), config.batch);
    }
    return;
  }
  uint64_t ok = 1;
  if (config.batch > 1) {
    ok = 0;
    auto count = [&](const v1::KeyError& e) {
      if (e.code() == 0) {
        ++ok;
      } else if (measuring) {
        stats->AddError(CodeName(e.code()), 1);
      }
    };
    if (multi_get != nullptr) {
      for (const v1::GetResult& r : multi_get->results()) count(r.error());
    }
    if (multi_set != nullptr) {
      for (const v1::SetResult& r : multi_set->results()) count(r.error());
    }
  }
  control->completed_ops.fetch_add(ok, std::memory_order_relaxed);
  if (measuring) {
    ++stats->calls;
    stats->ops += ok;
    stats->latency.Record(static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(elapsed).count()));
  }
}

}  // namespace kvstore::bench

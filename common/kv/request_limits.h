// Validation of public-API requests, shared by every server that accepts them.
// A rejected request writes nothing; the message names the limit.
#ifndef KVSTORE_COMMON_KV_REQUEST_LIMITS_H_
#define KVSTORE_COMMON_KV_REQUEST_LIMITS_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "kvstore/v1/kv.pb.h"

namespace kvstore {

struct RequestLimits {
  size_t max_key_bytes = 4096;
  size_t max_value_bytes = 1 << 20;
  size_t max_batch_items = 10'000;
  // About 100 years: keeps now + ttl far from overflowing.
  uint64_t max_ttl_ms = 100ull * 365 * 24 * 3600 * 1000;
};

absl::Status CheckKey(const std::string& key, const RequestLimits& limits);
absl::Status CheckGet(const v1::GetRequest& request, const RequestLimits& limits);
absl::Status CheckSet(const v1::SetRequest& request, const RequestLimits& limits);
absl::Status CheckDelete(const v1::DeleteRequest& request, const RequestLimits& limits);
absl::Status CheckMultiGet(const v1::MultiGetRequest& request, const RequestLimits& limits);
absl::Status CheckMultiSet(const v1::MultiSetRequest& request, const RequestLimits& limits);

}  // namespace kvstore

#endif  // KVSTORE_COMMON_KV_REQUEST_LIMITS_H_

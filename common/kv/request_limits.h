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
  // Of one MultiGet's answer, as encoded: gathering stops, and the call fails
  // with RESOURCE_EXHAUSTED, as soon as it would be larger.
  size_t max_response_bytes = 64 << 20;
  // About 100 years: keeps now + ttl far from overflowing.
  uint64_t max_ttl_ms = 100ull * 365 * 24 * 3600 * 1000;
};

absl::Status CheckKey(const std::string& key, const RequestLimits& limits);
absl::Status CheckGet(const v1::GetRequest& request, const RequestLimits& limits);
absl::Status CheckSet(const v1::SetRequest& request, const RequestLimits& limits);
absl::Status CheckDelete(const v1::DeleteRequest& request, const RequestLimits& limits);
absl::Status CheckMultiGet(const v1::MultiGetRequest& request, const RequestLimits& limits);
absl::Status CheckMultiSet(const v1::MultiSetRequest& request, const RequestLimits& limits);
// The read mode and the prefix (at most max_key_bytes); the cursor is checked
// by whoever decodes it (common/kv/scan_cursor.h).
absl::Status CheckScan(const v1::ScanRequest& request, const RequestLimits& limits);

// Entries one Scan page may hold: the request's limit, 0 meaning
// kDefaultScanLimit, at most limits.max_batch_items.
inline constexpr size_t kDefaultScanLimit = 1000;
size_t ScanPageLimit(const v1::ScanRequest& request, const RequestLimits& limits);

// What one element of `element_bytes` (a result) adds to an encoded answer:
// itself, its tag and its length.
size_t RepeatedElementBytes(size_t element_bytes);
// RESOURCE_EXHAUSTED naming limits.max_response_bytes and its flag: the
// status of a call whose answer would be larger.
absl::Status ResponseTooLarge(const RequestLimits& limits);

}  // namespace kvstore

#endif  // KVSTORE_COMMON_KV_REQUEST_LIMITS_H_

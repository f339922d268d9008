#include "common/kv/request_limits.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"

namespace kvstore {
namespace {

absl::Status CheckValue(const std::string& value, uint64_t ttl_ms, const RequestLimits& limits) {
  if (value.size() > limits.max_value_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("value is ", value.size(),
                                                   " bytes; the limit is ", limits.max_value_bytes,
                                                   " bytes (--max-value-bytes)"));
  }
  if (ttl_ms > limits.max_ttl_ms) {
    return absl::InvalidArgumentError(
        absl::StrCat("ttl_ms ", ttl_ms, " is over the limit of ", limits.max_ttl_ms, " ms"));
  }
  return absl::OkStatus();
}

absl::Status CheckAck(const v1::WriteAck& ack) {
  if (!v1::AckMode_IsValid(ack.mode())) {
    return absl::InvalidArgumentError(absl::StrCat("unknown ack mode ", ack.mode()));
  }
  return absl::OkStatus();
}

absl::Status CheckReadMode(int mode) {
  if (!v1::ReadMode_IsValid(mode)) {
    return absl::InvalidArgumentError(absl::StrCat("unknown read_mode ", mode));
  }
  return absl::OkStatus();
}

absl::Status CheckBatchSize(size_t n, const RequestLimits& limits) {
  if (n > limits.max_batch_items) {
    return absl::InvalidArgumentError(absl::StrCat("batch has ", n, " items; the limit is ",
                                                   limits.max_batch_items, " (--max-batch-items)"));
  }
  return absl::OkStatus();
}

absl::Status InItem(size_t i, absl::Status s) {
  if (s.ok()) return s;
  return absl::InvalidArgumentError(absl::StrCat("item ", i, ": ", s.message()));
}

}  // namespace

absl::Status CheckKey(const std::string& key, const RequestLimits& limits) {
  if (key.empty()) return absl::InvalidArgumentError("key is empty");
  if (key.size() > limits.max_key_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("key is ", key.size(), " bytes; the limit is ",
                                                   limits.max_key_bytes, " bytes"));
  }
  return absl::OkStatus();
}

absl::Status CheckGet(const v1::GetRequest& request, const RequestLimits& limits) {
  if (absl::Status s = CheckReadMode(request.read_mode()); !s.ok()) return s;
  return CheckKey(request.key(), limits);
}

absl::Status CheckSet(const v1::SetRequest& request, const RequestLimits& limits) {
  if (absl::Status s = CheckKey(request.key(), limits); !s.ok()) return s;
  if (absl::Status s = CheckValue(request.value(), request.ttl_ms(), limits); !s.ok()) return s;
  return CheckAck(request.ack());
}

absl::Status CheckDelete(const v1::DeleteRequest& request, const RequestLimits& limits) {
  if (absl::Status s = CheckKey(request.key(), limits); !s.ok()) return s;
  return CheckAck(request.ack());
}

absl::Status CheckMultiGet(const v1::MultiGetRequest& request, const RequestLimits& limits) {
  if (absl::Status s = CheckReadMode(request.read_mode()); !s.ok()) return s;
  if (absl::Status s = CheckBatchSize(request.keys_size(), limits); !s.ok()) return s;
  for (int i = 0; i < request.keys_size(); ++i) {
    if (absl::Status s = InItem(i, CheckKey(request.keys(i), limits)); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status CheckMultiSet(const v1::MultiSetRequest& request, const RequestLimits& limits) {
  if (absl::Status s = CheckAck(request.ack()); !s.ok()) return s;
  if (absl::Status s = CheckBatchSize(request.items_size(), limits); !s.ok()) return s;
  for (int i = 0; i < request.items_size(); ++i) {
    const v1::SetItem& item = request.items(i);
    if (absl::Status s = InItem(i, CheckKey(item.key(), limits)); !s.ok()) return s;
    if (absl::Status s = InItem(i, CheckValue(item.value(), item.ttl_ms(), limits)); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status CheckScan(const v1::ScanRequest& request, const RequestLimits& limits) {
  if (absl::Status s = CheckReadMode(request.read_mode()); !s.ok()) return s;
  if (request.prefix().size() > limits.max_key_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("prefix is ", request.prefix().size(),
                                                   " bytes; the limit is ", limits.max_key_bytes,
                                                   " bytes (as for a key)"));
  }
  return absl::OkStatus();
}

size_t ScanPageLimit(const v1::ScanRequest& request, const RequestLimits& limits) {
  const size_t asked = request.limit() == 0 ? kDefaultScanLimit : request.limit();
  return std::max<size_t>(1, std::min(asked, limits.max_batch_items));
}

size_t RepeatedElementBytes(size_t element_bytes) {
  // Field numbers below 16 take a one-byte tag.
  return 1 + google::protobuf::io::CodedOutputStream::VarintSize64(element_bytes) + element_bytes;
}

absl::Status ResponseTooLarge(const RequestLimits& limits) {
  return absl::ResourceExhaustedError(
      absl::StrCat("the answer would be over the limit of ", limits.max_response_bytes,
                   " bytes (--max-response-bytes); ask for fewer keys per call"));
}

}  // namespace kvstore

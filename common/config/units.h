// Sizes and rates as the tools print them, and the one parser of the byte
// sizes and rates flags take (kvctl --throttle, `kvctl reshard throttle ID
// RATE`, the nodes' --migration-retention-bytes). Pure: no I/O.
#ifndef KVSTORE_COMMON_CONFIG_UNITS_H_
#define KVSTORE_COMMON_CONFIG_UNITS_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvstore {

// "512 B", "12.3 KiB", "4.0 MiB", "1.2 GiB" (binary units, up to TiB).
std::string HumanBytes(uint64_t bytes);
// HumanBytes of a rate, and "/s": "32.0 MiB/s".
std::string HumanRate(double bytes_per_second);

// A rate in bytes per second: a plain number of bytes ("33554432"), or a
// number (decimals allowed) with a unit B, KiB, MiB or GiB, in any case, an
// optional space and an optional "/s": "32MiB/s", "1.5 GiB/s", "512KiB".
// INVALID_ARGUMENT naming the forms when it is none of them, or is not at
// least 1 byte per second, or does not fit an int64.
absl::StatusOr<int64_t> ParseByteRate(absl::string_view text);

// A size in bytes, in the same forms without "/s": "4294967296", "4GiB",
// "512 MiB", "1.5KiB". INVALID_ARGUMENT naming the forms when it is none of
// them, is below 1 byte, or does not fit an int64.
absl::StatusOr<int64_t> ParseByteSize(absl::string_view text);

}  // namespace kvstore

#endif  // KVSTORE_COMMON_CONFIG_UNITS_H_

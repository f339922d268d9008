// `kvfault bitflip`: flips one bit of a file of a stopped node (issue 15,
// scenarios 5 and 7), to check that the damage is detected, never silently
// read past or cut away.
#ifndef KVSTORE_TOOLS_KVFAULT_BIT_FLIP_H_
#define KVSTORE_TOOLS_KVFAULT_BIT_FLIP_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace kvstore::fault {

struct BitFlip {
  std::string file;
  int64_t offset = 0;
  int bit = 0;
  uint8_t before = 0;
  uint8_t after = 0;
  std::string ToString() const;
};

// Flips bit `seed`-drawn bit of the byte at `offset`, or of a byte drawn from
// [lo, hi) of the file when `offset` is empty (hi <= 0: the file's size; both
// clamped to it).
absl::StatusOr<BitFlip> FlipBit(const std::string& file, std::optional<int64_t> offset,
                                uint64_t seed, int64_t lo = 0, int64_t hi = 0);

}  // namespace kvstore::fault

#endif  // KVSTORE_TOOLS_KVFAULT_BIT_FLIP_H_

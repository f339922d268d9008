// What every fuzz target shares: a reader that takes typed pieces from the
// front of the input (running out is not an error: the rest reads as zeros and
// empty strings), and quiet logs so the library's warnings do not slow the
// fuzzer down. Property violations use glog's CHECK: it aborts, which both
// libFuzzer and the replay driver report with the message.
#ifndef KVSTORE_TESTS_FUZZ_FUZZ_SUPPORT_H_
#define KVSTORE_TESTS_FUZZ_FUZZ_SUPPORT_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace kvstore::fuzz {

class InputReader {
 public:
  InputReader(const uint8_t* data, size_t size)
      : rest_(reinterpret_cast<const char*>(data), size) {}

  uint8_t U8() { return static_cast<uint8_t>(Take(1)); }
  uint16_t U16() { return static_cast<uint16_t>(Take(2)); }
  uint32_t U32() { return static_cast<uint32_t>(Take(4)); }
  uint64_t U64() { return Take(8); }
  // Up to n bytes from the front.
  absl::string_view Bytes(size_t n) {
    const absl::string_view out = rest_.substr(0, n);
    rest_.remove_prefix(out.size());
    return out;
  }
  // A length byte, then that many bytes (at most what is left).
  absl::string_view ShortBytes() { return Bytes(U8()); }
  absl::string_view Rest() { return Bytes(rest_.size()); }
  bool empty() const { return rest_.empty(); }

 private:
  uint64_t Take(size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n && !rest_.empty(); ++i) {
      v |= uint64_t{static_cast<uint8_t>(rest_.front())} << (8 * i);
      rest_.remove_prefix(1);
    }
    return v;
  }

  absl::string_view rest_;
};

// Logs ERROR and above only (CHECK failures still print).
void QuietLogs();

}  // namespace kvstore::fuzz

#endif  // KVSTORE_TESTS_FUZZ_FUZZ_SUPPORT_H_

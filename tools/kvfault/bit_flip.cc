#include "tools/kvfault/bit_flip.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvstore::fault {

std::string BitFlip::ToString() const {
  return absl::StrFormat("flipped bit %d of the byte at offset %d of %s (0x%02x -> 0x%02x)", bit,
                         offset, file, before, after);
}

absl::StatusOr<BitFlip> FlipBit(const std::string& file, std::optional<int64_t> offset,
                                uint64_t seed, int64_t lo, int64_t hi) {
  const int fd = ::open(file.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat("open ", file, ": ", std::strerror(errno)));
  struct stat st;
  if (::fstat(fd, &st) != 0 || st.st_size == 0) {
    ::close(fd);
    return absl::FailedPreconditionError(absl::StrCat(file, " is empty or unreadable"));
  }
  std::mt19937_64 rng(seed);
  BitFlip flip;
  flip.file = file;
  if (offset.has_value()) {
    flip.offset = *offset;
  } else {
    hi = hi <= 0 ? st.st_size : std::min<int64_t>(hi, st.st_size);
    lo = std::clamp<int64_t>(lo, 0, hi - 1);
    flip.offset = std::uniform_int_distribution<int64_t>(lo, hi - 1)(rng);
  }
  if (flip.offset < 0 || flip.offset >= st.st_size) {
    ::close(fd);
    return absl::OutOfRangeError(
        absl::StrCat("offset ", flip.offset, " is outside ", file, " (", st.st_size, " bytes)"));
  }
  flip.bit = static_cast<int>(std::uniform_int_distribution<int>(0, 7)(rng));
  absl::Status s;
  if (::pread(fd, &flip.before, 1, flip.offset) != 1) {
    s = absl::InternalError(absl::StrCat("pread ", file, ": ", std::strerror(errno)));
  } else {
    flip.after = static_cast<uint8_t>(flip.before ^ (1u << flip.bit));
    if (::pwrite(fd, &flip.after, 1, flip.offset) != 1 || ::fsync(fd) != 0) {
      s = absl::InternalError(absl::StrCat("pwrite ", file, ": ", std::strerror(errno)));
    }
  }
  ::close(fd);
  if (!s.ok()) return s;
  return flip;
}

}  // namespace kvstore::fault

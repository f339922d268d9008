#include "common/config/units.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"

namespace kvstore {

std::string HumanBytes(uint64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes) / 1024;
  int unit = 0;
  while (value >= 1024 && unit < 3) {
    value /= 1024;
    ++unit;
  }
  return absl::StrFormat("%.1f %s", value, units[unit]);
}

std::string HumanRate(double bytes_per_second) {
  if (!(bytes_per_second > 0)) return "0 B/s";
  return absl::StrCat(HumanBytes(static_cast<uint64_t>(std::llround(bytes_per_second))), "/s");
}

namespace {

// The number of bytes in `text` (a number with an optional unit), or why not.
absl::StatusOr<int64_t> ParseBytes(absl::string_view text, bool rate) {
  const auto invalid = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        rate ? absl::StrCat("rate '", text, "' ", why,
                            ": give bytes per second as a number (33554432) or with a unit B, "
                            "KiB, MiB or GiB, optionally followed by /s (32MiB/s, 1.5GiB/s, "
                            "512KiB/s)")
             : absl::StrCat("size '", text, "' ", why,
                            ": give bytes as a number (4294967296) or with a unit B, KiB, MiB "
                            "or GiB (4GiB, 512MiB, 1.5KiB)"));
  };
  absl::string_view rest = absl::StripAsciiWhitespace(text);
  if (rate && rest.size() > 2 && absl::EndsWithIgnoreCase(rest, "/s")) rest.remove_suffix(2);
  struct Unit {
    const char* name;
    double bytes;
  };
  // Longest first, so that "KiB" is not read as "B".
  constexpr Unit kUnits[] = {
      {"KiB", 1024.0}, {"MiB", 1024.0 * 1024}, {"GiB", 1024.0 * 1024 * 1024}, {"B", 1.0}};
  double multiplier = 1;
  for (const Unit& unit : kUnits) {
    if (absl::EndsWithIgnoreCase(rest, unit.name)) {
      rest.remove_suffix(std::char_traits<char>::length(unit.name));
      multiplier = unit.bytes;
      break;
    }
  }
  rest = absl::StripTrailingAsciiWhitespace(rest);
  const char* what = rate ? "is not a rate" : "is not a size";
  if (rest.empty() || !std::all_of(rest.begin(), rest.end(), [](char c) {
        return absl::ascii_isdigit(static_cast<unsigned char>(c)) || c == '.';
      })) {
    return invalid(what);
  }
  double number = 0;
  if (!absl::SimpleAtod(rest, &number) || !std::isfinite(number)) return invalid(what);
  const double bytes = std::floor(number * multiplier);
  if (bytes < 1) return invalid(rate ? "is below 1 byte per second" : "is below 1 byte");
  if (bytes >= 9.2e18) return invalid("is too large");
  return static_cast<int64_t>(bytes);
}

}  // namespace

absl::StatusOr<int64_t> ParseByteRate(absl::string_view text) { return ParseBytes(text, true); }

absl::StatusOr<int64_t> ParseByteSize(absl::string_view text) { return ParseBytes(text, false); }

}  // namespace kvstore

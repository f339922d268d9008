#include "tools/kvctl/units.h"

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

absl::StatusOr<int64_t> ParseByteRate(absl::string_view text) {
  const auto invalid = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("rate '", text, "' ", why,
                     ": give bytes per second as a number (33554432) or with a unit B, KiB, MiB "
                     "or GiB, optionally followed by /s (32MiB/s, 1.5GiB/s, 512KiB/s)"));
  };
  absl::string_view rest = absl::StripAsciiWhitespace(text);
  if (rest.size() > 2 && absl::EndsWithIgnoreCase(rest, "/s")) rest.remove_suffix(2);
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
  if (rest.empty() || !std::all_of(rest.begin(), rest.end(), [](char c) {
        return absl::ascii_isdigit(static_cast<unsigned char>(c)) || c == '.';
      })) {
    return invalid("is not a rate");
  }
  double number = 0;
  if (!absl::SimpleAtod(rest, &number) || !std::isfinite(number)) {
    return invalid("is not a rate");
  }
  const double bytes = std::floor(number * multiplier);
  if (bytes < 1) return invalid("is below 1 byte per second");
  if (bytes >= 9.2e18) return invalid("is too large");
  return static_cast<int64_t>(bytes);
}

}  // namespace kvstore

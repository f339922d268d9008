#include "tools/kvbench/zipfian.h"

#include <cmath>

namespace kvstore::bench {

double ZipfianGenerator::Zeta(uint64_t n, double theta) {
  double sum = 0;
  for (uint64_t i = 1; i <= n; ++i) sum += 1.0 / std::pow(static_cast<double>(i), theta);
  return sum;
}

ZipfianGenerator::ZipfianGenerator(uint64_t items, double theta)
    : items_(items < 1 ? 1 : items),
      theta_(theta),
      zetan_(Zeta(items_, theta)),
      zeta2_(Zeta(2, theta)),
      alpha_(1.0 / (1.0 - theta)),
      eta_((1.0 - std::pow(2.0 / static_cast<double>(items_), 1.0 - theta)) /
           (1.0 - zeta2_ / zetan_)) {}

uint64_t ZipfianGenerator::Sample(double u) const {
  // Ranks 0 and 1 exactly; the rest from the inverse of the approximated CDF.
  const double uz = u * zetan_;
  if (uz < 1.0) return 0;
  if (uz < 1.0 + std::pow(0.5, theta_)) return items_ > 1 ? 1 : 0;
  const uint64_t rank =
      static_cast<uint64_t>(static_cast<double>(items_) * std::pow(eta_ * u - eta_ + 1.0, alpha_));
  return rank < items_ ? rank : items_ - 1;
}

uint64_t Fnv1a64(uint64_t value) {
  uint64_t hash = 0xCBF29CE484222325ull;
  for (int i = 0; i < 8; ++i) {
    hash ^= value & 0xff;
    hash *= 1099511628211ull;
    value >>= 8;
  }
  return hash;
}

}  // namespace kvstore::bench

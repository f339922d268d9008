// Key choice for kvbench: YCSB's zipfian generator, written here (no library in
// Debian fits) after Gray et al., "Quickly Generating Billion-Record Synthetic
// Databases" (SIGMOD 1994), as YCSB's ZipfianGenerator does it, plus YCSB's
// "scrambled" variant that hashes the rank so the popular keys are spread over
// the key space instead of being key 0, 1, 2...
#ifndef KVSTORE_TOOLS_KVBENCH_ZIPFIAN_H_
#define KVSTORE_TOOLS_KVBENCH_ZIPFIAN_H_

#include <cstdint>

namespace kvstore::bench {

// YCSB's default zipfian constant.
inline constexpr double kZipfianConstant = 0.99;

// Ranks 0..items-1, rank r drawn with probability about 1/(r+1)^theta / zeta(items).
// Construction is O(items) (it sums zeta); Sample() is O(1) and const, so one
// generator can be shared by threads that each bring their own random numbers.
class ZipfianGenerator {
 public:
  // items >= 1, 0 < theta < 1.
  explicit ZipfianGenerator(uint64_t items, double theta = kZipfianConstant);

  // Maps a uniform u in [0, 1) to a rank in [0, items).
  uint64_t Sample(double u) const;

  uint64_t items() const { return items_; }
  double theta() const { return theta_; }
  double zetan() const { return zetan_; }

  // sum_{i=1..n} 1 / i^theta.
  static double Zeta(uint64_t n, double theta);

 private:
  uint64_t items_;
  double theta_;
  double zetan_;
  double zeta2_;
  double alpha_;
  double eta_;
};

// 64-bit FNV-1a of the 8 little-endian bytes of `value`, as YCSB's
// ScrambledZipfianGenerator hashes a rank.
uint64_t Fnv1a64(uint64_t value);

// A zipfian rank spread over [0, items): YCSB's scrambled zipfian. Different
// ranks can land on the same key (as in YCSB), so a few keys are hotter than
// their rank alone would make them.
inline uint64_t ScrambleRank(uint64_t rank, uint64_t items) { return Fnv1a64(rank) % items; }

}  // namespace kvstore::bench

#endif  // KVSTORE_TOOLS_KVBENCH_ZIPFIAN_H_

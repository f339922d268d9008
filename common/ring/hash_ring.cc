#include "common/ring/hash_ring.h"

#include <algorithm>
#include <numeric>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "xxhash.h"

namespace kvstore {

uint64_t HashRing::KeyHash(absl::string_view key) { return XXH64(key.data(), key.size(), 0); }

uint64_t HashRing::TokenHash(absl::string_view shard, int i) {
  return KeyHash(absl::StrCat(shard, "#", i));
}

absl::StatusOr<HashRing> HashRing::Build(std::vector<std::string> shards, int vnodes) {
  return Build(std::move(shards), vnodes, RingDrain());
}

absl::StatusOr<HashRing> HashRing::Build(std::vector<std::string> shards, int vnodes,
                                         const RingDrain& drain) {
  if (shards.empty()) return absl::InvalidArgumentError("a ring needs at least one shard");
  if (vnodes < 1 || vnodes > kMaxVirtualNodes) {
    return absl::InvalidArgumentError(
        absl::StrCat("vnodes is ", vnodes, "; it must be between 1 and ", kMaxVirtualNodes));
  }
  std::set<std::string> seen;
  for (const std::string& name : shards) {
    if (name.empty()) return absl::InvalidArgumentError("a shard name is empty");
    if (!seen.insert(name).second) {
      return absl::InvalidArgumentError(absl::StrCat("shard name '", name, "' appears twice"));
    }
  }

  // The drain, as indexes into `shards`.
  int64_t drained = -1;
  std::vector<bool> handed(shards.size(), false);
  if (!drain.empty()) {
    const auto index_of = [&shards](const std::string& name) -> int64_t {
      auto it = std::find(shards.begin(), shards.end(), name);
      return it == shards.end() ? -1 : it - shards.begin();
    };
    drained = index_of(drain.shard);
    if (drained < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("the drained shard '", drain.shard, "' is not in the ring"));
    }
    for (const std::string& name : drain.handed_to) {
      const int64_t i = index_of(name);
      if (i < 0 || i == drained) {
        return absl::InvalidArgumentError(absl::StrCat("shard '", name, "' that '", drain.shard,
                                                       "' is handed to is not another shard"));
      }
      handed[i] = true;
    }
  }

  struct Token {
    uint64_t hash;
    uint32_t owner;
  };
  std::vector<Token> tokens;
  tokens.reserve(shards.size() * static_cast<size_t>(vnodes));
  for (uint32_t s = 0; s < shards.size(); ++s) {
    for (int i = 0; i < vnodes; ++i) tokens.push_back({TokenHash(shards[s], i), s});
  }
  // The tie rule of the header: equal hashes ordered by shard name. Tokens of
  // one shard that collide are interchangeable, so the sort need not be stable.
  std::sort(tokens.begin(), tokens.end(), [&shards](const Token& a, const Token& b) {
    if (a.hash != b.hash) return a.hash < b.hash;
    return shards[a.owner] < shards[b.owner];
  });

  std::vector<uint64_t> hashes(tokens.size());
  std::vector<uint32_t> owners(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    hashes[i] = tokens[i].hash;
    owners[i] = tokens[i].owner;
  }
  if (drained >= 0 && shards.size() > 1) {
    // Walk the ring backwards from a token that is not the drained shard's,
    // twice round, carrying the shard of the nearest such token after each
    // position: that is the successor of each drained token.
    const size_t n = tokens.size();
    size_t start = 0;
    while (tokens[start].owner == drained) ++start;  // Exists: another shard has tokens.
    uint32_t successor = tokens[start].owner;
    for (size_t step = 1; step <= n; ++step) {
      const size_t k = (start + n - step) % n;
      if (tokens[k].owner != drained) {
        successor = tokens[k].owner;
      } else if (handed[successor]) {
        owners[k] = successor;
      }
    }
  }
  RingDrain kept = drain;
  std::sort(kept.handed_to.begin(), kept.handed_to.end());
  return HashRing(std::move(shards), vnodes, std::move(kept), std::move(hashes), std::move(owners));
}

int HashRing::OwnerOfPosition(uint64_t position) const {
  // lower_bound: the first token >= position, and among equal hashes the
  // first in order, which is the smallest shard name.
  auto it = std::lower_bound(token_hashes_.begin(), token_hashes_.end(), position);
  const size_t index = it == token_hashes_.end() ? 0 : it - token_hashes_.begin();
  return static_cast<int>(token_owners_[index]);
}

std::vector<double> HashRing::Ownership() const {
  // Token k owns the positions (hash[k-1], hash[k]]; token 0 owns the wrap
  // (hash[last], 2^64) and [0, hash[0]]. Unsigned subtraction modulo 2^64
  // gives every arc's size, the wrap included; a token equal to its
  // predecessor owns nothing, as the lookup rule says.
  std::vector<long double> positions(shards_.size(), 0.0L);
  const size_t n = token_hashes_.size();
  bool all_equal = true;
  for (size_t k = 0; k < n; ++k) {
    const uint64_t previous = token_hashes_[k == 0 ? n - 1 : k - 1];
    const uint64_t arc = token_hashes_[k] - previous;
    if (arc != 0) all_equal = false;
    positions[token_owners_[k]] += static_cast<long double>(arc);
  }
  std::vector<double> fractions(shards_.size(), 0.0);
  if (all_equal) {
    // Every token at one position (one token in all, say): its owner has it all.
    fractions[token_owners_[0]] = 1.0;
    return fractions;
  }
  constexpr long double kRingSize = 18446744073709551616.0L;  // 2^64
  for (size_t s = 0; s < shards_.size(); ++s) {
    fractions[s] = static_cast<double>(positions[s] / kRingSize);
  }
  return fractions;
}

}  // namespace kvstore

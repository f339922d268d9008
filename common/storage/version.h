// A key's version names exactly one write of a shard: the epoch of the leader
// that made the write in the high 24 bits, the write's log index in the low 40.
//
//   version = epoch << 40 | index
//
// Every start of leadership is a new epoch (common/replication), so two
// different writes never share (epoch, index) even when a lost log tail or a
// lossy promotion hands the same index to a second write; and because epochs
// and indexes only grow, a key's versions strictly increase. Versions written
// before this layout (the bare index, epoch bits 0) sort below every new one.
// docs/storage-format.md describes the layout.
#ifndef KVSTORE_COMMON_STORAGE_VERSION_H_
#define KVSTORE_COMMON_STORAGE_VERSION_H_

#include <cstdint>

namespace kvstore {

inline constexpr int kVersionIndexBits = 40;
// Largest log index a version can carry (about 1.1e12 writes per shard).
inline constexpr uint64_t kMaxVersionIndex = (uint64_t{1} << kVersionIndexBits) - 1;
// Largest epoch a version can carry.
inline constexpr uint64_t kMaxVersionEpoch = (uint64_t{1} << (64 - kVersionIndexBits)) - 1;

// Requires epoch <= kMaxVersionEpoch and index <= kMaxVersionIndex.
inline constexpr uint64_t MakeVersion(uint64_t epoch, uint64_t index) {
  return epoch << kVersionIndexBits | index;
}
inline constexpr uint64_t VersionEpoch(uint64_t version) { return version >> kVersionIndexBits; }
inline constexpr uint64_t VersionIndex(uint64_t version) { return version & kMaxVersionIndex; }

}  // namespace kvstore

#endif  // KVSTORE_COMMON_STORAGE_VERSION_H_

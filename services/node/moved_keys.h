// Helpers both ends of a migration share (proto/kvstore/v1/migration.proto):
// ranges to and from the wire, and the checksum of a batch of moved keys.
#ifndef KVSTORE_SERVICES_NODE_MOVED_KEYS_H_
#define KVSTORE_SERVICES_NODE_MOVED_KEYS_H_

#include <cstdint>

#include "common/ring/ring_diff.h"
#include "google/protobuf/repeated_field.h"
#include "kvstore/v1/migration.pb.h"

namespace kvstore {

// XXH64 over each key's fields, framed with their lengths, in order: the
// value both ends compute for `checksum`.
uint64_t MovedKeysChecksum(const google::protobuf::RepeatedPtrField<v1::MovedKey>& keys);

RangeSet RangesFromProto(const google::protobuf::RepeatedPtrField<v1::PositionRange>& ranges);
void RangesToProto(const RangeSet& ranges,
                   google::protobuf::RepeatedPtrField<v1::PositionRange>* out);

}  // namespace kvstore

#endif  // KVSTORE_SERVICES_NODE_MOVED_KEYS_H_

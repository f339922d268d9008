#include "services/node/moved_keys.h"

#include <string>

#include "xxhash.h"

namespace kvstore {
namespace {

void PutFixed64(uint64_t v, std::string* out) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}

}  // namespace

uint64_t MovedKeysChecksum(const google::protobuf::RepeatedPtrField<v1::MovedKey>& keys) {
  XXH64_state_t* state = XXH64_createState();
  XXH64_reset(state, 0);
  std::string frame;
  for (const v1::MovedKey& k : keys) {
    frame.clear();
    PutFixed64(k.key().size(), &frame);
    PutFixed64(k.value().size(), &frame);
    PutFixed64(k.version(), &frame);
    PutFixed64(static_cast<uint64_t>(k.expire_unix_ms()), &frame);
    PutFixed64(k.index(), &frame);
    frame.push_back(k.deleted() ? 1 : 0);
    XXH64_update(state, frame.data(), frame.size());
    XXH64_update(state, k.key().data(), k.key().size());
    XXH64_update(state, k.value().data(), k.value().size());
  }
  const uint64_t sum = XXH64_digest(state);
  XXH64_freeState(state);
  return sum;
}

RangeSet RangesFromProto(const google::protobuf::RepeatedPtrField<v1::PositionRange>& ranges) {
  std::vector<PositionRange> out;
  out.reserve(ranges.size());
  for (const v1::PositionRange& r : ranges) {
    if (r.first() <= r.last()) out.push_back({r.first(), r.last()});
  }
  return RangeSet(std::move(out));
}

void RangesToProto(const RangeSet& ranges,
                   google::protobuf::RepeatedPtrField<v1::PositionRange>* out) {
  for (const PositionRange& r : ranges.ranges()) {
    v1::PositionRange* p = out->Add();
    p->set_first(r.first);
    p->set_last(r.last);
  }
}

}  // namespace kvstore

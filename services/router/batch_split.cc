#include "services/router/batch_split.h"

#include <optional>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "common/server/grpc_status.h"

namespace kvstore {
namespace {

void SetError(const std::string& shard_label, const absl::Status& status, v1::KeyError* error) {
  error->set_code(static_cast<int32_t>(status.code()));
  error->set_message(absl::StrCat(shard_label, ": ", status.message()));
  if (std::optional<ErrorInfo> info = ErrorInfoOf(status)) error->set_reason(info->reason);
}

template <typename Response>
void FailAll(const ShardSlice& slice, const std::string& shard_label, const absl::Status& status,
             Response* into) {
  for (int position : slice.positions) {
    auto* result = into->mutable_results(position);
    result->Clear();
    SetError(shard_label, status, result->mutable_error());
  }
}

template <typename Response>
void Gather(const ShardSlice& slice, const std::string& shard_label, Response* from,
            Response* into) {
  const int expected = static_cast<int>(slice.positions.size());
  if (from->results_size() != expected) {
    FailAll(slice, shard_label,
            absl::InternalError(absl::StrCat("answered ", from->results_size(), " results for ",
                                             expected, " items")),
            into);
    return;
  }
  for (int i = 0; i < expected; ++i) {
    into->mutable_results(slice.positions[i])->Swap(from->mutable_results(i));
  }
}

}  // namespace

std::vector<ShardSlice> SplitByShard(int count, const std::function<int(int)>& shard_of) {
  std::vector<ShardSlice> slices;
  std::unordered_map<int, size_t> index;  // shard -> position in slices
  for (int position = 0; position < count; ++position) {
    const int shard = shard_of(position);
    auto [it, inserted] = index.emplace(shard, slices.size());
    if (inserted) {
      slices.emplace_back();
      slices.back().shard = shard;
    }
    slices[it->second].positions.push_back(position);
  }
  return slices;
}

v1::MultiGetRequest SliceRequest(const v1::MultiGetRequest& request, const ShardSlice& slice) {
  v1::MultiGetRequest out;
  out.set_read_mode(request.read_mode());
  out.mutable_keys()->Reserve(static_cast<int>(slice.positions.size()));
  for (int position : slice.positions) out.add_keys(request.keys(position));
  return out;
}

v1::MultiSetRequest SliceRequest(const v1::MultiSetRequest& request, const ShardSlice& slice) {
  v1::MultiSetRequest out;
  if (request.has_ack()) *out.mutable_ack() = request.ack();
  out.mutable_items()->Reserve(static_cast<int>(slice.positions.size()));
  for (int position : slice.positions) *out.add_items() = request.items(position);
  return out;
}

void PrepareResults(int count, v1::MultiGetResponse* into) {
  into->mutable_results()->Reserve(count);
  for (int i = 0; i < count; ++i) into->add_results();
}

void PrepareResults(int count, v1::MultiSetResponse* into) {
  into->mutable_results()->Reserve(count);
  for (int i = 0; i < count; ++i) into->add_results();
}

void GatherResults(const ShardSlice& slice, const std::string& shard_label,
                   v1::MultiGetResponse* from, v1::MultiGetResponse* into) {
  Gather(slice, shard_label, from, into);
}

void GatherResults(const ShardSlice& slice, const std::string& shard_label,
                   v1::MultiSetResponse* from, v1::MultiSetResponse* into) {
  Gather(slice, shard_label, from, into);
}

void FailSlice(const ShardSlice& slice, const std::string& shard_label, const absl::Status& status,
               v1::MultiGetResponse* into) {
  FailAll(slice, shard_label, status, into);
}

void FailSlice(const ShardSlice& slice, const std::string& shard_label, const absl::Status& status,
               v1::MultiSetResponse* into) {
  FailAll(slice, shard_label, status, into);
}

}  // namespace kvstore

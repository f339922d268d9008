// kvstore.v1.KeyValue/Scan on the router: the cluster's keys, one shard after
// another. A call starts at the shard its cursor names (the first, for an
// empty cursor) and asks it for a page; a page with entries, or one that
// leaves a cursor inside the shard, is the answer, its cursor wrapped with the
// shard's place; a shard with nothing more passes the call on to the next,
// so an empty shard costs no round trip of the client's. The order is the
// shards' names sorted: it does not change with the order of the topology
// file, and a cursor also names its shard, so a reload that keeps the shard
// keeps the scan going.
#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/kv/scan_cursor.h"
#include "common/server/grpc_status.h"
#include "services/router/router_service.h"

namespace kvstore {
namespace {

// Shard indexes in the order scans visit them.
std::vector<int> ScanOrder(const RoutingTable& table) {
  std::vector<int> order(static_cast<size_t>(table.shard_count()));
  for (int i = 0; i < table.shard_count(); ++i) order[static_cast<size_t>(i)] = i;
  std::sort(order.begin(), order.end(),
            [&](int a, int b) { return table.shard_name(a) < table.shard_name(b); });
  return order;
}

// Where in `order` the scan of `cursor` goes on: its position when the shard
// there still has the name the cursor gives, else wherever that name now is.
absl::StatusOr<size_t> ResolvePosition(const RoutingTable& table, const std::vector<int>& order,
                                       const RouterScanCursor& cursor, bool start) {
  if (start) return 0;
  if (cursor.position < order.size() && table.shard_name(order[cursor.position]) == cursor.shard) {
    return cursor.position;
  }
  for (size_t i = 0; i < order.size(); ++i) {
    if (table.shard_name(order[i]) == cursor.shard) return i;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "the scan cursor names shard '", cursor.shard,
      "', which the topology no longer has; start the scan again with an empty cursor"));
}

}  // namespace

// One Scan call: asks shards in turn until one gives a page (see above).
// Owns itself: deleted once it has finished the caller's call.
class RouterService::ScanWalk {
 public:
  ScanWalk(RouterService* router, grpc::CallbackServerContext* context,
           grpc::ServerUnaryReactor* reactor, const v1::ScanRequest* request,
           v1::ScanResponse* response, std::shared_ptr<RoutingTable> table, std::vector<int> order)
      : router_(router),
        context_(context),
        reactor_(reactor),
        request_(request),
        response_(response),
        table_(std::move(table)),
        order_(std::move(order)),
        deadline_(CallDeadlineOf(*context, router->options_.forward_timeout_ms)) {}

  void Visit(size_t position, std::string node_cursor) {
    position_ = position;
    const int shard = order_[position];
    shard_request_ = *request_;
    shard_request_.set_cursor(std::move(node_cursor));
    shard_response_.Clear();
    std::vector<std::string> nodes;
    if (request_->read_mode() == v1::READ_MODE_ANY_REPLICA) {
      nodes = router_->ReadTargets(*table_, shard, request_->read_mode());
    } else {
      absl::StatusOr<std::string> leader = router_->LeaderTarget(*table_, shard);
      if (!leader.ok()) {
        Finish(grpc::Status(
            static_cast<grpc::StatusCode>(leader.status().code()),
            absl::StrCat("shard ", table_->shard_name(shard), ": ", leader.status().message())));
        return;
      }
      nodes = {*std::move(leader)};
    }
    router_->ForwardScan(
        table_, shard, std::move(nodes), context_, deadline_, &shard_request_, &shard_response_,
        [this](const grpc::Status& status, const std::string& label) { PageDone(status, label); });
  }

 private:
  static std::chrono::system_clock::time_point CallDeadlineOf(
      const grpc::CallbackServerContext& context, int64_t default_timeout_ms) {
    const auto deadline = context.deadline();
    if (deadline != std::chrono::system_clock::time_point::max()) return deadline;
    return std::chrono::system_clock::now() + std::chrono::milliseconds(default_timeout_ms);
  }

  void PageDone(const grpc::Status& status, const std::string& label) {
    if (!status.ok()) {
      Finish(grpc::Status(status.error_code(), absl::StrCat(label, ": ", status.error_message())));
      return;
    }
    const bool last_shard = position_ + 1 == order_.size();
    if (shard_response_.entries_size() == 0 && shard_response_.next_cursor().empty()) {
      if (last_shard) {
        Finish(grpc::Status::OK);  // Done: no next_cursor.
      } else {
        Visit(position_ + 1, "");
      }
      return;
    }
    response_->mutable_entries()->Swap(shard_response_.mutable_entries());
    if (!shard_response_.next_cursor().empty()) {
      response_->set_next_cursor(EncodeRouterCursor({static_cast<uint32_t>(position_),
                                                     table_->shard_name(order_[position_]),
                                                     shard_response_.next_cursor()}));
    } else if (!last_shard) {
      response_->set_next_cursor(EncodeRouterCursor(
          {static_cast<uint32_t>(position_ + 1), table_->shard_name(order_[position_ + 1]), ""}));
    }
    Finish(grpc::Status::OK);
  }

  void Finish(grpc::Status status) {
    if (!status.ok()) response_->Clear();
    grpc::ServerUnaryReactor* reactor = reactor_;
    delete this;
    reactor->Finish(std::move(status));
  }

  RouterService* const router_;
  grpc::CallbackServerContext* const context_;
  grpc::ServerUnaryReactor* const reactor_;
  const v1::ScanRequest* const request_;
  v1::ScanResponse* const response_;
  const std::shared_ptr<RoutingTable> table_;
  const std::vector<int> order_;
  const std::chrono::system_clock::time_point deadline_;
  size_t position_ = 0;
  v1::ScanRequest shard_request_;
  v1::ScanResponse shard_response_;
};

grpc::ServerUnaryReactor* RouterService::Scan(grpc::CallbackServerContext* context,
                                              const v1::ScanRequest* request,
                                              v1::ScanResponse* response) {
  if (auto* refused = RefuseUnauthenticated(options_.access, context, Access::kPublic)) {
    return refused;
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status s = CheckScan(*request, options_.limits); !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  absl::StatusOr<RouterScanCursor> cursor = DecodeRouterCursor(request->cursor());
  if (cursor.ok()) {
    // The shard's part is checked here too, so a damaged one is refused
    // before anything is sent.
    if (absl::Status s = DecodeNodeCursor(cursor->node_cursor).status(); !s.ok()) cursor = s;
  }
  if (!cursor.ok()) {
    reactor->Finish(ToGrpcStatus(cursor.status()));
    return reactor;
  }
  std::shared_ptr<RoutingTable> table = this->table();
  std::vector<int> order = ScanOrder(*table);
  if (order.empty()) {  // No shards, no keys: done.
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  absl::StatusOr<size_t> position =
      ResolvePosition(*table, order, *cursor, request->cursor().empty());
  if (!position.ok()) {
    reactor->Finish(ToGrpcStatus(position.status()));
    return reactor;
  }
  auto* walk =
      new ScanWalk(this, context, reactor, request, response, std::move(table), std::move(order));
  walk->Visit(*position, std::move(cursor->node_cursor));
  return reactor;
}

}  // namespace kvstore

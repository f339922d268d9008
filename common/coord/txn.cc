#include "common/coord/txn.h"

namespace kvstore::coord {

std::string PrefixEnd(absl::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    unsigned char last = static_cast<unsigned char>(end.back());
    if (last < 0xff) {
      end.back() = static_cast<char>(last + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');
}

etcdserverpb::Compare CreateRevisionIs(absl::string_view key, int64_t revision) {
  etcdserverpb::Compare c;
  c.set_key(std::string(key));
  c.set_target(etcdserverpb::Compare::CREATE);
  c.set_result(etcdserverpb::Compare::EQUAL);
  c.set_create_revision(revision);
  return c;
}

etcdserverpb::Compare ModRevisionIs(absl::string_view key, int64_t revision) {
  etcdserverpb::Compare c;
  c.set_key(std::string(key));
  c.set_target(etcdserverpb::Compare::MOD);
  c.set_result(etcdserverpb::Compare::EQUAL);
  c.set_mod_revision(revision);
  return c;
}

etcdserverpb::Compare ValueIs(absl::string_view key, absl::string_view value) {
  etcdserverpb::Compare c;
  c.set_key(std::string(key));
  c.set_target(etcdserverpb::Compare::VALUE);
  c.set_result(etcdserverpb::Compare::EQUAL);
  c.set_value(std::string(value));
  return c;
}

etcdserverpb::RequestOp PutOp(absl::string_view key, absl::string_view value, int64_t lease) {
  etcdserverpb::RequestOp op;
  etcdserverpb::PutRequest* put = op.mutable_request_put();
  put->set_key(std::string(key));
  put->set_value(std::string(value));
  put->set_lease(lease);
  return op;
}

etcdserverpb::RequestOp DeleteOp(absl::string_view key, bool prefix) {
  etcdserverpb::RequestOp op;
  etcdserverpb::DeleteRangeRequest* del = op.mutable_request_delete_range();
  del->set_key(std::string(key));
  if (prefix) del->set_range_end(PrefixEnd(key));
  return op;
}

etcdserverpb::RequestOp RangeOp(absl::string_view key, bool prefix) {
  etcdserverpb::RequestOp op;
  etcdserverpb::RangeRequest* range = op.mutable_request_range();
  range->set_key(std::string(key));
  if (prefix) range->set_range_end(PrefixEnd(key));
  return op;
}

}  // namespace kvstore::coord

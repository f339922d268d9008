// proto/etcd/ is our own cut of etcd's v3 API: what goes on the wire is the
// service path and each field's number and type, so these must be etcd's
// (etcdserverpb/rpc.proto and mvccpb/kv.proto in etcd 3.4).
#include <initializer_list>
#include <string>

#include "etcd/etcdserverpb/rpc.grpc.pb.h"
#include "etcd/etcdserverpb/rpc.pb.h"
#include "etcd/mvccpb/kv.pb.h"
#include "gtest/gtest.h"

namespace kvstore::coord {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using T = FieldDescriptor;

struct Field {
  const char* name;
  int number;
  FieldDescriptor::Type type;
  bool repeated = false;
};

// Checks the fields named; the message may have others (checked elsewhere or
// not used by us).
void ExpectFields(const Descriptor* message, std::initializer_list<Field> fields) {
  ASSERT_NE(message, nullptr);
  for (const Field& f : fields) {
    const FieldDescriptor* d = message->FindFieldByName(f.name);
    ASSERT_NE(d, nullptr) << message->full_name() << "." << f.name;
    EXPECT_EQ(d->number(), f.number) << message->full_name() << "." << f.name;
    EXPECT_EQ(d->type(), f.type) << message->full_name() << "." << f.name;
    EXPECT_EQ(d->is_repeated(), f.repeated) << message->full_name() << "." << f.name;
  }
}

void ExpectMethod(const char* service, const char* method, const char* input, const char* output,
                  bool client_streaming = false, bool server_streaming = false) {
  const auto* file = etcdserverpb::RangeRequest::descriptor()->file();
  const auto* s = file->FindServiceByName(service);
  ASSERT_NE(s, nullptr) << service;
  EXPECT_EQ(s->full_name(), std::string("etcdserverpb.") + service);
  const auto* m = s->FindMethodByName(method);
  ASSERT_NE(m, nullptr) << service << "/" << method;
  EXPECT_EQ(m->input_type()->full_name(), input);
  EXPECT_EQ(m->output_type()->full_name(), output);
  EXPECT_EQ(m->client_streaming(), client_streaming) << method;
  EXPECT_EQ(m->server_streaming(), server_streaming) << method;
}

TEST(EtcdProtoTest, MethodPathsAreEtcds) {
  ExpectMethod("KV", "Range", "etcdserverpb.RangeRequest", "etcdserverpb.RangeResponse");
  ExpectMethod("KV", "Put", "etcdserverpb.PutRequest", "etcdserverpb.PutResponse");
  ExpectMethod("KV", "DeleteRange", "etcdserverpb.DeleteRangeRequest",
               "etcdserverpb.DeleteRangeResponse");
  ExpectMethod("KV", "Txn", "etcdserverpb.TxnRequest", "etcdserverpb.TxnResponse");
  ExpectMethod("KV", "Compact", "etcdserverpb.CompactionRequest",
               "etcdserverpb.CompactionResponse");
  ExpectMethod("Watch", "Watch", "etcdserverpb.WatchRequest", "etcdserverpb.WatchResponse", true,
               true);
  ExpectMethod("Lease", "LeaseGrant", "etcdserverpb.LeaseGrantRequest",
               "etcdserverpb.LeaseGrantResponse");
  ExpectMethod("Lease", "LeaseRevoke", "etcdserverpb.LeaseRevokeRequest",
               "etcdserverpb.LeaseRevokeResponse");
  ExpectMethod("Lease", "LeaseKeepAlive", "etcdserverpb.LeaseKeepAliveRequest",
               "etcdserverpb.LeaseKeepAliveResponse", true, true);
  ExpectMethod("Lease", "LeaseTimeToLive", "etcdserverpb.LeaseTimeToLiveRequest",
               "etcdserverpb.LeaseTimeToLiveResponse");
}

TEST(EtcdProtoTest, KvFieldNumbersAreEtcds) {
  ExpectFields(etcdserverpb::ResponseHeader::descriptor(), {{"cluster_id", 1, T::TYPE_UINT64},
                                                            {"member_id", 2, T::TYPE_UINT64},
                                                            {"revision", 3, T::TYPE_INT64},
                                                            {"raft_term", 4, T::TYPE_UINT64}});
  ExpectFields(mvccpb::KeyValue::descriptor(), {{"key", 1, T::TYPE_BYTES},
                                                {"create_revision", 2, T::TYPE_INT64},
                                                {"mod_revision", 3, T::TYPE_INT64},
                                                {"version", 4, T::TYPE_INT64},
                                                {"value", 5, T::TYPE_BYTES},
                                                {"lease", 6, T::TYPE_INT64}});
  ExpectFields(
      mvccpb::Event::descriptor(),
      {{"type", 1, T::TYPE_ENUM}, {"kv", 2, T::TYPE_MESSAGE}, {"prev_kv", 3, T::TYPE_MESSAGE}});
  EXPECT_EQ(mvccpb::Event::DELETE, 1);
  ExpectFields(etcdserverpb::RangeRequest::descriptor(), {{"key", 1, T::TYPE_BYTES},
                                                          {"range_end", 2, T::TYPE_BYTES},
                                                          {"limit", 3, T::TYPE_INT64},
                                                          {"revision", 4, T::TYPE_INT64},
                                                          {"serializable", 7, T::TYPE_BOOL},
                                                          {"count_only", 9, T::TYPE_BOOL}});
  ExpectFields(etcdserverpb::RangeResponse::descriptor(),
               {{"header", 1, T::TYPE_MESSAGE},
                {"kvs", 2, T::TYPE_MESSAGE, /*repeated=*/true},
                {"more", 3, T::TYPE_BOOL},
                {"count", 4, T::TYPE_INT64}});
  ExpectFields(etcdserverpb::PutRequest::descriptor(), {{"key", 1, T::TYPE_BYTES},
                                                        {"value", 2, T::TYPE_BYTES},
                                                        {"lease", 3, T::TYPE_INT64},
                                                        {"prev_kv", 4, T::TYPE_BOOL},
                                                        {"ignore_lease", 6, T::TYPE_BOOL}});
  ExpectFields(etcdserverpb::DeleteRangeRequest::descriptor(),
               {{"key", 1, T::TYPE_BYTES}, {"range_end", 2, T::TYPE_BYTES}});
  ExpectFields(etcdserverpb::DeleteRangeResponse::descriptor(),
               {{"header", 1, T::TYPE_MESSAGE}, {"deleted", 2, T::TYPE_INT64}});
  ExpectFields(etcdserverpb::RequestOp::descriptor(), {{"request_range", 1, T::TYPE_MESSAGE},
                                                       {"request_put", 2, T::TYPE_MESSAGE},
                                                       {"request_delete_range", 3, T::TYPE_MESSAGE},
                                                       {"request_txn", 4, T::TYPE_MESSAGE}});
  ExpectFields(etcdserverpb::ResponseOp::descriptor(),
               {{"response_range", 1, T::TYPE_MESSAGE},
                {"response_put", 2, T::TYPE_MESSAGE},
                {"response_delete_range", 3, T::TYPE_MESSAGE},
                {"response_txn", 4, T::TYPE_MESSAGE}});
  ExpectFields(etcdserverpb::Compare::descriptor(), {{"result", 1, T::TYPE_ENUM},
                                                     {"target", 2, T::TYPE_ENUM},
                                                     {"key", 3, T::TYPE_BYTES},
                                                     {"version", 4, T::TYPE_INT64},
                                                     {"create_revision", 5, T::TYPE_INT64},
                                                     {"mod_revision", 6, T::TYPE_INT64},
                                                     {"value", 7, T::TYPE_BYTES},
                                                     {"lease", 8, T::TYPE_INT64},
                                                     {"range_end", 64, T::TYPE_BYTES}});
  EXPECT_EQ(etcdserverpb::Compare::NOT_EQUAL, 3);
  EXPECT_EQ(etcdserverpb::Compare::CREATE, 1);
  EXPECT_EQ(etcdserverpb::Compare::LEASE, 4);
  ExpectFields(etcdserverpb::TxnRequest::descriptor(), {{"compare", 1, T::TYPE_MESSAGE, true},
                                                        {"success", 2, T::TYPE_MESSAGE, true},
                                                        {"failure", 3, T::TYPE_MESSAGE, true}});
  ExpectFields(etcdserverpb::TxnResponse::descriptor(), {{"header", 1, T::TYPE_MESSAGE},
                                                         {"succeeded", 2, T::TYPE_BOOL},
                                                         {"responses", 3, T::TYPE_MESSAGE, true}});
  ExpectFields(etcdserverpb::CompactionRequest::descriptor(),
               {{"revision", 1, T::TYPE_INT64}, {"physical", 2, T::TYPE_BOOL}});
}

TEST(EtcdProtoTest, WatchAndLeaseFieldNumbersAreEtcds) {
  ExpectFields(etcdserverpb::WatchRequest::descriptor(),
               {{"create_request", 1, T::TYPE_MESSAGE},
                {"cancel_request", 2, T::TYPE_MESSAGE},
                {"progress_request", 3, T::TYPE_MESSAGE}});
  ExpectFields(etcdserverpb::WatchCreateRequest::descriptor(),
               {{"key", 1, T::TYPE_BYTES},
                {"range_end", 2, T::TYPE_BYTES},
                {"start_revision", 3, T::TYPE_INT64},
                {"progress_notify", 4, T::TYPE_BOOL},
                {"filters", 5, T::TYPE_ENUM, true},
                {"prev_kv", 6, T::TYPE_BOOL},
                {"watch_id", 7, T::TYPE_INT64},
                {"fragment", 8, T::TYPE_BOOL}});
  ExpectFields(etcdserverpb::WatchResponse::descriptor(), {{"header", 1, T::TYPE_MESSAGE},
                                                           {"watch_id", 2, T::TYPE_INT64},
                                                           {"created", 3, T::TYPE_BOOL},
                                                           {"canceled", 4, T::TYPE_BOOL},
                                                           {"compact_revision", 5, T::TYPE_INT64},
                                                           {"cancel_reason", 6, T::TYPE_STRING},
                                                           {"fragment", 7, T::TYPE_BOOL},
                                                           {"events", 11, T::TYPE_MESSAGE, true}});
  ExpectFields(etcdserverpb::LeaseGrantRequest::descriptor(),
               {{"TTL", 1, T::TYPE_INT64}, {"ID", 2, T::TYPE_INT64}});
  ExpectFields(etcdserverpb::LeaseGrantResponse::descriptor(), {{"header", 1, T::TYPE_MESSAGE},
                                                                {"ID", 2, T::TYPE_INT64},
                                                                {"TTL", 3, T::TYPE_INT64},
                                                                {"error", 4, T::TYPE_STRING}});
  ExpectFields(etcdserverpb::LeaseRevokeRequest::descriptor(), {{"ID", 1, T::TYPE_INT64}});
  ExpectFields(etcdserverpb::LeaseKeepAliveRequest::descriptor(), {{"ID", 1, T::TYPE_INT64}});
  ExpectFields(
      etcdserverpb::LeaseKeepAliveResponse::descriptor(),
      {{"header", 1, T::TYPE_MESSAGE}, {"ID", 2, T::TYPE_INT64}, {"TTL", 3, T::TYPE_INT64}});
  ExpectFields(etcdserverpb::LeaseTimeToLiveRequest::descriptor(),
               {{"ID", 1, T::TYPE_INT64}, {"keys", 2, T::TYPE_BOOL}});
  ExpectFields(etcdserverpb::LeaseTimeToLiveResponse::descriptor(),
               {{"header", 1, T::TYPE_MESSAGE},
                {"ID", 2, T::TYPE_INT64},
                {"TTL", 3, T::TYPE_INT64},
                {"grantedTTL", 4, T::TYPE_INT64},
                {"keys", 5, T::TYPE_BYTES, true}});
}

// A RangeResponse as etcd sends it, with a field this cut leaves out
// (KeyValue field 9, unknown to us), parses: the known fields are read, the
// rest skipped.
TEST(EtcdProtoTest, ParsesAResponseWithFieldsItDoesNotKnow) {
  std::string kv;
  kv += std::string("\x0a\x01k", 3);   // key = "k"
  kv += std::string("\x20\x07", 2);    // version = 7
  kv += std::string("\x2a\x02vv", 4);  // value = "vv"
  kv += std::string("\x30\x05", 2);    // lease = 5
  kv += std::string("\x48\x01", 2);    // field 9 (not in our cut)
  std::string wire;
  wire += "\x12" + std::string(1, static_cast<char>(kv.size())) + kv;  // kvs
  wire += std::string("\x18\x01", 2);                                  // more = true
  wire += std::string("\x20\x01", 2);                                  // count = 1
  etcdserverpb::RangeResponse response;
  ASSERT_TRUE(response.ParseFromString(wire));
  ASSERT_EQ(response.kvs_size(), 1);
  EXPECT_EQ(response.kvs(0).key(), "k");
  EXPECT_EQ(response.kvs(0).value(), "vv");
  EXPECT_EQ(response.kvs(0).version(), 7);
  EXPECT_EQ(response.kvs(0).lease(), 5);
  EXPECT_TRUE(response.more());
  EXPECT_EQ(response.count(), 1);
}

}  // namespace
}  // namespace kvstore::coord

// tools/kvbench/etcd_kv.proto is our own cut of etcd's v3 KV API: what goes on
// the wire is only the service path and each field's number and type, so these
// must be etcd's (etcdserverpb/rpc.proto, mvccpb/kv.proto in etcd 3.4).
#include <initializer_list>
#include <string>

#include "gtest/gtest.h"
#include "tools/kvbench/etcd_kv.grpc.pb.h"
#include "tools/kvbench/etcd_kv.pb.h"

namespace kvstore::bench {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;

struct Field {
  const char* name;
  int number;
  FieldDescriptor::Type type;
  bool repeated = false;
};

void ExpectFields(const Descriptor* message, std::initializer_list<Field> fields) {
  ASSERT_NE(message, nullptr);
  EXPECT_EQ(message->field_count(), static_cast<int>(fields.size())) << message->full_name();
  for (const Field& f : fields) {
    const FieldDescriptor* d = message->FindFieldByName(f.name);
    ASSERT_NE(d, nullptr) << message->full_name() << "." << f.name;
    EXPECT_EQ(d->number(), f.number) << message->full_name() << "." << f.name;
    EXPECT_EQ(d->type(), f.type) << message->full_name() << "." << f.name;
    EXPECT_EQ(d->is_repeated(), f.repeated) << message->full_name() << "." << f.name;
  }
}

TEST(EtcdKvProtoTest, MethodPathsAreEtcds) {
  const auto* service = etcdserverpb::RangeRequest::descriptor()->file()->FindServiceByName("KV");
  ASSERT_NE(service, nullptr);
  EXPECT_EQ(service->full_name(), "etcdserverpb.KV");
  ASSERT_NE(service->FindMethodByName("Range"), nullptr);
  ASSERT_NE(service->FindMethodByName("Put"), nullptr);
  EXPECT_EQ(service->FindMethodByName("Range")->input_type()->full_name(),
            "etcdserverpb.RangeRequest");
  EXPECT_EQ(service->FindMethodByName("Put")->output_type()->full_name(),
            "etcdserverpb.PutResponse");
}

TEST(EtcdKvProtoTest, FieldNumbersAndTypesAreEtcds) {
  using T = FieldDescriptor;
  ExpectFields(etcdserverpb::ResponseHeader::descriptor(), {{"cluster_id", 1, T::TYPE_UINT64},
                                                            {"member_id", 2, T::TYPE_UINT64},
                                                            {"revision", 3, T::TYPE_INT64},
                                                            {"raft_term", 4, T::TYPE_UINT64}});
  ExpectFields(etcdserverpb::KeyValue::descriptor(), {{"key", 1, T::TYPE_BYTES},
                                                      {"create_revision", 2, T::TYPE_INT64},
                                                      {"mod_revision", 3, T::TYPE_INT64},
                                                      {"version", 4, T::TYPE_INT64},
                                                      {"value", 5, T::TYPE_BYTES}});
  ExpectFields(etcdserverpb::RangeRequest::descriptor(), {{"key", 1, T::TYPE_BYTES}});
  ExpectFields(etcdserverpb::RangeResponse::descriptor(),
               {{"header", 1, T::TYPE_MESSAGE},
                {"kvs", 2, T::TYPE_MESSAGE, /*repeated=*/true},
                {"count", 4, T::TYPE_INT64}});
  ExpectFields(etcdserverpb::PutRequest::descriptor(),
               {{"key", 1, T::TYPE_BYTES}, {"value", 2, T::TYPE_BYTES}});
  ExpectFields(etcdserverpb::PutResponse::descriptor(), {{"header", 1, T::TYPE_MESSAGE}});
}

// A RangeResponse as etcd sends it, with fields this cut leaves out (more = 3;
// KeyValue.lease = 6), parses: the known fields are read, the rest skipped.
TEST(EtcdKvProtoTest, ParsesAResponseWithFieldsItDoesNotKnow) {
  std::string kv;
  kv += std::string("\x0a\x01k", 3);   // key = "k"
  kv += std::string("\x20\x07", 2);    // version = 7
  kv += std::string("\x2a\x02vv", 4);  // value = "vv"
  kv += std::string("\x30\x05", 2);    // lease = 5 (not in our cut)
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
  EXPECT_EQ(response.count(), 1);
}

}  // namespace
}  // namespace kvstore::bench

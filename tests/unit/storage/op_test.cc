#include "common/storage/op.h"

#include <string>

#include "gtest/gtest.h"

namespace kvstore {
namespace {

TEST(OpTest, PutRoundTripsBinaryKeyAndValue) {
  OpView in;
  in.type = OpType::kPut;
  in.version = 0x0102030405060708ull;
  in.expire_unix_ms = 1'700'000'000'123;
  const std::string key("k\0y", 3);
  const std::string value(300, '\0');
  in.key = key;
  in.value = value;
  std::string bytes;
  EncodeOp(in, &bytes);
  OpView out;
  ASSERT_TRUE(DecodeOp(bytes, &out));
  EXPECT_EQ(out.type, OpType::kPut);
  EXPECT_EQ(out.version, in.version);
  EXPECT_EQ(out.expire_unix_ms, in.expire_unix_ms);
  EXPECT_EQ(out.key, key);
  EXPECT_EQ(out.value, value);
}

TEST(OpTest, DeleteRoundTripsWithoutValue) {
  OpView in;
  in.type = OpType::kDelete;
  in.version = 9;
  in.key = "gone";
  std::string bytes;
  EncodeOp(in, &bytes);
  OpView out;
  ASSERT_TRUE(DecodeOp(bytes, &out));
  EXPECT_EQ(out.type, OpType::kDelete);
  EXPECT_EQ(out.key, "gone");
  EXPECT_TRUE(out.value.empty());
}

TEST(OpTest, MalformedPayloadsAreRejected) {
  OpView in;
  in.type = OpType::kPut;
  in.key = "key";
  in.value = "value";
  std::string good;
  EncodeOp(in, &good);
  OpView out;
  EXPECT_FALSE(DecodeOp("", &out));
  EXPECT_FALSE(DecodeOp(good.substr(0, 17), &out)) << "no key length";
  std::string bad_type = good;
  bad_type[0] = 7;
  EXPECT_FALSE(DecodeOp(bad_type, &out));
  std::string long_key = good;
  long_key[17] = 100;  // Key length past the end.
  EXPECT_FALSE(DecodeOp(long_key, &out));
  for (size_t cut = 0; cut < 17 + 1 + 3; ++cut) {
    EXPECT_FALSE(DecodeOp(good.substr(0, cut), &out)) << "cut at " << cut;
  }
}

// The op reader used to keep the low 32 bits of a key_len whose fifth byte
// carries more: these bytes read as key_len 1 and the op as a put of "k".
TEST(OpTest, KeyLengthOverflowing32BitsIsRejected) {
  std::string payload(17, '\0');
  payload[0] = static_cast<char>(OpType::kPut);
  payload.append("\x81\x80\x80\x80\x10", 5);
  payload.append("k");
  OpView out;
  EXPECT_FALSE(DecodeOp(payload, &out));
}

TEST(OpTest, KeyLengthLongerThanFiveBytesIsRejected) {
  std::string payload(17, '\0');
  payload[0] = static_cast<char>(OpType::kPut);
  payload.append("\x81\x80\x80\x80\x80\x00", 6);
  payload.append("k");
  OpView out;
  EXPECT_FALSE(DecodeOp(payload, &out));
}

}  // namespace
}  // namespace kvstore

#include "common/storage/coding.h"

#include <cstdint>
#include <limits>
#include <string>

#include "absl/strings/string_view.h"
#include "gtest/gtest.h"

namespace kvstore {
namespace {

constexpr uint32_t kMax32 = std::numeric_limits<uint32_t>::max();
constexpr uint64_t kMax64 = std::numeric_limits<uint64_t>::max();

std::string Varint32(uint32_t v) {
  std::string out;
  PutVarint32(v, &out);
  return out;
}
std::string Varint64(uint64_t v) {
  std::string out;
  PutVarint64(v, &out);
  return out;
}

// --- Fixed width: the bytes docs/storage-format.md promises. ---

TEST(CodingTest, Fixed32IsLittleEndian) {
  std::string out;
  PutFixed32(0x04030201u, &out);
  EXPECT_EQ(out, std::string("\x01\x02\x03\x04", 4));
  char buf[4];
  EncodeFixed32(0xA1B2C3D4u, buf);
  EXPECT_EQ(absl::string_view(buf, 4), absl::string_view("\xD4\xC3\xB2\xA1", 4));
  EXPECT_EQ(DecodeFixed32("\x01\x02\x03\x04"), 0x04030201u);
}

TEST(CodingTest, Fixed64IsLittleEndian) {
  std::string out;
  PutFixed64(0x0807060504030201ull, &out);
  EXPECT_EQ(out, std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8));
  EXPECT_EQ(DecodeFixed64("\x01\x02\x03\x04\x05\x06\x07\x08"), 0x0807060504030201ull);
}

TEST(CodingTest, FixedRoundTripsAtTheEdges) {
  for (uint32_t v : {0u, 1u, 127u, 128u, 0x80000000u, kMax32}) {
    std::string out;
    PutFixed32(v, &out);
    ASSERT_EQ(out.size(), 4u);
    EXPECT_EQ(DecodeFixed32(out.data()), v);
  }
  for (uint64_t v :
       {uint64_t{0}, uint64_t{127}, uint64_t{128}, uint64_t{kMax32}, uint64_t{1} << 63, kMax64}) {
    std::string out;
    PutFixed64(v, &out);
    ASSERT_EQ(out.size(), 8u);
    EXPECT_EQ(DecodeFixed64(out.data()), v);
  }
}

TEST(CodingTest, FixedHighBytesDecodeWithoutSignExtension) {
  EXPECT_EQ(DecodeFixed32("\xff\x00\x00\x80"), 0x800000FFu);
  EXPECT_EQ(DecodeFixed64("\x80\xff\xff\xff\xff\xff\xff\xff"), 0xFFFFFFFFFFFFFF80ull);
}

// --- Varints: encoding. ---

TEST(CodingTest, VarintBytesAtTheEdges) {
  EXPECT_EQ(Varint32(0), std::string(1, '\0'));
  EXPECT_EQ(Varint32(127), "\x7f");
  EXPECT_EQ(Varint32(128), "\x80\x01");
  EXPECT_EQ(Varint32(300), "\xac\x02");
  EXPECT_EQ(Varint32(kMax32), "\xff\xff\xff\xff\x0f");
  EXPECT_EQ(Varint64(kMax32), "\xff\xff\xff\xff\x0f");
  EXPECT_EQ(Varint64(kMax64), "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01");
}

TEST(CodingTest, VarintLengthMatchesTheEncoding) {
  for (uint64_t v : {uint64_t{0}, uint64_t{127}, uint64_t{128}, uint64_t{16383}, uint64_t{16384},
                     uint64_t{kMax32}, uint64_t{kMax32} + 1, kMax64}) {
    EXPECT_EQ(VarintLength(v), Varint64(v).size()) << v;
  }
  EXPECT_EQ(VarintLength(kMax32), kMaxVarint32Bytes);
  EXPECT_EQ(VarintLength(kMax64), kMaxVarint64Bytes);
}

// --- Varints: decoding. ---

TEST(CodingTest, Varint32RoundTripsAtTheEdgesAndAdvances) {
  for (uint32_t v : {0u, 1u, 127u, 128u, 16383u, 16384u, (1u << 28) - 1, 1u << 28, kMax32}) {
    const std::string bytes = Varint32(v) + "tail";
    absl::string_view in = bytes;
    uint32_t out = 0;
    ASSERT_TRUE(GetVarint32(&in, &out)) << v;
    EXPECT_EQ(out, v);
    EXPECT_EQ(in, "tail") << v;
  }
}

TEST(CodingTest, Varint64RoundTripsAtTheEdgesAndAdvances) {
  for (uint64_t v : {uint64_t{0}, uint64_t{127}, uint64_t{128}, uint64_t{kMax32},
                     uint64_t{kMax32} + 1, (uint64_t{1} << 63) - 1, uint64_t{1} << 63, kMax64}) {
    const std::string bytes = Varint64(v) + "tail";
    absl::string_view in = bytes;
    uint64_t out = 0;
    ASSERT_TRUE(GetVarint64(&in, &out)) << v;
    EXPECT_EQ(out, v);
    EXPECT_EQ(in, "tail") << v;
  }
}

TEST(CodingTest, ConsecutiveVarintsDecodeInOrder) {
  std::string bytes;
  PutVarint32(300, &bytes);
  PutVarint64(kMax64, &bytes);
  PutVarint32(0, &bytes);
  absl::string_view in = bytes;
  uint32_t a = 0, c = 1;
  uint64_t b = 0;
  ASSERT_TRUE(GetVarint32(&in, &a));
  ASSERT_TRUE(GetVarint64(&in, &b));
  ASSERT_TRUE(GetVarint32(&in, &c));
  EXPECT_EQ(a, 300u);
  EXPECT_EQ(b, kMax64);
  EXPECT_EQ(c, 0u);
  EXPECT_TRUE(in.empty());
}

TEST(CodingTest, TruncatedVarint32IsRefusedAtEveryByte) {
  for (uint32_t v : {128u, 16384u, 1u << 21, 1u << 28, kMax32}) {
    const std::string full = Varint32(v);
    for (size_t cut = 0; cut < full.size(); ++cut) {
      absl::string_view in(full.data(), cut);
      uint32_t out = 0;
      EXPECT_FALSE(GetVarint32(&in, &out)) << v << " cut at " << cut;
      EXPECT_EQ(in.size(), cut) << "a refused varint consumes nothing";
    }
  }
}

TEST(CodingTest, TruncatedVarint64IsRefusedAtEveryByte) {
  for (uint64_t v : {uint64_t{128}, uint64_t{kMax32} + 1, uint64_t{1} << 63, kMax64}) {
    const std::string full = Varint64(v);
    for (size_t cut = 0; cut < full.size(); ++cut) {
      absl::string_view in(full.data(), cut);
      uint64_t out = 0;
      EXPECT_FALSE(GetVarint64(&in, &out)) << v << " cut at " << cut;
      EXPECT_EQ(in.size(), cut) << "a refused varint consumes nothing";
    }
  }
}

TEST(CodingTest, Varint32OverflowIsRefused) {
  // Each is a case one of the old copies got wrong or a neighbour of one.
  const absl::string_view cases[] = {
      // A fifth byte with bits past 32: the op decoder used to drop them and
      // read key_len 1 from this.
      absl::string_view("\x81\x80\x80\x80\x10", 5),
      absl::string_view("\xff\xff\xff\xff\x7f", 5),
      // 2^32: one more than fits.
      absl::string_view("\x80\x80\x80\x80\x10", 5),
      // Six bytes, whatever they hold.
      absl::string_view("\xff\xff\xff\xff\x8f\x00", 6),
      absl::string_view("\x80\x80\x80\x80\x80\x00", 6),
  };
  for (absl::string_view bytes : cases) {
    absl::string_view in = bytes;
    uint32_t out = 0;
    EXPECT_FALSE(GetVarint32(&in, &out)) << testing::PrintToString(std::string(bytes));
    EXPECT_EQ(in.size(), bytes.size());
  }
}

TEST(CodingTest, Varint64OverflowIsRefused) {
  const absl::string_view cases[] = {
      // A tenth byte with more than its one bit.
      absl::string_view("\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02", 10),
      absl::string_view("\x80\x80\x80\x80\x80\x80\x80\x80\x80\x7f", 10),
      // Eleven bytes.
      absl::string_view("\xff\xff\xff\xff\xff\xff\xff\xff\xff\x81\x00", 11),
      absl::string_view("\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00", 11),
  };
  for (absl::string_view bytes : cases) {
    absl::string_view in = bytes;
    uint64_t out = 0;
    EXPECT_FALSE(GetVarint64(&in, &out)) << testing::PrintToString(std::string(bytes));
    EXPECT_EQ(in.size(), bytes.size());
  }
}

TEST(CodingTest, Varint64ValueTooLargeForVarint32IsRefusedByIt) {
  const std::string bytes = Varint64(uint64_t{kMax32} + 1);
  absl::string_view in = bytes;
  uint32_t out = 0;
  EXPECT_FALSE(GetVarint32(&in, &out));
}

TEST(CodingTest, PaddedVarintWithinTheByteLimitIsAccepted) {
  // Not what PutVarint writes, but it fits: the rule is about overflow, not
  // the shortest form (the same as protobuf's).
  absl::string_view in("\x81\x80\x80\x80\x00", 5);
  uint32_t out = 0;
  ASSERT_TRUE(GetVarint32(&in, &out));
  EXPECT_EQ(out, 1u);
  EXPECT_TRUE(in.empty());
}

}  // namespace
}  // namespace kvstore

// The text format: escaping, grouping of families, histogram lines and
// number formatting, checked by an independent parser (exposition_parser.h).
#include "common/metrics/exposition.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"
#include "tests/unit/metrics/exposition_parser.h"

namespace kvstore {
namespace {

using ::kvstore::testing::ParseExposition;

TEST(ExpositionTest, GaugeWithoutLabelsHasHelpTypeAndSample) {
  ExpositionWriter w;
  w.Family("kvstore_keys", "Live keys.", MetricType::kGauge);
  w.Sample("kvstore_keys", {}, 42);
  EXPECT_EQ(w.Finish(),
            "# HELP kvstore_keys Live keys.\n"
            "# TYPE kvstore_keys gauge\n"
            "kvstore_keys 42\n");
}

TEST(ExpositionTest, LabelValuesEscapeBackslashQuoteAndNewline) {
  ExpositionWriter w;
  w.Family("errors_total", "Errors.", MetricType::kCounter);
  w.Sample("errors_total", {{"backend", "a\\b\"c\nd"}, {"code", "OK"}}, uint64_t{3});
  const std::string text = w.Finish();
  EXPECT_NE(text.find("errors_total{backend=\"a\\\\b\\\"c\\nd\",code=\"OK\"} 3\n"),
            std::string::npos)
      << text;
  const auto parsed = ParseExposition(text);
  ASSERT_EQ(parsed.error, "");
  EXPECT_EQ(parsed.Value("errors_total", {{"backend", "a\\b\"c\nd"}}), 3);
}

TEST(ExpositionTest, HelpEscapesBackslashAndNewlineButNotQuotes) {
  ExpositionWriter w;
  w.Family("m", "line one\nsay \"hi\" C:\\dir", MetricType::kGauge);
  w.Sample("m", {}, 1);
  const std::string text = w.Finish();
  EXPECT_NE(text.find("# HELP m line one\\nsay \"hi\" C:\\\\dir\n"), std::string::npos) << text;
  const auto parsed = ParseExposition(text);
  ASSERT_EQ(parsed.error, "");
  EXPECT_EQ(parsed.help.at("m"), "line one\nsay \"hi\" C:\\dir");
}

TEST(ExpositionTest, InterleavedSamplesAreGroupedUnderOneHeaderPerFamily) {
  ExpositionWriter w;
  for (const char* follower : {"a", "b"}) {
    w.Family("lag_entries", "Lag.", MetricType::kGauge);
    w.Family("acked_index", "Acked.", MetricType::kGauge);
    w.Sample("lag_entries", {{"follower", follower}}, 1);
    w.Sample("acked_index", {{"follower", follower}}, 2);
  }
  const std::string text = w.Finish();
  EXPECT_EQ(text,
            "# HELP lag_entries Lag.\n# TYPE lag_entries gauge\n"
            "lag_entries{follower=\"a\"} 1\nlag_entries{follower=\"b\"} 1\n"
            "# HELP acked_index Acked.\n# TYPE acked_index gauge\n"
            "acked_index{follower=\"a\"} 2\nacked_index{follower=\"b\"} 2\n");
  EXPECT_EQ(ParseExposition(text).error, "");
}

TEST(ExpositionTest, HistogramBucketsAreCumulativeWithInfSumAndCount) {
  ExpositionWriter w;
  w.Family("lat_seconds", "Latency.", MetricType::kHistogram);
  HistogramData data;
  data.bounds = {0.1, 1};
  data.counts = {2, 3, 1};  // 2 <= 0.1, 3 in (0.1, 1], 1 above 1.
  data.sum = 4.5;
  w.Histogram("lat_seconds", {{"method", "/a/B"}}, data);
  const std::string text = w.Finish();
  EXPECT_EQ(text,
            "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n"
            "lat_seconds_bucket{method=\"/a/B\",le=\"0.1\"} 2\n"
            "lat_seconds_bucket{method=\"/a/B\",le=\"1\"} 5\n"
            "lat_seconds_bucket{method=\"/a/B\",le=\"+Inf\"} 6\n"
            "lat_seconds_sum{method=\"/a/B\"} 4.5\n"
            "lat_seconds_count{method=\"/a/B\"} 6\n");
  EXPECT_EQ(ParseExposition(text).error, "");
}

TEST(ExpositionTest, ValuesReadBackExactly) {
  EXPECT_EQ(FormatSampleValue(0), "0");
  EXPECT_EQ(FormatSampleValue(-3), "-3");
  EXPECT_EQ(FormatSampleValue(0.1), "0.1");
  EXPECT_EQ(FormatSampleValue(1e-7), "1e-07");
  EXPECT_EQ(FormatSampleValue(9007199254740992.0), "9007199254740992");
  EXPECT_EQ(FormatSampleValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatSampleValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatSampleValue(std::nan("")), "NaN");
  const double third = 1.0 / 3;
  EXPECT_EQ(std::stod(FormatSampleValue(third)), third);
  ExpositionWriter w;
  w.Family("big_total", "Big.", MetricType::kCounter);
  w.Sample("big_total", {}, uint64_t{18446744073709551615u});
  EXPECT_NE(w.Finish().find("big_total 18446744073709551615\n"), std::string::npos);
}

TEST(ExpositionTest, EmptyWriterWritesNothing) {
  ExpositionWriter w;
  EXPECT_EQ(w.Finish(), "");
}

TEST(ExpositionParserTest, RejectsWhatAScraperWould) {
  // The checker used on real scrapes must itself catch broken text.
  EXPECT_NE(ParseExposition("m 1\n").error, "");  // No TYPE.
  EXPECT_NE(ParseExposition("# HELP m x\n# TYPE m gauge\nm{a=\"1} 1\n").error, "");
  EXPECT_NE(
      ParseExposition("# HELP a x\n# TYPE a gauge\n# HELP b x\n# TYPE b gauge\nb 1\na 1\n").error,
      "");
  EXPECT_NE(ParseExposition("# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\n"
                            "h_bucket{le=\"0.5\"} 1\n")
                .error,
            "");
  EXPECT_EQ(ParseExposition("# HELP m x\n# TYPE m gauge\nm{a=\"q\\\"\"} 1\n").error, "");
}

}  // namespace
}  // namespace kvstore

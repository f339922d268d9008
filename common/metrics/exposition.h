// Prometheus text exposition format, version 0.0.4: what a /metrics scrape
// returns. The writer groups every sample of a family under one HELP and TYPE
// header, whatever order the samples arrive in, escapes HELP text and label
// values, and prints numbers so that they read back exactly.
//
//   ExpositionWriter w;
//   w.Family("kvstore_keys", "Live keys in the map.", MetricType::kGauge);
//   w.Sample("kvstore_keys", {}, 42);
//   std::string text = w.Finish();
//
// Names are ours, not user input: a malformed metric or label name is a bug
// (DCHECK). Label values may be anything and are escaped.
#ifndef KVSTORE_COMMON_METRICS_EXPOSITION_H_
#define KVSTORE_COMMON_METRICS_EXPOSITION_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"

namespace kvstore {

enum class MetricType { kCounter, kGauge, kHistogram };

using Label = std::pair<absl::string_view, absl::string_view>;
using Labels = std::vector<Label>;

// The content type of a scrape in this format.
inline constexpr char kExpositionContentType[] = "text/plain; version=0.0.4; charset=utf-8";

// Buckets of a histogram as read at one moment: counts per bucket (not
// cumulative), the last one for values above every bound (le="+Inf").
struct HistogramData {
  std::vector<double> bounds;    // Ascending upper bounds, finite.
  std::vector<uint64_t> counts;  // bounds.size() + 1 entries.
  double sum = 0;
};

// Not thread-safe: one writer per scrape.
class ExpositionWriter {
 public:
  ExpositionWriter() = default;
  ExpositionWriter(const ExpositionWriter&) = delete;
  ExpositionWriter& operator=(const ExpositionWriter&) = delete;

  // Declares a family. Declaring it again (same type) is allowed and adds
  // to it; samples must name a declared family (the family name plus, for
  // histograms, "_bucket", "_sum" or "_count").
  void Family(absl::string_view name, absl::string_view help, MetricType type);

  // One sample line: `name{labels} value`.
  void Sample(absl::string_view name, const Labels& labels, double value);
  void Sample(absl::string_view name, const Labels& labels, uint64_t value);
  void Sample(absl::string_view name, const Labels& labels, int64_t value);
  void Sample(absl::string_view name, const Labels& labels, int value) {
    Sample(name, labels, static_cast<int64_t>(value));
  }

  // The _bucket (cumulative, with le="+Inf"), _sum and _count lines of a
  // declared histogram family `name`.
  void Histogram(absl::string_view name, const Labels& labels, const HistogramData& data);

  // The whole text, families in the order they were first declared.
  std::string Finish() const;

 private:
  struct FamilyText {
    std::string header;
    std::string samples;
  };
  // The family a sample named `name` belongs to.
  FamilyText* FamilyOf(absl::string_view name);
  void Line(absl::string_view name, const Labels& labels, absl::string_view value);

  std::vector<FamilyText> families_;
  absl::flat_hash_map<std::string, std::pair<size_t, MetricType>> index_;
};

// Escaping of the format: in HELP, backslash and newline; in label values,
// also the double quote.
std::string EscapeHelp(absl::string_view text);
std::string EscapeLabelValue(absl::string_view value);
// A sample value: shortest text that reads back to the same double; integers
// without exponent up to 2^53; "+Inf", "-Inf", "NaN".
std::string FormatSampleValue(double value);

}  // namespace kvstore

#endif  // KVSTORE_COMMON_METRICS_EXPOSITION_H_

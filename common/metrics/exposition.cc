#include "common/metrics/exposition.h"

#include <charconv>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "glog/logging.h"

namespace kvstore {
namespace {

bool IsMetricName(absl::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok =
        absl::ascii_isalpha(c) || c == '_' || c == ':' || (i > 0 && absl::ascii_isdigit(c));
    if (!ok) return false;
  }
  return true;
}

bool IsLabelName(absl::string_view name) {
  return IsMetricName(name) && name.find(':') == absl::string_view::npos &&
         !absl::StartsWith(name, "__");
}

absl::string_view TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

}  // namespace

std::string EscapeHelp(absl::string_view text) {
  return absl::StrReplaceAll(text, {{"\\", "\\\\"}, {"\n", "\\n"}});
}

std::string EscapeLabelValue(absl::string_view value) {
  return absl::StrReplaceAll(value, {{"\\", "\\\\"}, {"\n", "\\n"}, {"\"", "\\\""}});
}

std::string FormatSampleValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  constexpr double kExactIntegers = 9007199254740992.0;  // 2^53
  if (value == std::floor(value) && std::fabs(value) <= kExactIntegers) {
    return absl::StrCat(static_cast<int64_t>(value));
  }
  char buf[64];
  const std::to_chars_result r = std::to_chars(buf, buf + sizeof(buf), value);
  return std::string(buf, r.ptr);
}

void ExpositionWriter::Family(absl::string_view name, absl::string_view help, MetricType type) {
  DCHECK(IsMetricName(name)) << "bad metric name '" << name << "'";
  auto [it, inserted] = index_.try_emplace(std::string(name), families_.size(), type);
  if (!inserted) {
    DCHECK(it->second.second == type) << name << " declared with two types";
    return;
  }
  families_.push_back(FamilyText{absl::StrCat("# HELP ", name, " ", EscapeHelp(help), "\n# TYPE ",
                                              name, " ", TypeName(type), "\n"),
                                 ""});
}

ExpositionWriter::FamilyText* ExpositionWriter::FamilyOf(absl::string_view name) {
  auto it = index_.find(name);
  if (it != index_.end()) return &families_[it->second.first];
  for (absl::string_view suffix : {"_bucket", "_sum", "_count"}) {
    if (!absl::EndsWith(name, suffix)) continue;
    it = index_.find(name.substr(0, name.size() - suffix.size()));
    if (it != index_.end() && it->second.second == MetricType::kHistogram) {
      return &families_[it->second.first];
    }
  }
  return nullptr;
}

void ExpositionWriter::Line(absl::string_view name, const Labels& labels, absl::string_view value) {
  FamilyText* family = FamilyOf(name);
  if (family == nullptr) {
    LOG(DFATAL) << "metric sample " << name << " of an undeclared family";
    return;
  }
  std::string& out = family->samples;
  out.append(name.data(), name.size());
  if (!labels.empty()) {
    out += '{';
    for (size_t i = 0; i < labels.size(); ++i) {
      DCHECK(IsLabelName(labels[i].first)) << "bad label name '" << labels[i].first << "'";
      if (i > 0) out += ',';
      absl::StrAppend(&out, labels[i].first, "=\"", EscapeLabelValue(labels[i].second), "\"");
    }
    out += '}';
  }
  absl::StrAppend(&out, " ", value, "\n");
}

void ExpositionWriter::Sample(absl::string_view name, const Labels& labels, double value) {
  Line(name, labels, FormatSampleValue(value));
}

void ExpositionWriter::Sample(absl::string_view name, const Labels& labels, uint64_t value) {
  Line(name, labels, absl::StrCat(value));
}

void ExpositionWriter::Sample(absl::string_view name, const Labels& labels, int64_t value) {
  Line(name, labels, absl::StrCat(value));
}

void ExpositionWriter::Histogram(absl::string_view name, const Labels& labels,
                                 const HistogramData& data) {
  DCHECK_EQ(data.counts.size(), data.bounds.size() + 1);
  const std::string bucket = absl::StrCat(name, "_bucket");
  Labels with_le = labels;
  with_le.emplace_back("le", "");
  uint64_t cumulative = 0;
  for (size_t i = 0; i < data.counts.size(); ++i) {
    cumulative += data.counts[i];
    const std::string le =
        i < data.bounds.size() ? FormatSampleValue(data.bounds[i]) : std::string("+Inf");
    with_le.back().second = le;
    Line(bucket, with_le, absl::StrCat(cumulative));
  }
  Line(absl::StrCat(name, "_sum"), labels, FormatSampleValue(data.sum));
  Line(absl::StrCat(name, "_count"), labels, absl::StrCat(cumulative));
}

std::string ExpositionWriter::Finish() const {
  std::string out;
  for (const FamilyText& f : families_) absl::StrAppend(&out, f.header, f.samples);
  return out;
}

}  // namespace kvstore

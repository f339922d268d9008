// A strict reader of the Prometheus text format (0.0.4) for tests: parses a
// scrape into samples and checks the rules a scraper relies on: a sample's
// family has HELP and TYPE lines before it, each family appears once, its
// samples are contiguous, histogram buckets ascend and end with le="+Inf",
// label values are properly escaped. Independent of the writer it checks.
#ifndef KVSTORE_TESTS_UNIT_METRICS_EXPOSITION_PARSER_H_
#define KVSTORE_TESTS_UNIT_METRICS_EXPOSITION_PARSER_H_

#include <cstdlib>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace kvstore::testing {

struct ParsedSample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct ParsedScrape {
  std::map<std::string, std::string> types;  // Family -> "counter", "gauge", ...
  std::map<std::string, std::string> help;   // Family -> unescaped HELP text.
  std::vector<ParsedSample> samples;
  std::string error;  // Empty when the text follows the rules.

  // The value of the one sample named `name` whose labels include `labels`;
  // nullopt when there is none or more than one.
  std::optional<double> Value(const std::string& name,
                              const std::map<std::string, std::string>& labels = {}) const {
    std::optional<double> found;
    for (const ParsedSample& s : samples) {
      if (s.name != name) continue;
      bool match = true;
      for (const auto& [k, v] : labels) {
        auto it = s.labels.find(k);
        if (it == s.labels.end() || it->second != v) match = false;
      }
      if (!match) continue;
      if (found.has_value()) return std::nullopt;
      found = s.value;
    }
    return found;
  }
  // Samples named `name` (any labels).
  int Count(const std::string& name) const {
    int n = 0;
    for (const ParsedSample& s : samples) n += s.name == name;
    return n;
  }
};

namespace internal {

inline std::string FamilyOf(const std::string& name,
                            const std::map<std::string, std::string>& types) {
  if (types.count(name)) return name;
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    const std::string s(suffix);
    if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) {
      const std::string base = name.substr(0, name.size() - s.size());
      auto it = types.find(base);
      if (it != types.end() && it->second == "histogram") return base;
    }
  }
  return "";
}

inline bool ParseValue(const std::string& text, double* value) {
  if (text == "+Inf") {
    *value = std::numeric_limits<double>::infinity();
    return true;
  }
  if (text == "-Inf") {
    *value = -std::numeric_limits<double>::infinity();
    return true;
  }
  if (text == "NaN") {
    *value = std::numeric_limits<double>::quiet_NaN();
    return true;
  }
  char* end = nullptr;
  *value = std::strtod(text.c_str(), &end);
  return !text.empty() && end == text.c_str() + text.size();
}

}  // namespace internal

inline ParsedScrape ParseExposition(const std::string& text) {
  ParsedScrape out;
  auto fail = [&](const std::string& why, const std::string& line) {
    if (out.error.empty()) out.error = why + ": '" + line + "'";
  };
  if (!text.empty() && text.back() != '\n') fail("no final newline", "");
  std::set<std::string> closed;  // Families whose samples ended.
  std::string current;
  std::map<std::string, double> last_le;  // Per histogram series: last bucket bound.
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line[0] == '#') {
      std::istringstream words(line);
      std::string hash, kind, name;
      words >> hash >> kind >> name;
      if (kind != "HELP" && kind != "TYPE") continue;  // A comment.
      std::string rest;
      std::getline(words, rest);
      if (!rest.empty() && rest[0] == ' ') rest.erase(0, 1);
      if (kind == "HELP") {
        if (out.help.count(name)) fail("second HELP", line);
        std::string unescaped;
        for (size_t i = 0; i < rest.size(); ++i) {
          if (rest[i] == '\\' && i + 1 < rest.size()) {
            ++i;
            if (rest[i] == 'n') {
              unescaped += '\n';
            } else if (rest[i] == '\\') {
              unescaped += '\\';
            } else {
              fail("bad escape in HELP", line);
            }
          } else {
            unescaped += rest[i];
          }
        }
        out.help[name] = unescaped;
      } else {
        if (out.types.count(name)) fail("second TYPE", line);
        if (!out.help.count(name)) fail("TYPE without HELP before it", line);
        out.types[name] = rest;
      }
      if (!current.empty() && current != name) closed.insert(current);
      if (closed.count(name)) fail("family declared after its samples ended", line);
      current = name;
      continue;
    }
    ParsedSample s;
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    s.name = line.substr(0, i);
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        const size_t eq = line.find('=', i);
        if (eq == std::string::npos || eq + 1 >= line.size() || line[eq + 1] != '"') {
          fail("bad label", line);
          break;
        }
        const std::string key = line.substr(i, eq - i);
        std::string value;
        size_t j = eq + 2;
        bool closed_quote = false;
        for (; j < line.size(); ++j) {
          if (line[j] == '\\') {
            if (j + 1 >= line.size()) break;
            const char e = line[++j];
            if (e == 'n') {
              value += '\n';
            } else if (e == '\\' || e == '"') {
              value += e;
            } else {
              fail("bad escape in label value", line);
            }
          } else if (line[j] == '"') {
            closed_quote = true;
            break;
          } else {
            value += line[j];
          }
        }
        if (!closed_quote) {
          fail("unterminated label value", line);
          break;
        }
        if (s.labels.count(key)) fail("label twice", line);
        s.labels[key] = value;
        i = j + 1;
        if (i < line.size() && line[i] == ',') ++i;
      }
      if (i >= line.size() || line[i] != '}') {
        fail("unterminated labels", line);
        continue;
      }
      ++i;
    }
    if (i >= line.size() || line[i] != ' ' || !internal::ParseValue(line.substr(i + 1), &s.value)) {
      fail("bad value", line);
      continue;
    }
    const std::string family = internal::FamilyOf(s.name, out.types);
    if (family.empty()) fail("sample of an undeclared family", line);
    if (family != current) fail("sample outside its family's block", line);
    if (!family.empty() && out.types[family] == "histogram" && s.name == family + "_bucket") {
      auto le = s.labels.find("le");
      double bound = 0;
      if (le == s.labels.end() || !internal::ParseValue(le->second, &bound)) {
        fail("bucket without le", line);
      } else {
        std::map<std::string, std::string> series = s.labels;
        series.erase("le");
        std::string key = family;
        for (const auto& [k, v] : series) key += "|" + k + "=" + v;
        auto prev = last_le.find(key);
        if (prev != last_le.end() && !(bound > prev->second)) fail("buckets not ascending", line);
        last_le[key] = bound;
      }
    }
    out.samples.push_back(std::move(s));
  }
  return out;
}

}  // namespace kvstore::testing

#endif  // KVSTORE_TESTS_UNIT_METRICS_EXPOSITION_PARSER_H_

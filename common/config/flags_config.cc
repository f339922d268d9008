#include "common/config/flags_config.h"

#include <algorithm>
#include <exception>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "yaml-cpp/yaml.h"

DEFINE_string(config, "", "YAML file with flag values; command-line flags override it");

namespace kvstore {
namespace {

// "FILE:LINE: " when yaml-cpp knows where the node is (lines are 0-based there).
std::string Where(const std::string& path, const YAML::Mark& mark) {
  if (mark.is_null() || mark.line < 0) return absl::StrCat(path, ": ");
  return absl::StrCat(path, ":", mark.line + 1, ": ");
}

absl::Status ConfigError(const std::string& path, const YAML::Mark& mark, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("config ", Where(path, mark), what));
}

struct Entry {
  std::string key;   // As written in the file, for messages.
  std::string flag;  // gflags name: dashes turned into underscores.
  std::string value;
  YAML::Mark mark;
};

}  // namespace

absl::Status ApplyYamlConfig(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("config: empty file name");

  // yaml-cpp reports errors by throwing; none of that may leave this function.
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    return absl::InvalidArgumentError(absl::StrCat("config ", path, ": cannot read the file"));
  } catch (const YAML::Exception& e) {
    return ConfigError(path, e.mark, absl::StrCat("not valid YAML: ", e.msg));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("config ", path, ": ", e.what()));
  }
  if (root.IsNull()) return absl::OkStatus();  // Empty file (or only comments): nothing to set.
  if (!root.IsMap()) {
    return ConfigError(path, root.Mark(),
                       "expected a map of flag names to values at the top level");
  }

  // First pass: every key must name a known flag exactly once and carry a scalar,
  // so that a typo late in the file does not leave half of it applied.
  std::vector<Entry> entries;
  std::map<std::string, std::string> seen;  // flag name -> key as first written
  try {
    for (const auto& item : root) {
      const YAML::Node& key = item.first;
      const YAML::Node& value = item.second;
      if (!key.IsScalar()) return ConfigError(path, key.Mark(), "a key must be a flag name");
      Entry entry;
      entry.key = key.Scalar();
      entry.flag = entry.key;
      std::replace(entry.flag.begin(), entry.flag.end(), '-', '_');
      entry.mark = key.Mark();

      gflags::CommandLineFlagInfo info;
      if (!gflags::GetCommandLineFlagInfo(entry.flag.c_str(), &info)) {
        return ConfigError(path, entry.mark, absl::StrCat("unknown flag '", entry.key, "'"));
      }
      if (entry.flag == "config") {
        return ConfigError(path, entry.mark, "'config' cannot be set from a config file");
      }
      if (auto [it, inserted] = seen.emplace(entry.flag, entry.key); !inserted) {
        return ConfigError(
            path, entry.mark,
            absl::StrCat("flag '", entry.key, "' given twice (also as '", it->second, "')"));
      }
      if (value.IsNull()) {
        return ConfigError(
            path, entry.mark,
            absl::StrCat("flag '", entry.key, "' has no value (write '' for an empty string)"));
      }
      if (!value.IsScalar()) {
        return ConfigError(
            path, value.Mark(),
            absl::StrCat("flag '", entry.key, "' needs a single value, not a list or a map"));
      }
      entry.value = value.Scalar();
      entries.push_back(std::move(entry));
    }
  } catch (const YAML::Exception& e) {
    return ConfigError(path, e.mark, e.msg);
  }

  for (const Entry& entry : entries) {
    gflags::CommandLineFlagInfo info;
    if (!gflags::GetCommandLineFlagInfo(entry.flag.c_str(), &info)) continue;  // Checked above.
    if (!info.is_default) continue;  // The command line (or the program) already chose.
    // SetCommandLineOption parses with the flag's own type and runs its
    // validator; it returns an empty string when either rejects the value.
    if (gflags::SetCommandLineOption(entry.flag.c_str(), entry.value.c_str()).empty()) {
      return ConfigError(path, entry.mark,
                         absl::StrCat("bad value '", entry.value, "' for flag '", entry.key, "' (",
                                      info.type, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status LoadConfigFromFlag() {
  if (FLAGS_config.empty()) return absl::OkStatus();
  return ApplyYamlConfig(FLAGS_config);
}

}  // namespace kvstore

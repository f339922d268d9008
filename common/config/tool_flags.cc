#include "common/config/tool_flags.h"

#include <algorithm>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gflags/gflags.h"

namespace kvstore {
namespace {

bool Known(const ToolFlagRules& rules, const std::string& name, gflags::CommandLineFlagInfo* info) {
  if (!gflags::GetCommandLineFlagInfo(name.c_str(), info)) return false;
  return std::find(rules.flag_files.begin(), rules.flag_files.end(), info->filename) !=
         rules.flag_files.end();
}

std::vector<gflags::CommandLineFlagInfo> KnownFlags(const ToolFlagRules& rules) {
  std::vector<gflags::CommandLineFlagInfo> all;
  gflags::GetAllFlags(&all);
  std::vector<gflags::CommandLineFlagInfo> ours;
  for (gflags::CommandLineFlagInfo& f : all) {
    if (std::find(rules.flag_files.begin(), rules.flag_files.end(), f.filename) !=
        rules.flag_files.end()) {
      ours.push_back(std::move(f));
    }
  }
  return ours;
}

}  // namespace

absl::StatusOr<ToolArgs> ParseToolFlags(int argc, char** argv, const ToolFlagRules& rules) {
  ToolArgs parsed;
  bool flags_done = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (flags_done || arg == "-" || arg.empty() || arg[0] != '-') {
      if (!rules.positional) {
        return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
      }
      parsed.positional.push_back(arg);
      continue;
    }
    if (arg == "--") {
      flags_done = true;
      continue;
    }
    std::string name = arg.substr(arg[1] == '-' ? 2 : 1);
    std::optional<std::string> value;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    }
    std::replace(name.begin(), name.end(), '-', '_');
    if (name == "help" || name == "h" || name == "helpfull" || name == "helpshort") {
      parsed.help = true;
      continue;
    }
    if (name == "version") {
      parsed.version = true;
      continue;
    }
    gflags::CommandLineFlagInfo info;
    bool known = Known(rules, name, &info);
    if (!known && !value && absl::StartsWith(name, "no")) {  // --nojson
      const std::string positive = name.substr(2);
      if (Known(rules, positive, &info) && info.type == "bool") {
        name = positive;
        value = "false";
        known = true;
      }
    }
    if (!known) return absl::InvalidArgumentError(absl::StrCat("unknown flag '", arg, "'"));
    if (!value) {
      if (info.type == "bool") {
        value = "true";
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return absl::InvalidArgumentError(absl::StrCat("flag --", name, " needs a value"));
      }
    }
    if (gflags::SetCommandLineOption(name.c_str(), value->c_str()).empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad value '", *value, "' for --", name, " (", info.type, ")"));
    }
    parsed.given.insert(name);
  }
  return parsed;
}

absl::Status ApplyToolEnvironment(const std::string& prefix, const ToolFlagRules& rules) {
  for (const gflags::CommandLineFlagInfo& f : KnownFlags(rules)) {
    const std::string name = absl::StrCat(prefix, absl::AsciiStrToUpper(f.name));
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) continue;
    if (gflags::SetCommandLineOption(f.name.c_str(), value).empty()) {
      return absl::InvalidArgumentError(absl::StrCat("bad value '", value, "' for ", name,
                                                     " (flag --", f.name, ", ", f.type, ")"));
    }
  }
  return absl::OkStatus();
}

std::string ToolFlagHelp(const ToolFlagRules& rules, const std::string& env_prefix) {
  std::string out = "Flags (dashes or underscores; --name=value or --name value):\n";
  for (const gflags::CommandLineFlagInfo& f : KnownFlags(rules)) {
    absl::StrAppend(&out, "  --", f.name);
    if (f.type != "bool") absl::StrAppend(&out, "=", f.type == "string" ? "..." : "N");
    absl::StrAppend(&out, "  (default: ", f.default_value.empty() ? "\"\"" : f.default_value);
    if (!env_prefix.empty()) {
      absl::StrAppend(&out, "; env ", env_prefix, absl::AsciiStrToUpper(f.name));
    }
    absl::StrAppend(&out, ")\n");
    std::string line = "     ";
    for (absl::string_view word : absl::StrSplit(f.description, ' ', absl::SkipEmpty())) {
      if (line.size() + 1 + word.size() > 80 && line.size() > 5) {
        absl::StrAppend(&out, line, "\n");
        line = "     ";
      }
      absl::StrAppend(&line, " ", word);
    }
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

}  // namespace kvstore

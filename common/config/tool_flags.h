// The command line of the client tools (kvctl, kvbench): gflags holds and
// converts the values, but argv is parsed here, because gflags' own parser
// exits with status 1 on an unknown flag or a bad value, and the tools
// promise exit code 2 for bad usage (1 means "not found" to kvctl).
//
// Accepted: --name=value, --name value, -name, dashes or underscores in the
// name, --noflag for a bool, "--" ending the flags. Only flags defined in
// one of `flag_files` (the tool's own sources, as __FILE__ names them) are
// known; gflags' and glog's own are not.
#ifndef KVSTORE_COMMON_CONFIG_TOOL_FLAGS_H_
#define KVSTORE_COMMON_CONFIG_TOOL_FLAGS_H_

#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvstore {

struct ToolArgs {
  std::vector<std::string> positional;
  std::set<std::string> given;  // Flag names (underscored) set on the command line.
  bool help = false;            // --help, -h, --helpfull, --helpshort
  bool version = false;         // --version
};

struct ToolFlagRules {
  std::vector<std::string> flag_files;
  // Without it, any positional argument is an error.
  bool positional = false;
};

// Sets every flag argv names; stops at the first error (INVALID_ARGUMENT
// naming the argument). Flags before the error stay set.
absl::StatusOr<ToolArgs> ParseToolFlags(int argc, char** argv, const ToolFlagRules& rules);

// Sets the default of each known flag NAME from $<prefix><NAME upper-cased>
// (KVCTL_ADDR for --addr); the command line, parsed afterwards, wins.
absl::Status ApplyToolEnvironment(const std::string& prefix, const ToolFlagRules& rules);

// "Flags (...):" and each known flag: name, default, the environment
// variable when `env_prefix` is not empty, and its description wrapped at
// 80 columns.
std::string ToolFlagHelp(const ToolFlagRules& rules, const std::string& env_prefix = "");

}  // namespace kvstore

#endif  // KVSTORE_COMMON_CONFIG_TOOL_FLAGS_H_

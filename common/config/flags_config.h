// YAML configuration files for gflags-based binaries: the file supplies values,
// a flag given on the command line wins.
//
// The file is a YAML map from flag name to a scalar value:
//   data-dir: /var/lib/kvstore/shard-0
//   fsync: always
//   max_value_bytes: 2097152
// Keys may be spelled with '-' or '_'. Values are parsed exactly as on the
// command line (gflags' own parsers, validators included).
#ifndef KVSTORE_COMMON_CONFIG_FLAGS_CONFIG_H_
#define KVSTORE_COMMON_CONFIG_FLAGS_CONFIG_H_

#include <string>

#include "absl/status/status.h"
#include "gflags/gflags.h"

// --config=FILE: YAML file with flag values; command-line flags override it.
DECLARE_string(config);

namespace kvstore {

// Sets each flag named in the YAML file at `path` unless it was already set
// (gflags' is_default is false: given on the command line, set through
// SetCommandLineOption, or assigned a non-default value in code before this
// call). Call after gflags::ParseCommandLineFlags, before reading any flag.
//
// Errors are InvalidArgument and name the file, the key and, when known, the
// line: missing or unparsable file, top level not a map, unknown flag, a key
// given twice (also as "a-b" and "a_b"), a value that is not a scalar, or
// a value the flag rejects. Keys are checked before any flag is set; a value
// error stops at that key, leaving earlier keys applied (callers exit).
// Not thread-safe with respect to other flag writers.
absl::Status ApplyYamlConfig(const std::string& path);

// ApplyYamlConfig(FLAGS_config) when --config is non-empty; OK otherwise.
absl::Status LoadConfigFromFlag();

}  // namespace kvstore

#endif  // KVSTORE_COMMON_CONFIG_FLAGS_CONFIG_H_

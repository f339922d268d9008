// fuzz_config: the YAML loaders. The first input byte picks the mode (low bit):
//
//  0 topology (common/topology/topology.h, ParseTopology): the rest is a
//    topology file. It is refused with INVALID_ARGUMENT reading
//    "topology SOURCE...", or accepted only when every rule the header states
//    holds: at least one shard, valid and unique names, HOST:PORT addresses
//    unique across the file, vnodes a ring can be built with.
//
//  1 flags (common/config/flags_config.h, ApplyYamlConfig): the rest is a
//    --config file for a binary with the flags below. It is refused with
//    INVALID_ARGUMENT naming the file, or applied; nothing crashes and no
//    other error comes back. Every input starts from the defaults
//    (gflags::FlagSaver).
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/config/flags_config.h"
#include "common/topology/topology.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "tests/fuzz/fuzz_support.h"

DEFINE_string(fuzz_name, "default", "A string flag for the fuzzer");
DEFINE_int32(fuzz_count, 7, "An integer flag for the fuzzer");
DEFINE_bool(fuzz_enabled, false, "A boolean flag for the fuzzer");
DEFINE_uint64(fuzz_limit_bytes, 100, "A flag whose name has an underscore");
DEFINE_double(fuzz_ratio, 0.5, "A floating-point flag");

namespace kvstore::fuzz {
namespace {

constexpr char kSource[] = "fuzz.yaml";

void TopologyMode(absl::string_view yaml) {
  absl::StatusOr<Topology> topology = ParseTopology(yaml, kSource);
  if (!topology.ok()) {
    CHECK(absl::IsInvalidArgument(topology.status())) << topology.status();
    CHECK(absl::StartsWith(topology.status().message(), absl::StrCat("topology ", kSource)))
        << topology.status();
    return;
  }
  CHECK(!topology->shards.empty()) << "a topology without shards was accepted";
  std::set<std::string> names;
  std::set<std::string> addresses;
  for (const ShardTopology& shard : topology->shards) {
    CHECK(CheckShardName(shard.name).ok()) << "accepted shard name '" << shard.name << "'";
    CHECK(names.insert(shard.name).second) << "accepted a duplicate shard " << shard.name;
    CHECK(CheckHostPort(shard.leader).ok()) << "accepted leader '" << shard.leader << "'";
    CHECK(addresses.insert(shard.leader).second) << "accepted a duplicate " << shard.leader;
    for (const std::string& replica : shard.replicas) {
      CHECK(CheckHostPort(replica).ok()) << "accepted replica '" << replica << "'";
      CHECK(addresses.insert(replica).second) << "accepted a duplicate " << replica;
    }
  }
  absl::StatusOr<HashRing> ring = topology->BuildRing();
  CHECK(ring.ok()) << "an accepted topology builds no ring: " << ring.status();
}

const std::string& ConfigPath() {
  static const std::string* path = [] {
    const char* tmp = std::getenv("TMPDIR");
    auto* p = new std::string(
        absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/fuzz_config.", getpid(), ".yaml"));
    std::atexit([] { unlink(ConfigPath().c_str()); });
    return p;
  }();
  return *path;
}

void FlagsMode(absl::string_view yaml) {
  const std::string& path = ConfigPath();
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(yaml.data(), static_cast<std::streamsize>(yaml.size()));
    CHECK(out.good()) << "cannot write " << path;
  }
  gflags::FlagSaver saver;
  const absl::Status s = ApplyYamlConfig(path);
  if (!s.ok()) {
    CHECK(absl::IsInvalidArgument(s)) << s;
    CHECK(absl::StrContains(s.message(), path)) << "the refusal does not name the file: " << s;
  }
}

}  // namespace
}  // namespace kvstore::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kvstore::fuzz::QuietLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kvstore::fuzz::InputReader in(data, size);
  if (in.U8() & 1) {
    kvstore::fuzz::FlagsMode(in.Rest());
  } else {
    kvstore::fuzz::TopologyMode(in.Rest());
  }
  return 0;
}

// Topology files: what a valid one yields, and that each kind of mistake is
// refused with the file, the line and what is wrong.
#include "common/topology/topology.h"

#include <unistd.h>

#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/ring/hash_ring.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvstore {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// The error message of parsing `yaml` as "t.yaml"; empty when it parses.
std::string ErrorOf(const std::string& yaml) {
  absl::StatusOr<Topology> t = ParseTopology(yaml, "t.yaml");
  if (t.ok()) return "";
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(t.status().message());
}

TEST(TopologyTest, ParsesShardsInFileOrder) {
  absl::StatusOr<Topology> t = ParseTopology(R"(
vnodes: 256
shards:
  - name: shard-0
    leader: 127.0.0.1:50061
    replicas: [127.0.0.1:50071, 127.0.0.1:50072]
  - name: b.1_x
    leader: "[::1]:50062"
  - name: c
    leader: kv-c.example:7000
    replicas: []
)",
                                             "t.yaml");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->vnodes, 256);
  ASSERT_EQ(t->shards.size(), 3u);
  EXPECT_EQ(t->shards[0].name, "shard-0");
  EXPECT_EQ(t->shards[0].leader, "127.0.0.1:50061");
  EXPECT_THAT(t->shards[0].replicas, ElementsAre("127.0.0.1:50071", "127.0.0.1:50072"));
  EXPECT_EQ(t->shards[1].leader, "[::1]:50062");
  EXPECT_TRUE(t->shards[1].replicas.empty());
  EXPECT_TRUE(t->shards[2].replicas.empty());
  EXPECT_THAT(t->ShardNames(), ElementsAre("shard-0", "b.1_x", "c"));
}

TEST(TopologyTest, VnodesDefaultsToTheRingDefault) {
  absl::StatusOr<Topology> t =
      ParseTopology("shards:\n  - {name: a, leader: 127.0.0.1:1}\n", "t.yaml");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->vnodes, HashRing::kDefaultVirtualNodes);
}

TEST(TopologyTest, TheLocalDeploymentFileParses) {
  absl::StatusOr<Topology> t = LoadTopologyFile(KV_SOURCE_DIR "/deploy/local/topology.yaml");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->shards.size(), 3u);
  for (const ShardTopology& s : t->shards) EXPECT_EQ(s.replicas.size(), 2u) << s.name;
}

TEST(TopologyTest, ErrorsNameTheFileTheLineAndTheProblem) {
  struct Case {
    const char* what;
    std::string yaml;
    std::vector<std::string> message_has;
  };
  const Case cases[] = {
      {"empty file", "", {"t.yaml", "empty"}},
      {"not a map", "- a\n- b\n", {"t.yaml:1", "expected a map"}},
      {"not YAML", "shards: [\n", {"t.yaml", "not valid YAML"}},
      {"unknown top-level key",
       "shard:\n  - {name: a, leader: h:1}\n",
       {"t.yaml:1", "unknown key 'shard'"}},
      {"no shards", "vnodes: 8\n", {"missing 'shards'"}},
      {"empty shard list", "shards: []\n", {"t.yaml:1", "'shards' is empty"}},
      {"shards not a list", "shards: {a: 1}\n", {"'shards' must be a list"}},
      {"shard not a map", "shards:\n  - a\n", {"t.yaml:2", "must be a map"}},
      {"unknown shard key",
       "shards:\n  - {name: a, leader: h:1, replica: [h:2]}\n",
       {"t.yaml:2", "unknown key 'replica' in a shard"}},
      {"missing name", "shards:\n  - {leader: h:1}\n", {"t.yaml:2", "no 'name'"}},
      {"missing leader",
       "shards:\n  - name: a\n    replicas: [h:2]\n",
       {"t.yaml:2", "shard 'a' has no 'leader'"}},
      {"duplicate shard name",
       "shards:\n  - {name: a, leader: h:1}\n  - {name: b, leader: h:2}\n  - {name: a, leader: "
       "h:3}\n",
       {"t.yaml:4", "shard name 'a' appears twice (first at line 2)"}},
      {"duplicate address",
       "shards:\n  - {name: a, leader: h:1}\n  - {name: b, leader: h:1}\n",
       {"t.yaml:3", "address h:1 is already used at line 2"}},
      {"leader is also a replica",
       "shards:\n  - {name: a, leader: h:1, replicas: [h:1]}\n",
       {"already used"}},
      {"repeated key",
       "shards:\n  - name: a\n    leader: h:1\n    leader: h:2\n",
       {"t.yaml:4", "key 'leader' appears twice"}},
      {"no port",
       "shards:\n  - {name: a, leader: localhost}\n",
       {"t.yaml:2", "leader 'localhost'", "HOST:PORT"}},
      {"port zero", "shards:\n  - {name: a, leader: 'h:0'}\n", {"port must be a number"}},
      {"port too big", "shards:\n  - {name: a, leader: 'h:65536'}\n", {"port must be a number"}},
      {"port not a number", "shards:\n  - {name: a, leader: 'h:80x'}\n", {"port must be a number"}},
      {"empty host", "shards:\n  - {name: a, leader: ':80'}\n", {"host is empty"}},
      {"unbracketed IPv6", "shards:\n  - {name: a, leader: '::1:80'}\n", {"in brackets"}},
      {"bad replica",
       "shards:\n  - {name: a, leader: h:1, replicas: [h:2, 'x y:3']}\n",
       {"t.yaml:2", "replica 'x y:3'"}},
      {"replicas not a list",
       "shards:\n  - {name: a, leader: h:1, replicas: h:2}\n",
       {"'replicas' must be a list"}},
      {"bad shard name",
       "shards:\n  - {name: 'a#1', leader: h:1}\n",
       {"shard name 'a#1' may only hold"}},
      {"empty shard name", "shards:\n  - {name: '', leader: h:1}\n", {"shard name is empty"}},
      {"vnodes zero",
       "vnodes: 0\nshards:\n  - {name: a, leader: h:1}\n",
       {"t.yaml:1", "'vnodes' must be an integer from 1 to 65536"}},
      {"vnodes not a number",
       "vnodes: many\nshards:\n  - {name: a, leader: h:1}\n",
       {"'vnodes' must be an integer"}},
  };
  for (const Case& c : cases) {
    const std::string message = ErrorOf(c.yaml);
    EXPECT_FALSE(message.empty()) << c.what << ": accepted";
    EXPECT_THAT(message, HasSubstr("topology t.yaml")) << c.what;
    for (const std::string& part : c.message_has) {
      EXPECT_THAT(message, HasSubstr(part)) << c.what;
    }
  }
}

TEST(TopologyTest, UnreadableFileIsNamed) {
  absl::StatusOr<Topology> t = LoadTopologyFile("/nonexistent/topology.yaml");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(),
              AllOf(HasSubstr("/nonexistent/topology.yaml"), HasSubstr("cannot read")));
}

TEST(TopologyTest, LoadsAFile) {
  const std::string path = absl::StrCat(::testing::TempDir(), "topology_test_", getpid(), ".yaml");
  std::ofstream(path) << "shards:\n  - name: a\n    leader: 127.0.0.1:5\n";
  absl::StatusOr<Topology> t = LoadTopologyFile(path);
  ::unlink(path.c_str());
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->shards[0].leader, "127.0.0.1:5");
}

TEST(TopologyTest, CheckHostPortAcceptsNamesIpv4AndBracketedIpv6) {
  EXPECT_TRUE(CheckHostPort("127.0.0.1:50051").ok());
  EXPECT_TRUE(CheckHostPort("kv-0.kv.default.svc.cluster.local:50051").ok());
  EXPECT_TRUE(CheckHostPort("[::1]:1").ok());
  EXPECT_TRUE(CheckHostPort("h:65535").ok());
  EXPECT_FALSE(CheckHostPort("h:").ok());
  EXPECT_FALSE(CheckHostPort("h:+80").ok());
  EXPECT_FALSE(CheckHostPort("[]:80").ok());
  EXPECT_FALSE(CheckHostPort("[::1:80").ok());
}

TEST(TopologyTest, CheckShardNameIsTheRuleOfTheFile) {
  EXPECT_TRUE(CheckShardName("shard-3").ok());
  EXPECT_TRUE(CheckShardName("S_1.a").ok());
  EXPECT_TRUE(CheckShardName(std::string(64, 'x')).ok());
  EXPECT_FALSE(CheckShardName(std::string(65, 'x')).ok());
  EXPECT_FALSE(CheckShardName("").ok());
  EXPECT_FALSE(CheckShardName("a#1").ok());  // Would read as a ring token.
  EXPECT_FALSE(CheckShardName("a/b").ok());  // Would nest in etcd's keys.
  EXPECT_FALSE(CheckShardName("a b").ok());
  EXPECT_EQ(CheckShardName("a#1").message(),
            "shard name 'a#1' may only hold letters, digits, '-', '_' and '.'");
}

}  // namespace
}  // namespace kvstore

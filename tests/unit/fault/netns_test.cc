// The namespace network's commands (tools/kvfault/netns.h), with a recording
// runner instead of `ip` and `nft`: no root needed. That the commands work is
// the netns-* fault scenarios' business (they need root).
#include "tools/kvfault/netns.h"

#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvstore::fault {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

const std::vector<std::string> kNodes = {"n0", "n1", "n2"};

// Records every command; `ip netns add` of a name in `taken` fails as ip's
// does, and any command containing `fail_on` fails.
struct FakeIp {
  std::vector<std::string> commands;
  std::vector<std::string> taken;
  std::string fail_on;
  std::string netns_list;
  std::map<std::string, std::string> pids;

  Netns::Runner runner() {
    return [this](const std::vector<std::string>& argv) -> absl::StatusOr<std::string> {
      const std::string line = absl::StrJoin(argv, " ");
      commands.push_back(line);
      if (!fail_on.empty() && line.find(fail_on) != std::string::npos) {
        return absl::InternalError("exit code 2: RTNETLINK answers: Operation not permitted");
      }
      if (argv.size() == 4 && argv[1] == "netns" && argv[2] == "add") {
        for (const std::string& t : taken) {
          if (t == argv[3]) {
            return absl::InternalError("exit code 1: Cannot create namespace file: File exists");
          }
        }
      }
      if (argv.size() == 3 && argv[1] == "netns" && argv[2] == "list") return netns_list;
      if (argv.size() == 4 && argv[2] == "pids") return pids[argv[3]];
      return std::string();
    };
  }
};

TEST(NetnsTest, SetupMakesTheSwitchThenEachMemberWithItsAddress) {
  const std::vector<NetnsCommand> c = Netns::SetupCommands(7, {"n0", "n1"}, "ip");
  std::vector<std::string> lines;
  for (const NetnsCommand& x : c) lines.push_back(absl::StrJoin(x.argv, " "));
  EXPECT_EQ(lines[0], "ip netns add kvf7-sw");
  EXPECT_EQ(lines[1], "ip -n kvf7-sw link add br0 type bridge");
  EXPECT_THAT(lines, Contains("ip netns add kvf7-n0"));
  EXPECT_THAT(lines,
              Contains("ip -n kvf7-sw link add v-n1 type veth peer name eth0 netns kvf7-n1"));
  EXPECT_THAT(lines, Contains("ip -n kvf7-sw link set v-client master br0"));
  EXPECT_THAT(lines,
              Contains("ip netns exec kvf7-n1 sysctl -qw net.ipv4.conf.all.route_localnet=1"));
  EXPECT_THAT(lines, Contains("ip -n kvf7-n0 route del local 127.0.0.0/8 dev lo table local"));
  EXPECT_THAT(lines, Contains("ip -n kvf7-n0 addr add 127.100.7.1/16 dev eth0"));
  EXPECT_THAT(lines, Contains("ip -n kvf7-n1 addr add 127.100.7.2/16 dev eth0"));
  EXPECT_THAT(lines, Contains("ip -n kvf7-cl addr add 127.100.7.250/16 dev eth0"));
  for (const std::string& l : lines) EXPECT_THAT(l, Not(HasSubstr("netns exec kvf7-sw")));
}

TEST(NetnsTest, CreateSkipsTakenRunNumbersAndTearsDownEverythingItMade) {
  FakeIp ip;
  ip.taken = {"kvf5-sw"};
  {
    absl::StatusOr<std::unique_ptr<Netns>> net = Netns::Create(kNodes, 4, ip.runner(), "ip", "nft");
    ASSERT_TRUE(net.ok()) << net.status();
    EXPECT_EQ((*net)->run(), 6);
    EXPECT_EQ((*net)->Address("n2"), "127.100.6.3");
    EXPECT_EQ((*net)->Address(kNetnsClient), "127.100.6.250");
    EXPECT_EQ((*net)->Address("n9"), "");
    EXPECT_THAT((*net)->Wrap("n1", {"/bin/kv-replica", "--listen=x"}),
                ElementsAre("ip", "netns", "exec", "kvf6-n1", "/bin/kv-replica", "--listen=x"));
    ip.commands.clear();
  }
  EXPECT_THAT(ip.commands,
              ElementsAre("ip netns del kvf6-cl", "ip netns del kvf6-n2", "ip netns del kvf6-n1",
                          "ip netns del kvf6-n0", "ip netns del kvf6-sw"));
}

TEST(NetnsTest, AFailedSetupDeletesWhatItHadMade) {
  FakeIp ip;
  ip.fail_on = "addr add 127.100.1.2/16";
  absl::StatusOr<std::unique_ptr<Netns>> net = Netns::Create(kNodes, 0, ip.runner(), "ip", "nft");
  ASSERT_FALSE(net.ok());
  EXPECT_THAT(std::string(net.status().message()), HasSubstr("127.100.1.2/16"));
  // Made: sw, n0, n1; deleted in reverse.
  const std::vector<std::string> tail(ip.commands.end() - 3, ip.commands.end());
  EXPECT_THAT(tail,
              ElementsAre("ip netns del kvf1-n1", "ip netns del kvf1-n0", "ip netns del kvf1-sw"));
}

TEST(NetnsTest, NoPrivilegeIsAFailedPrecondition) {
  FakeIp ip;
  ip.fail_on = "netns add";
  absl::StatusOr<std::unique_ptr<Netns>> net = Netns::Create(kNodes, 0, ip.runner(), "ip", "nft");
  EXPECT_TRUE(absl::IsFailedPrecondition(net.status())) << net.status();
  EXPECT_EQ(ip.commands.size(), 1u);
}

TEST(NetnsTest, IsolationDropsOnInputInEveryReceiver) {
  FakeIp ip;
  auto net = *Netns::Create(kNodes, 2, ip.runner(), "ip", "nft");  // Run 3.
  NetnsFaults f;
  for (const char* other : {"n1", "n2"}) {
    f.blocked.insert({"n0", other});
    f.blocked.insert({other, "n0"});
  }
  EXPECT_EQ(net->Script("n0", f),
            "table inet kvf3 ; delete table inet kvf3 ; add table inet kvf3 ; add chain inet kvf3 "
            "input { type filter hook input priority 0 ; policy accept ; } ; add rule inet kvf3 "
            "input ip saddr { 127.100.3.2, 127.100.3.3 } drop");
  EXPECT_THAT(net->Script("n1", f), HasSubstr("input ip saddr { 127.100.3.1 } drop"));
  EXPECT_EQ(net->Script(kNetnsClient, f), "");  // The clients still reach every node.
  ip.commands.clear();
  std::vector<NetnsCommand> ran;
  ASSERT_TRUE(net->Apply(f, &ran).ok());
  EXPECT_EQ(ran.size(), 3u);
  EXPECT_THAT(ip.commands[0], HasSubstr("ip netns exec kvf3-n0 nft table inet kvf3"));
  EXPECT_TRUE(net->Cut("n0", "n2"));
  EXPECT_TRUE(net->Cut("n2", "n0"));
  EXPECT_FALSE(net->Cut("n1", "n2"));
  // The same state again runs nothing; the heal deletes the three tables.
  ran.clear();
  ASSERT_TRUE(net->Apply(f, &ran).ok());
  EXPECT_THAT(ran, IsEmpty());
  ip.commands.clear();
  ASSERT_TRUE(net->Apply(NetnsFaults(), &ran).ok());
  EXPECT_THAT(ip.commands, ElementsAre("ip netns exec kvf3-n0 nft delete table inet kvf3",
                                       "ip netns exec kvf3-n1 nft delete table inet kvf3",
                                       "ip netns exec kvf3-n2 nft delete table inet kvf3"));
  EXPECT_FALSE(net->Cut("n0", "n2"));
}

TEST(NetnsTest, OneWayBlocksOnlyAtTheReceiver) {
  FakeIp ip;
  auto net = *Netns::Create(kNodes, 0, ip.runner(), "ip", "nft");
  NetnsFaults f;
  f.blocked.insert({"n0", "n1"});
  EXPECT_EQ(net->Script("n0", f), "");
  EXPECT_THAT(net->Script("n1", f), HasSubstr("ip saddr { 127.100.1.1 } drop"));
  ASSERT_TRUE(net->Apply(f, nullptr).ok());
  EXPECT_TRUE(net->Cut("n1", "n0"));  // TCP needs both ways.
  EXPECT_EQ(f.ToString(), "blocked n0->n1");
}

TEST(NetnsTest, LossDropsWhatTheNodeReceivesAndWhatItSendsEverywhere) {
  FakeIp ip;
  auto net = *Netns::Create(kNodes, 0, ip.runner(), "ip", "nft");
  NetnsFaults f;
  f.loss_percent["n2"] = 20;
  EXPECT_THAT(
      net->Script("n2", f),
      HasSubstr("add rule inet kvf1 input iifname \"eth0\" numgen random mod 100 < 20 drop"));
  EXPECT_THAT(
      net->Script("n0", f),
      HasSubstr("add rule inet kvf1 input ip saddr 127.100.1.3 numgen random mod 100 < 20 drop"));
  EXPECT_THAT(net->Script(kNetnsClient, f), HasSubstr("ip saddr 127.100.1.3 numgen random"));
  EXPECT_FALSE(net->Cut("n0", "n2"));
  EXPECT_EQ(f.ToString(), "loss n2 20%");
}

TEST(NetnsCleanupTest, FindsOnlyRunNamespaces) {
  const auto runs = RunNamespaces(
      "kvf12-n0 (id: 3)\nkvf12-sw (id: 1)\nother\nkvfx-n0\nkvf300-n0\nkvf4-cl\nkvf9-\n");
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_THAT(runs.at(12), ElementsAre("kvf12-n0", "kvf12-sw"));
  EXPECT_THAT(runs.at(4), ElementsAre("kvf4-cl"));
}

TEST(NetnsCleanupTest, DeletesDeadRunsSwitchLastAndLeavesLiveOnes) {
  FakeIp ip;
  ip.netns_list = "kvf2-sw\nkvf2-n0\nkvf2-cl\nkvf3-sw\nkvf3-cl\nunrelated\n";
  ip.pids["kvf3-cl"] = "4242\n";
  int failed = 0;
  EXPECT_EQ(CleanupNetns(ip.runner(), "ip", &failed), 3);
  EXPECT_EQ(failed, 0);
  std::vector<std::string> deletes;
  for (const std::string& c : ip.commands) {
    if (c.find("netns del") != std::string::npos) deletes.push_back(c);
  }
  EXPECT_THAT(deletes,
              ElementsAre("ip netns del kvf2-n0", "ip netns del kvf2-cl", "ip netns del kvf2-sw"));
}

}  // namespace
}  // namespace kvstore::fault

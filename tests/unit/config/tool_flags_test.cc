#include "common/config/tool_flags.h"

#include <cstdlib>
#include <string>
#include <vector>

#include "gflags/gflags.h"
#include "gtest/gtest.h"

DEFINE_string(tf_addr, "127.0.0.1:1", "where to connect");
DEFINE_int32(tf_count, 1, "how many");
DEFINE_bool(tf_json, false, "JSON output");

namespace kvstore {
namespace {

const ToolFlagRules kWithPositional{{__FILE__}, /*positional=*/true};
const ToolFlagRules kFlagsOnly{{__FILE__}, /*positional=*/false};

absl::StatusOr<ToolArgs> Parse(std::vector<std::string> args, const ToolFlagRules& rules) {
  args.insert(args.begin(), "tool");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return ParseToolFlags(static_cast<int>(argv.size()), argv.data(), rules);
}

class ToolFlagsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    FLAGS_tf_addr = "127.0.0.1:1";
    FLAGS_tf_count = 1;
    FLAGS_tf_json = false;
  }
  gflags::FlagSaver saver_;
};

TEST_F(ToolFlagsTest, AcceptsEveryDocumentedSpelling) {
  absl::StatusOr<ToolArgs> args =
      Parse({"--tf-addr=h:2", "get", "-tf_count", "7", "--tf-json", "k", "--", "--not-a-flag"},
            kWithPositional);
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_EQ(FLAGS_tf_addr, "h:2");
  EXPECT_EQ(FLAGS_tf_count, 7);
  EXPECT_TRUE(FLAGS_tf_json);
  EXPECT_EQ(args->positional, (std::vector<std::string>{"get", "k", "--not-a-flag"}));
  EXPECT_EQ(args->given, (std::set<std::string>{"tf_addr", "tf_count", "tf_json"}));
}

TEST_F(ToolFlagsTest, NoPrefixTurnsABoolOff) {
  FLAGS_tf_json = true;
  ASSERT_TRUE(Parse({"--notf_json"}, kFlagsOnly).ok());
  EXPECT_FALSE(FLAGS_tf_json);
}

TEST_F(ToolFlagsTest, RefusesWhatItDoesNotKnowWithTheArgumentNamed) {
  absl::StatusOr<ToolArgs> unknown = Parse({"--tf-adr=x"}, kFlagsOnly);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find("--tf-adr=x"), std::string::npos);
  // gflags' own flags are not the tool's.
  EXPECT_FALSE(Parse({"--flagfile=/dev/null"}, kFlagsOnly).ok());
  absl::StatusOr<ToolArgs> bad = Parse({"--tf_count=many"}, kFlagsOnly);
  EXPECT_NE(bad.status().message().find("bad value 'many'"), std::string::npos);
  absl::StatusOr<ToolArgs> missing = Parse({"--tf_count"}, kFlagsOnly);
  EXPECT_NE(missing.status().message().find("needs a value"), std::string::npos);
  absl::StatusOr<ToolArgs> stray = Parse({"stray"}, kFlagsOnly);
  EXPECT_NE(stray.status().message().find("unexpected argument 'stray'"), std::string::npos);
}

TEST_F(ToolFlagsTest, HelpAndVersionAreNotFlagsOfTheTool) {
  absl::StatusOr<ToolArgs> args = Parse({"-h", "--version"}, kFlagsOnly);
  ASSERT_TRUE(args.ok());
  EXPECT_TRUE(args->help);
  EXPECT_TRUE(args->version);
  EXPECT_TRUE(args->given.empty());
}

TEST_F(ToolFlagsTest, TheEnvironmentSetsDefaultsAndTheCommandLineWins) {
  setenv("TFTEST_TF_ADDR", "env:3", 1);
  setenv("TFTEST_TF_COUNT", "5", 1);
  ASSERT_TRUE(ApplyToolEnvironment("TFTEST_", kFlagsOnly).ok());
  ASSERT_TRUE(Parse({"--tf_count=9"}, kFlagsOnly).ok());
  EXPECT_EQ(FLAGS_tf_addr, "env:3");
  EXPECT_EQ(FLAGS_tf_count, 9);
  setenv("TFTEST_TF_COUNT", "five", 1);
  absl::Status bad = ApplyToolEnvironment("TFTEST_", kFlagsOnly);
  EXPECT_NE(bad.message().find("TFTEST_TF_COUNT"), std::string::npos) << bad;
  unsetenv("TFTEST_TF_ADDR");
  unsetenv("TFTEST_TF_COUNT");
}

TEST_F(ToolFlagsTest, HelpListsOnlyTheToolsFlagsWithTheirEnvironmentVariable) {
  const std::string help = ToolFlagHelp(kFlagsOnly, "TFTEST_");
  EXPECT_NE(help.find("--tf_addr=...  (default: 127.0.0.1:1; env TFTEST_TF_ADDR)"),
            std::string::npos)
      << help;
  EXPECT_NE(help.find("--tf_json  (default: false; env TFTEST_TF_JSON)"), std::string::npos);
  EXPECT_EQ(help.find("--flagfile"), std::string::npos);
  EXPECT_EQ(ToolFlagHelp(kFlagsOnly).find("env "), std::string::npos);
}

}  // namespace
}  // namespace kvstore

#include "common/config/flags_config.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gflags/gflags.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

DEFINE_string(cfgtest_name, "default-name", "A string flag for the test");
DEFINE_int32(cfgtest_count, 7, "An integer flag for the test");
DEFINE_bool(cfgtest_enabled, false, "A boolean flag for the test");
DEFINE_uint64(cfgtest_limit_bytes, 100, "A flag whose name has an underscore");

namespace kvstore {
namespace {

using ::testing::HasSubstr;

class FlagsConfigTest : public ::testing::Test {
 protected:
  // Writes `yaml` to a fresh file and returns its path.
  std::string WriteConfig(const std::string& yaml) {
    const std::string path = absl::StrCat(::testing::TempDir(), "flags_config_test_", getpid(), "_",
                                          files_.size(), ".yaml");
    std::ofstream(path) << yaml;
    files_.push_back(path);
    return path;
  }

  // Parses `args` as if they were the command line after the program name.
  void ParseCommandLine(std::vector<std::string> args) {
    args.insert(args.begin(), "flags_config_test");
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    int argc = static_cast<int>(argv.size());
    char** argv_ptr = argv.data();
    gflags::ParseCommandLineFlags(&argc, &argv_ptr, /*remove_flags=*/false);
  }

  void TearDown() override {
    for (const std::string& f : files_) std::remove(f.c_str());
  }

  gflags::FlagSaver saver_;  // Every test starts from the defaults.
  std::vector<std::string> files_;
};

TEST_F(FlagsConfigTest, YamlSetsFlagsLeftAtTheirDefault) {
  const std::string path = WriteConfig(
      "cfgtest_name: from-yaml\n"
      "cfgtest_count: 42\n"
      "cfgtest_enabled: true\n");
  ASSERT_TRUE(ApplyYamlConfig(path).ok());
  EXPECT_EQ(FLAGS_cfgtest_name, "from-yaml");
  EXPECT_EQ(FLAGS_cfgtest_count, 42);
  EXPECT_TRUE(FLAGS_cfgtest_enabled);
}

TEST_F(FlagsConfigTest, CommandLineBeatsYaml) {
  ParseCommandLine({"--cfgtest_count=3", "--cfgtest_name=default-name"});
  const std::string path = WriteConfig(
      "cfgtest_name: from-yaml\n"
      "cfgtest_count: 42\n"
      "cfgtest_enabled: true\n");
  ASSERT_TRUE(ApplyYamlConfig(path).ok());
  EXPECT_EQ(FLAGS_cfgtest_count, 3);
  // Given on the command line with the default value: still the command line's.
  EXPECT_EQ(FLAGS_cfgtest_name, "default-name");
  EXPECT_TRUE(FLAGS_cfgtest_enabled);  // Not on the command line: the file's.
}

TEST_F(FlagsConfigTest, DashesAndUnderscoresAreBothAccepted) {
  ASSERT_TRUE(ApplyYamlConfig(WriteConfig("cfgtest-limit-bytes: 5\n"
                                          "cfgtest_count: 8\n"))
                  .ok());
  EXPECT_EQ(FLAGS_cfgtest_limit_bytes, 5u);
  EXPECT_EQ(FLAGS_cfgtest_count, 8);
}

TEST_F(FlagsConfigTest, UnknownKeyIsAnErrorNamingFileKeyAndLine) {
  const std::string path = WriteConfig(
      "cfgtest_count: 42\n"
      "no-such-flag: 1\n");
  absl::Status s = ApplyYamlConfig(path);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr(path + ":2:"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("no-such-flag"));
  EXPECT_EQ(FLAGS_cfgtest_count, 7) << "nothing is applied when a key is unknown";
}

TEST_F(FlagsConfigTest, UnparsableValueIsAnError) {
  const std::string path = WriteConfig("cfgtest_count: many\n");
  absl::Status s = ApplyYamlConfig(path);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr(path));
  EXPECT_THAT(std::string(s.message()), HasSubstr("cfgtest_count"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("many"));
  EXPECT_EQ(FLAGS_cfgtest_count, 7);
}

TEST_F(FlagsConfigTest, ListValueIsAnError) {
  absl::Status s = ApplyYamlConfig(WriteConfig("cfgtest_name: [a, b]\n"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("cfgtest_name"));
}

TEST_F(FlagsConfigTest, SameFlagTwiceIsAnError) {
  absl::Status s = ApplyYamlConfig(WriteConfig("cfgtest-limit-bytes: 1\ncfgtest_limit_bytes: 2\n"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("twice"));
}

TEST_F(FlagsConfigTest, MissingFileIsAnErrorNamingIt) {
  const std::string path = absl::StrCat(::testing::TempDir(), "no_such_dir/config.yaml");
  absl::Status s = ApplyYamlConfig(path);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr(path));
}

TEST_F(FlagsConfigTest, InvalidYamlIsAnErrorWithTheLine) {
  const std::string path = WriteConfig("cfgtest_count: 1\ncfgtest_name: [unclosed\n");
  absl::Status s = ApplyYamlConfig(path);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr(path + ":"));
}

TEST_F(FlagsConfigTest, TopLevelMustBeAMap) {
  absl::Status s = ApplyYamlConfig(WriteConfig("- cfgtest_count\n- 3\n"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("map"));
}

TEST_F(FlagsConfigTest, EmptyFileSetsNothing) {
  ASSERT_TRUE(ApplyYamlConfig(WriteConfig("# only a comment\n")).ok());
  EXPECT_EQ(FLAGS_cfgtest_count, 7);
}

TEST_F(FlagsConfigTest, LoadConfigFromFlagReadsTheConfigFlag) {
  EXPECT_TRUE(LoadConfigFromFlag().ok()) << "no --config: nothing to do";
  FLAGS_config = WriteConfig("cfgtest_count: 9\n");
  ASSERT_TRUE(LoadConfigFromFlag().ok());
  EXPECT_EQ(FLAGS_cfgtest_count, 9);
}

}  // namespace
}  // namespace kvstore

// The harness's two switches for running the integration tests against the
// servers of another build (tools/test-sanitizers asan-servers): KV_BIN_DIR
// (OurBinary) and KV_STOP_GRACEFULLY (EndAtTeardown), with /bin/sh scripts
// standing in for a server, so that what a teardown decides is checked
// without a sanitizer build.
#include <signal.h>

#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest-spi.h"
#include "gtest/gtest.h"
#include "tests/support/process.h"

namespace kvstore {
namespace {

using ::kvstore::testing::ChildProcess;
using ::kvstore::testing::EndAtTeardown;
using ::kvstore::testing::OurBinary;
using ::kvstore::testing::ReadFileOrEmpty;
using ::kvstore::testing::TempDir;
using ::kvstore::testing::WaitFor;

// Sets (or, with nullopt, unsets) an environment variable for one scope and
// puts the old value back: asan-servers runs this test with both set.
class ScopedEnv {
 public:
  ScopedEnv(std::string name, std::optional<std::string> value) : name_(std::move(name)) {
    if (const char* old = std::getenv(name_.c_str()); old != nullptr) old_ = old;
    if (value.has_value()) {
      ::setenv(name_.c_str(), value->c_str(), 1);
    } else {
      ::unsetenv(name_.c_str());
    }
  }
  ~ScopedEnv() {
    if (old_.has_value()) {
      ::setenv(name_.c_str(), old_->c_str(), 1);
    } else {
      ::unsetenv(name_.c_str());
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

// Starts a shell that writes `first_line` and "ready" to `log`, then waits
// for signals, running `on_term` on SIGTERM; returns once "ready" is there
// (so the trap is set).
void StartFakeServer(ChildProcess& process, const std::string& log, const std::string& first_line,
                     const std::string& on_term) {
  const std::string script = absl::StrCat("trap '", on_term, "' TERM; echo '", first_line,
                                          "'; echo ready; while :; do sleep 0.05; done");
  ASSERT_TRUE(process.Start("/bin/sh", {"-c", script}, log).ok());
  ASSERT_TRUE(WaitFor([&] { return ReadFileOrEmpty(log).find("ready") != std::string::npos; },
                      absl::Now() + absl::Seconds(10)));
}

TEST(OurBinary, IsTheBuiltPathWithoutKvBinDir) {
  ScopedEnv dir("KV_BIN_DIR", std::nullopt);
  EXPECT_EQ(OurBinary("/build/bin/kv-shard"), "/build/bin/kv-shard");
  ScopedEnv empty("KV_BIN_DIR", "");
  EXPECT_EQ(OurBinary("/build/bin/kv-shard"), "/build/bin/kv-shard");
}

TEST(OurBinary, TakesTheSameFileFromKvBinDir) {
  ScopedEnv dir("KV_BIN_DIR", "/elsewhere/build-asan/bin");
  EXPECT_EQ(OurBinary("/build/bin/kv-replica"), "/elsewhere/build-asan/bin/kv-replica");
  // The macros the tests use expand to it.
  EXPECT_EQ(KV_SHARD_BIN, "/elsewhere/build-asan/bin/kv-shard");
  EXPECT_EQ(KVCTL_BIN, "/elsewhere/build-asan/bin/kvctl");
}

TEST(EndAtTeardown, LeavesTheServerToSigkillByDefault) {
  ScopedEnv graceful("KV_STOP_GRACEFULLY", std::nullopt);
  TempDir tmp;
  ChildProcess process;
  StartFakeServer(process, tmp.Join("log"), "runtime error: ignored by default", "exit 3");
  EndAtTeardown(process, "fake", {tmp.Join("log")});  // No failure: nothing is checked.
  EXPECT_TRUE(process.running());                     // ~ChildProcess kills it.
}

TEST(EndAtTeardown, PassesWhenTheServerExitsZeroOnSigterm) {
  ScopedEnv graceful("KV_STOP_GRACEFULLY", "1");
  TempDir tmp;
  ChildProcess process;
  StartFakeServer(process, tmp.Join("log"), "serving", "exit 0");
  EndAtTeardown(process, "fake", {tmp.Join("log")});
  EXPECT_FALSE(process.running());
}

TEST(EndAtTeardown, ContinuesAStoppedServerBeforeItsSigterm) {
  ScopedEnv graceful("KV_STOP_GRACEFULLY", "1");
  TempDir tmp;
  ChildProcess process;
  StartFakeServer(process, tmp.Join("log"), "serving", "exit 0");
  ASSERT_TRUE(process.Kill(SIGSTOP).ok());
  EndAtTeardown(process, "fake", {tmp.Join("log")});
  EXPECT_FALSE(process.running());
}

TEST(EndAtTeardown, FailsTheTestWhenTheServerExitsNonZeroOnSigterm) {
  ScopedEnv graceful("KV_STOP_GRACEFULLY", "1");
  TempDir tmp;
  ChildProcess process;
  StartFakeServer(process, tmp.Join("log"), "serving", "exit 23");
  EXPECT_NONFATAL_FAILURE(EndAtTeardown(process, "fake", {tmp.Join("log")}),
                          "fake did not stop cleanly on SIGTERM at teardown: exit code 23");
}

TEST(EndAtTeardown, FailsTheTestOnASanitizerReportInAnyLog) {
  ScopedEnv graceful("KV_STOP_GRACEFULLY", "1");
  TempDir tmp;
  const std::string first = tmp.Join("fake-1.log");
  {
    ChildProcess earlier;
    StartFakeServer(earlier, first, "store.cc:12:5: runtime error: signed integer overflow",
                    "exit 0");
  }
  ChildProcess process;
  StartFakeServer(process, tmp.Join("fake-2.log"), "serving", "exit 0");
  EXPECT_NONFATAL_FAILURE(EndAtTeardown(process, "fake", {first, tmp.Join("fake-2.log")}),
                          "fake: a sanitizer report in " + first);
  EXPECT_FALSE(process.running());
}

}  // namespace
}  // namespace kvstore

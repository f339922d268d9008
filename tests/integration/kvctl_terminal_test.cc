// kvctl with no command on a terminal, as a user at a prompt sees it: a real
// kv-shard on 127.0.0.1 and kvctl on a pseudo-terminal (forkpty), driven by
// what a person would type. Invariants: the banner names the address, every
// command is answered after its prompt, the up arrow recalls the previous
// line (libedit's history), errors leave the session open, and the history
// is saved to KVCTL_HISTFILE on exit.
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/process.h"

namespace kvstore {
namespace {

using ::kvstore::testing::ReadFileOrEmpty;
using ::kvstore::testing::ShardGroup;
using ::kvstore::testing::TempDir;
using ::testing::HasSubstr;

// One kvctl on the child side of a pseudo-terminal. Everything it prints is
// kept in `transcript()`; the destructor kills it (by pid) if it still runs.
class TerminalSession {
 public:
  TerminalSession() = default;
  TerminalSession(const TerminalSession&) = delete;
  TerminalSession& operator=(const TerminalSession&) = delete;
  ~TerminalSession() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (master_ >= 0) close(master_);
  }

  // Starts `argv` with `env` added to this process's environment.
  bool Start(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
    struct winsize size = {};
    size.ws_row = 40;
    size.ws_col = 200;  // Wide enough that libedit never wraps a line.
    pid_ = forkpty(&master_, nullptr, nullptr, &size);
    if (pid_ < 0) return false;
    if (pid_ == 0) {
      for (const std::string& e : env) putenv(const_cast<char*>(e.c_str()));
      std::vector<char*> args;
      for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    fcntl(master_, F_SETFL, fcntl(master_, F_GETFL) | O_NONBLOCK);
    return true;
  }

  // Reads until the transcript, from `from` on, contains `text` or the
  // deadline passes; returns whether it does.
  bool WaitFor(const std::string& text, size_t from, absl::Duration timeout = absl::Seconds(20)) {
    const absl::Time deadline = absl::Now() + timeout;
    while (transcript_.find(text, from) == std::string::npos) {
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) return false;
      struct pollfd p = {master_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1) <= 0) continue;
      char buf[4096];
      const ssize_t n = read(master_, buf, sizeof buf);
      if (n > 0) {
        transcript_.append(buf, static_cast<size_t>(n));
      } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        return transcript_.find(text, from) != std::string::npos;  // The child is gone.
      }
    }
    return true;
  }

  // Types `keys` as a person would.
  void Type(const std::string& keys) {
    for (size_t done = 0; done < keys.size();) {
      const ssize_t n = write(master_, keys.data() + done, keys.size() - done);
      if (n > 0) done += static_cast<size_t>(n);
    }
  }

  // Waits for the child to exit; its exit code, or -1.
  int WaitExit(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      WaitFor("\x01never\x01", transcript_.size(), absl::Milliseconds(50));  // Drains output.
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
    }
    return -1;
  }

  const std::string& transcript() const { return transcript_; }

 private:
  pid_t pid_ = -1;
  int master_ = -1;
  std::string transcript_;
};

TEST(KvctlTerminalTest, APromptAnswersEachLineRecallsHistoryAndSavesIt) {
  TempDir tmp;
  ShardGroup shard(tmp.Join("shard"), KV_SHARD_BIN, KV_REPLICA_BIN, 0);
  ASSERT_TRUE(shard.Start({"--fsync=no"}, {}).ok()) << shard.LogTails();
  const std::string addr = shard.leader().address();
  const std::string history = tmp.Join("history");

  TerminalSession kvctl;
  ASSERT_TRUE(kvctl.Start({KVCTL_BIN, absl::StrCat("--addr=", addr)},
                          {"TERM=xterm", absl::StrCat("KVCTL_HISTFILE=", history)}));
  const std::string prompt = absl::StrCat("kvctl ", addr, "> ");
  ASSERT_TRUE(kvctl.WaitFor(absl::StrCat("connected to ", addr), 0)) << kvctl.transcript();
  ASSERT_TRUE(kvctl.WaitFor(prompt, 0)) << kvctl.transcript();

  // A write and a read, each answered before the next prompt.
  size_t mark = kvctl.transcript().size();
  kvctl.Type("set greeting 'hello there'\r");
  ASSERT_TRUE(kvctl.WaitFor("OK version=", mark)) << kvctl.transcript();
  ASSERT_TRUE(kvctl.WaitFor(prompt, mark)) << kvctl.transcript();
  mark = kvctl.transcript().size();
  kvctl.Type("get greeting\r");
  ASSERT_TRUE(kvctl.WaitFor("hello there", mark)) << kvctl.transcript();
  ASSERT_TRUE(kvctl.WaitFor(prompt, mark)) << kvctl.transcript();

  // The up arrow brings back "get greeting"; running it answers again.
  mark = kvctl.transcript().size();
  kvctl.Type("\x1b[A\r");
  ASSERT_TRUE(kvctl.WaitFor("hello there", mark)) << kvctl.transcript();
  ASSERT_TRUE(kvctl.WaitFor(prompt, mark)) << kvctl.transcript();

  // A missing key and a bad command are reported; the session goes on.
  mark = kvctl.transcript().size();
  kvctl.Type("get nobody\r");
  ASSERT_TRUE(kvctl.WaitFor("NOT_FOUND", mark)) << kvctl.transcript();
  mark = kvctl.transcript().size();
  kvctl.Type("frobnicate\r");
  ASSERT_TRUE(kvctl.WaitFor(prompt, mark)) << kvctl.transcript();
  mark = kvctl.transcript().size();
  kvctl.Type("ttl greeting\r");
  ASSERT_TRUE(kvctl.WaitFor("-1", mark)) << "no expiry: " << kvctl.transcript();
  ASSERT_TRUE(kvctl.WaitFor(prompt, mark)) << kvctl.transcript();

  kvctl.Type("quit\r");
  EXPECT_EQ(kvctl.WaitExit(absl::Seconds(20)), 0) << kvctl.transcript();
  // libedit's file format: a header line, then one line per entry with
  // blanks written as \040. The recalled line is an entry of its own.
  const std::string saved = ReadFileOrEmpty(history);
  EXPECT_THAT(saved, HasSubstr("set\\040greeting\\040'hello\\040there'\n"));
  EXPECT_THAT(saved, HasSubstr("get\\040greeting\nget\\040greeting\nget\\040nobody\n"));
}

}  // namespace
}  // namespace kvstore

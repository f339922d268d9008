#include "tests/support/child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace kvstore {
namespace testing {
namespace {

absl::Status ErrnoError(const std::string& what, int err) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(err)));
}

int OpenForOutput(const std::string& path) {
  return ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
}

}  // namespace

// ---------------------------------------------------------------- TempDir

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern =
      absl::StrCat((base != nullptr && *base != '\0') ? base : "/tmp", "/kvstore-test-XXXXXX");
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp(" << pattern << "): " << std::strerror(errno);
    return;
  }
  path_ = buf.data();
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  if (::testing::Test::HasFailure()) {
    std::fprintf(stderr, "[  KEPT    ] the test failed; its files are in %s\n", path_.c_str());
    return;
  }
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
  if (ec) std::fprintf(stderr, "removing %s: %s\n", path_.c_str(), ec.message().c_str());
}

std::string TempDir::Join(const std::string& name) const { return absl::StrCat(path_, "/", name); }

// ---------------------------------------------------------------- ExitStatus

std::string ExitStatus::ToString() const {
  if (exited) return absl::StrCat("exit code ", code);
  return absl::StrCat("killed by signal ", signal, " (", strsignal(signal), ")");
}

// ---------------------------------------------------------------- ChildProcess

ChildProcess::~ChildProcess() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

absl::Status ChildProcess::Start(const std::string& binary, const std::vector<std::string>& args,
                                 const std::string& stdout_path, const std::string& stderr_path) {
  if (pid_ > 0) return absl::FailedPreconditionError("the child is still running");

  // Everything the child needs is prepared before fork(): between fork and
  // exec only async-signal-safe calls are allowed (gRPC threads may hold locks).
  std::vector<std::string> argv_storage;
  argv_storage.push_back(binary);
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);

  const int out_fd = OpenForOutput(stdout_path);
  if (out_fd < 0) return ErrnoError(absl::StrCat("open ", stdout_path), errno);
  int err_fd = out_fd;
  if (!stderr_path.empty()) {
    err_fd = OpenForOutput(stderr_path);
    if (err_fd < 0) {
      const int e = errno;
      ::close(out_fd);
      return ErrnoError(absl::StrCat("open ", stderr_path), e);
    }
  }
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  // The child reports a failed exec through this pipe; a successful exec
  // closes it (O_CLOEXEC) and the parent reads end-of-file.
  int exec_pipe[2];
  if (null_fd < 0 || ::pipe2(exec_pipe, O_CLOEXEC) != 0) {
    const int e = errno;
    ::close(out_fd);
    if (err_fd != out_fd) ::close(err_fd);
    if (null_fd >= 0) ::close(null_fd);
    return ErrnoError("open /dev/null or pipe", e);
  }

  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    // Child. Die with the test process, so a crashed or timed-out test
    // leaves no server behind.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    ::dup2(null_fd, STDIN_FILENO);
    ::dup2(out_fd, STDOUT_FILENO);
    ::dup2(err_fd, STDERR_FILENO);
    ::execv(binary.c_str(), argv.data());
    const int e = errno;
    ssize_t ignored = ::write(exec_pipe[1], &e, sizeof(e));
    (void)ignored;
    ::_exit(127);
  }
  const int fork_errno = errno;
  ::close(exec_pipe[1]);
  ::close(out_fd);
  if (err_fd != out_fd) ::close(err_fd);
  ::close(null_fd);
  if (pid < 0) {
    ::close(exec_pipe[0]);
    return ErrnoError("fork", fork_errno);
  }
  pid_ = pid;

  int exec_errno = 0;
  ssize_t n;
  do {
    n = ::read(exec_pipe[0], &exec_errno, sizeof(exec_errno));
  } while (n < 0 && errno == EINTR);
  ::close(exec_pipe[0]);
  if (n > 0) {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return ErrnoError(absl::StrCat("exec ", binary), exec_errno);
  }
  return absl::OkStatus();
}

absl::Status ChildProcess::Kill(int signal) {
  if (pid_ <= 0) return absl::FailedPreconditionError("no child is running");
  if (::kill(pid_, signal) != 0) return ErrnoError(absl::StrCat("kill ", pid_), errno);
  return absl::OkStatus();
}

absl::StatusOr<ExitStatus> ChildProcess::WaitExit(absl::Time deadline) {
  if (pid_ <= 0) return absl::FailedPreconditionError("no child is running");
  ExitStatus result;
  bool ended = false;
  absl::Status error;
  WaitFor(
      [&] {
        int status = 0;
        const pid_t r = ::waitpid(pid_, &status, WNOHANG);
        if (r == 0) return false;
        if (r < 0) {
          if (errno == EINTR) return false;
          error = ErrnoError(absl::StrCat("waitpid ", pid_), errno);
          return true;
        }
        ended = true;
        if (WIFEXITED(status)) {
          result.exited = true;
          result.code = WEXITSTATUS(status);
        } else if (WIFSIGNALED(status)) {
          result.signal = WTERMSIG(status);
        }
        return true;
      },
      deadline);
  if (!error.ok()) return error;
  if (!ended) {
    return absl::DeadlineExceededError(absl::StrCat("pid ", pid_, " still runs"));
  }
  pid_ = -1;
  return result;
}

absl::StatusOr<ExitStatus> ChildProcess::KillHard(absl::Duration timeout) {
  if (absl::Status s = Kill(SIGKILL); !s.ok()) return s;
  return WaitExit(absl::Now() + timeout);
}

// ---------------------------------------------------------------- helpers

bool WaitFor(const std::function<bool()>& done, absl::Time deadline, absl::Duration interval) {
  for (;;) {
    if (done()) return true;
    const absl::Time now = absl::Now();
    if (now >= deadline) return false;
    absl::SleepFor(std::min(interval, deadline - now));
  }
}

std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string FileTail(const std::string& path, size_t max_bytes) {
  std::string all = ReadFileOrEmpty(path);
  if (all.size() <= max_bytes) return all;
  return absl::StrCat("...", all.substr(all.size() - max_bytes));
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace testing
}  // namespace kvstore

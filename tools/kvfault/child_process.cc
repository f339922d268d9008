#include "tools/kvfault/child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"

namespace kvstore::fault {
namespace {

// Pids to kill from the signal handler: a fixed table of atomics, because a
// handler may only use async-signal-safe operations.
constexpr int kMaxPids = 256;
std::atomic<pid_t> g_pids[kMaxPids];

void KillRemembered(int sig) {
  for (auto& p : g_pids) {
    const pid_t pid = p.load();
    if (pid > 0) kill(pid, SIGKILL);
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

}  // namespace

std::string ExitStatus::ToString() const {
  if (exited) return absl::StrCat("exit code ", code);
  return absl::StrCat("killed by signal ", signal, " (", strsignal(signal), ")");
}

absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv, const std::string& log_path,
                            const std::vector<std::string>& env) {
  if (argv.empty()) return absl::InvalidArgumentError("empty command");
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  // The environment is built before fork: the child may only make
  // async-signal-safe calls, and setenv allocates.
  std::vector<char*> envp;
  for (char** e = environ; *e != nullptr; ++e) {
    const absl::string_view var(*e);
    bool replaced = false;
    for (const std::string& x : env) {
      const size_t eq = x.find('=');
      replaced |=
          var.size() > eq && var.substr(0, eq + 1) == absl::string_view(x).substr(0, eq + 1);
    }
    if (!replaced) envp.push_back(*e);
  }
  for (const std::string& x : env) envp.push_back(const_cast<char*>(x.c_str()));
  envp.push_back(nullptr);
  const int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    return absl::InternalError(absl::StrCat("open ", log_path, ": ", strerror(errno)));
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    close(log_fd);
    return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  }
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // The driver died before prctl.
    const int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd >= 0) dup2(null_fd, 0);
    dup2(log_fd, 1);
    dup2(log_fd, 2);
    execve(args[0], args.data(), envp.data());
    const char msg[] = "kvfault: exec failed\n";
    (void)!write(2, msg, sizeof(msg) - 1);
    _exit(127);
  }
  close(log_fd);
  RememberPid(pid);
  return pid;
}

absl::StatusOr<ExitStatus> WaitExit(pid_t pid, absl::Time deadline) {
  while (true) {
    int status = 0;
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      ForgetPid(pid);
      ExitStatus e;
      if (WIFEXITED(status)) {
        e.exited = true;
        e.code = WEXITSTATUS(status);
      } else if (WIFSIGNALED(status)) {
        e.signal = WTERMSIG(status);
      }
      return e;
    }
    if (r < 0) {
      return absl::NotFoundError(absl::StrCat("waitpid ", pid, ": ", strerror(errno)));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("pid ", pid, " still runs"));
    }
    absl::SleepFor(absl::Milliseconds(5));  // Polling for the exit, with a deadline.
  }
}

absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         const std::string& log_path, absl::Duration timeout) {
  { std::ofstream truncate(log_path, std::ios::trunc); }
  absl::StatusOr<pid_t> pid = Spawn(argv, log_path);
  if (!pid.ok()) return pid.status();
  absl::StatusOr<ExitStatus> exit = WaitExit(*pid, absl::Now() + timeout);
  if (!exit.ok()) {
    kill(*pid, SIGKILL);
    (void)WaitExit(*pid, absl::InfiniteFuture());
    return absl::DeadlineExceededError(
        absl::StrCat(ShellQuote(argv), " did not exit within ", absl::FormatDuration(timeout)));
  }
  CommandResult result;
  result.status = *exit;
  std::ifstream in(log_path);
  std::ostringstream text;
  text << in.rdbuf();
  result.output = text.str();
  return result;
}

std::string ShellQuote(const std::vector<std::string>& argv) {
  std::vector<std::string> out;
  for (const std::string& a : argv) {
    const bool plain = !a.empty() && a.find_first_not_of(
                                         "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN"
                                         "OPQRSTUVWXYZ0123456789-_./=:,+@") == std::string::npos;
    if (plain) {
      out.push_back(a);
    } else {
      std::string q = "'";
      for (char c : a) {
        if (c == '\'')
          q += "'\\''";
        else
          q += c;
      }
      out.push_back(q + "'");
    }
  }
  return absl::StrJoin(out, " ");
}

void RememberPid(pid_t pid) {
  for (auto& p : g_pids) {
    pid_t empty = 0;
    if (p.compare_exchange_strong(empty, pid)) return;
  }
}

void ForgetPid(pid_t pid) {
  for (auto& p : g_pids) {
    pid_t mine = pid;
    if (p.compare_exchange_strong(mine, 0)) return;
  }
}

void InstallSignalCleanup() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = KillRemembered;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

}  // namespace kvstore::fault

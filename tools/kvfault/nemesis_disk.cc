#include "tools/kvfault/nemesis_disk.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "tools/kvfault/bit_flip.h"
#include "tools/kvfault/child_process.h"
#include "tools/kvfault/nemesis.h"

namespace kvstore::fault {
namespace {

constexpr char kFaketimeLib[] = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
constexpr char kFillFile[] = "kvfault-fill";

bool Selected(const std::vector<std::string>& names, const std::string& node) {
  for (const std::string& n : names) {
    if (n == "all" || n == node) return true;
  }
  return false;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::Status MountTmpfs(const std::string& dir, int64_t size_mib, bool remount) {
  const std::string options = absl::StrCat("size=", size_mib, "m");
  const unsigned long flags = remount ? MS_REMOUNT : 0;  // NOLINT(runtime/int): mount(2)'s type.
  if (::mount("tmpfs", dir.c_str(), "tmpfs", flags, options.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("mount -t tmpfs -o ", remount ? "remount," : "",
                                            options, " tmpfs ", dir, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

// The newest snapshot file of a data dir ("" if none).
std::string NewestSnapshot(const std::string& data_dir) {
  std::string newest;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(data_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (absl::StartsWith(name, "snap-") && absl::EndsWith(name, ".snap") && name > newest) {
      newest = name;
    }
  }
  return newest;
}

// fiu-ctrl (Debian fiu-utils) on PATH; Spawn runs a path, not a name.
std::string FiuCtrl() {
  const char* path = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path ? path : "/usr/bin:/bin", ':')) {
    const std::string candidate = absl::StrCat(dir, "/fiu-ctrl");
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "/usr/bin/fiu-ctrl";
}

}  // namespace

std::string FaketimePath(const Node& node) { return node.dir() + "/faketime"; }

absl::Status PrepareDiskFaults(const Scenario& scenario, Cluster* cluster,
                               std::vector<std::string>* mounts) {
  if (!scenario.tmpfs_nodes.empty() && geteuid() != 0) {
    return absl::FailedPreconditionError(
        "a data dir on a size-limited tmpfs needs root (mount -t tmpfs)");
  }
  if (!scenario.faketime.empty() && access(kFaketimeLib, R_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(kFaketimeLib, " is missing (Debian package libfaketime)"));
  }
  for (Node* n : cluster->nodes()) {
    if (Selected(scenario.tmpfs_nodes, n->name())) {
      std::filesystem::create_directories(n->data_dir());
      if (absl::Status s = MountTmpfs(n->data_dir(), scenario.tmpfs_size_mib, false); !s.ok()) {
        return s;
      }
      mounts->push_back(n->data_dir());
      std::printf("  tmpfs: mount -t tmpfs -o size=%lldm tmpfs %s\n",
                  static_cast<long long>(scenario.tmpfs_size_mib), n->data_dir().c_str());
    }
    if (Selected(scenario.faketime, n->name())) {
      std::filesystem::create_directories(n->dir());
      std::ofstream(FaketimePath(*n)) << "+0\n";
      n->extra_env = {absl::StrCat("LD_PRELOAD=", kFaketimeLib),
                      absl::StrCat("FAKETIME_TIMESTAMP_FILE=", FaketimePath(*n)),
                      "FAKETIME_NO_CACHE=1", "FAKETIME_DONT_FAKE_MONOTONIC=1"};
    }
  }
  return absl::OkStatus();
}

void ReleaseDiskFaults(const std::vector<std::string>& mounts) {
  for (const std::string& m : mounts) {
    // The data goes with the mount: keep a copy beside it (without the fill
    // file) for a failed run's post-mortem; a passed run's directory is removed.
    std::error_code ec;
    const std::string kept = m + ".tmpfs-copy";
    std::filesystem::create_directories(kept, ec);
    for (const auto& e : std::filesystem::directory_iterator(m, ec)) {
      if (e.path().filename() == kFillFile || !e.is_regular_file()) continue;
      std::filesystem::copy_file(e.path(), std::filesystem::path(kept) / e.path().filename(),
                                 std::filesystem::copy_options::overwrite_existing, ec);
    }
    if (::umount2(m.c_str(), MNT_DETACH) != 0) {
      std::printf("kvfault: umount %s: %s\n", m.c_str(), std::strerror(errno));
    }
  }
}

int CleanupCommand() {
  std::istringstream mounts(ReadAll("/proc/self/mounts"));
  int removed = 0;
  int failed = 0;
  for (std::string line; std::getline(mounts, line);) {
    const std::vector<std::string> f = absl::StrSplit(line, ' ');
    if (f.size() < 3 || f[2] != "tmpfs") continue;
    const std::string& point = f[1];
    if (point.find("/kvfault-") == std::string::npos ||
        point.find("/nodes/") == std::string::npos || !absl::EndsWith(point, "/data")) {
      continue;
    }
    if (::umount2(point.c_str(), MNT_DETACH) == 0) {
      std::printf("umount %s\n", point.c_str());
      ++removed;
    } else {
      std::printf("umount %s: %s\n", point.c_str(), std::strerror(errno));
      ++failed;
    }
  }
  std::printf("kvfault cleanup: %d tmpfs mount(s) removed\n", removed);
  return failed == 0 ? 0 : 1;
}

absl::Status Nemesis::ExecuteDisk(int index, const Step& step, Node* node) {
  if (step.action == "clock") {
    std::vector<Node*> targets;
    for (Node* n : cluster_->nodes()) {
      const bool leads = n->name() == cluster_->leader();
      if (step.node == "all" || (step.node == "leader" && leads) ||
          (step.node == "followers" && !leads) || step.node == n->name()) {
        targets.push_back(n);
      }
    }
    done_.push_back(StepRecord{step.action, step.node, clock_->NowNs()});
    for (Node* n : targets) {
      std::ofstream out(FaketimePath(*n), std::ios::trunc);
      out << step.clock << "\n";
      out.close();
      absl::Status s = out ? absl::OkStatus()
                           : absl::InternalError(absl::StrCat("cannot write ", FaketimePath(*n)));
      Log(index, "clock", n->name(), absl::StrCat("echo '", step.clock, "' > ", FaketimePath(*n)),
          s, "");
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
  if (node == nullptr) return absl::InvalidArgumentError(step.action + " needs a node");
  done_.push_back(StepRecord{step.action, node->name(), clock_->NowNs()});

  // Waits for `node` to die on its own (a failpoint, a crash on a failed
  // write) within the step's exit_within_s, and marks it down.
  auto await_exit = [&](const std::string& why) -> absl::Status {
    if (step.exit_within_s <= 0) return absl::OkStatus();
    const pid_t pid = node->pid;
    absl::StatusOr<ExitStatus> exit =
        WaitExit(pid, absl::Now() + absl::Milliseconds(1000 * step.exit_within_s));
    if (!exit.ok()) {
      absl::Status s = absl::DeadlineExceededError(
          absl::StrCat(node->name(), " (pid ", pid, ") still runs ", step.exit_within_s,
                       " s after ", why, ": it kept going past the fault"));
      Log(index, "await-exit", node->name(), absl::StrCat("(wait for pid ", pid, " to exit)"), s,
          "");
      return s;
    }
    node->state = NodeState::kDown;
    node->pid = -1;
    // Why it stopped: the fatal line of its log (glog's "F<date>"), if any.
    const std::string log = ReadAll(node->log_path());
    std::string why_stopped = "no fatal line in its log";
    if (const size_t at = log.rfind("\nF"); at != std::string::npos) {
      const size_t end = log.find('\n', at + 1);
      why_stopped = log.substr(at + 1, std::min<size_t>(end - at - 1, 400));
    }
    Log(index, "await-exit", node->name(), absl::StrCat("(wait for pid ", pid, " to exit)"),
        absl::OkStatus(), absl::StrCat(exit->ToString(), "; ", why_stopped));
    return absl::OkStatus();
  };

  if (step.action == "failpoint") {
    if (node->state != NodeState::kRunning) {
      return absl::FailedPreconditionError(absl::StrCat(node->name(), " is not running"));
    }
    const std::vector<std::string> command = {
        FiuCtrl(),
        "-f",
        node->data_dir() + "/fiu-ctrl",
        "-c",
        absl::StrCat("enable name=", step.failpoint, ",failnum=", step.failnum),
        absl::StrCat(node->pid)};
    absl::StatusOr<CommandResult> r =
        RunCommand(command, node->dir() + "/fiu-ctrl.log", absl::Seconds(10));
    absl::Status s = r.status();
    if (s.ok() && (!r->status.exited || r->status.code != 0)) {
      s = absl::InternalError(absl::StrCat(r->status.ToString(), ": ", r->output));
    }
    Log(index, "failpoint", node->name(), ShellQuote(command), s, "");
    if (!s.ok()) return s;
    return await_exit(absl::StrCat("failpoint ", step.failpoint, " was enabled"));
  }
  if (step.action == "await-exit") {
    if (node->state == NodeState::kDown) {
      return absl::FailedPreconditionError(absl::StrCat(node->name(), " is not running"));
    }
    return await_exit("its restart");
  }
  if (step.action == "fill-disk") {
    const std::string path = node->data_dir() + "/" + kFillFile;
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return absl::InternalError(absl::StrCat("open ", path, ": ", std::strerror(errno)));
    const std::string zeros(1 << 16, '\0');
    int64_t written = 0;
    int err = 0;
    // Bounded by the tmpfs's size: the loop ends at ENOSPC.
    while (true) {
      const ssize_t n = ::write(fd, zeros.data(), zeros.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        err = errno;
        break;
      }
      written += n;
    }
    ::close(fd);
    absl::Status s = err == ENOSPC ? absl::OkStatus()
                                   : absl::InternalError(absl::StrCat(
                                         "filling ", path, " stopped with ", std::strerror(err)));
    Log(index, "fill-disk", node->name(),
        absl::StrCat("dd if=/dev/zero of=", path, " bs=64k  # until ENOSPC"), s,
        absl::StrCat(written, " bytes written, then ", std::strerror(err)));
    if (!s.ok()) return s;
    return await_exit("its disk filled up");
  }
  if (step.action == "grow-disk") {
    absl::Status s = MountTmpfs(node->data_dir(), step.size_mib, true);
    Log(index, "grow-disk", node->name(),
        absl::StrCat("mount -o remount,size=", step.size_mib, "m ", node->data_dir()), s, "");
    return s;
  }
  if (step.action == "bitflip-live") {
    // A new snapshot first: the flipped one must stay the newest while the
    // follower's resync looks for it.
    const std::string before = NewestSnapshot(node->data_dir());
    const absl::Time deadline = absl::Now() + absl::Milliseconds(1000 * step.wait_s);
    std::string newest = before;
    while (newest == before && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(20));  // Polling with a deadline.
      newest = NewestSnapshot(node->data_dir());
    }
    if (newest.empty() || newest == before) {
      return absl::DeadlineExceededError(
          absl::StrCat("no new snapshot in ", node->data_dir(), " within ", step.wait_s, " s"));
    }
    // The file is complete once renamed; flipping a byte of it in place is
    // what a disk's silent corruption does to a file nobody writes any more.
    const std::string file = node->data_dir() + "/" + newest;
    std::error_code ec;
    const int64_t size = static_cast<int64_t>(std::filesystem::file_size(file, ec));
    const uint64_t seed = rng_();
    absl::StatusOr<BitFlip> flip = kvstore::fault::FlipBit(
        file, std::nullopt, seed, size / 4, std::max<int64_t>(size / 4 + 1, size * 3 / 4));
    Log(index, "bitflip-live", node->name(),
        ShellQuote({"kvfault", "bitflip", "--file", file, "--offset",
                    flip.ok() ? absl::StrCat(flip->offset) : "?", "--seed", absl::StrCat(seed)}),
        flip.status(), flip.ok() ? flip->ToString() : "");
    if (!flip.ok()) return flip.status();
    last_flip_ = *flip;
    return absl::OkStatus();
  }
  if (step.action == "record-index") {
    // What the node holds durably: a kill -9 right after may take back an
    // entry it had applied but not yet synced (it never acknowledged that
    // one to its leader), so last_index would be a claim the node never made.
    absl::StatusOr<v1::StatusResponse> st =
        FetchStatus(cluster_->Channel(node->address), absl::Seconds(5));
    Log(index, "record-index", node->name(), "(Admin.Status durable_index)", st.status(),
        st.ok() ? absl::StrCat("holds index ", st->durable_index(), " durably (last index ",
                               st->last_index(), ")")
                : "");
    if (!st.ok()) return st.status();
    held_index_ = static_cast<int64_t>(st->durable_index());
    return absl::OkStatus();
  }
  if (step.action == "watch-index") {
    if (held_index_ < 0) return absl::FailedPreconditionError("no record-index step before");
    const absl::Time deadline = absl::Now() + absl::Milliseconds(1000 * step.wait_s);
    int64_t lowest = -1;
    uint64_t samples = 0;
    bool caught_up = false;
    while (absl::Now() < deadline) {
      absl::StatusOr<v1::StatusResponse> st =
          FetchStatus(cluster_->Channel(node->address), absl::Seconds(1));
      Node* leader = cluster_->Find(cluster_->leader());
      absl::StatusOr<uint64_t> leader_last = cluster_->LastIndex(*leader);
      if (st.ok()) {
        ++samples;
        const int64_t at = static_cast<int64_t>(st->last_index());
        if (lowest < 0 || at < lowest) lowest = at;
        if (leader_last.ok() && st->last_index() + 50 >= *leader_last &&
            st->last_index() > static_cast<uint64_t>(held_index_)) {
          caught_up = true;
          break;
        }
      }
      absl::SleepFor(absl::Milliseconds(5));  // Polling with a deadline.
    }
    absl::Status s;
    if (lowest < held_index_) {
      s = absl::DataLossError(absl::StrCat(node->name(), " held index ", held_index_,
                                           " but was seen at ", lowest, " during its resync"));
    } else if (!caught_up) {
      s = absl::DeadlineExceededError(
          absl::StrCat(node->name(), " did not catch up within ", step.wait_s, " s"));
    }
    std::string note = absl::StrCat("held ", held_index_, ", lowest seen ", lowest, " in ", samples,
                                    " samples", caught_up ? ", caught up" : "");
    if (s.ok() && !step.expect_log.empty()) {
      Node* leader = cluster_->Find(cluster_->leader());
      const std::string log = ReadAll(leader->log_path());
      const std::string damaged =
          last_flip_.has_value() ? std::filesystem::path(last_flip_->file).filename().string() : "";
      size_t at = log.find(step.expect_log);
      while (at != std::string::npos && !damaged.empty()) {
        const size_t line_start = log.rfind('\n', at);
        const size_t line_end = log.find('\n', at);
        const std::string line =
            log.substr(line_start == std::string::npos ? 0 : line_start + 1, line_end - line_start);
        if (line.find(damaged) != std::string::npos) break;
        at = log.find(step.expect_log, at + 1);
      }
      if (at == std::string::npos) {
        s = absl::DataLossError(absl::StrCat("the leader's log (", leader->log_path(),
                                             ") never reports '", step.expect_log, "' for ",
                                             damaged.empty() ? "a damaged file" : damaged));
      } else {
        absl::StrAppend(&note, "; the leader reports ", damaged, " '", step.expect_log, "'");
      }
    }
    Log(index, "watch-index", node->name(), "(poll Admin.Status last_index)", s, note);
    return s;
  }
  if (step.action == "truncate-log") {
    if (node->state != NodeState::kDown) {
      return absl::FailedPreconditionError(absl::StrCat(node->name(), " must be down"));
    }
    std::string newest;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(node->data_dir(), ec)) {
      const std::string name = e.path().filename().string();
      if (absl::StartsWith(name, "wal-") && absl::EndsWith(name, ".log") && name > newest) {
        newest = name;
      }
    }
    if (newest.empty()) return absl::FailedPreconditionError("no log segment to cut");
    const std::string file = node->data_dir() + "/" + newest;
    const int64_t size = static_cast<int64_t>(std::filesystem::file_size(file, ec));
    const int64_t keep = std::max<int64_t>(64, size - step.bytes);
    std::filesystem::resize_file(file, static_cast<uintmax_t>(keep), ec);
    absl::Status s = ec ? absl::InternalError(absl::StrCat("truncate ", file, ": ", ec.message()))
                        : absl::OkStatus();
    Log(index, "truncate-log", node->name(), absl::StrCat("truncate -s ", keep, " ", file), s,
        absl::StrCat("cut ", size - keep, " of ", size, " bytes"));
    return s;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown action ", step.action));
}

}  // namespace kvstore::fault

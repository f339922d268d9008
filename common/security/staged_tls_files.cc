#include "common/security/staged_tls_files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace kvstore {
namespace {

constexpr const char* kNames[] = {"key.pem", "cert.pem", "ca.pem"};

absl::Status Errno(const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", strerror(errno)));
}

std::string GenerationDir(uint64_t n) { return absl::StrCat("gen-", n); }

// A memfd holding `data` with modification time `mtime` (seconds).
absl::StatusOr<int> MemoryFile(const char* name, const std::string& data, int64_t mtime) {
  const int fd = memfd_create(name, MFD_CLOEXEC);
  if (fd < 0) return Errno("memfd_create");
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      absl::Status s = Errno("write to memfd");
      ::close(fd);
      return s;
    }
    done += static_cast<size_t>(n);
  }
  const timespec times[2] = {{static_cast<time_t>(mtime), 0}, {static_cast<time_t>(mtime), 0}};
  if (::futimens(fd, times) != 0) {
    absl::Status s = Errno("futimens on memfd");
    ::close(fd);
    return s;
  }
  return fd;
}

constexpr char kPrefix[] = "kvstore-tls-";
constexpr char kLockName[] = "owner.lock";

// Removes what a StagedTlsFiles directory can hold: the generations' links,
// the generations, the current links, the lock, then the directory. Only
// those names: anything else in it makes the final rmdir fail, and the
// directory stays.
void RemoveStagingDirectory(const std::string& dir) {
  if (DIR* d = ::opendir(dir.c_str()); d != nullptr) {
    while (const dirent* entry = ::readdir(d)) {
      const std::string name = entry->d_name;
      if (!absl::StartsWith(name, "gen-")) continue;
      for (const char* file : kNames) ::unlink(absl::StrCat(dir, "/", name, "/", file).c_str());
      ::rmdir(absl::StrCat(dir, "/", name).c_str());
    }
    ::closedir(d);
  }
  for (const char* name : {"current", "current.tmp", kLockName}) {
    ::unlink(absl::StrCat(dir, "/", name).c_str());
  }
  ::unlink(absl::StrCat(dir, "/", kLockName, ".tmp").c_str());
  ::rmdir(dir.c_str());
}

// The staging directories under `base` whose owner is gone: their lock can
// be taken. A directory without a lock file is left alone: it is being
// created right now (the lock follows mkdtemp at once), or belongs to a
// process of a version without locks, which may still be using it.
int RemoveStaleStagingDirectories(const std::string& base) {
  DIR* d = ::opendir(base.c_str());
  if (d == nullptr) return 0;
  std::vector<std::string> candidates;
  while (const dirent* entry = ::readdir(d)) {
    if (absl::StartsWith(entry->d_name, kPrefix)) candidates.push_back(entry->d_name);
  }
  ::closedir(d);
  int removed = 0;
  for (const std::string& name : candidates) {
    const std::string dir = absl::StrCat(base, "/", name);
    struct stat st;
    if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid())
      continue;
    const int fd = ::open(absl::StrCat(dir, "/", kLockName).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd);  // Its owner lives.
      continue;
    }
    RemoveStagingDirectory(dir);
    ::close(fd);
    LOG(INFO) << "Removed " << dir << ", the TLS staging directory of a process that is gone "
              << "(dangling links only, no key material)";
    ++removed;
  }
  return removed;
}

}  // namespace

absl::StatusOr<std::unique_ptr<StagedTlsFiles>> StagedTlsFiles::Create(const TlsContents& contents,
                                                                       int* stale_removed) {
  const char* tmpdir = std::getenv("TMPDIR");
  const std::string base = tmpdir != nullptr && *tmpdir != '\0' ? tmpdir : "/tmp";
  const int removed = RemoveStaleStagingDirectories(base);
  if (stale_removed != nullptr) *stale_removed = removed;
  std::string pattern = absl::StrCat(base, "/", kPrefix, "XXXXXX");
  if (::mkdtemp(pattern.data()) == nullptr) return Errno(absl::StrCat("mkdtemp ", pattern));
  std::unique_ptr<StagedTlsFiles> staged(
      new StagedTlsFiles(pattern, !contents.cert.empty(), !contents.ca.empty()));
  if (absl::Status s = staged->LockOwnership(); !s.ok()) return s;
  if (absl::Status s = staged->Publish(contents); !s.ok()) return s;
  return staged;
}

absl::Status StagedTlsFiles::LockOwnership() {
  // Locked under another name, then renamed into place: another process's
  // sweep must never find owner.lock before it is held, or it would take the
  // directory for a dead owner's while this one is being set up.
  const std::string tmp = absl::StrCat(dir_, "/", kLockName, ".tmp");
  const std::string path = absl::StrCat(dir_, "/", kLockName);
  lock_fd_ = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (lock_fd_ < 0) return Errno(absl::StrCat("create ", tmp));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) return Errno(absl::StrCat("flock ", tmp));
  if (::rename(tmp.c_str(), path.c_str()) != 0) return Errno(absl::StrCat("rename ", tmp));
  return absl::OkStatus();
}

StagedTlsFiles::~StagedTlsFiles() {
  RemoveGeneration(&previous_);
  RemoveGeneration(&current_);
  ::unlink((dir_ + "/current").c_str());
  ::unlink(absl::StrCat(dir_, "/", kLockName).c_str());
  ::unlink(absl::StrCat(dir_, "/", kLockName, ".tmp").c_str());  // A failed LockOwnership.
  if (lock_fd_ >= 0) ::close(lock_fd_);
  ::rmdir(dir_.c_str());
}

std::string StagedTlsFiles::key_path() const {
  return has_identity_ ? absl::StrCat(dir_, "/current/", kNames[0]) : std::string();
}
std::string StagedTlsFiles::cert_path() const {
  return has_identity_ ? absl::StrCat(dir_, "/current/", kNames[1]) : std::string();
}
std::string StagedTlsFiles::ca_path() const {
  return has_ca_ ? absl::StrCat(dir_, "/current/", kNames[2]) : std::string();
}

absl::Status StagedTlsFiles::WriteGeneration(const TlsContents& contents, Generation* out) {
  // Later than the last generation's time, whatever the wall clock does.
  const int64_t mtime =
      std::max<int64_t>(static_cast<int64_t>(std::time(nullptr)), last_mtime_ + 1);
  const std::string dir = absl::StrCat(dir_, "/", GenerationDir(out->number));
  if (::mkdir(dir.c_str(), 0700) != 0) return Errno(absl::StrCat("mkdir ", dir));
  const std::string* parts[] = {&contents.key, &contents.cert, &contents.ca};
  const bool used[] = {has_identity_, has_identity_, has_ca_};
  for (int i = 0; i < 3; ++i) {
    if (!used[i]) continue;
    absl::StatusOr<int> fd = MemoryFile(kNames[i], *parts[i], mtime);
    if (!fd.ok()) return fd.status();
    out->fds.push_back(*fd);
    const std::string target = absl::StrCat("/proc/self/fd/", *fd);
    const std::string link = absl::StrCat(dir, "/", kNames[i]);
    if (::symlink(target.c_str(), link.c_str()) != 0) return Errno(absl::StrCat("symlink ", link));
  }
  last_mtime_ = mtime;
  return absl::OkStatus();
}

void StagedTlsFiles::RemoveGeneration(Generation* generation) {
  if (generation->number == 0) return;
  const std::string dir = absl::StrCat(dir_, "/", GenerationDir(generation->number));
  for (const char* name : kNames) ::unlink(absl::StrCat(dir, "/", name).c_str());
  ::rmdir(dir.c_str());
  for (int fd : generation->fds) ::close(fd);
  *generation = Generation();
}

absl::Status StagedTlsFiles::Publish(const TlsContents& contents) {
  if (contents.cert.empty() == has_identity_ || contents.ca.empty() == has_ca_) {
    return absl::FailedPreconditionError(
        "adding or removing a TLS certificate or CA needs a restart");
  }
  Generation next;
  next.number = current_.number + 1;
  absl::Status s = WriteGeneration(contents, &next);
  const std::string tmp_link = dir_ + "/current.tmp";
  if (s.ok()) {
    ::unlink(tmp_link.c_str());
    if (::symlink(GenerationDir(next.number).c_str(), tmp_link.c_str()) != 0) {
      s = Errno(absl::StrCat("symlink ", tmp_link));
    } else if (::rename(tmp_link.c_str(), (dir_ + "/current").c_str()) != 0) {
      s = Errno(absl::StrCat("rename ", tmp_link));
    }
  }
  if (!s.ok()) {
    RemoveGeneration(&next);
    return s;
  }
  RemoveGeneration(&previous_);
  previous_ = std::move(current_);
  current_ = std::move(next);
  return absl::OkStatus();
}

}  // namespace kvstore

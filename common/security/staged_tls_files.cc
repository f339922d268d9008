#include "common/security/staged_tls_files.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <utility>

#include "absl/strings/str_cat.h"

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

}  // namespace

absl::StatusOr<std::unique_ptr<StagedTlsFiles>> StagedTlsFiles::Create(
    const TlsContents& contents) {
  const char* base = std::getenv("TMPDIR");
  std::string pattern =
      absl::StrCat(base != nullptr && *base != '\0' ? base : "/tmp", "/kvstore-tls-XXXXXX");
  if (::mkdtemp(pattern.data()) == nullptr) return Errno(absl::StrCat("mkdtemp ", pattern));
  std::unique_ptr<StagedTlsFiles> staged(
      new StagedTlsFiles(pattern, !contents.cert.empty(), !contents.ca.empty()));
  if (absl::Status s = staged->Publish(contents); !s.ok()) return s;
  return staged;
}

StagedTlsFiles::~StagedTlsFiles() {
  RemoveGeneration(&previous_);
  RemoveGeneration(&current_);
  ::unlink((dir_ + "/current").c_str());
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

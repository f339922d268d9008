// libkvfault_preload.so: records what a power cut would keep of one directory.
//
//   LD_PRELOAD=libkvfault_preload.so KVFAULT_PRELOAD_DIR=<data dir>
//   KVFAULT_PRELOAD_JOURNAL=<file outside it> kv-shard ...
//
// For files under KVFAULT_PRELOAD_DIR (which must exist when the process
// starts) it interposes the libc calls our storage makes (open, write, fsync,
// fdatasync, ftruncate, rename, unlink; common/storage/posix_file_system.cc)
// and their variants, lets each one run unchanged, and appends to the journal
// (format in tools/kvfault/journal_format.h) after each successful fsync the length that
// fsync made durable, after each directory fsync the entries it made durable,
// and, before an unlink or a rename over a file, a hard link of that file in
// the stash so that `kvfault powerloss` can bring back what no directory fsync
// removed durably. After a kill -9, `kvfault powerloss DIR --journal J` cuts
// the directory back to what the journal says was durable.
//
// The model is POSIX's, strict, like LevelDB's fault_injection_test: a file's
// bytes are durable up to its size when the last fsync/fdatasync of it began;
// a directory entry (creation, rename, removal) only after an fsync of the
// directory. A new journal starts with a baseline: everything in the
// directory then counts as durable. It keeps lengths, not contents: a write
// into bytes that exist already is journaled as "overwrite" and not undone
// (our storage only appends). Not covered: dup'ed descriptors, mmap writes,
// sync_file_range, syncfs, files reached through a symlink inside the dir.
//
// Plain C++ and libc only: it runs inside the server before main.
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <string>

#include "tools/kvfault/journal_format.h"

namespace {

namespace jf = kvstore::fault::journal;

// Looks up the next definition of `name` (libc's) once.
template <typename Fn>
Fn Real(std::atomic<void*>* slot, const char* name) {
  void* p = slot->load(std::memory_order_acquire);
  if (p == nullptr) {
    p = dlsym(RTLD_NEXT, name);
    slot->store(p, std::memory_order_release);
  }
  return reinterpret_cast<Fn>(p);
}
#define REAL(name, type)                 \
  static std::atomic<void*> slot_##name; \
  auto real_##name = Real<type>(&slot_##name, #name)

using WriteFn = ssize_t (*)(int, const void*, size_t);
using OpenFn = int (*)(const char*, int, ...);
using OpenatFn = int (*)(int, const char*, int, ...);
using CloseFn = int (*)(int);

// Descriptors below this are tracked; the servers stay far below it.
constexpr int kMaxFds = 1 << 16;
std::atomic<unsigned char> g_tracked[kMaxFds];

struct State {
  bool active = false;
  std::string root;  // realpath of KVFAULT_PRELOAD_DIR
  dev_t dev = 0;
  std::string stash;
  int journal_fd = -1;
};
// Built on first use: a C++ global could be constructed after Init ran
// (constructor functions and the TU's dynamic initializers share no order).
State& S() {
  static State* state = new State;
  return *state;
}

void Emit(const std::string& line) {
  REAL(write, WriteFn);
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    const ssize_t n = real_write(S().journal_fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // Nothing sensible to do inside someone else's write path.
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
}

void Warn(const std::string& what) {
  REAL(write, WriteFn);
  const std::string line = "kvfault_preload: " + what + "\n";
  (void)!real_write(2, line.data(), line.size());
}

// Relative path under the root of an absolute canonical path, or false.
bool RelUnderRoot(const std::string& abs, std::string* rel) {
  const std::string& root = S().root;
  if (abs == root) {
    *rel = ".";
    return true;
  }
  if (abs.size() > root.size() && abs.compare(0, root.size(), root) == 0 &&
      abs[root.size()] == '/') {
    *rel = abs.substr(root.size() + 1);
    return true;
  }
  return false;
}

bool FdPath(int fd, std::string* abs) {
  char link[64];
  snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  char buf[PATH_MAX];
  const ssize_t n = readlink(link, buf, sizeof(buf) - 1);
  if (n <= 0) return false;
  abs->assign(buf, static_cast<size_t>(n));
  return true;
}

// Canonical path of `path` (relative to `dirfd`) without following its last
// component, which may not exist yet.
bool CanonicalPath(int dirfd, const char* path, std::string* abs) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const size_t slash = p.rfind('/');
  std::string parent = slash == std::string::npos ? "." : slash == 0 ? "/" : p.substr(0, slash);
  const std::string base = slash == std::string::npos ? p : p.substr(slash + 1);
  if (base.empty() || base == "." || base == "..") return false;
  if (parent[0] != '/' && dirfd != AT_FDCWD) {
    std::string dir;
    if (!FdPath(dirfd, &dir)) return false;
    parent = dir + "/" + parent;
  }
  char buf[PATH_MAX];
  if (realpath(parent.c_str(), buf) == nullptr) return false;
  *abs = std::string(buf) + (strcmp(buf, "/") == 0 ? "" : "/") + base;
  return true;
}

bool Tracked(int fd) {
  return S().active && fd >= 0 && fd < kMaxFds && g_tracked[fd].load(std::memory_order_relaxed);
}

void AfterOpen(int fd, int flags, bool existed) {
  if (!S().active || fd < 0 || fd >= kMaxFds) return;
  std::string abs, rel;
  const bool under = FdPath(fd, &abs) && RelUnderRoot(abs, &rel);
  g_tracked[fd].store(under ? 1 : 0, std::memory_order_relaxed);
  if (!under) return;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return;
  // A new file starts with nothing durable, whatever inode number it reuses;
  // O_TRUNC empties an old one.
  if (!existed || (flags & O_TRUNC)) {
    Emit("trunc " + std::to_string(st.st_ino) + " 0 " + jf::EscapeName(rel) + "\n");
  }
}

bool Exists(int dirfd, const char* path) {
  struct stat st;
  return fstatat(dirfd, path, &st, 0) == 0;
}

int DoOpenat(int dirfd, const char* path, int flags, mode_t mode) {
  REAL(openat, OpenatFn);
  const bool creating = S().active && (flags & O_CREAT);
  const bool existed = creating ? Exists(dirfd, path) : true;
  const int fd = real_openat(dirfd, path, flags, mode);
  if (fd >= 0) AfterOpen(fd, flags, existed);
  return fd;
}

mode_t ModeArg(int flags, va_list ap) {
  return (flags & O_CREAT) || (flags & __O_TMPFILE) == __O_TMPFILE ? va_arg(ap, mode_t) : 0;
}

// A write into bytes the file already has changes content the cut cannot
// restore: journal it so the cut can say so.
void BeforeWrite(int fd, off_t offset, size_t len) {
  if (!Tracked(fd) || len == 0) return;
  if (offset < 0) {
    const int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || (fl & O_APPEND)) return;
    offset = lseek(fd, 0, SEEK_CUR);
    if (offset < 0) return;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || offset >= st.st_size) return;
  std::string abs, rel;
  if (!FdPath(fd, &abs) || !RelUnderRoot(abs, &rel)) rel = "?";
  Emit("overwrite " + std::to_string(st.st_ino) + " " + std::to_string(offset) + " " +
       std::to_string(len) + " " + jf::EscapeName(rel) + "\n");
}

size_t IovBytes(const struct iovec* iov, int n) {
  size_t total = 0;
  for (int i = 0; i < n; ++i) total += iov[i].iov_len;
  return total;
}

template <typename SyncFn>
int DoSync(int fd, SyncFn real_sync) {
  if (!Tracked(fd)) return real_sync(fd);
  struct stat before;
  const bool have = fstat(fd, &before) == 0;
  const int r = real_sync(fd);
  if (r != 0 || !have) return r;
  const int saved = errno;
  std::string abs, rel;
  if (FdPath(fd, &abs) && RelUnderRoot(abs, &rel)) {
    if (S_ISDIR(before.st_mode)) {
      std::vector<jf::Entry> entries;
      if (jf::ListEntries(S().root, rel, &entries)) Emit(jf::DirLine(rel, entries));
    } else if (S_ISREG(before.st_mode)) {
      Emit("len " + std::to_string(before.st_ino) + " " + std::to_string(before.st_size) + " " +
           jf::EscapeName(rel) + "\n");
    }
  }
  errno = saved;
  return r;
}

// Before a regular file's last name under the root goes (unlink, or a rename
// over it), keep its inode in the stash so an undurable removal can be undone.
void StashIfUnderRoot(int dirfd, const char* path) {
  if (!S().active || path == nullptr) return;
  std::string abs, rel;
  if (!CanonicalPath(dirfd, path, &abs) || !RelUnderRoot(abs, &rel) || rel == ".") return;
  struct stat st;
  if (lstat(abs.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_dev != S().dev) return;
  const std::string target = S().stash + "/" + std::to_string(st.st_ino);
  if (link(abs.c_str(), target.c_str()) != 0 && errno != EEXIST) {
    Warn("cannot stash " + abs + ": " + strerror(errno));
    return;
  }
  Emit("stash " + std::to_string(st.st_ino) + " " + jf::EscapeName(rel) + "\n");
}

__attribute__((constructor)) void Init() {
  const char* dir = getenv("KVFAULT_PRELOAD_DIR");
  const char* journal = getenv("KVFAULT_PRELOAD_JOURNAL");
  if (dir == nullptr || journal == nullptr || *dir == '\0' || *journal == '\0') return;
  char buf[PATH_MAX];
  struct stat st;
  if (realpath(dir, buf) == nullptr || stat(buf, &st) != 0 || !S_ISDIR(st.st_mode)) {
    Warn(std::string("KVFAULT_PRELOAD_DIR ") + dir + " is not a directory: inactive");
    return;
  }
  S().root = buf;
  S().dev = st.st_dev;
  S().stash = jf::StashPath(journal);
  std::string abs_journal;
  if (CanonicalPath(AT_FDCWD, journal, &abs_journal)) {
    std::string rel;
    if (RelUnderRoot(abs_journal, &rel)) {
      Warn("the journal must be outside KVFAULT_PRELOAD_DIR: inactive");
      return;
    }
  }
  REAL(open, OpenFn);
  bool fresh = true;
  int fd = real_open(journal, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0 && errno == EEXIST) {
    fresh = false;
    fd = real_open(journal, O_WRONLY | O_APPEND | O_CLOEXEC);
  }
  if (fd < 0) {
    Warn(std::string("cannot open the journal ") + journal + ": " + strerror(errno));
    return;
  }
  if (mkdir(S().stash.c_str(), 0755) != 0 && errno != EEXIST) {
    Warn("cannot create the stash " + S().stash + ": " + strerror(errno));
    REAL(close, CloseFn);
    real_close(fd);
    return;
  }
  S().journal_fd = fd;
  // A journal that exists already continues: what it declared durable (and
  // what a cut left) still holds.
  if (fresh) {
    std::string lines = jf::Header(S().root, static_cast<uint64_t>(S().dev));
    jf::AppendBaseline(S().root, ".", &lines);
    Emit(lines);
  }
  S().active = true;
}

}  // namespace

extern "C" {

int open(const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  const mode_t mode = ModeArg(flags, ap);
  va_end(ap);
  return DoOpenat(AT_FDCWD, path, flags, mode);
}
int open64(const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  const mode_t mode = ModeArg(flags, ap);
  va_end(ap);
  return DoOpenat(AT_FDCWD, path, flags, mode);
}
int __open_2(const char* path, int flags) { return DoOpenat(AT_FDCWD, path, flags, 0); }
int __open64_2(const char* path, int flags) { return DoOpenat(AT_FDCWD, path, flags, 0); }
int openat(int dirfd, const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  const mode_t mode = ModeArg(flags, ap);
  va_end(ap);
  return DoOpenat(dirfd, path, flags, mode);
}
int openat64(int dirfd, const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  const mode_t mode = ModeArg(flags, ap);
  va_end(ap);
  return DoOpenat(dirfd, path, flags, mode);
}
int __openat_2(int dirfd, const char* path, int flags) { return DoOpenat(dirfd, path, flags, 0); }
int __openat64_2(int dirfd, const char* path, int flags) { return DoOpenat(dirfd, path, flags, 0); }
int creat(const char* path, mode_t mode) {
  return DoOpenat(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}
int creat64(const char* path, mode_t mode) {
  return DoOpenat(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}

int close(int fd) {
  REAL(close, CloseFn);
  if (fd >= 0 && fd < kMaxFds) g_tracked[fd].store(0, std::memory_order_relaxed);
  return real_close(fd);
}

ssize_t write(int fd, const void* buf, size_t n) {
  REAL(write, WriteFn);
  BeforeWrite(fd, -1, n);
  return real_write(fd, buf, n);
}
ssize_t pwrite(int fd, const void* buf, size_t n, off_t offset) {
  REAL(pwrite, ssize_t(*)(int, const void*, size_t, off_t));
  BeforeWrite(fd, offset, n);
  return real_pwrite(fd, buf, n, offset);
}
ssize_t pwrite64(int fd, const void* buf, size_t n, off64_t offset) {
  REAL(pwrite64, ssize_t(*)(int, const void*, size_t, off64_t));
  BeforeWrite(fd, offset, n);
  return real_pwrite64(fd, buf, n, offset);
}
ssize_t writev(int fd, const struct iovec* iov, int n) {
  REAL(writev, ssize_t(*)(int, const struct iovec*, int));
  BeforeWrite(fd, -1, IovBytes(iov, n));
  return real_writev(fd, iov, n);
}
ssize_t pwritev(int fd, const struct iovec* iov, int n, off_t offset) {
  REAL(pwritev, ssize_t(*)(int, const struct iovec*, int, off_t));
  BeforeWrite(fd, offset, IovBytes(iov, n));
  return real_pwritev(fd, iov, n, offset);
}
ssize_t pwritev64(int fd, const struct iovec* iov, int n, off64_t offset) {
  REAL(pwritev64, ssize_t(*)(int, const struct iovec*, int, off64_t));
  BeforeWrite(fd, offset, IovBytes(iov, n));
  return real_pwritev64(fd, iov, n, offset);
}

int fsync(int fd) {
  REAL(fsync, int (*)(int));
  return DoSync(fd, real_fsync);
}
int fdatasync(int fd) {
  REAL(fdatasync, int (*)(int));
  return DoSync(fd, real_fdatasync);
}

static int DoFtruncate(int fd, off64_t length, int (*real_ftruncate)(int, off64_t)) {
  struct stat st;
  const bool shrinks =
      Tracked(fd) && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && length < st.st_size;
  const int r = real_ftruncate(fd, length);
  if (r == 0 && shrinks) {
    const int saved = errno;
    std::string abs, rel;
    if (!FdPath(fd, &abs) || !RelUnderRoot(abs, &rel)) rel = "?";
    Emit("trunc " + std::to_string(st.st_ino) + " " + std::to_string(length) + " " +
         jf::EscapeName(rel) + "\n");
    errno = saved;
  }
  return r;
}
int ftruncate(int fd, off_t length) {
  REAL(ftruncate, int (*)(int, off64_t));
  return DoFtruncate(fd, length, real_ftruncate);
}
int ftruncate64(int fd, off64_t length) {
  REAL(ftruncate64, int (*)(int, off64_t));
  return DoFtruncate(fd, length, real_ftruncate64);
}

int rename(const char* from, const char* to) {
  REAL(rename, int (*)(const char*, const char*));
  StashIfUnderRoot(AT_FDCWD, to);
  return real_rename(from, to);
}
int renameat(int fromfd, const char* from, int tofd, const char* to) {
  REAL(renameat, int (*)(int, const char*, int, const char*));
  StashIfUnderRoot(tofd, to);
  return real_renameat(fromfd, from, tofd, to);
}
int renameat2(int fromfd, const char* from, int tofd, const char* to, unsigned flags) {
  REAL(renameat2, int (*)(int, const char*, int, const char*, unsigned));
  if ((flags & RENAME_NOREPLACE) == 0) StashIfUnderRoot(tofd, to);
  // RENAME_EXCHANGE keeps both inodes, each under the other's name: nothing
  // is removed, and the directory lines decide which names are durable.
  return real_renameat2(fromfd, from, tofd, to, flags);
}

int unlink(const char* path) {
  REAL(unlink, int (*)(const char*));
  StashIfUnderRoot(AT_FDCWD, path);
  return real_unlink(path);
}
int unlinkat(int dirfd, const char* path, int flags) {
  REAL(unlinkat, int (*)(int, const char*, int));
  if ((flags & AT_REMOVEDIR) == 0) StashIfUnderRoot(dirfd, path);
  return real_unlinkat(dirfd, path, flags);
}

}  // extern "C"

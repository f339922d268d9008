// The TLS files a server's gRPC stack reads, holding only contents that passed
// our checks (docs/security.md, "Rotating credentials").
//
// gRPC 1.51's FileWatcherCertificateProvider re-reads the files it is given
// and hands whatever they hold to the TLS stack: a key that does not match
// its certificate, or a CA file that does not parse, makes every later
// handshake fail (the old handshaker factory is dropped before the new one is
// built). So gRPC watches these copies instead of the operator's files, and a
// copy changes only when the credential watcher has checked the new contents.
//
// Nothing is written to disk: each file is a memfd, reached through a symlink
// to /proc/self/fd/N, so a crash leaves no copy of the private key behind,
// only a directory of dangling links under $TMPDIR (or /tmp):
//   <dir>/current -> gen-<n>/   (swapped with one rename)
//   <dir>/gen-<n>/{key,cert,ca}.pem -> /proc/self/fd/<memfd>
//   <dir>/owner.lock            (flock'ed by the owner for its whole life)
// A directory left by a process that died without its destructor (kill -9)
// is removed by the next Create under the same $TMPDIR: its lock is free. The
// lock, not a pid, tells a dead owner apart, so a process in another pid
// namespace sharing the directory is never mistaken for a dead one.
// gRPC reads key and certificate one after the other, comparing each file's
// modification time (whole seconds) before and after; every generation's
// files carry a time later than the previous generation's, so a read that
// straddles a swap is seen and retried, never paired across generations.
//
// Thread-compatible: Publish from one thread at a time (the watcher's).
#ifndef KVSTORE_COMMON_SECURITY_STAGED_TLS_FILES_H_
#define KVSTORE_COMMON_SECURITY_STAGED_TLS_FILES_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvstore {

// PEM contents; empty = not used.
struct TlsContents {
  std::string cert;
  std::string key;
  std::string ca;
};

class StagedTlsFiles {
 public:
  // A new directory under $TMPDIR (or /tmp) holding `contents`. First removes
  // the directories of owners that are gone (see above); returns how many in
  // `*stale_removed` when given.
  static absl::StatusOr<std::unique_ptr<StagedTlsFiles>> Create(const TlsContents& contents,
                                                                int* stale_removed = nullptr);
  ~StagedTlsFiles();  // Removes the directory and closes the memfds.
  StagedTlsFiles(const StagedTlsFiles&) = delete;
  StagedTlsFiles& operator=(const StagedTlsFiles&) = delete;

  // Makes `contents` what the paths below hold, all three at once. Which of
  // them are used (empty or not) must not change. On error the previous
  // contents stay.
  absl::Status Publish(const TlsContents& contents);

  // Paths for FileWatcherCertificateProvider; empty when that part is unused.
  std::string key_path() const;
  std::string cert_path() const;
  std::string ca_path() const;

 private:
  struct Generation {
    uint64_t number = 0;
    std::vector<int> fds;
  };
  explicit StagedTlsFiles(std::string dir, bool has_identity, bool has_ca)
      : dir_(std::move(dir)), has_identity_(has_identity), has_ca_(has_ca) {}
  absl::Status LockOwnership();
  absl::Status WriteGeneration(const TlsContents& contents, Generation* out);
  void RemoveGeneration(Generation* generation);

  const std::string dir_;
  const bool has_identity_;
  const bool has_ca_;
  int64_t last_mtime_ = 0;  // Seconds; strictly increases per generation.
  int lock_fd_ = -1;        // owner.lock, flock'ed while this object lives.
  Generation current_;
  // Kept for one more generation, so a read that resolved its path just
  // before a swap still finds its file.
  Generation previous_;
};

}  // namespace kvstore

#endif  // KVSTORE_COMMON_SECURITY_STAGED_TLS_FILES_H_

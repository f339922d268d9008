// Reloads a running server's token and TLS files (docs/security.md, "Rotating
// credentials"): every --credentials-reload-interval and on SIGHUP (the
// process's hangup listener calls RequestCheck), each file is read again;
// when its contents changed, they are checked as at start-up and, if good,
// put in force:
//   --auth-token-file, --admin-token-file  AccessPolicy::ReplaceTokens, and
//        the tokens this process sends (ClientTokens);
//   --backend-token-file (router)          the token it sends to the shards;
//   --tls-cert/--tls-key, --tls-ca         published to the staged copies
//        gRPC's certificate provider reads (staged_tls_files.h), so new
//        connections, served and opened, use them.
// A file that does not load cleanly leaves the old credentials in force and
// the process serving. Each outcome is one log line ("Reloaded
// --auth-token-file /path", "Kept the old certificate: /path: <error>") and
// one count in kvstore_credentials_reloads_total{file, result}. A bad file is
// reported once per distinct contents, not on every check; a certificate and
// key that fail together are reported only when a second check finds them
// still failing (a check may fall between the two renames of a rotation), so
// a bad pair is reported within two intervals.
//
// What cannot change without a restart: whether a token, a certificate or a
// CA is configured at all, and the file paths.
//
// Thread-safe. CheckNow is the whole of a check, for tests and the thread.
#ifndef KVSTORE_COMMON_SECURITY_CREDENTIAL_WATCHER_H_
#define KVSTORE_COMMON_SECURITY_CREDENTIAL_WATCHER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/metrics/exposition.h"
#include "common/metrics/metrics.h"
#include "common/security/credentials.h"

namespace kvstore {

class CredentialWatcher {
 public:
  // `security` (loaded from `flags` by LoadServerSecurity) must outlive the
  // watcher; its policy, client tokens and staged TLS files are what a
  // reload changes. Certificates reload only when `security` has staged TLS
  // files (a non-zero reload interval at load time).
  CredentialWatcher(SecurityFlags flags, ServerSecurity* security);
  ~CredentialWatcher();  // Stops the thread.
  CredentialWatcher(const CredentialWatcher&) = delete;
  CredentialWatcher& operator=(const CredentialWatcher&) = delete;

  // Reads every file now and applies what changed; `why` goes in the log.
  void CheckNow(absl::string_view why);

  // A thread that calls CheckNow every flags.reload_interval and soon after
  // each RequestCheck. Nothing when the interval is zero.
  void Start();
  // Asks the thread for a check. Cheap and non-blocking, but not
  // async-signal-safe: call it from a thread that took the signal (sigwait).
  void RequestCheck();
  void Stop();

  // Reloads so far for `file` ("auth-token", "admin-token", "backend-token",
  // "tls-cert", "tls-ca") with `result` ("ok" or "error").
  uint64_t Count(absl::string_view file, absl::string_view result) const;
  // kvstore_credentials_reloads_total, for a metrics collector.
  void WriteMetrics(ExpositionWriter* out) const;

 private:
  // One watched file: the bytes last read (to see a change) and the last
  // contents that passed the checks (what a reload would put in force).
  struct Watched {
    std::string path;
    std::optional<std::string> seen;  // Nullopt: unreadable or not read yet.
    bool unreadable = false;          // Reported as such already.
  };
  // Reads `w`; true (and *bytes) when the contents differ from the last read.
  // An unreadable file counts as a change to "unreadable" (its error goes to
  // *error) so it is reported once.
  static bool ReadIfChanged(Watched* w, std::string* bytes, std::string* error);
  void CheckTokens(absl::string_view why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(check_mu_);
  void CheckTls(absl::string_view why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(check_mu_);
  void Record(absl::string_view file, bool ok);
  bool Woken() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return requested_ || stopping_; }
  void Loop();

  const SecurityFlags flags_;
  ServerSecurity* const security_;

  absl::Mutex check_mu_;  // One check at a time.
  Watched public_file_ ABSL_GUARDED_BY(check_mu_);
  Watched admin_file_ ABSL_GUARDED_BY(check_mu_);
  Watched backend_file_ ABSL_GUARDED_BY(check_mu_);
  Watched cert_file_ ABSL_GUARDED_BY(check_mu_);
  Watched key_file_ ABSL_GUARDED_BY(check_mu_);
  Watched ca_file_ ABSL_GUARDED_BY(check_mu_);
  // In force, and the newest good contents of each file (not yet in force
  // when the combination was refused, e.g. public == admin).
  std::string applied_public_ ABSL_GUARDED_BY(check_mu_);
  std::string applied_admin_ ABSL_GUARDED_BY(check_mu_);
  std::string applied_backend_ ABSL_GUARDED_BY(check_mu_);
  std::string good_public_ ABSL_GUARDED_BY(check_mu_);
  std::string good_admin_ ABSL_GUARDED_BY(check_mu_);
  std::string good_backend_ ABSL_GUARDED_BY(check_mu_);
  TlsContents applied_tls_ ABSL_GUARDED_BY(check_mu_);
  // The certificate/key pair failed its checks once and is due to be
  // judged again (see CheckTls).
  bool pair_failed_once_ ABSL_GUARDED_BY(check_mu_) = false;

  CounterVec reloads_;  // {file, result}

  mutable absl::Mutex mu_;
  bool requested_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace kvstore

#endif  // KVSTORE_COMMON_SECURITY_CREDENTIAL_WATCHER_H_

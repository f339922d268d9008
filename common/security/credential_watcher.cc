#include "common/security/credential_watcher.h"

#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "glog/logging.h"

namespace kvstore {
namespace {

constexpr char kAuthToken[] = "auth-token";
constexpr char kAdminToken[] = "admin-token";
constexpr char kBackendToken[] = "backend-token";
constexpr char kTlsCert[] = "tls-cert";
constexpr char kTlsCa[] = "tls-ca";

}  // namespace

CredentialWatcher::CredentialWatcher(SecurityFlags flags, ServerSecurity* security)
    : flags_(std::move(flags)), security_(security), reloads_({"file", "result"}) {
  absl::MutexLock lock(&check_mu_);
  public_file_.path = flags_.auth_token_file;
  admin_file_.path = flags_.admin_token_file;
  backend_file_.path = flags_.backend_token_file;
  if (security_->staged_tls != nullptr) {
    cert_file_.path = flags_.tls.cert;
    key_file_.path = flags_.tls.key;
    ca_file_.path = flags_.tls.ca;
  }
  good_public_ = applied_public_ = security_->public_token;
  good_admin_ = applied_admin_ = security_->admin_token;
  good_backend_ = applied_backend_ = security_->backend_token;
  applied_tls_ = security_->tls;
  // Every configured file's series exists from the start, at zero.
  auto zero = [this](const std::string& path, const char* file) {
    if (path.empty()) return;
    reloads_.Add({file, "ok"}, 0);
    reloads_.Add({file, "error"}, 0);
  };
  zero(public_file_.path, kAuthToken);
  zero(admin_file_.path, kAdminToken);
  zero(backend_file_.path, kBackendToken);
  zero(cert_file_.path, kTlsCert);
  zero(ca_file_.path, kTlsCa);
}

CredentialWatcher::~CredentialWatcher() { Stop(); }

bool CredentialWatcher::ReadIfChanged(Watched* w, std::string* bytes, std::string* error) {
  std::ifstream in(w->path, std::ios::binary);
  std::stringstream contents;
  if (in) contents << in.rdbuf();
  if (!in || in.bad()) {
    if (w->unreadable) return false;  // Reported already.
    w->unreadable = true;
    w->seen.reset();
    *error = absl::StrCat("cannot read ", w->path);
    return true;
  }
  w->unreadable = false;
  *bytes = contents.str();
  if (w->seen.has_value() && *w->seen == *bytes) return false;
  w->seen = *bytes;
  return true;
}

void CredentialWatcher::Record(absl::string_view file, bool ok) {
  reloads_.Add({std::string(file), ok ? "ok" : "error"});
}

void CredentialWatcher::CheckNow(absl::string_view why) {
  absl::MutexLock lock(&check_mu_);
  CheckTokens(why);
  CheckTls(why);
}

void CredentialWatcher::CheckTokens(absl::string_view why) {
  struct Token {
    Watched* watched;
    const char* flag;
    const char* file;
    std::string* good;
    const std::string* applied;
  };
  const Token tokens[] = {
      {&public_file_, "auth-token-file", kAuthToken, &good_public_, &applied_public_},
      {&admin_file_, "admin-token-file", kAdminToken, &good_admin_, &applied_admin_},
      {&backend_file_, "backend-token-file", kBackendToken, &good_backend_, &applied_backend_},
  };
  std::vector<const Token*> changed;
  for (const Token& t : tokens) {
    if (t.watched->path.empty()) continue;
    std::string bytes;
    std::string error;
    if (!ReadIfChanged(t.watched, &bytes, &error)) continue;
    absl::StatusOr<std::string> token =
        error.empty() ? ParseToken(t.watched->path, bytes) : absl::InvalidArgumentError(error);
    if (!token.ok()) {
      LOG(WARNING) << "Kept the old token: " << t.watched->path << ": " << token.status().message();
      Record(t.file, false);
      continue;
    }
    if (*token == *t.good) continue;  // Other bytes (whitespace), same token.
    *t.good = *std::move(token);
    changed.push_back(&t);
  }
  if (good_public_ == applied_public_ && good_admin_ == applied_admin_ &&
      good_backend_ == applied_backend_) {
    return;  // Rewritten with the same token (or back to it): nothing to do.
  }
  if (changed.empty()) return;  // A refused combination, unchanged since.
  if (absl::Status s = security_->policy.ReplaceTokens(good_public_, good_admin_); !s.ok()) {
    for (const Token* t : changed) {
      LOG(WARNING) << "Kept the old token: " << t->watched->path << ": " << s.message();
      Record(t->file, false);
    }
    return;
  }
  if (security_->client.tokens != nullptr) {
    security_->client.tokens->Replace(good_backend_.empty() ? good_public_ : good_backend_,
                                      good_admin_);
  }
  for (const Token& t : tokens) {
    if (t.watched->path.empty() || *t.good == *t.applied) continue;
    LOG(INFO) << "Reloaded --" << t.flag << " " << t.watched->path << " (" << why << ")";
    Record(t.file, true);
  }
  applied_public_ = good_public_;
  applied_admin_ = good_admin_;
  applied_backend_ = good_backend_;
}

void CredentialWatcher::CheckTls(absl::string_view why) {
  if (security_->staged_tls == nullptr) return;
  TlsContents next = applied_tls_;
  bool identity_changed = false;
  bool ca_changed = false;
  if (!cert_file_.path.empty()) {
    std::string cert;
    std::string key;
    std::string cert_error;
    std::string key_error;
    // Both read every time: a change of either is a change of the pair.
    const bool cert_changed = ReadIfChanged(&cert_file_, &cert, &cert_error);
    const bool key_changed = ReadIfChanged(&key_file_, &key, &key_error);
    if (cert_changed || key_changed) {
      absl::Status s;
      if (!cert_error.empty() || !key_error.empty()) {
        s = absl::InvalidArgumentError(!cert_error.empty() ? cert_error : key_error);
      } else if (!cert_file_.seen.has_value() || !key_file_.seen.has_value()) {
        s = absl::InvalidArgumentError(
            absl::StrCat("cannot read ", cert_file_.seen ? key_file_.path : cert_file_.path));
      } else {
        TlsContents pair;
        pair.cert = *cert_file_.seen;
        pair.key = *key_file_.seen;
        s = pair.cert.empty() || pair.key.empty()
                ? absl::InvalidArgumentError(absl::StrCat(
                      pair.cert.empty() ? cert_file_.path : key_file_.path, " is empty"))
                : CheckTlsContents(flags_.tls, pair);
        if (s.ok()) {
          identity_changed = pair.cert != applied_tls_.cert || pair.key != applied_tls_.key;
          next.cert = std::move(pair.cert);
          next.key = std::move(pair.key);
        }
      }
      if (s.ok()) {
        pair_failed_once_ = false;
      } else if (!pair_failed_once_) {
        // Perhaps caught between the renames of a rotation (the key
        // replaced, the certificate not yet): judged again at the next
        // check, and reported only if it still fails.
        pair_failed_once_ = true;
        for (Watched* w : {&cert_file_, &key_file_}) {
          w->seen.reset();
          w->unreadable = false;
        }
      } else {
        pair_failed_once_ = false;
        LOG(WARNING) << "Kept the old certificate: " << cert_file_.path << ": " << s.message();
        Record(kTlsCert, false);
      }
    }
  }
  if (!ca_file_.path.empty()) {
    std::string ca;
    std::string error;
    if (ReadIfChanged(&ca_file_, &ca, &error)) {
      absl::Status s = absl::InvalidArgumentError(error);
      if (error.empty()) {
        TlsContents only_ca;
        only_ca.ca = ca;
        s = ca.empty() ? absl::InvalidArgumentError(absl::StrCat(ca_file_.path, " is empty"))
                       : CheckTlsContents(flags_.tls, only_ca);
      }
      if (s.ok()) {
        ca_changed = ca != applied_tls_.ca;
        next.ca = std::move(ca);
      } else {
        LOG(WARNING) << "Kept the old CA: " << ca_file_.path << ": " << s.message();
        Record(kTlsCa, false);
      }
    }
  }
  if (!identity_changed && !ca_changed) return;
  if (absl::Status s = security_->staged_tls->Publish(next); !s.ok()) {
    LOG(ERROR) << "Kept the old certificate and CA: " << s.message();
    if (identity_changed) Record(kTlsCert, false);
    if (ca_changed) Record(kTlsCa, false);
    return;
  }
  if (identity_changed) {
    LOG(INFO) << "Reloaded --tls-cert " << cert_file_.path << " and --tls-key " << key_file_.path
              << " (" << why << "; new connections use it within a second)";
    Record(kTlsCert, true);
  }
  if (ca_changed) {
    LOG(INFO) << "Reloaded --tls-ca " << ca_file_.path << " (" << why
              << "; new connections use it within a second)";
    Record(kTlsCa, true);
  }
  applied_tls_ = std::move(next);
}

void CredentialWatcher::Start() {
  if (flags_.reload_interval <= absl::ZeroDuration()) return;
  thread_ = std::thread([this] { Loop(); });
}

void CredentialWatcher::RequestCheck() {
  absl::MutexLock lock(&mu_);
  requested_ = true;
}

void CredentialWatcher::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void CredentialWatcher::Loop() {
  for (;;) {
    bool requested = false;
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(this, &CredentialWatcher::Woken),
                           flags_.reload_interval);
      if (stopping_) return;
      requested = requested_;
      requested_ = false;
    }
    CheckNow(requested ? "SIGHUP" : "credentials check");
  }
}

uint64_t CredentialWatcher::Count(absl::string_view file, absl::string_view result) const {
  return reloads_.Get({std::string(file), std::string(result)});
}

void CredentialWatcher::WriteMetrics(ExpositionWriter* out) const {
  reloads_.Write("kvstore_credentials_reloads_total",
                 "Credential files re-read after a change, by file and result (ok: in force; "
                 "error: the old credentials were kept).",
                 out);
}

}  // namespace kvstore

#include "common/security/server_flags.h"

#include <cstdio>

#include "absl/time/time.h"
#include "gflags/gflags.h"

DEFINE_string(tls_cert, "",
              "PEM certificate chain of this server; with --tls-key, every listener speaks TLS "
              "only, and the connections this process opens to other nodes present it "
              "(docs/security.md)");
DEFINE_string(tls_key, "", "PEM private key of --tls-cert (unencrypted; keep it mode 0600)");
DEFINE_string(tls_ca, "",
              "PEM CA certificate(s): clients must present a certificate signed by it (mutual "
              "TLS), which also admits them to Admin and Replication; nodes this process calls "
              "are verified against it (needs --tls-cert)");
DEFINE_string(auth_token_file, "",
              "File holding the bearer token the KeyValue API requires (surrounding whitespace "
              "trimmed); clients send 'authorization: Bearer <token>'. kv-router also sends it "
              "to the shards unless --backend-token-file is given. Needs --admin-token-file or "
              "--tls-ca too");
DEFINE_string(admin_token_file, "",
              "File holding the bearer token that opens Admin and Replication (as a verified "
              "client certificate does); sent by this process on its own Admin and Replication "
              "calls (router probes, leader streams). Must differ from the public token");

DEFINE_string(credentials_reload_interval, "10s",
              "How often the token and TLS files are checked for new contents (and on SIGHUP): "
              "a changed file is checked as at start-up and put in force, or the old "
              "credentials are kept (logged, and counted in kvstore_credentials_reloads_total). "
              "A new token applies to the next call, a new certificate to new connections "
              "within a second of the check. 0 = read once at start-up (SIGHUP then reloads "
              "nothing). Turning TLS or a token on or off still needs a restart");

namespace {

bool ValidateReloadInterval(const char* flag, const std::string& value) {
  absl::Duration d;
  if (absl::ParseDuration(value, &d) && d >= absl::ZeroDuration()) return true;
  std::fprintf(stderr, "--%s: '%s' is not a duration of 0 or more (e.g. 10s, 1m, 0)\n", flag,
               value.c_str());
  return false;
}

}  // namespace

DEFINE_validator(credentials_reload_interval, &ValidateReloadInterval);

namespace kvstore {

SecurityFlags SecurityFlagsFromCommandLine() {
  SecurityFlags flags;
  flags.tls.cert = FLAGS_tls_cert;
  flags.tls.key = FLAGS_tls_key;
  flags.tls.ca = FLAGS_tls_ca;
  flags.auth_token_file = FLAGS_auth_token_file;
  flags.admin_token_file = FLAGS_admin_token_file;
  // Checked by the validator: a bad value never gets here.
  if (!absl::ParseDuration(FLAGS_credentials_reload_interval, &flags.reload_interval)) {
    flags.reload_interval = absl::ZeroDuration();
  }
  return flags;
}

}  // namespace kvstore

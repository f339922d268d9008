#include "common/security/server_flags.h"

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

namespace kvstore {

SecurityFlags SecurityFlagsFromCommandLine() {
  SecurityFlags flags;
  flags.tls.cert = FLAGS_tls_cert;
  flags.tls.key = FLAGS_tls_key;
  flags.tls.ca = FLAGS_tls_ca;
  flags.auth_token_file = FLAGS_auth_token_file;
  flags.admin_token_file = FLAGS_admin_token_file;
  return flags;
}

}  // namespace kvstore

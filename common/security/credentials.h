// TLS credentials and tokens of a kvstore process, built from its flags
// (docs/security.md):
//   --tls-cert, --tls-key  this process's certificate chain and private key
//                          (PEM); with them every listener speaks TLS only.
//   --tls-ca               CA certificate(s) (PEM). On a server: client
//                          certificates are required and verified against it
//                          (mutual TLS). On every client: server certificates
//                          are verified against it instead of the system roots.
//   --auth-token-file      the public API's bearer token.
//   --admin-token-file     the token for Admin and Replication.
// No flag at all means plaintext and no checks: exactly the behaviour of a
// build without this library.
//
// The channels a server opens to other nodes (router -> shards, leader ->
// followers) use the same files: TLS when the process has a certificate,
// presenting it, verifying the peer with --tls-ca; and they send the tokens
// (ClientSecurity).
#ifndef KVSTORE_COMMON_SECURITY_CREDENTIALS_H_
#define KVSTORE_COMMON_SECURITY_CREDENTIALS_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/security/access_policy.h"
#include "common/security/staged_tls_files.h"
#include "grpcpp/channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace kvstore {

// PEM file paths; empty = not given.
struct TlsFiles {
  std::string cert;
  std::string key;
  std::string ca;

  bool tls() const { return !cert.empty() || !key.empty() || !ca.empty(); }
};

// The bearer tokens a client sends, replaceable while channels use them
// (a server's token files are reloaded: credential_watcher.h). Thread-safe.
class ClientTokens {
 public:
  ClientTokens(std::string public_token, std::string admin_token);
  ClientTokens(const ClientTokens&) = delete;
  ClientTokens& operator=(const ClientTokens&) = delete;

  // Every call started afterwards, on any channel, sends these.
  void Replace(std::string public_token, std::string admin_token);

  std::string public_token() const;
  std::string admin_token() const;

 private:
  mutable absl::Mutex mu_;
  std::string public_token_ ABSL_GUARDED_BY(mu_);
  std::string admin_token_ ABSL_GUARDED_BY(mu_);
};

// What a client sends. Copyable: copies share the tokens.
struct ClientSecurity {
  // Null: plaintext.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // Sent as "authorization: Bearer <token>" on kvstore.v1.KeyValue calls
  // (the public token) and on kvstore.v1.Admin, Replication and Migration
  // calls (the admin token); nothing is sent for an empty one. Null: none.
  // Whether a channel sends tokens at all is decided when it is created.
  std::shared_ptr<ClientTokens> tokens;

  // The current values; empty when there is none.
  std::string public_token() const { return tokens ? tokens->public_token() : std::string(); }
  std::string admin_token() const { return tokens ? tokens->admin_token() : std::string(); }
};

// Client side from files: TLS when any of `files` is given (verifying the
// server against files.ca, or the system roots without it; presenting
// cert/key when given, which must come together), tokens read from the token
// files (empty path = none). InvalidArgument naming the file on any problem.
absl::StatusOr<ClientSecurity> LoadClientSecurity(const TlsFiles& files,
                                                  const std::string& public_token_file,
                                                  const std::string& admin_token_file);

// A channel to `target` with `security`: TLS or plaintext, and a client
// interceptor that adds the right token, as it is when the call starts, to
// each call (none when there are no tokens, so a plaintext channel is exactly
// grpc::CreateCustomChannel's).
std::shared_ptr<grpc::Channel> CreateClientChannel(const std::string& target,
                                                   const ClientSecurity& security,
                                                   const grpc::ChannelArguments& args);

// Reads `files` and checks them: the certificate and key (given together or
// not at all) parse and belong together, the CA parses. InvalidArgument
// naming the flag and file.
absl::StatusOr<TlsContents> ReadTlsFiles(const TlsFiles& files);
// The same checks on contents already read (`files` names them in messages):
// the pair when contents.cert or contents.key is set, the CA when contents.ca
// is.
absl::Status CheckTlsContents(const TlsFiles& files, const TlsContents& contents);

// The security flags of a server process.
struct SecurityFlags {
  TlsFiles tls;
  std::string auth_token_file;
  std::string admin_token_file;
  // Router only: the token sent to the shards' KeyValue service; empty = the
  // --auth-token-file token.
  std::string backend_token_file;
  // --credentials-reload-interval: how often the files are checked for a
  // change (credential_watcher.h). Zero: read once at start-up, as gRPC's
  // plain SSL credentials would.
  absl::Duration reload_interval = absl::ZeroDuration();
};

// Everything a server process needs, loaded and checked at start-up. The
// services keep pointers to `policy`: do not move a ServerSecurity once they
// are built.
struct ServerSecurity {
  // For ServerOptions::credentials: null means plaintext. gRPC's TLS
  // credentials with a certificate provider: with a reload interval it
  // watches `staged_tls`, so a new certificate reaches new connections, also
  // those this process opens (`client.credentials`).
  std::shared_ptr<grpc::ServerCredentials> server_credentials;
  AccessPolicy policy;
  // For the channels this process opens to other nodes.
  ClientSecurity client;
  // What was read at start-up, and (with a reload interval and TLS) the
  // copies gRPC reads: the credential watcher's starting point.
  TlsContents tls;
  std::string public_token;
  std::string admin_token;
  std::string backend_token;
  std::shared_ptr<StagedTlsFiles> staged_tls;
  // One line for the start-up log: "TLS with client certificates, tokens: ...".
  std::string summary;
};

// Reads and checks the files: certificate and key parse and belong together,
// the CA parses, tokens are non-empty. InvalidArgument (naming the flag and
// file) for a bad combination: a certificate without its key or the reverse,
// --tls-ca without a certificate, the same token for the public API and
// Admin, or a public token with neither --admin-token-file nor --tls-ca
// (Admin and Replication would then refuse everyone, the router's probes and
// the leader's streams included).
absl::StatusOr<ServerSecurity> LoadServerSecurity(const SecurityFlags& flags);

}  // namespace kvstore

#endif  // KVSTORE_COMMON_SECURITY_CREDENTIALS_H_

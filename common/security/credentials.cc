#include "common/security/credentials.h"

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_certificate_verifier.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "grpcpp/support/client_interceptor.h"

namespace kvstore {
namespace {

absl::StatusOr<std::string> ReadPemFile(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream contents;
  if (in) contents << in.rdbuf();
  if (!in || in.bad()) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": cannot read ", path));
  }
  return contents.str();
}

// OpenSSL objects freed on scope exit.
struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Bio = std::unique_ptr<BIO, BioFree>;

Bio MemoryBio(const std::string& pem) {
  return Bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// The first certificate of a PEM chain; null when there is none.
std::unique_ptr<X509, X509Free> FirstCertificate(const std::string& pem) {
  Bio bio = MemoryBio(pem);
  return std::unique_ptr<X509, X509Free>(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

// gRPC only reports a bad certificate or key as a failed bind or handshake;
// parsing them here first gives an error that names the file.
absl::Status CheckKeyPair(const TlsFiles& files, const std::string& cert_pem,
                          const std::string& key_pem) {
  std::unique_ptr<X509, X509Free> cert = FirstCertificate(cert_pem);
  if (cert == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-cert: ", files.cert, " holds no PEM certificate"));
  }
  Bio bio = MemoryBio(key_pem);
  std::unique_ptr<EVP_PKEY, KeyFree> key(
      PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-key: ", files.key, " holds no PEM private key (or it is encrypted)"));
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls-key: ", files.key, " is not the key of the certificate in ", files.cert));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckTlsContents(const TlsFiles& files, const TlsContents& contents) {
  if (!contents.cert.empty() || !contents.key.empty()) {
    if (absl::Status s = CheckKeyPair(files, contents.cert, contents.key); !s.ok()) return s;
  }
  if (!contents.ca.empty() && FirstCertificate(contents.ca) == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-ca: ", files.ca, " holds no PEM certificate"));
  }
  return absl::OkStatus();
}

absl::StatusOr<TlsContents> ReadTlsFiles(const TlsFiles& files) {
  TlsContents tls;
  if (files.cert.empty() != files.key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together: give both or neither");
  }
  if (!files.cert.empty()) {
    absl::StatusOr<std::string> cert = ReadPemFile("tls-cert", files.cert);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPemFile("tls-key", files.key);
    if (!key.ok()) return key.status();
    tls.cert = *std::move(cert);
    tls.key = *std::move(key);
  }
  if (!files.ca.empty()) {
    absl::StatusOr<std::string> ca = ReadPemFile("tls-ca", files.ca);
    if (!ca.ok()) return ca.status();
    if (ca->empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tls-ca: ", files.ca, " holds no PEM certificate"));
    }
    tls.ca = *std::move(ca);
  }
  if (absl::Status s = CheckTlsContents(files, tls); !s.ok()) return s;
  return tls;
}

namespace {

// kvctl and kvbench: short-lived, read once.
std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials(const TlsContents& tls) {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = tls.ca;  // Empty: gRPC's default roots.
  options.pem_private_key = tls.key;
  options.pem_cert_chain = tls.cert;
  return grpc::SslCredentials(options);
}

absl::StatusOr<std::string> OptionalToken(const std::string& flag, const std::string& path) {
  if (path.empty()) return std::string();
  absl::StatusOr<std::string> token = LoadTokenFile(path);
  if (!token.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", token.status().message()));
  }
  return token;
}

// Adds "authorization: Bearer <token>" to a call's initial metadata.
class TokenInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit TokenInterceptor(std::string value) : value_(std::move(value)) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace(kAuthorizationKey, value_);
    }
    methods->Proceed();
  }

 private:
  // The call's metadata refers to this string until the call ends, and the
  // interceptor lives as long as the call.
  const std::string value_;
};

// Picks the token by the service the call is for, reading the current value
// of `tokens` when the call starts.
class TokenInterceptorFactory : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit TokenInterceptorFactory(std::shared_ptr<ClientTokens> tokens)
      : tokens_(std::move(tokens)) {}

  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* info) override {
    const char* method = info->method();
    const bool cluster =
        method != nullptr && (absl::StartsWith(method, "/kvstore.v1.Admin/") ||
                              absl::StartsWith(method, "/kvstore.v1.Replication/") ||
                              absl::StartsWith(method, "/kvstore.v1.Migration/"));
    std::string token = cluster ? tokens_->admin_token() : tokens_->public_token();
    if (token.empty()) return nullptr;  // Nothing to add for this call.
    return new TokenInterceptor(absl::StrCat(kBearerPrefix, token));
  }

 private:
  const std::shared_ptr<ClientTokens> tokens_;
};

// The certificate source of the server's TLS and of the channels it opens:
// fixed contents, or (reloading) gRPC's file watcher over validated copies.
// gRPC polls those copies every second, so a certificate the credential
// watcher publishes is in use for new handshakes within a second.
absl::StatusOr<std::shared_ptr<grpc::experimental::CertificateProviderInterface>>
CertificateProvider(const TlsContents& tls, bool reload, ServerSecurity* security) {
  if (!reload) {
    return std::make_shared<grpc::experimental::StaticDataCertificateProvider>(
        tls.ca, std::vector<grpc::experimental::IdentityKeyCertPair>{{tls.key, tls.cert}});
  }
  absl::StatusOr<std::unique_ptr<StagedTlsFiles>> staged = StagedTlsFiles::Create(tls);
  if (!staged.ok()) {
    return absl::InternalError(
        absl::StrCat("staging the TLS files for reloading: ", staged.status().message()));
  }
  security->staged_tls = *std::move(staged);
  constexpr unsigned int kStagedPollSeconds = 1;
  return std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      security->staged_tls->key_path(), security->staged_tls->cert_path(),
      security->staged_tls->ca_path(), kStagedPollSeconds);
}

// `mutual`: client certificates are requested, required and verified
// against the CA, as SslServerCredentials did.
std::shared_ptr<grpc::ServerCredentials> ServerTlsCredentials(
    std::shared_ptr<grpc::experimental::CertificateProviderInterface> provider, bool mutual) {
  grpc::experimental::TlsServerCredentialsOptions options(std::move(provider));
  options.watch_identity_key_cert_pairs();
  if (mutual) {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  } else {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

// Presents our certificate; verifies the server against the CA (the system
// roots without one) and its name against the target, as SslCredentials did.
std::shared_ptr<grpc::ChannelCredentials> ChannelTlsCredentials(
    std::shared_ptr<grpc::experimental::CertificateProviderInterface> provider, bool has_ca) {
  grpc::experimental::TlsChannelCredentialsOptions options;
  options.set_certificate_provider(std::move(provider));
  options.watch_identity_key_cert_pairs();
  if (has_ca) options.watch_root_certs();
  options.set_verify_server_certs(true);
  options.set_certificate_verifier(
      std::make_shared<grpc::experimental::HostNameCertificateVerifier>());
  return grpc::experimental::TlsCredentials(options);
}

}  // namespace

ClientTokens::ClientTokens(std::string public_token, std::string admin_token)
    : public_token_(std::move(public_token)), admin_token_(std::move(admin_token)) {}

void ClientTokens::Replace(std::string public_token, std::string admin_token) {
  absl::MutexLock lock(&mu_);
  public_token_ = std::move(public_token);
  admin_token_ = std::move(admin_token);
}

std::string ClientTokens::public_token() const {
  absl::ReaderMutexLock lock(&mu_);
  return public_token_;
}

std::string ClientTokens::admin_token() const {
  absl::ReaderMutexLock lock(&mu_);
  return admin_token_;
}

absl::StatusOr<ClientSecurity> LoadClientSecurity(const TlsFiles& files,
                                                  const std::string& public_token_file,
                                                  const std::string& admin_token_file) {
  ClientSecurity security;
  if (files.tls()) {
    absl::StatusOr<TlsContents> tls = ReadTlsFiles(files);
    if (!tls.ok()) return tls.status();
    security.credentials = ChannelCredentials(*tls);
  }
  absl::StatusOr<std::string> public_token = OptionalToken("auth-token-file", public_token_file);
  if (!public_token.ok()) return public_token.status();
  absl::StatusOr<std::string> admin_token = OptionalToken("admin-token-file", admin_token_file);
  if (!admin_token.ok()) return admin_token.status();
  if (!public_token->empty() || !admin_token->empty()) {
    security.tokens =
        std::make_shared<ClientTokens>(*std::move(public_token), *std::move(admin_token));
  }
  return security;
}

std::shared_ptr<grpc::Channel> CreateClientChannel(const std::string& target,
                                                   const ClientSecurity& security,
                                                   const grpc::ChannelArguments& args) {
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      security.credentials != nullptr ? security.credentials : grpc::InsecureChannelCredentials();
  if (security.tokens == nullptr) return grpc::CreateCustomChannel(target, credentials, args);
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> factories;
  factories.push_back(std::make_unique<TokenInterceptorFactory>(security.tokens));
  return grpc::experimental::CreateCustomChannelWithInterceptors(target, credentials, args,
                                                                 std::move(factories));
}

absl::StatusOr<ServerSecurity> LoadServerSecurity(const SecurityFlags& flags) {
  const TlsFiles& files = flags.tls;
  if (!files.ca.empty() && files.cert.empty()) {
    return absl::InvalidArgumentError(
        "--tls-ca needs --tls-cert and --tls-key: the server's own certificate");
  }
  absl::StatusOr<TlsContents> tls = ReadTlsFiles(files);
  if (!tls.ok()) return tls.status();
  absl::StatusOr<std::string> public_token =
      OptionalToken("auth-token-file", flags.auth_token_file);
  if (!public_token.ok()) return public_token.status();
  absl::StatusOr<std::string> admin_token =
      OptionalToken("admin-token-file", flags.admin_token_file);
  if (!admin_token.ok()) return admin_token.status();
  absl::StatusOr<std::string> backend_token =
      OptionalToken("backend-token-file", flags.backend_token_file);
  if (!backend_token.ok()) return backend_token.status();

  if (!public_token->empty() && ConstantTimeEquals(*public_token, *admin_token)) {
    return absl::InvalidArgumentError(
        "--auth-token-file and --admin-token-file hold the same token: the public token would "
        "open Admin and Replication");
  }
  if (!public_token->empty() && admin_token->empty() && files.ca.empty()) {
    return absl::InvalidArgumentError(
        "--auth-token-file needs --admin-token-file or --tls-ca as well: otherwise Admin and "
        "Replication accept nobody (not the router's probes, not a leader's stream)");
  }

  ServerSecurity security;
  const bool mutual = !files.ca.empty();
  std::vector<std::string> summary;
  if (!tls->cert.empty()) {
    absl::StatusOr<std::shared_ptr<grpc::experimental::CertificateProviderInterface>> provider =
        CertificateProvider(*tls, flags.reload_interval > absl::ZeroDuration(), &security);
    if (!provider.ok()) return provider.status();
    security.server_credentials = ServerTlsCredentials(*provider, mutual);
    security.client.credentials = ChannelTlsCredentials(*provider, mutual);
    summary.push_back(mutual ? "mutual TLS (client certificates required, verified by --tls-ca)"
                             : "TLS (no client certificates)");
  } else {
    summary.push_back("plaintext");
  }
  security.policy = AccessPolicy(*public_token, *admin_token, mutual);
  if (!public_token->empty()) summary.push_back("KeyValue requires the bearer token");
  if (security.policy.enforcing()) {
    summary.push_back(
        absl::StrCat("Admin/Replication require ", mutual && !admin_token->empty()
                                                       ? "a client certificate or the admin token"
                                                   : mutual ? "a client certificate"
                                                            : "the admin token"));
  }
  const std::string& client_public = backend_token->empty() ? *public_token : *backend_token;
  if (!client_public.empty() || !admin_token->empty()) {
    security.client.tokens = std::make_shared<ClientTokens>(client_public, *admin_token);
  }
  security.tls = *std::move(tls);
  security.public_token = *std::move(public_token);
  security.admin_token = *std::move(admin_token);
  security.backend_token = *std::move(backend_token);
  if (flags.reload_interval > absl::ZeroDuration() &&
      (files.tls() || !flags.auth_token_file.empty() || !flags.admin_token_file.empty() ||
       !flags.backend_token_file.empty())) {
    summary.push_back(absl::StrCat("files re-read every ",
                                   absl::FormatDuration(flags.reload_interval), " and on SIGHUP"));
  }
  security.summary = absl::StrJoin(summary, "; ");
  return security;
}

}  // namespace kvstore

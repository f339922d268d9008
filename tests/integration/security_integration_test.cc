// Security of the real binaries (docs/security.md): bearer tokens on every
// RPC of every service, proved by walking the service descriptors so that an
// RPC added without the check fails here; nothing written by a refused call;
// unsafe flag combinations refused at start-up; and a whole cluster (kv-router
// -> kv-shard -> kv-replica) over mutual TLS with tokens, where a node holding
// a certificate from another CA can neither join as a replica nor feed one;
// and rotated token and certificate files put in force without a restart
// (on the reload interval and on SIGHUP), bad ones refused.
// The CAs, certificates and keys are made at test time with the openssl CLI.
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>

#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/topology/topology.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/auth_context.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "kvstore/v1/admin.grpc.pb.h"
#include "kvstore/v1/kv.grpc.pb.h"
#include "kvstore/v1/replication.grpc.pb.h"
#include "tests/support/process.h"
#include "tests/support/router_process.h"

#ifndef OPENSSL_BIN
#error "OPENSSL_BIN must name the openssl command-line tool (see tests/CMakeLists.txt)"
#endif

namespace kvstore {
namespace {

using ::kvstore::testing::ChildProcess;
using ::kvstore::testing::ExitStatus;
using ::kvstore::testing::FileTail;
using ::kvstore::testing::KvctlResult;
using ::kvstore::testing::ReadFileOrEmpty;
using ::kvstore::testing::RouterProcess;
using ::kvstore::testing::RunKvctl;
using ::kvstore::testing::ServerProcess;
using ::kvstore::testing::TempDir;
using ::kvstore::testing::WaitFor;
using ::kvstore::testing::WriteTopologyFile;

constexpr char kPublicToken[] = "public-token-0123456789";
constexpr char kAdminToken[] = "admin-token-9876543210";

std::string WriteFile(const std::string& path, const std::string& content) {
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

std::string Describe(const grpc::Status& s) {
  return absl::StrCat("code ", s.error_code(), ": ", s.error_message());
}

// ---------------------------------------------------------------- test PKI

// CAs and leaf certificates (IP SAN 127.0.0.1, usable by servers and
// clients) in one directory: <name>.pem and <name>.key.
class TestPki {
 public:
  explicit TestPki(std::string dir) : dir_(std::move(dir)) {}

  absl::Status MakeCa(const std::string& name) {
    return Openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", absl::StrCat("/CN=", name), "-addext",
                    "basicConstraints=critical,CA:TRUE", "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign", "-keyout", key(name), "-out",
                    pem(name)});
  }

  absl::Status MakeLeaf(const std::string& name, const std::string& ca) {
    const std::string csr = path(name + ".csr");
    const std::string ext = WriteFile(path(name + ".ext"),
                                      "subjectAltName=IP:127.0.0.1\n"
                                      "extendedKeyUsage=serverAuth,clientAuth\n");
    if (absl::Status s = Openssl({"req", "-new", "-newkey", "ec", "-pkeyopt",
                                  "ec_paramgen_curve:prime256v1", "-nodes", "-subj",
                                  absl::StrCat("/CN=", name), "-keyout", key(name), "-out", csr});
        !s.ok()) {
      return s;
    }
    return Openssl({"x509", "-req", "-in", csr, "-CA", pem(ca), "-CAkey", key(ca),
                    "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", pem(name)});
  }

  std::string pem(const std::string& name) const { return path(name + ".pem"); }
  std::string key(const std::string& name) const { return path(name + ".key"); }

  // Server flags: this certificate, trusting `ca` (mutual TLS).
  std::vector<std::string> ServerFlags(const std::string& name, const std::string& ca) const {
    return {"--tls-cert=" + pem(name), "--tls-key=" + key(name), "--tls-ca=" + pem(ca)};
  }

  // A client presenting `name` (none when empty), verifying servers with `ca`.
  std::shared_ptr<grpc::ChannelCredentials> Client(const std::string& name,
                                                   const std::string& ca) const {
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = ReadFileOrEmpty(pem(ca));
    if (!name.empty()) {
      options.pem_cert_chain = ReadFileOrEmpty(pem(name));
      options.pem_private_key = ReadFileOrEmpty(key(name));
    }
    return grpc::SslCredentials(options);
  }

 private:
  std::string path(const std::string& file) const { return dir_ + "/" + file; }

  absl::Status Openssl(const std::vector<std::string>& args) const {
    const std::string log = path("openssl.log");
    ChildProcess openssl;
    if (absl::Status s = openssl.Start(OPENSSL_BIN, args, log); !s.ok()) return s;
    absl::StatusOr<ExitStatus> exit = openssl.WaitExit(absl::Now() + absl::Seconds(30));
    if (!exit.ok()) return exit.status();
    if (!exit->Clean()) {
      return absl::InternalError(absl::StrCat("openssl ", absl::StrJoin(args, " "), ": ",
                                              exit->ToString(), "\n", FileTail(log)));
    }
    return absl::OkStatus();
  }

  std::string dir_;
};

// ---------------------------------------------------------------- generic calls

std::shared_ptr<grpc::Channel> Channel(const std::string& address,
                                       std::shared_ptr<grpc::ChannelCredentials> credentials) {
  grpc::ChannelArguments args;
  // Each test channel makes its own connection (its own TLS handshake).
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(
      address, credentials != nullptr ? credentials : grpc::InsecureChannelCredentials(), args);
}

// Calls `path` with an empty request message (none for a client-streaming
// method), half-closes, reads at most one reply into *reply and returns the
// call's status. `token` (if any) goes in "authorization: Bearer".
grpc::Status Call(const std::shared_ptr<grpc::Channel>& channel, const std::string& path,
                  bool client_streaming, const std::string& token, std::string* reply = nullptr) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  if (!token.empty()) context.AddMetadata("authorization", absl::StrCat("Bearer ", token));
  grpc::CompletionQueue cq;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
      stub.PrepareCall(&context, path, &cq);
  // One operation at a time: each waits for its own completion.
  auto step = [&cq](int want) {
    void* tag = nullptr;
    bool ok = false;
    EXPECT_TRUE(cq.Next(&tag, &ok));
    EXPECT_EQ(tag, reinterpret_cast<void*>(static_cast<intptr_t>(want)));
    return ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  bool ok = step(1);
  if (ok && !client_streaming) {
    grpc::Slice empty("", 0);  // An empty message: zero bytes, one slice.
    call->Write(grpc::ByteBuffer(&empty, 1), reinterpret_cast<void*>(2));
    ok = step(2);
  }
  if (ok) {
    call->WritesDone(reinterpret_cast<void*>(3));
    ok = step(3);
  }
  grpc::ByteBuffer response;
  if (ok) {
    call->Read(&response, reinterpret_cast<void*>(4));
    if (step(4) && reply != nullptr) {
      std::vector<grpc::Slice> slices;
      if (response.Dump(&slices).ok()) {
        for (const grpc::Slice& s : slices) {
          reply->append(reinterpret_cast<const char*>(s.begin()), s.size());
        }
      }
    }
  }
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  step(5);
  cq.Shutdown();
  void* tag = nullptr;
  while (cq.Next(&tag, &ok)) {
  }
  return status;
}

grpc::Status CallMethod(const std::shared_ptr<grpc::Channel>& channel,
                        const google::protobuf::MethodDescriptor* method,
                        const std::string& token) {
  return Call(channel, absl::StrCat("/", method->service()->full_name(), "/", method->name()),
              method->client_streaming(), token);
}

absl::Status CheckServing(const std::shared_ptr<grpc::Channel>& channel) {
  std::string reply;
  grpc::Status status = Call(channel, "/grpc.health.v1.Health/Check", false, "", &reply);
  if (!status.ok()) return absl::UnavailableError(Describe(status));
  // HealthCheckResponse{status: SERVING}: field 1, varint 1.
  if (reply != std::string("\x08\x01", 2)) return absl::UnavailableError("not SERVING");
  return absl::OkStatus();
}

const google::protobuf::ServiceDescriptor* Service(const std::string& full_name) {
  // Touching a message of each file links it in and registers its services.
  (void)v1::GetRequest::descriptor();
  (void)v1::StatusRequest::descriptor();
  (void)v1::LeaderMessage::descriptor();
  const google::protobuf::ServiceDescriptor* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(full_name);
  EXPECT_NE(service, nullptr) << full_name;
  return service;
}

// ---------------------------------------------------------------- TLS servers

// kv-shard, kv-replica or kv-router with TLS flags: ServerProcess's readiness
// check speaks plaintext, so this one checks health over TLS. Files:
// <dir>/port, <dir>/data (not for the router), <dir>/<name>.log.
class TlsServer {
 public:
  TlsServer(std::string dir, std::string binary, std::string name, bool has_data = true)
      : dir_(std::move(dir)),
        binary_(std::move(binary)),
        name_(std::move(name)),
        has_data_(has_data) {}

  // Starts on a free port with `flags` and waits for SERVING, asked over a
  // channel with `credentials`.
  absl::Status Start(const std::vector<std::string>& flags,
                     std::shared_ptr<grpc::ChannelCredentials> credentials) {
    ::mkdir(dir_.c_str(), 0755);
    std::vector<std::string> args = {"--listen=127.0.0.1:0", "--port-file=" + dir_ + "/port"};
    if (has_data_) args.push_back("--data-dir=" + dir_ + "/data");
    args.insert(args.end(), flags.begin(), flags.end());
    if (absl::Status s = process_.Start(binary_, args, log_path()); !s.ok()) return s;
    absl::Status last = absl::UnavailableError("no port file yet");
    const bool serving = WaitFor(
        [&] {
          absl::StatusOr<ExitStatus> exited = process_.WaitExit(absl::InfinitePast());
          if (exited.ok()) {
            last = absl::UnavailableError(absl::StrCat("exited: ", exited->ToString()));
            return true;
          }
          const std::string port = ReadFileOrEmpty(dir_ + "/port");
          if (port.empty() || port.back() != '\n') return false;
          address_ = std::string(absl::StripSuffix(port, "\n"));
          last = CheckServing(Channel(address_, credentials));
          return last.ok();
        },
        absl::Now() + absl::Seconds(30), absl::Milliseconds(50));
    if (!serving || !last.ok()) {
      return absl::Status(last.code(), absl::StrCat(name_, " not serving: ", last.message(), "\n",
                                                    FileTail(log_path())));
    }
    return absl::OkStatus();
  }

  const std::string& address() const { return address_; }
  std::string log_path() const { return dir_ + "/" + name_ + ".log"; }
  std::string LogTail() const { return FileTail(log_path()); }

 private:
  std::string dir_;
  std::string binary_;
  std::string name_;
  bool has_data_;
  std::string address_;
  ChildProcess process_;
};

// Admin.Status of `address` over `channel` credentials, with `token`.
absl::StatusOr<v1::StatusResponse> Status(const std::string& address,
                                          std::shared_ptr<grpc::ChannelCredentials> credentials,
                                          const std::string& token = "") {
  auto stub = v1::Admin::NewStub(Channel(address, std::move(credentials)));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  if (!token.empty()) context.AddMetadata("authorization", absl::StrCat("Bearer ", token));
  v1::StatusResponse response;
  grpc::Status s = stub->Status(&context, v1::StatusRequest(), &response);
  if (!s.ok()) return absl::UnavailableError(Describe(s));
  return response;
}

// ---------------------------------------------------------------- tests

class SecurityIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    public_token_file_ = WriteFile(tmp_.Join("public.token"), absl::StrCat(kPublicToken, "\n"));
    admin_token_file_ = WriteFile(tmp_.Join("admin.token"), absl::StrCat(kAdminToken, "\n"));
  }

  std::vector<std::string> TokenFlags() const {
    return {"--auth-token-file=" + public_token_file_, "--admin-token-file=" + admin_token_file_};
  }

  // Every method of every service at `address`: refused without a token and
  // with the wrong kind; let through (whatever it then answers) with the
  // right one. Health stays open.
  void ExpectEveryRpcGuarded(const std::string& address, const std::vector<std::string>& public_,
                             const std::vector<std::string>& cluster) {
    std::shared_ptr<grpc::Channel> channel = Channel(address, nullptr);
    int methods = 0;
    auto check = [&](const std::string& name, bool is_public) {
      const google::protobuf::ServiceDescriptor* service = Service(name);
      ASSERT_NE(service, nullptr);
      for (int i = 0; i < service->method_count(); ++i) {
        const google::protobuf::MethodDescriptor* method = service->method(i);
        ++methods;
        SCOPED_TRACE(absl::StrCat(address, " ", method->full_name()));
        const std::string right = is_public ? kPublicToken : kAdminToken;
        const std::string wrong = is_public ? kAdminToken : kPublicToken;
        for (const std::string& token : {std::string(), wrong, std::string("nonsense")}) {
          grpc::Status s = CallMethod(channel, method, token);
          EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED)
              << "token '" << token << "': " << Describe(s);
        }
        grpc::Status s = CallMethod(channel, method, right);
        EXPECT_NE(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << Describe(s);
      }
    };
    for (const std::string& name : public_) check(name, true);
    for (const std::string& name : cluster) check(name, false);
    EXPECT_GT(methods, 3);
    EXPECT_TRUE(CheckServing(channel).ok()) << "health must stay open to probes";
  }

  TempDir tmp_;
  std::string public_token_file_;
  std::string admin_token_file_;
};

TEST_F(SecurityIntegrationTest, TokensGuardEveryRpcOfShardAndRouter) {
  ServerProcess shard(tmp_.Join("shard"), KV_SHARD_BIN, "shard");
  ASSERT_TRUE(shard.Start(TokenFlags()).ok()) << shard.LogTail();
  RouterProcess router(tmp_.Join("router"));
  Topology topology;
  topology.shards.push_back(ShardTopology{"shard-0", shard.address(), {}});
  const std::string topology_file = tmp_.Join("topology.yaml");
  ASSERT_TRUE(WriteTopologyFile(topology_file, topology).ok());
  ASSERT_TRUE(router.Start(topology_file, TokenFlags()).ok()) << router.LogTail();

  {
    SCOPED_TRACE("kv-shard");
    ExpectEveryRpcGuarded(shard.address(), {v1::KeyValue::service_full_name()},
                          {v1::Admin::service_full_name(), v1::Replication::service_full_name()});
  }
  {
    SCOPED_TRACE("kv-router");
    ExpectEveryRpcGuarded(router.address(), {v1::KeyValue::service_full_name()},
                          {v1::Admin::service_full_name()});
  }
  // The router forwards with its own token: a client's valid request reaches
  // the shard and is answered.
  KvctlResult set =
      RunKvctl(router.address(), {"--auth-token-file=" + public_token_file_, "set", "k", "v"});
  EXPECT_EQ(set.exit_code, 0) << set.ToString() << router.LogTail();
  KvctlResult get =
      RunKvctl(router.address(), {"--auth-token-file=" + public_token_file_, "get", "k"});
  EXPECT_EQ(get.exit_code, 0) << get.ToString();
  EXPECT_EQ(get.out, "v\n");
  // And its probes (Admin.Status, with the admin token) pass.
  KvctlResult status =
      RunKvctl(shard.address(), {"--admin-token-file=" + admin_token_file_, "status"});
  EXPECT_EQ(status.exit_code, 0) << status.ToString();
  EXPECT_EQ(router.CountLogLines("UNAUTHENTICATED"), 0) << router.LogTail();
}

TEST_F(SecurityIntegrationTest, RefusedWritesApplyNothing) {
  ServerProcess shard(tmp_.Join("shard"), KV_SHARD_BIN, "shard");
  ASSERT_TRUE(shard.Start(TokenFlags()).ok()) << shard.LogTail();
  // Health answers before the leader has logged its epoch record: wait for
  // it, so that the comparison below sees only what the refused writes did.
  absl::StatusOr<v1::StatusResponse> before;
  ASSERT_TRUE(WaitFor(
      [&] {
        before = Status(shard.address(), nullptr, kAdminToken);
        return before.ok() && before->last_index() > 0;
      },
      absl::Now() + absl::Seconds(10), absl::Milliseconds(50)))
      << (before.ok() ? "" : before.status().ToString()) << shard.LogTail();
  auto kv = v1::KeyValue::NewStub(Channel(shard.address(), nullptr));
  for (const std::string& token : {std::string(), std::string(kAdminToken), std::string("x")}) {
    grpc::ClientContext context;
    if (!token.empty()) context.AddMetadata("authorization", absl::StrCat("Bearer ", token));
    v1::SetRequest request;
    request.set_key("k");
    request.set_value("v");
    v1::SetResponse response;
    grpc::Status s = kv->Set(&context, request, &response);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << Describe(s);
    EXPECT_EQ(response.version(), 0u);
  }
  KvctlResult refused = RunKvctl(shard.address(), {"set", "k", "v"});
  EXPECT_EQ(refused.exit_code, 5) << refused.ToString();
  EXPECT_TRUE(absl::StrContains(refused.err, "UNAUTHENTICATED")) << refused.ToString();

  // Nothing reached the log or the map.
  absl::StatusOr<v1::StatusResponse> status = Status(shard.address(), nullptr, kAdminToken);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(status->last_index(), before->last_index());  // Its epoch record only.
  EXPECT_EQ(status->key_count(), 0u);
  KvctlResult get =
      RunKvctl(shard.address(), {"--auth-token-file=" + public_token_file_, "get", "k"});
  EXPECT_EQ(get.exit_code, 1) << get.ToString();
}

TEST_F(SecurityIntegrationTest, StartUpRefusesUnsafeCombinations) {
  ASSERT_EQ(::mkdir(tmp_.Join("shard").c_str(), 0755), 0);
  ServerProcess shard(tmp_.Join("shard"), KV_SHARD_BIN, "shard");
  // A public token without an admin token or a CA: Admin and Replication
  // would be closed to everyone.
  absl::StatusOr<ExitStatus> exit =
      shard.RunExpectingExit({"--auth-token-file=" + public_token_file_});
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->code, 2) << exit->ToString();
  EXPECT_TRUE(absl::StrContains(ReadFileOrEmpty(shard.log_path()), "--admin-token-file"))
      << shard.LogTail();
  // One token for both: the public token would open Admin.
  exit = shard.RunExpectingExit(
      {"--auth-token-file=" + public_token_file_, "--admin-token-file=" + public_token_file_});
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->code, 2) << exit->ToString();
  // A certificate without its key.
  exit = shard.RunExpectingExit({"--tls-cert=" + public_token_file_});
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->code, 2) << exit->ToString();
}

class MutualTlsTest : public SecurityIntegrationTest {
 protected:
  void SetUp() override {
    SecurityIntegrationTest::SetUp();
    pki_dir_ = tmp_.Join("pki");
    ASSERT_EQ(::mkdir(pki_dir_.c_str(), 0700), 0);
    pki_ = std::make_unique<TestPki>(pki_dir_);
    ASSERT_TRUE(pki_->MakeCa("ca").ok());
    ASSERT_TRUE(pki_->MakeLeaf("node", "ca").ok());
    ASSERT_TRUE(pki_->MakeLeaf("client", "ca").ok());
    ASSERT_TRUE(pki_->MakeCa("other-ca").ok());
    ASSERT_TRUE(pki_->MakeLeaf("rogue", "other-ca").ok());
  }

  std::vector<std::string> NodeFlags(const std::string& cert = "node",
                                     const std::string& ca = "ca") const {
    std::vector<std::string> flags = pki_->ServerFlags(cert, ca);
    for (const std::string& f : TokenFlags()) flags.push_back(f);
    return flags;
  }

  std::vector<std::string> KvctlFlags(const std::string& cert = "client") const {
    return {"--tls-ca=" + pki_->pem("ca"), "--tls-cert=" + pki_->pem(cert),
            "--tls-key=" + pki_->key(cert), "--auth-token-file=" + public_token_file_};
  }

  // Runs kvbench for half a second against `address` with `flags`; its exit
  // code and everything it printed.
  std::pair<int, std::string> RunBench(const std::string& address,
                                       std::vector<std::string> flags) const {
    TempDir out;
    std::vector<std::string> argv = {"--target=kvstore://" + address,
                                     "--workload=ycsb-a",
                                     "--keyspace=100",
                                     "--concurrency=4",
                                     "--channels=1",
                                     "--duration=0.5",
                                     "--warmup=0",
                                     "--json"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    ChildProcess bench;
    if (absl::Status s = bench.Start(KVBENCH_BIN, argv, out.Join("out"), out.Join("err"));
        !s.ok()) {
      return {-1, s.ToString()};
    }
    absl::StatusOr<ExitStatus> exit = bench.WaitExit(absl::Now() + absl::Seconds(60));
    if (!exit.ok()) (void)bench.KillHard();
    const std::string printed = ReadFileOrEmpty(out.Join("out")) + ReadFileOrEmpty(out.Join("err"));
    return {exit.ok() && exit->exited ? exit->code : -1, printed};
  }

  std::string pki_dir_;
  std::unique_ptr<TestPki> pki_;
};

TEST_F(MutualTlsTest, RouterShardAndReplicaWorkOverMutualTlsWithTokens) {
  const auto cluster_client = pki_->Client("client", "ca");
  TlsServer replica(tmp_.Join("replica"), KV_REPLICA_BIN, "replica");
  ASSERT_TRUE(replica.Start(NodeFlags(), cluster_client).ok()) << replica.LogTail();
  TlsServer shard(tmp_.Join("shard"), KV_SHARD_BIN, "shard");
  std::vector<std::string> shard_flags = NodeFlags();
  shard_flags.push_back("--followers=" + replica.address());
  ASSERT_TRUE(shard.Start(shard_flags, cluster_client).ok()) << shard.LogTail();
  Topology topology;
  topology.shards.push_back(ShardTopology{"shard-0", shard.address(), {replica.address()}});
  const std::string topology_file = tmp_.Join("topology.yaml");
  ASSERT_TRUE(WriteTopologyFile(topology_file, topology).ok());
  TlsServer router(tmp_.Join("router"), KV_ROUTER_BIN, "router", /*has_data=*/false);
  std::vector<std::string> router_flags = NodeFlags();
  router_flags.push_back("--topology=" + topology_file);
  ASSERT_TRUE(router.Start(router_flags, cluster_client).ok()) << router.LogTail();

  // kvctl through the router: TLS both ways, the token on top.
  std::vector<std::string> args = KvctlFlags();
  args.insert(args.end(), {"set", "greeting", "hello"});
  KvctlResult set = RunKvctl(router.address(), args);
  ASSERT_EQ(set.exit_code, 0) << set.ToString() << router.LogTail() << shard.LogTail();
  args = KvctlFlags();
  args.insert(args.end(), {"get", "greeting"});
  KvctlResult get = RunKvctl(router.address(), args);
  EXPECT_EQ(get.exit_code, 0) << get.ToString();
  EXPECT_EQ(get.out, "hello\n");

  // The leader streamed it to the replica over mutual TLS.
  KvctlResult on_replica;
  const bool replicated = WaitFor(
      [&] {
        std::vector<std::string> a = KvctlFlags();
        a.insert(a.end(), {"--read_mode=any", "get", "greeting"});
        on_replica = RunKvctl(replica.address(), a);
        return on_replica.exit_code == 0 && on_replica.out == "hello\n";
      },
      absl::Now() + absl::Seconds(20), absl::Milliseconds(100));
  EXPECT_TRUE(replicated) << on_replica.ToString() << replica.LogTail() << shard.LogTail();

  // A verified client certificate opens Admin without the admin token.
  absl::StatusOr<v1::StatusResponse> status = Status(shard.address(), cluster_client);
  ASSERT_TRUE(status.ok()) << status.status();
  ASSERT_EQ(status->followers_size(), 1);
  EXPECT_EQ(status->followers(0).state(), "streaming") << status->DebugString();

  // Without the right TLS, nothing gets through: plaintext, TLS without a
  // client certificate, a certificate from another CA.
  for (const auto& [what, credentials] :
       std::vector<std::pair<std::string, std::shared_ptr<grpc::ChannelCredentials>>>{
           {"plaintext", nullptr},
           {"no client certificate", pki_->Client("", "ca")},
           {"certificate from another CA", pki_->Client("rogue", "ca")}}) {
    SCOPED_TRACE(what);
    for (const std::string& address : {router.address(), shard.address(), replica.address()}) {
      grpc::Status s =
          Call(Channel(address, credentials), "/kvstore.v1.KeyValue/Get", false, kPublicToken);
      EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << address << ": " << Describe(s);
    }
  }
  // With TLS but no token, the public API still refuses.
  grpc::Status s =
      Call(Channel(router.address(), cluster_client), "/kvstore.v1.KeyValue/Get", false, "");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << Describe(s);

  // kvbench takes the same client flags as kvctl; without the token it stops
  // at its probe instead of counting refusals.
  const auto [bench_code, bench_out] = RunBench(router.address(), KvctlFlags());
  EXPECT_EQ(bench_code, 0) << bench_out;
  EXPECT_TRUE(absl::StrContains(bench_out, "\"errors\":0")) << bench_out;
  std::vector<std::string> pipelined = KvctlFlags();
  pipelined.push_back("--pipeline");
  const auto [pipeline_code, pipeline_out] = RunBench(router.address(), pipelined);
  EXPECT_EQ(pipeline_code, 0) << pipeline_out;
  EXPECT_TRUE(absl::StrContains(pipeline_out, "\"pipeline\":true")) << pipeline_out;
  EXPECT_TRUE(absl::StrContains(pipeline_out, "\"errors\":0")) << pipeline_out;
  std::vector<std::string> no_token = KvctlFlags();
  no_token.pop_back();  // --auth-token-file
  const auto [refused_code, refused_out] = RunBench(router.address(), no_token);
  EXPECT_NE(refused_code, 0) << refused_out;
  EXPECT_TRUE(absl::StrContains(refused_out, "UNAUTHENTICATED") ||
              absl::StrContains(refused_out, "--auth-token-file"))
      << refused_out;
}

TEST_F(MutualTlsTest, NodeWithCertificateFromAnotherCaCannotJoin) {
  // A replica that trusts the cluster CA but holds a certificate from another
  // one: the leader does not accept it as its follower.
  TlsServer rogue_replica(tmp_.Join("rogue-replica"), KV_REPLICA_BIN, "replica");
  ASSERT_TRUE(
      rogue_replica.Start(NodeFlags("rogue", "ca"), pki_->Client("client", "other-ca")).ok())
      << rogue_replica.LogTail();
  // A genuine replica, fed by a leader whose certificate comes from the other CA.
  TlsServer replica(tmp_.Join("replica"), KV_REPLICA_BIN, "replica");
  ASSERT_TRUE(replica.Start(NodeFlags(), pki_->Client("client", "ca")).ok()) << replica.LogTail();

  TlsServer leader(tmp_.Join("leader"), KV_SHARD_BIN, "shard");
  // Their followers never complete a handshake: they lead without waiting.
  std::vector<std::string> flags = NodeFlags();
  flags.push_back("--start-wait-ms=0");
  flags.push_back("--followers=" + rogue_replica.address());
  ASSERT_TRUE(leader.Start(flags, pki_->Client("client", "ca")).ok()) << leader.LogTail();
  TlsServer rogue_leader(tmp_.Join("rogue-leader"), KV_SHARD_BIN, "shard");
  flags = NodeFlags("rogue", "ca");
  flags.push_back("--start-wait-ms=0");
  flags.push_back("--followers=" + replica.address());
  ASSERT_TRUE(rogue_leader.Start(flags, pki_->Client("client", "other-ca")).ok())
      << rogue_leader.LogTail();

  for (const auto& [node, server_ca] : std::vector<std::pair<TlsServer*, std::string>>{
           {&leader, "ca"}, {&rogue_leader, "other-ca"}}) {
    std::vector<std::string> args = {"--tls-ca=" + pki_->pem(server_ca),
                                     "--tls-cert=" + pki_->pem("client"),
                                     "--tls-key=" + pki_->key("client"),
                                     "--auth-token-file=" + public_token_file_,
                                     "--ack=memory",
                                     "set",
                                     "k",
                                     "v"};
    KvctlResult set = RunKvctl(node->address(), args);
    EXPECT_EQ(set.exit_code, 0) << set.ToString() << node->LogTail();
  }

  // Each leader reports its follower unreachable, with the error, never streaming.
  for (const auto& [node, server_ca] : std::vector<std::pair<TlsServer*, std::string>>{
           {&leader, "ca"}, {&rogue_leader, "other-ca"}}) {
    absl::StatusOr<v1::StatusResponse> status = absl::UnknownError("not asked");
    const bool failed = WaitFor(
        [&] {
          status = Status(node->address(), pki_->Client("client", server_ca));
          return status.ok() && status->followers_size() == 1 &&
                 !status->followers(0).error().empty();
        },
        absl::Now() + absl::Seconds(20), absl::Milliseconds(100));
    ASSERT_TRUE(failed) << (status.ok() ? status->DebugString() : status.status().ToString())
                        << node->LogTail();
    EXPECT_NE(status->followers(0).state(), "streaming") << status->DebugString();
    EXPECT_EQ(status->followers(0).acked_index(), 0u) << status->DebugString();
  }

  // And neither follower applied anything.
  absl::StatusOr<v1::StatusResponse> rogue_status =
      Status(rogue_replica.address(), pki_->Client("client", "other-ca"));
  ASSERT_TRUE(rogue_status.ok()) << rogue_status.status();
  EXPECT_EQ(rogue_status->last_index(), 0u) << rogue_status->DebugString();
  EXPECT_EQ(rogue_status->key_count(), 0u);
  absl::StatusOr<v1::StatusResponse> replica_status =
      Status(replica.address(), pki_->Client("client", "ca"));
  ASSERT_TRUE(replica_status.ok()) << replica_status.status();
  EXPECT_EQ(replica_status->last_index(), 0u) << replica_status->DebugString();
  EXPECT_EQ(replica_status->key_count(), 0u);
}

// ---------------------------------------------------------------- credential reload

// Replaces `path` in one step (write aside, rename over), as an operator's
// rotation should.
void ReplaceFile(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".new";
  WriteFile(tmp, content);
  ASSERT_EQ(::rename(tmp.c_str(), path.c_str()), 0) << path;
}

// kvstore_credentials_reloads_total{file, result} from the /metrics of the
// process whose --metrics-port-file is `port_file`; -1 when unreadable.
int64_t ReloadCount(const std::string& port_file, const std::string& file,
                    const std::string& result) {
  const std::string address(absl::StripSuffix(ReadFileOrEmpty(port_file), "\n"));
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port)) return -1;
  httplib::Client client(address.substr(0, colon), port);
  client.set_connection_timeout(5);
  client.set_read_timeout(5);
  httplib::Result res = client.Get("/metrics");
  if (!res || res->status != 200) return -1;
  const std::string series = absl::StrCat("kvstore_credentials_reloads_total{file=\"", file,
                                          "\",result=\"", result, "\"} ");
  const size_t at = res->body.find(series);
  if (at == std::string::npos) return -1;
  const size_t end = res->body.find('\n', at);
  int64_t value = -1;
  if (!absl::SimpleAtoi(res->body.substr(at + series.size(), end - at - series.size()), &value)) {
    return -1;
  }
  return value;
}

// A KeyValue.Set with `token` on a fresh connection: its status code.
grpc::StatusCode SetWithToken(const std::string& address,
                              std::shared_ptr<grpc::ChannelCredentials> credentials,
                              const std::string& token) {
  auto kv = v1::KeyValue::NewStub(Channel(address, std::move(credentials)));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  context.AddMetadata("authorization", absl::StrCat("Bearer ", token));
  v1::SetRequest request;
  request.set_key("rotation");
  request.set_value("v");
  v1::SetResponse response;
  return kv->Set(&context, request, &response).error_code();
}

TEST_F(SecurityIntegrationTest, RotatedTokenFileIsInForceWithinAnIntervalAndABadOneKeepsTheOld) {
  constexpr char kNewToken[] = "public-token-rotated-42";
  constexpr absl::Duration kInterval = absl::Seconds(1);
  ServerProcess shard(tmp_.Join("shard"), KV_SHARD_BIN, "shard");
  std::vector<std::string> flags = TokenFlags();
  flags.push_back("--credentials-reload-interval=1s");
  flags.push_back("--metrics-listen=127.0.0.1:0");
  const std::string metrics_port = tmp_.Join("shard.metrics");
  flags.push_back("--metrics-port-file=" + metrics_port);
  ASSERT_TRUE(shard.Start(flags).ok()) << shard.LogTail();
  // Health answers before the leader takes writes: wait for the first one.
  ASSERT_TRUE(WaitFor(
      [&] { return SetWithToken(shard.address(), nullptr, kPublicToken) == grpc::StatusCode::OK; },
      absl::Now() + absl::Seconds(10), absl::Milliseconds(50)))
      << shard.LogTail();
  ASSERT_TRUE(WaitFor([&] { return ReloadCount(metrics_port, "auth-token", "ok") == 0; },
                      absl::Now() + absl::Seconds(10)))
      << "the series exists from the start";

  ReplaceFile(public_token_file_, absl::StrCat(kNewToken, "\n"));
  const absl::Time rotated = absl::Now();
  EXPECT_TRUE(WaitFor(
      [&] {
        return SetWithToken(shard.address(), nullptr, kNewToken) == grpc::StatusCode::OK &&
               SetWithToken(shard.address(), nullptr, kPublicToken) ==
                   grpc::StatusCode::UNAUTHENTICATED;
      },
      rotated + kInterval + absl::Seconds(5), absl::Milliseconds(50)))
      << shard.LogTail();
  EXPECT_EQ(ReloadCount(metrics_port, "auth-token", "ok"), 1);
  EXPECT_TRUE(absl::StrContains(ReadFileOrEmpty(shard.log_path()),
                                "Reloaded --auth-token-file " + public_token_file_))
      << shard.LogTail();

  // A token file that does not load: counted, logged, and the token in force
  // stays in force.
  ReplaceFile(public_token_file_, "two words\n");
  EXPECT_TRUE(WaitFor([&] { return ReloadCount(metrics_port, "auth-token", "error") == 1; },
                      absl::Now() + kInterval + absl::Seconds(5), absl::Milliseconds(50)))
      << shard.LogTail();
  EXPECT_EQ(SetWithToken(shard.address(), nullptr, kNewToken), grpc::StatusCode::OK);
  EXPECT_EQ(SetWithToken(shard.address(), nullptr, "two"), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(absl::StrContains(ReadFileOrEmpty(shard.log_path()),
                                "Kept the old token: " + public_token_file_))
      << shard.LogTail();
  EXPECT_EQ(ReloadCount(metrics_port, "auth-token", "ok"), 1);
}

TEST_F(SecurityIntegrationTest, HangupReloadsTokensAtOnceAndLeavesTheServerRunning) {
  constexpr char kNewAdmin[] = "admin-token-after-hangup";
  ServerProcess shard(tmp_.Join("shard"), KV_SHARD_BIN, "shard");
  std::vector<std::string> flags = TokenFlags();
  flags.push_back("--credentials-reload-interval=1h");  // Only SIGHUP can reload in time.
  ASSERT_TRUE(shard.Start(flags).ok()) << shard.LogTail();
  ASSERT_TRUE(Status(shard.address(), nullptr, kAdminToken).ok());
  ReplaceFile(admin_token_file_, kNewAdmin);
  ASSERT_EQ(::kill(shard.process().pid(), SIGHUP), 0);
  EXPECT_TRUE(WaitFor(
      [&] {
        return Status(shard.address(), nullptr, kNewAdmin).ok() &&
               !Status(shard.address(), nullptr, kAdminToken).ok();
      },
      absl::Now() + absl::Seconds(5), absl::Milliseconds(50)))
      << shard.LogTail();
  EXPECT_TRUE(shard.running());
  EXPECT_TRUE(absl::StrContains(ReadFileOrEmpty(shard.log_path()), "(SIGHUP)")) << shard.LogTail();
}

TEST_F(SecurityIntegrationTest, RouterSendsARotatedBackendTokenOnItsOpenChannel) {
  constexpr char kShardToken[] = "shard-token-one";
  constexpr char kShardTokenNext[] = "shard-token-two";
  const std::string shard_token_file = WriteFile(tmp_.Join("shard.token"), kShardToken);
  const std::string backend_token_file = WriteFile(tmp_.Join("backend.token"), kShardToken);
  ServerProcess shard(tmp_.Join("shard"), KV_SHARD_BIN, "shard");
  ASSERT_TRUE(
      shard
          .Start({"--auth-token-file=" + shard_token_file,
                  "--admin-token-file=" + admin_token_file_, "--credentials-reload-interval=1s"})
          .ok())
      << shard.LogTail();
  RouterProcess router(tmp_.Join("router"));
  Topology topology;
  topology.shards.push_back(ShardTopology{"shard-0", shard.address(), {}});
  const std::string topology_file = tmp_.Join("topology.yaml");
  ASSERT_TRUE(WriteTopologyFile(topology_file, topology).ok());
  std::vector<std::string> router_flags = TokenFlags();
  router_flags.push_back("--backend-token-file=" + backend_token_file);
  router_flags.push_back("--credentials-reload-interval=1s");
  ASSERT_TRUE(router.Start(topology_file, router_flags).ok()) << router.LogTail();
  // The router's channel to the shard is open and in use (health answers
  // before the leader takes writes: wait for the first one).
  ASSERT_TRUE(WaitFor(
      [&] { return SetWithToken(router.address(), nullptr, kPublicToken) == grpc::StatusCode::OK; },
      absl::Now() + absl::Seconds(10), absl::Milliseconds(50)))
      << router.LogTail();

  ReplaceFile(shard_token_file, kShardTokenNext);
  ReplaceFile(backend_token_file, kShardTokenNext);
  // Once the shard refuses the old token, a call through the router (on the
  // channel it already had) succeeds only if it carries the new one.
  grpc::StatusCode through_router = grpc::StatusCode::UNKNOWN;
  EXPECT_TRUE(WaitFor(
      [&] {
        if (SetWithToken(shard.address(), nullptr, kShardToken) !=
            grpc::StatusCode::UNAUTHENTICATED) {
          return false;
        }
        through_router = SetWithToken(router.address(), nullptr, kPublicToken);
        return through_router == grpc::StatusCode::OK;
      },
      absl::Now() + absl::Seconds(1) + absl::Seconds(5), absl::Milliseconds(50)))
      << "through the router: " << through_router << "\n"
      << router.LogTail();
  EXPECT_EQ(router.CountLogLines("Reloaded --backend-token-file " + backend_token_file), 1)
      << router.LogTail();
}

// The common name of the certificate the server at `address` shows a new
// connection (made with `credentials`), learned on an Admin.Status call; the
// call's error when it fails.
std::string ServerCommonName(const std::string& address,
                             std::shared_ptr<grpc::ChannelCredentials> credentials) {
  auto stub = v1::Admin::NewStub(Channel(address, std::move(credentials)));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  v1::StatusResponse response;
  grpc::Status s = stub->Status(&context, v1::StatusRequest(), &response);
  if (!s.ok()) return absl::StrCat("error: ", Describe(s));
  const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr) return "no auth context";
  for (const grpc::string_ref& name : auth->FindPropertyValues("x509_common_name")) {
    return std::string(name.data(), name.size());
  }
  return "no common name";
}

TEST_F(MutualTlsTest, RotatedServerCertificateReachesNewConnectionsAndAMismatchedKeyIsRefused) {
  constexpr absl::Duration kInterval = absl::Seconds(1);
  ASSERT_TRUE(pki_->MakeLeaf("node2", "ca").ok());
  // The shard reads copies, which the test replaces as an operator would.
  const std::string cert = WriteFile(tmp_.Join("server.pem"), ReadFileOrEmpty(pki_->pem("node")));
  const std::string key = WriteFile(tmp_.Join("server.key"), ReadFileOrEmpty(pki_->key("node")));
  const std::string metrics_port = tmp_.Join("shard.metrics");
  std::vector<std::string> flags = {
      "--tls-cert=" + cert,           "--tls-key=" + key,
      "--tls-ca=" + pki_->pem("ca"),  "--credentials-reload-interval=1s",
      "--metrics-listen=127.0.0.1:0", "--metrics-port-file=" + metrics_port};
  for (const std::string& f : TokenFlags()) flags.push_back(f);
  const auto client = pki_->Client("client", "ca");
  TlsServer shard(tmp_.Join("shard"), KV_SHARD_BIN, "shard");
  ASSERT_TRUE(shard.Start(flags, client).ok()) << shard.LogTail();
  ASSERT_EQ(ServerCommonName(shard.address(), client), "node");

  // Key first, then certificate, each renamed over: a check between the two
  // renames sees a pair that does not match, which must not count as a
  // failed reload.
  ReplaceFile(key, ReadFileOrEmpty(pki_->key("node2")));
  ReplaceFile(cert, ReadFileOrEmpty(pki_->pem("node2")));
  const absl::Time rotated = absl::Now();
  std::string seen;
  EXPECT_TRUE(WaitFor(
      [&] {
        seen = ServerCommonName(shard.address(), client);
        return seen == "node2";
      },
      rotated + 2 * kInterval + absl::Seconds(5), absl::Milliseconds(100)))
      << seen << "\n"
      << shard.LogTail();
  EXPECT_TRUE(WaitFor([&] { return ReloadCount(metrics_port, "tls-cert", "ok") == 1; },
                      absl::Now() + absl::Seconds(5)));
  EXPECT_EQ(ReloadCount(metrics_port, "tls-cert", "error"), 0);

  // A key that is not the certificate's: refused, and new connections still
  // get the pair in force.
  ReplaceFile(key, ReadFileOrEmpty(pki_->key("client")));
  EXPECT_TRUE(WaitFor([&] { return ReloadCount(metrics_port, "tls-cert", "error") == 1; },
                      absl::Now() + 2 * kInterval + absl::Seconds(5), absl::Milliseconds(100)))
      << shard.LogTail();
  EXPECT_TRUE(
      absl::StrContains(ReadFileOrEmpty(shard.log_path()), "Kept the old certificate: " + cert))
      << shard.LogTail();
  // Every new connection for two more intervals (past gRPC's own poll of
  // the staged copies) still gets the pair in force.
  EXPECT_FALSE(WaitFor(
      [&] {
        seen = ServerCommonName(shard.address(), client);
        return seen != "node2";
      },
      absl::Now() + 2 * kInterval, absl::Milliseconds(200)))
      << seen << "\n"
      << shard.LogTail();
  EXPECT_EQ(ReloadCount(metrics_port, "tls-cert", "ok"), 1);
}

}  // namespace
}  // namespace kvstore

// kvctl: command-line client for kvstore's KeyValue and Admin services, meant
// for people and for scripts alike: one call per run, a stable output format,
// and exit codes that tell retryable from fatal (see kUsage below).
#include <signal.h>
#include <unistd.h>

#ifdef KVCTL_HAVE_LIBEDIT
#include <editline/readline.h>
#endif

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/config/tool_flags.h"
#include "common/config/units.h"
#include "common/coord/etcd_client.h"
#include "common/ring/hash_ring.h"
#include "common/security/credentials.h"
#include "common/topology/topology.h"
#include "gflags/gflags.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "kvstore/v1/admin.grpc.pb.h"
#include "kvstore/v1/kv.grpc.pb.h"
#include "tools/kvctl/cluster_backup.h"
#include "tools/kvctl/cluster_commands.h"
#include "tools/kvctl/promote_transfer.h"
#include "tools/kvctl/reshard_commands.h"

#ifndef KVSTORE_VERSION
#define KVSTORE_VERSION "dev"
#endif

DEFINE_string(addr, "127.0.0.1:50051", "Server to call, HOST:PORT (a router, shard or replica)");
DEFINE_int64(timeout_ms, 5000, "Deadline of the call, in milliseconds (promote: 15000 unless given)");
DEFINE_bool(hex, false,
            "Values are hex: get/mget print them as hex, set/mset parse VALUE (and what '-' or "
            "'@FILE' supply) as hex; keys stay as given");
DEFINE_bool(raw, false,
            "get: print the value's exact bytes, without the trailing newline "
            "(same as --output=raw)");
DEFINE_bool(json, false, "Same as --output=json");
DEFINE_string(output, "text",
              "Output of every command: text (the lines described below), json (one JSON object "
              "per result, one per line) or raw (get: the value's exact bytes; otherwise as text)");
DEFINE_string(prefix, "",
              "scan: only keys that start with this (a filter: the whole key space is "
              "still walked)");
DEFINE_uint64(count, 1000,
              "scan, keys, dbsize: keys asked for per call (the page size; at most "
              "the server's --max-batch-items)");
DEFINE_uint64(ttl_ms, 0, "set, mset: time to live in milliseconds (0 = never expires)");
DEFINE_int64(if_version, -1,
             "set, mset, del: compare-and-set, only if the key's current version is this "
             "(0 = only if absent; -1 = unconditional)");
DEFINE_string(ack, "default",
              "set, mset, del: acknowledge after default (the shard's setting), memory, fsync, "
              "replicas (the shard's --sync-acks followers) or replicas:N");
DEFINE_string(read_mode, "leader",
              "get, mget, scan, keys, ttl, exists, dbsize: read from the leader, or from any "
              "replica (stale)");
DEFINE_uint64(epoch, 0, "promote: the new epoch (0 = the node's epoch + 1)");
DEFINE_bool(force, false,
            "promote: promote even when a follower holds entries this node lacks, or cannot "
            "be asked for its position (those entries are lost; the answer says how many). "
            "promote SHARD: hand over to a member that is behind or not eligible (what it "
            "lacks may be lost; the answer says how many entries). "
            "reshard add-shard, remove-shard: go ahead with a plan that moves more than 27% of "
            "the ring");
DEFINE_string(to, "",
              "promote SHARD (etcd mode): the member id to hand the leadership to (default: the "
              "most advanced eligible member other than the leader)");
DEFINE_int64(transfer_timeout_ms, 5000,
             "promote SHARD (etcd mode): how long the transfer request stands and kvctl waits "
             "for the target to lead, in milliseconds");
DEFINE_string(followers, "",
              "promote: comma-separated HOST:PORT the new leader pushes to (default: its own "
              "--followers flag)");
DEFINE_string(topology, "",
              "ring: the topology YAML file (as given to kv-router --topology); read offline, "
              "no server is called");
DEFINE_bool(fresh, false,
            "backup: each source node takes a new snapshot first, so the image is that "
            "snapshot and a short log (default: its newest verified snapshot and the log after "
            "it)");
DEFINE_int64(stream_timeout_ms, 3'600'000,
             "backup, restore: deadline of each shard's whole transfer, in milliseconds");
DEFINE_string(tls_ca, "",
              "Connect with TLS and verify the server against this PEM CA certificate (with "
              "--tls-cert but no --tls-ca: against the system's roots); see docs/security.md");
DEFINE_string(tls_cert, "",
              "Connect with TLS presenting this PEM client certificate (for servers started "
              "with --tls-ca: mutual TLS; a verified certificate also opens status, snapshot and "
              "promote)");
DEFINE_string(tls_key, "", "PEM private key of --tls-cert");
DEFINE_string(auth_token_file, "",
              "get, set, del, mget, mset: send the token in this file (whitespace trimmed) as "
              "'authorization: Bearer <token>', for servers started with --auth-token-file");
DEFINE_string(admin_token_file, "",
              "status, snapshot, promote: send the token in this file, for servers started with "
              "--admin-token-file");
DEFINE_string(etcd, "",
              "cluster, reshard, promote SHARD: HOST:PORT[,HOST:PORT...] of the cluster's etcd");
DEFINE_string(etcd_prefix, "/kvstore/default",
              "cluster, reshard, promote SHARD: the prefix of the cluster's keys in etcd (as "
              "the servers' "
              "--etcd-prefix)");
DEFINE_string(config, "",
              "cluster init: the topology file (as kv-router's --topology) naming the shards, "
              "vnodes and the nodes asked for their epochs");
DEFINE_bool(plan, false,
            "reshard add-shard, remove-shard: print the plan (what moves where, estimated keys "
            "and bytes) and change nothing");
DEFINE_bool(yes, false,
            "reshard add-shard, remove-shard: start without asking (required when stdin is not "
            "a terminal)");
DEFINE_bool(watch, false,
            "reshard status: redraw every second (off a terminal: print each change) until the "
            "migration is done (exit 0) or cancelled (exit 1); Ctrl-C stops watching");
DEFINE_string(throttle, "32MiB/s",
              "reshard add-shard, remove-shard: copy at most this many bytes per second, all "
              "sources together (RATE: 33554432, 512KiB/s, 32MiB/s, 1GiB/s; B, KiB, MiB, GiB); "
              "change it while running with 'reshard throttle ID RATE'");
DEFINE_string(copy_from, "leader",
              "reshard add-shard, remove-shard: copy from each source's leader, or from a "
              "caught-up replica of it (replica: the copy pages only; a page no replica can "
              "serve comes from the leader, and everything after the copy is the leader's)");
DEFINE_string(cutover_max_pause, "1s",
              "reshard add-shard, remove-shard: the longest the moving ranges are held at "
              "cutover; a cutover not committed within it goes back to catch-up");
DEFINE_int64(handoff_lag, 1000,
             "reshard add-shard, remove-shard: start the cutover once the new owner is fewer "
             "than this many log entries behind the source");

namespace kvstore {
namespace {

namespace v1 = ::kvstore::v1;

// Exit codes: part of kvctl's contract with scripts. Keep kUsage in step.
constexpr int kExitOk = 0;
constexpr int kExitNotFound = 1;
constexpr int kExitUsage = 2;
constexpr int kExitPrecondition = 3;
constexpr int kExitRetryable = 4;
constexpr int kExitError = 5;
constexpr int kExitInterrupted = 130;  // As a shell reports SIGINT.

constexpr char kUsage[] =
    R"(command-line client for kvstore.

Usage: kvctl [flags] COMMAND [ARGS...]
       kvctl [flags]                  a session: on a terminal, an interactive prompt (with
                                      history in ~/.kvctl_history, or $KVCTL_HISTFILE); otherwise
                                      one command per line from stdin, one result per line
                                      (mass insert: lines of 'set KEY VALUE'); exit code: the
                                      highest of its commands

Every flag can also come from the environment as KVCTL_<FLAG> (KVCTL_ADDR,
KVCTL_AUTH_TOKEN_FILE, KVCTL_TLS_CA, ...; listed with each flag below); a flag on the
command line wins.

Commands:
  get KEY               print KEY's value
  set KEY VALUE         write VALUE; VALUE "-" reads stdin, "@FILE" reads FILE (binary-safe)
  del KEY               delete KEY
  mget KEY...           read many keys in one call; one line per key, in order:
                          KEY<TAB>OK<TAB>VERSION<TAB>VALUE | KEY<TAB>NOT_FOUND
                          | KEY<TAB>CODE<TAB>MESSAGE
  mset KEY VALUE...     write many keys in one call (VALUE as for set); one line per key:
                          KEY<TAB>OK<TAB>VERSION | KEY<TAB>CODE<TAB>MESSAGE
  status                role, log, snapshot and sizes of the node at --addr; on a router:
                          every shard's leader, replicas, lag, keys, memory, last snapshot
  snapshot              take a snapshot now; returns when it is durable
  promote               make the replica at --addr its shard's leader (epoch + 1, or --epoch),
                          pushing to --followers; prints "promoted epoch=N last_index=M".
                          In etcd mode (a node started with --etcd-endpoints) it makes that node
                          campaign while the shard has no leader
  promote SHARD         etcd mode (--etcd=HOST:PORT): graceful transfer of SHARD's leadership
                          to --to=ID (default: the most advanced eligible member). The leader
                          pauses writes (at most 2s) until ID holds its whole log, resigns, and
                          ID wins; prints "transferred shard S from A to B at epoch E; writes
                          paused N ms". Refused (exit 3, nothing changed) with no leader, a
                          target that is no live member, the leader, not whole, outside the
                          in-sync set, or a transfer already pending; exit 4 when ID did not
                          catch up within 2s (writes resumed on the leader, nothing changed) or
                          nothing was decided within --transfer-timeout-ms; exit 5 when another
                          member won. --force hands over to a member that is behind or not
                          eligible and says how many entries it lacked (they may be lost)
  ring [KEY...]         offline, from --topology=FILE: the hash ring's shards, vnodes and each
                          shard's share of the hash space; then one line per KEY:
                          KEY<TAB>SHARD<TAB>0xHASH (the key's XXH64 position, docs/ring.md)
  scan                  every key (--prefix=P: those starting with P), following the server's
                          cursor --count keys per call; one line per key as it arrives:
                          KEY<TAB>VERSION<TAB>VALUE. Keys present for the whole scan appear at
                          least once; keys written meanwhile may or may not.
  keys PREFIX           the keys starting with PREFIX, one per line (a trailing '*' is
                          ignored, as in Redis' KEYS user:*). A scan of the whole cluster:
                          warns on stderr
  ttl KEY               seconds KEY has left, rounded as Redis does: -1 when it never expires,
                          -2 when it does not exist (by this machine's clock)
  exists KEY...         how many of the KEYs exist (a key given twice counts twice)
  dbsize                how many keys the cluster (through a router) or the node holds: a
                          keys-only scan of the leaders, counted here
  backup DIR            through the router at --addr: every shard's image (from a caught-up
                          replica when there is one, else the leader) into the new directory
                          DIR, with topology.yaml and manifest.json; progress on a terminal.
                          Each shard is its own point in time (not one global instant)
  backup verify DIR     check every checksum of the backup in DIR and count its keys; offline
  restore DIR           verify DIR, then put it into the empty cluster behind the router at
                          --addr: same shard names: each leader installs its shard's image;
                          other shards: every key is written through the router, its expiry
                          kept as the time it has left. Versions restart
  cluster init          etcd mode (--etcd=HOST:PORT, --etcd-prefix): write the cluster's keys
                          once from --config=FILE (a topology file): cluster {format,
                          epoch_base, vnodes}, the ring (version 1: the file's shards and
                          vnodes) and each shard's spec. epoch_base is above every epoch the
                          file's nodes report, and at least 1048576. Refused (exit 3) when the
                          cluster exists; a cluster initialised before the ring was kept in
                          etcd gets its ring (if the file names its shards and vnodes)
  cluster status        etcd mode: the ring's version and shards, the active migration (id,
                          phase) if any, the routers registered in etcd with the ring version
                          and topology revision each routes by (BEHIND when below the ring in
                          etcd), then per shard the leader, its epoch and lease time
                          left, each member's state, position and eligibility, and who would
                          be elected (or why nobody can be); --json for one JSON object
  cluster forget-shard NAME
                        etcd mode: delete the keys of a removed shard group (<P>/shards/NAME/)
                          after its processes are stopped; refused (exit 3) while the ring
                          lists NAME or a migration is active
  reshard add-shard NAME [--plan] [--yes] [--force] [--throttle=RATE] [--copy-from=leader|replica]
          [--cutover-max-pause=1s] [--handoff-lag=N]
                        etcd mode: move the ring positions a new shard NAME takes to it, online
                          (docs/resharding.md). Prints the plan: per source shard the
                          destination, ranges, fraction of the ring, estimated keys and bytes
                          (from each source leader's status, "unknown" when it does not answer
                          within 2s), and the total; refused (exit 3) above 27% unless --force.
                          --plan stops there. Otherwise NAME's group must be running with a
                          leader; asks for confirmation (--yes: don't), then records the
                          migration in etcd for the driver in kv-shard and prints its ID.
                          One migration at a time (exit 3 while one is active)
  reshard remove-shard NAME [--plan] [--yes] [--force] [--throttle=RATE] [--copy-from=...]
          [--cutover-max-pause=1s] [--handoff-lag=N]
                        etcd mode: move every range of NAME to its ring neighbours, online, then
                          drop NAME from the ring. One stage per destination (sorted by name),
                          each a copy, catch-up and cutover driven by that destination's
                          leader; the plan lists the stages. Refused for the last shard, a
                          shard not in the ring, or a destination without a leader. A ring
                          that already drains NAME (a cancelled removal) continues from there
  reshard status [ID] [--watch]
                        the active migration (or ID, or the newest): kind, phase, throttle,
                          age, error; per source the destination, phase, keys and bytes copied
                          of the estimate, rate, ETA, catch-up lag, fence index, last cutover
                          pause, retries, restarts (a progress bar on a terminal); --json for
                          one JSON object; --watch redraws every second until it ends
  reshard throttle ID RATE | pause ID | resume ID | cancel ID
                        change the running migration ID: its copy rate (RATE as --throttle),
                          pause or resume its copy, or cancel it (refused, exit 3, once the new
                          ring is published: phase switched, cleanup or done)

Output:
  get prints the value and a newline (--raw: the exact bytes only; --hex: hex and a newline).
  --output=json prints one JSON object per result, one per line: keys and values as
  "key"/"value" when every byte is printable ASCII, else as "key_b64"/"value_b64" (base64;
  with --hex values are "value_hex"); versions are strings (64-bit, as proto JSON writes
  them). get: {"key","found","value","version","expires_at_ms"}; set: {"key","version"};
  del: {"key","deleted","version"}; mget, mset, scan, keys: one object per key (a failed key:
  {"key","error":{"code","message"}}); ttl: {"key","ttl_seconds","expires_at_ms"};
  exists: {"exists"}; dbsize: {"keys"}; status, snapshot, promote: the reply as proto JSON.
  set prints "OK version=N"; del prints "deleted version=N" or "not found".
  status and snapshot print "name: value" lines, or proto JSON with --json. On a router,
  status shows the router's own lines, then the cluster (Admin.ClusterStatus): one line per
  shard and per node, and totals; --output=json prints {"router":...,"cluster":...}.
  backup, backup verify and restore print one line per shard and a total line; with
  --output=json the manifest (backup) or one object.
  reshard add-shard and remove-shard print the plan as a table (then the migration's ID);
  with --output=json one object: the rings, each move with its ranges, the total and
  "started" (and "id"). reshard status prints lines, or one object (with --watch: one per
  change); throttle, pause, resume and cancel print what changed, or the record with
  "changed".
  Errors go to stderr as "kvctl: CODE: message" (CODE is a gRPC status code name).
  Use --hex for values that may hold newlines or other binary bytes. An argument that
  starts with '-' (other than "-" itself) goes after "--".

Exit codes:
  0  success
  1  key not found (get; mget: some key), or nothing deleted (del); reshard: no such
     migration, not confirmed, or (status --watch) the migration ended cancelled or failed
  2  usage error: unknown command or flag, wrong arguments, bad flag value, unreadable FILE,
     a backup DIR without a readable manifest.json or topology.yaml (verify, restore),
     a --tls-* or --*-token-file that cannot be read or parsed,
     a --topology file that cannot be read or is not a valid topology (ring)
  3  FAILED_PRECONDITION: compare-and-set mismatch (--if_version), or a write sent to a
     replica (the message names the leader); backup into a directory that is not empty;
     restore into a cluster that holds keys; cluster init of an initialised cluster;
     reshard refused (the message says why: a plan over 27%, a migration active, no ring,
     NAME in the ring or not, no leader for the new shard, cancel after the switch)
  4  UNAVAILABLE or DEADLINE_EXCEEDED: retryable
  5  any other error (UNAUTHENTICATED: a missing or wrong token or certificate; DATA_LOSS: a
     damaged backup file, named in the message)
  130  reshard status --watch stopped by Ctrl-C (the migration goes on)
mget and mset exit with the highest code any key produced.
)";

// Only kvctl's own flags are known (not gflags' or glog's).
const ToolFlagRules& FlagRules() {
  static const ToolFlagRules* rules = new ToolFlagRules{{__FILE__}, /*positional=*/true};
  return *rules;
}

void PrintUsage(FILE* out) {
  std::fprintf(out, "kvctl %s: %s\n%s", KVSTORE_VERSION, kUsage,
               ToolFlagHelp(FlagRules(), "KVCTL_").c_str());
}

// "kvctl: CODE: message" on stderr.
void PrintError(absl::StatusCode code, const std::string& message) {
  std::fprintf(stderr, "kvctl: %s: %s\n", absl::StatusCodeToString(code).c_str(), message.c_str());
}

int UsageError(const std::string& message) {
  PrintError(absl::StatusCode::kInvalidArgument, message);
  std::fprintf(stderr, "Run 'kvctl --help' for usage.\n");
  return kExitUsage;
}

int ExitCodeFor(int grpc_code) {
  switch (grpc_code) {
    case grpc::StatusCode::OK:
      return kExitOk;
    case grpc::StatusCode::FAILED_PRECONDITION:
      return kExitPrecondition;
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return kExitRetryable;
    default:
      return kExitError;
  }
}

std::string CodeName(int grpc_code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(grpc_code));
}

// Reports a failed call and returns its exit code.
int CallFailed(const grpc::Status& status) {
  PrintError(static_cast<absl::StatusCode>(status.error_code()),
             status.error_message().empty() ? "(no message)" : status.error_message());
  return ExitCodeFor(status.error_code());
}

void WriteOut(const std::string& bytes) { std::fwrite(bytes.data(), 1, bytes.size(), stdout); }

// ---------------------------------------------------------------- output

enum class Output { kText, kJson, kRaw };
Output g_output = Output::kText;

absl::StatusOr<Output> ParseOutput() {
  Output output;
  if (FLAGS_output == "text") {
    output = Output::kText;
  } else if (FLAGS_output == "json") {
    output = Output::kJson;
  } else if (FLAGS_output == "raw") {
    output = Output::kRaw;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--output is text, json or raw, not '", FLAGS_output, "'"));
  }
  // --json and --raw predate --output and mean the same; they must not contradict it.
  if (FLAGS_json || FLAGS_raw) {
    const Output implied = FLAGS_json ? Output::kJson : Output::kRaw;
    if ((FLAGS_json && FLAGS_raw) || (FLAGS_output != "text" && output != implied)) {
      return absl::InvalidArgumentError("--json, --raw and --output disagree; use --output");
    }
    output = implied;
  }
  return output;
}

bool Json() { return g_output == Output::kJson; }

// A JSON string literal of `text` (UTF-8, or printable ASCII for keys and values).
std::string JsonQuote(absl::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      absl::StrAppend(&out, absl::StrFormat("\\u%04x", static_cast<unsigned char>(c)));
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
  return out;
}

bool PrintableAscii(absl::string_view bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
}

// `"name": "text"` for printable bytes, else `"name_b64": "base64"`.
std::string JsonBytes(absl::string_view name, absl::string_view bytes) {
  if (PrintableAscii(bytes)) return absl::StrCat(JsonQuote(name), ":", JsonQuote(bytes));
  return absl::StrCat(JsonQuote(absl::StrCat(name, "_b64")), ":",
                      JsonQuote(absl::Base64Escape(bytes)));
}

// A value: as JsonBytes, or always hex with --hex.
std::string JsonValue(absl::string_view value) {
  if (FLAGS_hex) return absl::StrCat("\"value_hex\":", JsonQuote(absl::BytesToHexString(value)));
  return JsonBytes("value", value);
}

std::string JsonFlag(absl::string_view name, bool value) {
  return absl::StrCat(JsonQuote(name), ":", value ? "true" : "false");
}

// A 64-bit version as proto JSON writes uint64: a string.
std::string JsonVersion(uint64_t version) { return absl::StrCat("\"version\":\"", version, "\""); }

// One JSON object per line: `{` fields joined by commas `}`.
void PrintJsonObject(const std::vector<std::string>& fields) {
  WriteOut(absl::StrCat("{", absl::StrJoin(fields, ","), "}\n"));
}

std::string JsonError(int code, const std::string& message) {
  return absl::StrCat("\"error\":{\"code\":",
                      JsonQuote(absl::StatusCodeToString(static_cast<absl::StatusCode>(code))),
                      ",\"message\":", JsonQuote(message), "}");
}

// ---------------------------------------------------------------- flags

// Call options, checked before any call is made.
struct CallOptions {
  v1::ReadMode read_mode = v1::READ_MODE_LEADER;
  v1::WriteAck ack;
  std::optional<uint64_t> if_version;
};

absl::StatusOr<CallOptions> CheckFlags() {
  CallOptions options;
  if (FLAGS_timeout_ms <= 0) return absl::InvalidArgumentError("--timeout_ms must be positive");
  if (FLAGS_read_mode == "leader") {
    options.read_mode = v1::READ_MODE_LEADER;
  } else if (FLAGS_read_mode == "any") {
    options.read_mode = v1::READ_MODE_ANY_REPLICA;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--read_mode is leader or any, not '", FLAGS_read_mode, "'"));
  }
  uint32_t replicas = 0;
  if (FLAGS_ack == "default") {
    options.ack.set_mode(v1::ACK_MODE_DEFAULT);
  } else if (FLAGS_ack == "memory") {
    options.ack.set_mode(v1::ACK_MODE_LEADER_MEMORY);
  } else if (FLAGS_ack == "fsync") {
    options.ack.set_mode(v1::ACK_MODE_LEADER_FSYNC);
  } else if (FLAGS_ack == "replicas") {
    options.ack.set_mode(v1::ACK_MODE_REPLICAS);
  } else if (absl::StartsWith(FLAGS_ack, "replicas:") &&
             absl::SimpleAtoi(FLAGS_ack.substr(9), &replicas) && replicas > 0) {
    options.ack.set_mode(v1::ACK_MODE_REPLICAS);
    options.ack.set_replicas(replicas);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "--ack is default, memory, fsync, replicas or replicas:N (N > 0), not '", FLAGS_ack, "'"));
  }
  if (FLAGS_if_version < -1) {
    return absl::InvalidArgumentError("--if_version is a version >= 0, or -1 for none");
  }
  if (FLAGS_if_version >= 0) options.if_version = static_cast<uint64_t>(FLAGS_if_version);
  return options;
}

// ---------------------------------------------------------------- values

absl::StatusOr<std::string> ReadStream(FILE* f, const std::string& name) {
  std::string data;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) data.append(buf, n);
  if (std::ferror(f)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read ", name, ": ", strerror(errno)));
  }
  return data;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("cannot open ", path, ": ", strerror(errno)));
  }
  absl::StatusOr<std::string> data = ReadStream(f, path);
  std::fclose(f);
  return data;
}

absl::StatusOr<std::string> DecodeHex(std::string text, const std::string& what) {
  text.erase(std::remove_if(text.begin(), text.end(),
                            [](unsigned char c) { return absl::ascii_isspace(c); }),
             text.end());
  if (text.size() % 2 != 0 || !std::all_of(text.begin(), text.end(), [](unsigned char c) {
        return absl::ascii_isxdigit(c);
      })) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is not hex (--hex)"));
  }
  return absl::HexStringToBytes(text);
}

// The value a VALUE argument stands for: "-" is stdin (at most once per run),
// "@FILE" a file's bytes, anything else itself; then hex-decoded with --hex.
// True when stdin carries commands (a session), so a VALUE of "-" cannot read it.
bool g_stdin_is_commands = false;

absl::StatusOr<std::string> ValueArg(const std::string& arg, bool* stdin_used) {
  absl::StatusOr<std::string> value = arg;
  std::string what = "VALUE";
  if (arg == "-") {
    if (g_stdin_is_commands) {
      return absl::InvalidArgumentError(
          "VALUE '-' reads stdin, which carries the commands here; use @FILE");
    }
    if (*stdin_used) return absl::InvalidArgumentError("only one VALUE can be '-' (stdin)");
    *stdin_used = true;
    value = ReadStream(stdin, "stdin");
    what = "stdin";
  } else if (absl::StartsWith(arg, "@")) {
    value = ReadFile(arg.substr(1));
    what = arg.substr(1);
  }
  if (!value.ok() || !FLAGS_hex) return value;
  return DecodeHex(*std::move(value), what);
}

std::string ShowValue(const std::string& value) {
  return FLAGS_hex ? absl::BytesToHexString(value) : value;
}

// ---------------------------------------------------------------- calls

class Client {
 public:
  Client(const std::string& addr, const ClientSecurity& security) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(-1);  // A big mget or value is the server's limit to set.
    channel_ = CreateClientChannel(addr, security, args);
    kv_ = v1::KeyValue::NewStub(channel_);
    admin_ = v1::Admin::NewStub(channel_);
  }

  // A fresh context carrying the --timeout_ms deadline.
  std::unique_ptr<grpc::ClientContext> Context() const {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::milliseconds(FLAGS_timeout_ms));
    return context;
  }

  v1::KeyValue::Stub& kv() { return *kv_; }
  v1::Admin::Stub& admin() { return *admin_; }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::KeyValue::Stub> kv_;
  std::unique_ptr<v1::Admin::Stub> admin_;
};

int Get(Client& client, const CallOptions& options, const std::vector<std::string>& args) {
  if (args.size() != 1) return UsageError("usage: kvctl get KEY");
  v1::GetRequest request;
  request.set_key(args[0]);
  request.set_read_mode(options.read_mode);
  v1::GetResponse response;
  grpc::Status status = client.kv().Get(client.Context().get(), request, &response);
  if (!status.ok()) return CallFailed(status);
  if (Json()) {
    std::vector<std::string> fields = {JsonBytes("key", args[0]),
                                       JsonFlag("found", response.found())};
    if (response.found()) {
      fields.push_back(JsonValue(response.value()));
      fields.push_back(JsonVersion(response.version()));
      fields.push_back(absl::StrCat("\"expires_at_ms\":", response.expires_at_ms()));
    }
    PrintJsonObject(fields);
  }
  if (!response.found()) {
    PrintError(absl::StatusCode::kNotFound, absl::StrCat("key '", args[0], "'"));
    return kExitNotFound;
  }
  if (Json()) return kExitOk;
  WriteOut(ShowValue(response.value()));
  if (FLAGS_hex || g_output != Output::kRaw) WriteOut("\n");
  return kExitOk;
}

int Set(Client& client, const CallOptions& options, const std::vector<std::string>& args) {
  if (args.size() != 2) return UsageError("usage: kvctl set KEY VALUE");
  bool stdin_used = false;
  absl::StatusOr<std::string> value = ValueArg(args[1], &stdin_used);
  if (!value.ok()) return UsageError(std::string(value.status().message()));
  v1::SetRequest request;
  request.set_key(args[0]);
  request.set_value(*std::move(value));
  request.set_ttl_ms(FLAGS_ttl_ms);
  if (options.if_version) request.set_if_version(*options.if_version);
  *request.mutable_ack() = options.ack;
  v1::SetResponse response;
  grpc::Status status = client.kv().Set(client.Context().get(), request, &response);
  if (!status.ok()) return CallFailed(status);
  if (Json()) {
    PrintJsonObject({JsonBytes("key", args[0]), JsonVersion(response.version())});
    return kExitOk;
  }
  std::printf("OK version=%llu\n", static_cast<unsigned long long>(response.version()));
  return kExitOk;
}

int Del(Client& client, const CallOptions& options, const std::vector<std::string>& args) {
  if (args.size() != 1) return UsageError("usage: kvctl del KEY");
  v1::DeleteRequest request;
  request.set_key(args[0]);
  if (options.if_version) request.set_if_version(*options.if_version);
  *request.mutable_ack() = options.ack;
  v1::DeleteResponse response;
  grpc::Status status = client.kv().Delete(client.Context().get(), request, &response);
  if (!status.ok()) return CallFailed(status);
  if (Json()) {
    PrintJsonObject({JsonBytes("key", args[0]), JsonFlag("deleted", response.deleted()),
                     JsonVersion(response.version())});
    return response.deleted() ? kExitOk : kExitNotFound;
  }
  if (!response.deleted()) {
    std::printf("not found\n");
    return kExitNotFound;
  }
  std::printf("deleted version=%llu\n", static_cast<unsigned long long>(response.version()));
  return kExitOk;
}

// One batch line for a failed key; also on stderr for whoever watches it.
int KeyFailed(const std::string& key, const v1::KeyError& error) {
  if (Json()) {
    PrintJsonObject({JsonBytes("key", key), JsonError(error.code(), error.message())});
  } else {
    std::printf("%s\t%s\t%s\n", key.c_str(), CodeName(error.code()).c_str(),
                error.message().c_str());
  }
  PrintError(static_cast<absl::StatusCode>(error.code()),
             absl::StrCat("key '", key, "': ", error.message()));
  return ExitCodeFor(error.code());
}

int MultiGet(Client& client, const CallOptions& options, const std::vector<std::string>& args) {
  if (args.empty()) return UsageError("usage: kvctl mget KEY...");
  v1::MultiGetRequest request;
  for (const std::string& key : args) request.add_keys(key);
  request.set_read_mode(options.read_mode);
  v1::MultiGetResponse response;
  grpc::Status status = client.kv().MultiGet(client.Context().get(), request, &response);
  if (!status.ok()) return CallFailed(status);
  if (response.results_size() != static_cast<int>(args.size())) {
    PrintError(absl::StatusCode::kInternal,
               absl::StrCat("the server answered ", response.results_size(), " results for ",
                            args.size(), " keys"));
    return kExitError;
  }
  int exit_code = kExitOk;
  for (size_t i = 0; i < args.size(); ++i) {
    const v1::GetResult& r = response.results(static_cast<int>(i));
    if (r.has_error() && r.error().code() != 0) {
      exit_code = std::max(exit_code, KeyFailed(args[i], r.error()));
    } else if (Json()) {
      std::vector<std::string> fields = {JsonBytes("key", args[i]), JsonFlag("found", r.found())};
      if (r.found()) {
        fields.push_back(JsonValue(r.value()));
        fields.push_back(JsonVersion(r.version()));
        fields.push_back(absl::StrCat("\"expires_at_ms\":", r.expires_at_ms()));
      } else {
        exit_code = std::max(exit_code, kExitNotFound);
      }
      PrintJsonObject(fields);
    } else if (!r.found()) {
      std::printf("%s\tNOT_FOUND\n", args[i].c_str());
      exit_code = std::max(exit_code, kExitNotFound);
    } else {
      std::printf("%s\tOK\t%llu\t", args[i].c_str(), static_cast<unsigned long long>(r.version()));
      WriteOut(ShowValue(r.value()));
      WriteOut("\n");
    }
  }
  return exit_code;
}

int MultiSet(Client& client, const CallOptions& options, const std::vector<std::string>& args) {
  if (args.empty() || args.size() % 2 != 0) return UsageError("usage: kvctl mset KEY VALUE...");
  v1::MultiSetRequest request;
  bool stdin_used = false;
  for (size_t i = 0; i < args.size(); i += 2) {
    absl::StatusOr<std::string> value = ValueArg(args[i + 1], &stdin_used);
    if (!value.ok()) return UsageError(std::string(value.status().message()));
    v1::SetItem* item = request.add_items();
    item->set_key(args[i]);
    item->set_value(*std::move(value));
    item->set_ttl_ms(FLAGS_ttl_ms);
    if (options.if_version) item->set_if_version(*options.if_version);
  }
  *request.mutable_ack() = options.ack;
  v1::MultiSetResponse response;
  grpc::Status status = client.kv().MultiSet(client.Context().get(), request, &response);
  if (!status.ok()) return CallFailed(status);
  if (response.results_size() != request.items_size()) {
    PrintError(absl::StatusCode::kInternal,
               absl::StrCat("the server answered ", response.results_size(), " results for ",
                            request.items_size(), " items"));
    return kExitError;
  }
  int exit_code = kExitOk;
  for (int i = 0; i < request.items_size(); ++i) {
    const v1::SetResult& r = response.results(i);
    const std::string& key = request.items(i).key();
    if (r.has_error() && r.error().code() != 0) {
      exit_code = std::max(exit_code, KeyFailed(key, r.error()));
    } else if (Json()) {
      PrintJsonObject({JsonBytes("key", key), JsonVersion(r.version())});
    } else {
      std::printf("%s\tOK\t%llu\n", key.c_str(), static_cast<unsigned long long>(r.version()));
    }
  }
  return exit_code;
}

// ---------------------------------------------------------------- scans

// Follows Scan's cursor from the start to the end, calling `page` with each
// page's entries as it arrives (so output streams). Returns the exit code.
int ScanAll(Client& client, const CallOptions& options, const std::string& prefix, bool keys_only,
            const std::function<void(const v1::ScanResponse&)>& page) {
  v1::ScanRequest request;
  request.set_prefix(prefix);
  request.set_keys_only(keys_only);
  request.set_read_mode(options.read_mode);
  request.set_limit(
      static_cast<uint32_t>(std::min<uint64_t>(FLAGS_count, std::numeric_limits<uint32_t>::max())));
  do {
    v1::ScanResponse response;
    grpc::Status status = client.kv().Scan(client.Context().get(), request, &response);
    if (!status.ok()) return CallFailed(status);
    page(response);
    std::fflush(stdout);
    request.set_cursor(response.next_cursor());
  } while (!request.cursor().empty());
  return kExitOk;
}

int Scan(Client& client, const CallOptions& options, const std::vector<std::string>& args) {
  if (!args.empty()) return UsageError("usage: kvctl scan [--prefix=P] [--count=N]");
  return ScanAll(
      client, options, FLAGS_prefix, /*keys_only=*/false, [](const v1::ScanResponse& page) {
        for (const v1::ScanEntry& e : page.entries()) {
          if (Json()) {
            PrintJsonObject({JsonBytes("key", e.key()), JsonValue(e.value()),
                             JsonVersion(e.version()),
                             absl::StrCat("\"expires_at_ms\":", e.expires_at_ms())});
          } else {
            WriteOut(absl::StrCat(e.key(), "\t", e.version(), "\t", ShowValue(e.value()), "\n"));
          }
        }
      });
}

int Keys(Client& client, const CallOptions& options, const std::vector<std::string>& args) {
  if (args.size() != 1) return UsageError("usage: kvctl keys PREFIX");
  std::string prefix = args[0];
  if (absl::EndsWith(prefix, "*")) prefix.pop_back();  // Redis' KEYS user:*
  std::fprintf(stderr,
               "kvctl: warning: keys walks every key of every shard (a prefix filters, it does "
               "not index); on a large cluster prefer 'kvctl scan --prefix=...'\n");
  return ScanAll(client, options, prefix, /*keys_only=*/true, [](const v1::ScanResponse& page) {
    for (const v1::ScanEntry& e : page.entries()) {
      if (Json()) {
        PrintJsonObject({JsonBytes("key", e.key())});
      } else {
        WriteOut(absl::StrCat(e.key(), "\n"));
      }
    }
  });
}

int DbSize(Client& client, const CallOptions& options, const std::vector<std::string>& args) {
  if (!args.empty()) return UsageError("usage: kvctl dbsize");
  uint64_t keys = 0;
  // Leaders only (unless --read_mode=any): through a router each shard is
  // walked once, so replicas are never counted twice.
  const int code = ScanAll(client, options, "", /*keys_only=*/true,
                           [&](const v1::ScanResponse& page) { keys += page.entries_size(); });
  if (code != kExitOk) return code;
  if (Json()) {
    PrintJsonObject({absl::StrCat("\"keys\":", keys)});
  } else {
    std::printf("%llu\n", static_cast<unsigned long long>(keys));
  }
  return kExitOk;
}

// Redis' TTL: seconds left rounded to the nearest, -1 without expiry, -2 missing.
int Ttl(Client& client, const CallOptions& options, const std::vector<std::string>& args) {
  if (args.size() != 1) return UsageError("usage: kvctl ttl KEY");
  v1::GetRequest request;
  request.set_key(args[0]);
  request.set_read_mode(options.read_mode);
  v1::GetResponse response;
  grpc::Status status = client.kv().Get(client.Context().get(), request, &response);
  if (!status.ok()) return CallFailed(status);
  int64_t seconds = -2;
  if (response.found() && response.expires_at_ms() == 0) {
    seconds = -1;
  } else if (response.found()) {
    const int64_t left_ms =
        static_cast<int64_t>(response.expires_at_ms()) - absl::ToUnixMillis(absl::Now());
    seconds = std::max<int64_t>(0, (left_ms + 500) / 1000);
  }
  if (Json()) {
    PrintJsonObject({JsonBytes("key", args[0]), absl::StrCat("\"ttl_seconds\":", seconds),
                     absl::StrCat("\"expires_at_ms\":", response.expires_at_ms())});
  } else {
    std::printf("%lld\n", static_cast<long long>(seconds));
  }
  return kExitOk;
}

int Exists(Client& client, const CallOptions& options, const std::vector<std::string>& args) {
  if (args.empty()) return UsageError("usage: kvctl exists KEY...");
  v1::MultiGetRequest request;
  for (const std::string& key : args) request.add_keys(key);
  request.set_read_mode(options.read_mode);
  v1::MultiGetResponse response;
  grpc::Status status = client.kv().MultiGet(client.Context().get(), request, &response);
  if (!status.ok()) return CallFailed(status);
  if (response.results_size() != static_cast<int>(args.size())) {
    PrintError(absl::StatusCode::kInternal,
               absl::StrCat("the server answered ", response.results_size(), " results for ",
                            args.size(), " keys"));
    return kExitError;
  }
  int exit_code = kExitOk;
  uint64_t found = 0;
  for (size_t i = 0; i < args.size(); ++i) {
    const v1::GetResult& r = response.results(static_cast<int>(i));
    if (r.has_error() && r.error().code() != 0) {
      // The count would be a guess: say which key is unknown, count the rest.
      PrintError(static_cast<absl::StatusCode>(r.error().code()),
                 absl::StrCat("key '", args[i], "': ", r.error().message()));
      exit_code = std::max(exit_code, ExitCodeFor(r.error().code()));
    } else if (r.found()) {
      ++found;
    }
  }
  if (Json()) {
    PrintJsonObject({absl::StrCat("\"exists\":", found)});
  } else {
    std::printf("%llu\n", static_cast<unsigned long long>(found));
  }
  return exit_code;
}

int PrintJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions json;
  json.always_print_primitive_fields = true;  // Zeros too: a script can rely on every field.
  std::string out;
  if (auto s = google::protobuf::util::MessageToJsonString(message, &out, json); !s.ok()) {
    PrintError(absl::StatusCode::kInternal, absl::StrCat("cannot print JSON: ", s.ToString()));
    return kExitError;
  }
  WriteOut(out + "\n");
  return kExitOk;
}

std::string SnapshotLine(const v1::SnapshotInfo& s) {
  return absl::StrFormat(
      "start_index=%d end_index=%d keys=%d bytes=%d created=%s duration=%.3fs", s.start_index(),
      s.end_index(), s.keys(), s.bytes(),
      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixMillis(s.created_unix_ms()),
                       absl::UTCTimeZone()),
      s.duration_seconds());
}

ClusterBackupOptions BackupOptions(const ClientSecurity& security);

std::string ProtoJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions json;
  json.always_print_primitive_fields = true;
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(message, &out, json).ok()) return "null";
  return out;
}

std::string ClusterText(const v1::ClusterStatusResponse& c) {
  std::string out = absl::StrFormat(
      "cluster:      %d shards, %d nodes (%d down), %d keys, memory %s\n", c.shards_size(),
      c.nodes(), c.nodes_down(), c.total_keys(), HumanBytes(c.total_memory_bytes()));
  for (const v1::ShardClusterStatus& s : c.shards()) {
    absl::StrAppend(
        &out, absl::StrFormat(
                  "shard %-8s leader=%s keys=%d memory_bytes=%d max_lag_entries=%d "
                  "snapshot=%s\n",
                  s.name(), s.leader(), s.key_count(), s.memory_bytes(), s.max_lag_entries(),
                  s.has_last_snapshot()
                      ? absl::StrCat("index:", s.last_snapshot().start_index(), ",",
                                     absl::FormatTime(
                                         "%Y-%m-%dT%H:%M:%SZ",
                                         absl::FromUnixMillis(s.last_snapshot().created_unix_ms()),
                                         absl::UTCTimeZone()))
                      : std::string("none")));
    for (const v1::ClusterNodeStatus& n : s.nodes()) {
      if (!n.has_status()) {
        absl::StrAppend(&out, absl::StrFormat("  %-21s DOWN     %s\n", n.address(), n.error()));
        continue;
      }
      const v1::StatusResponse& st = n.status();
      std::string line = absl::StrFormat(
          "  %-21s %-8s epoch=%d last_index=%d keys=%d %s", n.address(), st.role(), st.epoch(),
          st.last_index(), st.key_count(),
          st.ready() ? "ready" : absl::StrCat("not-ready(", st.not_ready_reason(), ")"));
      if (st.role() == "replica") {
        absl::StrAppend(
            &line, absl::StrFormat(" lag=%d entries/%.1fs", st.lag_entries(), st.lag_seconds()));
      }
      absl::StrAppend(&out, line, "\n");
    }
  }
  return out;
}

int Status(Client& client, const ClientSecurity& security, const std::vector<std::string>& args) {
  if (!args.empty()) return UsageError("usage: kvctl status");
  v1::StatusResponse r;
  grpc::Status status = client.admin().Status(client.Context().get(), v1::StatusRequest(), &r);
  if (!status.ok()) return CallFailed(status);
  if (r.role() == "router") {
    // A router holds no data: its own lines, then the cluster it routes to.
    absl::StatusOr<v1::ClusterStatusResponse> cluster = FetchClusterStatus(BackupOptions(security));
    if (Json()) {
      WriteOut(absl::StrCat("{\"router\":", ProtoJson(r),
                            ",\"cluster\":", cluster.ok() ? ProtoJson(*cluster) : "null", "}\n"));
    } else {
      WriteOut(
          absl::StrFormat("address:      %s\n"
                          "role:         %s\n"
                          "uptime:       %.1fs\n"
                          "version:      %s\n",
                          r.address().empty() ? FLAGS_addr : r.address(), r.role(),
                          r.uptime_seconds(), r.version()));
      if (cluster.ok()) WriteOut(ClusterText(*cluster));
    }
    if (!cluster.ok()) {
      PrintError(cluster.status().code(), std::string(cluster.status().message()));
      return ExitCodeFor(static_cast<int>(cluster.status().code()));
    }
    return kExitOk;
  }
  if (Json()) return PrintJson(r);
  std::string out = absl::StrFormat(
      "address:      %s\n"
      "role:         %s\n"
      "epoch:        %d\n"
      "last_index:   %d\n"
      "keys:         %d\n"
      "memory_bytes: %d\n"
      "fsync:        %s\n"
      "data_dir:     %s\n"
      "uptime:       %.1fs\n"
      "version:      %s\n"
      "log:          first_index=%d last_index=%d durable_index=%d segments=%d bytes=%d\n",
      FLAGS_addr, r.role(), r.epoch(), r.last_index(), r.key_count(), r.memory_bytes(), r.fsync(),
      r.data_dir(), r.uptime_seconds(), r.version(), r.log().first_index(), r.log().last_index(),
      r.log().durable_index(), r.log().segments(), r.log().bytes());
  absl::StrAppend(&out, "snapshot:     ", r.has_snapshot() ? SnapshotLine(r.snapshot()) : "none",
                  "\n");
  if (!r.ack().empty()) absl::StrAppend(&out, "ack:          ", r.ack(), "\n");
  if (!r.role().empty()) {
    absl::StrAppend(
        &out, "ready:        ",
        r.ready() ? std::string("yes") : absl::StrCat("no (", r.not_ready_reason(), ")"), "\n");
    if (!r.shard().empty()) absl::StrAppend(&out, "shard:        ", r.shard(), "\n");
    if (!r.node_id().empty()) absl::StrAppend(&out, "node_id:      ", r.node_id(), "\n");
  }
  if (r.role() == "leader") {
    for (const v1::FollowerStatus& f : r.followers()) {
      absl::StrAppend(
          &out,
          absl::StrFormat("follower:     %s state=%s acked_index=%d lag_entries=%d "
                          "lag_seconds=%.1f snapshots_sent=%d%s\n",
                          f.address(), f.state(), f.acked_index(), f.lag_entries(), f.lag_seconds(),
                          f.snapshots_sent(),
                          f.error().empty() ? "" : absl::StrCat(" error=\"", f.error(), "\"")));
    }
  } else if (!r.role().empty()) {
    absl::StrAppend(&out, "leader:       ", r.leader().empty() ? "(unknown)" : r.leader(), "\n");
    if (r.role() == "replica") {
      absl::StrAppend(&out, absl::StrFormat("lag:          entries=%d seconds=%.1f\n",
                                            r.lag_entries(), r.lag_seconds()));
    }
  }
  WriteOut(out);
  return kExitOk;
}

int Snapshot(Client& client, const std::vector<std::string>& args) {
  if (!args.empty()) return UsageError("usage: kvctl snapshot");
  v1::SnapshotResponse r;
  grpc::Status status = client.admin().Snapshot(client.Context().get(), v1::SnapshotRequest(), &r);
  if (!status.ok()) return CallFailed(status);
  if (Json()) return PrintJson(r);
  WriteOut(absl::StrCat("snapshot ", SnapshotLine(r.snapshot()), "\n"));
  return kExitOk;
}

int Promote(Client& client, const std::vector<std::string>& args) {
  if (!args.empty()) {
    return UsageError(
        "usage: kvctl [--epoch=N] [--followers=A,B] [--force] promote (etcd mode: kvctl "
        "--etcd=HOST:PORT promote SHARD [--to=ID] [--force])");
  }
  v1::PromoteRequest request;
  request.set_epoch(FLAGS_epoch);
  request.set_force(FLAGS_force);
  for (absl::string_view f : absl::StrSplit(FLAGS_followers, ',', absl::SkipWhitespace())) {
    request.add_followers(std::string(absl::StripAsciiWhitespace(f)));
  }
  v1::PromoteResponse r;
  std::unique_ptr<grpc::ClientContext> context = client.Context();
  if (gflags::GetCommandLineFlagInfoOrDie("timeout_ms").is_default) {
    // A promotion asks its followers twice (position, then promise), each
    // round up to 2 s when one cannot be reached, then starts its epoch.
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(15));
  }
  grpc::Status status = client.admin().Promote(context.get(), request, &r);
  if (!status.ok()) return CallFailed(status);
  if (Json()) return PrintJson(r);
  if (!r.warning().empty()) {
    std::fprintf(
        stderr, "kvctl: warning: %s%s\n", r.warning().c_str(),
        r.entries_may_be_lost() == 0
            ? ""
            : absl::StrCat(" (up to ", r.entries_may_be_lost(), " entries may be lost)").c_str());
  }
  WriteOut(absl::StrFormat("promoted epoch=%d last_index=%d\n", r.epoch(), r.last_index()));
  return kExitOk;
}

// Offline: the ring of the --topology file, and the owner of each KEY.
int Ring(const std::vector<std::string>& keys) {
  if (FLAGS_topology.empty()) return UsageError("usage: kvctl --topology=FILE ring [KEY...]");
  absl::StatusOr<Topology> topology = LoadTopologyFile(FLAGS_topology);
  if (!topology.ok()) return UsageError(std::string(topology.status().message()));
  absl::StatusOr<HashRing> ring = topology->BuildRing();
  if (!ring.ok()) {
    return UsageError(absl::StrCat(FLAGS_topology, ": ", ring.status().message()));
  }
  const std::vector<double> shares = ring->Ownership();
  std::string out = absl::StrFormat(
      "topology:     %s\n"
      "shards:       %d\n"
      "vnodes:       %d\n"
      "tokens:       %d\n",
      FLAGS_topology, topology->shards.size(), ring->vnodes(), ring->token_count());
  for (size_t i = 0; i < topology->shards.size(); ++i) {
    const ShardTopology& shard = topology->shards[i];
    absl::StrAppend(
        &out, absl::StrFormat(
                  "shard:        %s share=%.2f%% leader=%s replicas=%s\n", shard.name,
                  shares[i] * 100, shard.leader,
                  shard.replicas.empty() ? std::string("-") : absl::StrJoin(shard.replicas, ",")));
  }
  for (const std::string& key : keys) {
    absl::StrAppend(
        &out, absl::StrFormat("%s\t%s\t0x%016x\n", key, ring->Owner(key), HashRing::KeyHash(key)));
  }
  WriteOut(out);
  return kExitOk;
}

absl::StatusOr<std::unique_ptr<coord::EtcdClient>> ConnectEtcd() {
  coord::EtcdClientOptions options;
  options.endpoints = FLAGS_etcd;
  options.call_timeout = absl::Milliseconds(FLAGS_timeout_ms);
  return coord::EtcdClient::Create(options);
}

// etcd mode: cluster init | cluster status | cluster forget-shard NAME.
int Cluster(const std::vector<std::string>& args) {
  const bool forget = args.size() == 2 && args[0] == "forget-shard";
  if (!forget && (args.size() != 1 || (args[0] != "init" && args[0] != "status"))) {
    return UsageError(
        "usage: kvctl --etcd=HOST:PORT cluster init --config=FILE | cluster status | cluster "
        "forget-shard NAME");
  }
  if (FLAGS_etcd.empty()) return UsageError("cluster: --etcd=HOST:PORT is required");
  absl::StatusOr<std::unique_ptr<coord::EtcdClient>> etcd = ConnectEtcd();
  if (!etcd.ok()) return UsageError(absl::StrCat("--etcd: ", etcd.status().message()));
  absl::StatusOr<std::string> out;
  if (args[0] == "init") {
    if (FLAGS_config.empty()) return UsageError("cluster init: --config=FILE is required");
    // For asking the file's nodes their epochs.
    absl::StatusOr<ClientSecurity> security =
        LoadClientSecurity(TlsFiles{FLAGS_tls_cert, FLAGS_tls_key, FLAGS_tls_ca},
                           FLAGS_auth_token_file, FLAGS_admin_token_file);
    if (!security.ok()) return UsageError(std::string(security.status().message()));
    absl::StatusOr<Topology> topology = LoadTopologyFile(FLAGS_config);
    if (!topology.ok()) return UsageError(std::string(topology.status().message()));
    const EpochProbe epoch_of = [&](const std::string& address) -> absl::StatusOr<uint64_t> {
      Client node(address, *security);
      v1::StatusResponse r;
      grpc::Status status = node.admin().Status(node.Context().get(), v1::StatusRequest(), &r);
      if (!status.ok()) return absl::UnavailableError(status.error_message());
      return r.epoch();
    };
    out = ClusterInit(etcd->get(), FLAGS_etcd_prefix, *topology, epoch_of, Json());
  } else if (forget) {
    out = ClusterForgetShard(etcd->get(), FLAGS_etcd_prefix, args[1], Json());
  } else {
    out = ClusterStatus(etcd->get(), FLAGS_etcd_prefix, Json());
  }
  if (!out.ok()) {
    PrintError(out.status().code(), std::string(out.status().message()));
    return ExitCodeFor(static_cast<int>(out.status().code()));
  }
  WriteOut(*out);
  return kExitOk;
}

// etcd mode: promote SHARD [--to ID] [--force], a graceful transfer.
int PromoteShard(const std::vector<std::string>& args) {
  if (args.size() != 1) {
    return UsageError("usage: kvctl --etcd=HOST:PORT promote SHARD [--to=ID] [--force]");
  }
  if (FLAGS_transfer_timeout_ms <= 0) {
    return UsageError("promote: --transfer-timeout-ms must be above 0");
  }
  absl::StatusOr<std::unique_ptr<coord::EtcdClient>> etcd = ConnectEtcd();
  if (!etcd.ok()) return UsageError(absl::StrCat("--etcd: ", etcd.status().message()));
  TransferRequest request;
  request.prefix = FLAGS_etcd_prefix;
  request.shard = args[0];
  request.to = FLAGS_to;
  request.force = FLAGS_force;
  request.timeout = absl::Milliseconds(FLAGS_transfer_timeout_ms);
  absl::StatusOr<std::string> out =
      PromoteTransfer(etcd->get(), request,
                      [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); });
  if (!out.ok()) {
    PrintError(out.status().code(), std::string(out.status().message()));
    return ExitCodeFor(static_cast<int>(out.status().code()));
  }
  WriteOut(*out);
  return kExitOk;
}

// ---------------------------------------------------------------- resharding

volatile std::sig_atomic_t g_interrupted = 0;
void OnInterrupt(int) { g_interrupted = 1; }

// A yes/no answer from the terminal; nullopt when stdin is not one (or
// carries a session's commands).
std::optional<bool> AskOnTerminal(const std::string& question) {
  if (g_stdin_is_commands || !isatty(fileno(stdin))) return std::nullopt;
  std::fputs(question.c_str(), stderr);
  std::fflush(stderr);
  std::string answer;
  int c;
  while ((c = std::getc(stdin)) != EOF && c != '\n') answer.push_back(static_cast<char>(c));
  answer = absl::AsciiStrToLower(absl::StripAsciiWhitespace(answer));
  return answer == "y" || answer == "yes";
}

// etcd mode: reshard add-shard | remove-shard | status | throttle | pause |
// resume | cancel (tools/kvctl/reshard_commands.h).
int Reshard(const std::vector<std::string>& args) {
  if (FLAGS_etcd.empty()) return UsageError("reshard: --etcd=HOST:PORT is required");
  absl::StatusOr<std::unique_ptr<coord::EtcdClient>> etcd = ConnectEtcd();
  if (!etcd.ok()) return UsageError(absl::StrCat("--etcd: ", etcd.status().message()));
  // For asking the source shards' leaders their size.
  absl::StatusOr<ClientSecurity> security =
      LoadClientSecurity(TlsFiles{FLAGS_tls_cert, FLAGS_tls_key, FLAGS_tls_ca},
                         FLAGS_auth_token_file, FLAGS_admin_token_file);
  if (!security.ok()) return UsageError(std::string(security.status().message()));

  reshard::ReshardFlags flags;
  flags.plan = FLAGS_plan;
  flags.force = FLAGS_force;
  flags.yes = FLAGS_yes;
  flags.watch = FLAGS_watch;
  flags.json = Json();
  flags.throttle = FLAGS_throttle;
  flags.copy_from = FLAGS_copy_from;
  flags.cutover_max_pause = FLAGS_cutover_max_pause;
  flags.handoff_lag = FLAGS_handoff_lag;

  reshard::ReshardIo io;
  io.etcd = etcd->get();
  io.prefix = FLAGS_etcd_prefix;
  io.etcd_flags = absl::StrCat("--etcd=", FLAGS_etcd);
  if (coord::NormalizePrefix(FLAGS_etcd_prefix) != "/kvstore/default") {
    absl::StrAppend(&io.etcd_flags, " --etcd-prefix=", coord::NormalizePrefix(FLAGS_etcd_prefix));
  }
  io.write = [](const std::string& text) {
    WriteOut(text);
    std::fflush(stdout);
  };
  io.source_size = [&security](const std::string& address,
                               absl::Duration timeout) -> absl::StatusOr<reshard::SourceSize> {
    Client node(address, *security);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(timeout));
    v1::StatusResponse r;
    grpc::Status status = node.admin().Status(&context, v1::StatusRequest(), &r);
    if (!status.ok()) {
      return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                          status.error_message());
    }
    return reshard::SourceSize{r.key_count(), r.memory_bytes()};
  };
  io.confirm = AskOnTerminal;
  io.terminal = isatty(fileno(stdout)) != 0;
  io.interrupted = [] { return g_interrupted != 0; };
  io.random = [] { return static_cast<uint32_t>(std::random_device()()); };

  // Ctrl-C ends a --watch cleanly (and only that: elsewhere it kills as usual).
  struct sigaction previous;
  if (FLAGS_watch) {
    g_interrupted = 0;
    struct sigaction on_interrupt = {};
    on_interrupt.sa_handler = OnInterrupt;
    sigemptyset(&on_interrupt.sa_mask);
    sigaction(SIGINT, &on_interrupt, &previous);
  }
  const absl::Status status = reshard::RunReshard(args, flags, io);
  if (FLAGS_watch) sigaction(SIGINT, &previous, nullptr);
  if (status.ok()) return kExitOk;
  PrintError(status.code(), std::string(status.message()));
  switch (status.code()) {
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAborted:
      return kExitNotFound;
    case absl::StatusCode::kInvalidArgument:
      return kExitUsage;
    case absl::StatusCode::kCancelled:
      return kExitInterrupted;
    default:
      return ExitCodeFor(static_cast<int>(status.code()));
  }
}

// ---------------------------------------------------------------- backups

ClusterBackupOptions BackupOptions(const ClientSecurity& security) {
  ClusterBackupOptions options;
  options.router = FLAGS_addr;
  options.channel = [security](const std::string& address) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(-1);
    return CreateClientChannel(address, security, args);
  };
  options.call_timeout_ms = FLAGS_timeout_ms;
  options.stream_timeout_ms = FLAGS_stream_timeout_ms;
  options.fresh_snapshot = FLAGS_fresh;
  options.progress = isatty(fileno(stderr)) ? stderr : nullptr;
  return options;
}

// A failed backup, verify or restore: the message, and the exit code of its kind.
int BackupFailed(const absl::Status& status) {
  PrintError(status.code(), std::string(status.message()));
  if (absl::IsInvalidArgument(status) || absl::IsNotFound(status)) return kExitUsage;
  return ExitCodeFor(static_cast<int>(status.code()));
}

std::string Bytes(uint64_t bytes) { return HumanBytes(bytes); }

int BackupCommand(const ClientSecurity& security, const std::vector<std::string>& args) {
  if (args.size() != 1) {
    return UsageError("usage: kvctl --addr=ROUTER backup DIR | kvctl backup verify DIR");
  }
  absl::StatusOr<BackupManifest> manifest = BackupCluster(args[0], BackupOptions(security));
  if (!manifest.ok()) return BackupFailed(manifest.status());
  if (Json()) {
    WriteOut(ManifestToJson(*manifest));
    return kExitOk;
  }
  for (const ShardBackupInfo& s : manifest->shards) {
    uint64_t bytes = 0;
    for (const BackupFileInfo& f : s.files) bytes += f.bytes;
    WriteOut(absl::StrFormat("%s\tkeys=%d\tindex=%d\tepoch=%d\tfrom=%s (%s)\t%s\n", s.shard, s.keys,
                             s.last_index, s.last_epoch, s.source, s.role, Bytes(bytes)));
  }
  WriteOut(absl::StrFormat("backup %s: %d shards, %d keys, %s\n", args[0], manifest->shards.size(),
                           manifest->TotalKeys(), Bytes(manifest->TotalBytes())));
  return kExitOk;
}

int VerifyBackupCommand(const std::vector<std::string>& args) {
  if (args.size() != 1) return UsageError("usage: kvctl backup verify DIR");
  absl::StatusOr<std::vector<VerifiedShard>> shards =
      VerifyBackup(args[0], isatty(fileno(stderr)) ? stderr : nullptr);
  if (!shards.ok()) return BackupFailed(shards.status());
  uint64_t keys = 0;
  uint64_t bytes = 0;
  for (const VerifiedShard& s : *shards) {
    keys += s.keys;
    bytes += s.bytes;
    if (!Json()) {
      WriteOut(absl::StrFormat("%s\tOK\tkeys=%d\tindex=%d\t%s\n", s.shard, s.keys, s.last_index,
                               Bytes(s.bytes)));
    }
  }
  if (Json()) {
    PrintJsonObject({"\"ok\":true", absl::StrCat("\"shards\":", shards->size()),
                     absl::StrCat("\"keys\":", keys), absl::StrCat("\"bytes\":", bytes)});
  } else {
    WriteOut(absl::StrFormat("verified %s: %d shards, %d keys, every checksum matches\n", args[0],
                             shards->size(), keys));
  }
  return kExitOk;
}

int RestoreCommand(const ClientSecurity& security, const std::vector<std::string>& args) {
  if (args.size() != 1) return UsageError("usage: kvctl --addr=ROUTER restore DIR");
  absl::StatusOr<RestoreSummary> summary = RestoreCluster(args[0], BackupOptions(security));
  if (!summary.ok()) return BackupFailed(summary.status());
  const char* how = summary->replayed ? "replayed through the router" : "installed per shard";
  if (Json()) {
    PrintJsonObject(
        {absl::StrCat("\"keys\":", summary->keys), absl::StrCat("\"expired\":", summary->expired),
         absl::StrCat("\"shards\":", summary->shards),
         absl::StrCat("\"mode\":", JsonQuote(summary->replayed ? "replay" : "install"))});
  } else {
    WriteOut(absl::StrFormat(
        "restored %s: %d keys from %d shards, %s%s\n", args[0], summary->keys, summary->shards, how,
        summary->expired == 0
            ? ""
            : absl::StrCat(" (", summary->expired, " keys had expired and were left out)")));
  }
  return kExitOk;
}

// A session's client, reused by every line that sets no flag of its own.
struct SessionClient {
  std::optional<ClientSecurity> security;
  std::unique_ptr<Client> client;
};

// Runs one command (positional[0]) with the flags as they are now.
int Execute(const std::vector<std::string>& positional, SessionClient* reuse) {
  absl::StatusOr<CallOptions> options = CheckFlags();
  if (!options.ok()) return UsageError(std::string(options.status().message()));
  absl::StatusOr<Output> output = ParseOutput();
  if (!output.ok()) return UsageError(std::string(output.status().message()));
  g_output = *output;

  const std::string command = positional[0];
  const std::vector<std::string> args(positional.begin() + 1, positional.end());
  const std::vector<std::string> kCommands = {
      "get",  "set",  "del", "mget",   "mset",   "status", "snapshot", "promote", "ring",
      "scan", "keys", "ttl", "exists", "dbsize", "backup", "restore",  "cluster", "reshard"};
  if (std::find(kCommands.begin(), kCommands.end(), command) == kCommands.end()) {
    return UsageError(absl::StrCat("unknown command '", command, "'"));
  }
  if (command == "ring") return Ring(args);        // Offline: no channel.
  if (command == "cluster") return Cluster(args);  // etcd, not --addr.
  if (command == "promote" && !FLAGS_etcd.empty()) return PromoteShard(args);  // etcd too.
  if (command == "reshard") return Reshard(args);                              // etcd too.
  if (command == "backup" && !args.empty() && args[0] == "verify") {
    return VerifyBackupCommand({args.begin() + 1, args.end()});  // Offline too.
  }

  SessionClient local;
  SessionClient* session = reuse != nullptr ? reuse : &local;
  if (!session->security) {
    absl::StatusOr<ClientSecurity> security =
        LoadClientSecurity(TlsFiles{FLAGS_tls_cert, FLAGS_tls_key, FLAGS_tls_ca},
                           FLAGS_auth_token_file, FLAGS_admin_token_file);
    if (!security.ok()) return UsageError(std::string(security.status().message()));
    session->security = *std::move(security);
    session->client = std::make_unique<Client>(FLAGS_addr, *session->security);
  }
  Client& client = *session->client;
  const ClientSecurity& security = *session->security;
  if (command == "status") return Status(client, security, args);
  if (command == "get") return Get(client, *options, args);
  if (command == "set") return Set(client, *options, args);
  if (command == "del") return Del(client, *options, args);
  if (command == "mget") return MultiGet(client, *options, args);
  if (command == "mset") return MultiSet(client, *options, args);
  if (command == "promote") return Promote(client, args);
  if (command == "scan") return Scan(client, *options, args);
  if (command == "keys") return Keys(client, *options, args);
  if (command == "ttl") return Ttl(client, *options, args);
  if (command == "exists") return Exists(client, *options, args);
  if (command == "dbsize") return DbSize(client, *options, args);
  if (command == "backup") return BackupCommand(security, args);
  if (command == "restore") return RestoreCommand(security, args);
  return Snapshot(client, args);
}

// ---------------------------------------------------------------- sessions

// Splits a command line as a POSIX shell splits words: blanks separate,
// '...' keeps everything, "..." keeps everything but \" \\ \$ \`, and a
// backslash outside quotes escapes the next character.
absl::StatusOr<std::vector<std::string>> SplitCommandLine(absl::string_view line) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      if (in_word) words.push_back(std::move(word));
      word.clear();
      in_word = false;
    } else if (c == '\'') {
      const size_t close = line.find('\'', i + 1);
      if (close == absl::string_view::npos) return absl::InvalidArgumentError("unclosed '");
      absl::StrAppend(&word, line.substr(i + 1, close - i - 1));
      i = close;
      in_word = true;
    } else if (c == '"') {
      size_t j = i + 1;
      for (; j < line.size() && line[j] != '"'; ++j) {
        if (line[j] == '\\' && j + 1 < line.size() &&
            absl::string_view("\"\\$`").find(line[j + 1]) != absl::string_view::npos) {
          ++j;
        }
        word.push_back(line[j]);
      }
      if (j >= line.size()) return absl::InvalidArgumentError("unclosed \"");
      i = j;
      in_word = true;
    } else if (c == '\\' && i + 1 < line.size()) {
      word.push_back(line[++i]);
      in_word = true;
    } else {
      word.push_back(c);
      in_word = true;
    }
  }
  if (in_word) words.push_back(std::move(word));
  return words;
}

bool ReadCommandLine(bool terminal, const std::string& prompt, std::string* line) {
#ifdef KVCTL_HAVE_LIBEDIT
  if (terminal) {
    char* read = readline(prompt.c_str());
    if (read == nullptr) return false;
    line->assign(read);
    if (!absl::StripAsciiWhitespace(*line).empty()) add_history(read);
    std::free(read);
    return true;
  }
#endif
  if (terminal) {
    std::fputs(prompt.c_str(), stdout);
    std::fflush(stdout);
  }
  line->clear();
  int c;
  while ((c = std::getc(stdin)) != EOF && c != '\n') line->push_back(static_cast<char>(c));
  return c != EOF || !line->empty();
}

std::string HistoryFile() {
  if (const char* path = std::getenv("KVCTL_HISTFILE"); path != nullptr) return path;
  const char* home = std::getenv("HOME");
  return home == nullptr ? "" : absl::StrCat(home, "/.kvctl_history");
}

constexpr char kSessionHelp[] =
    "Commands as on the command line, one per line, with flags before or after the\n"
    "command (e.g. 'set k v --ttl_ms=1000'): a flag given on a line applies to that line\n"
    "only. 'help' shows this, 'help all' kvctl's whole --help, 'quit' or Ctrl-D leaves.\n";

// Interactive (a prompt, on a terminal) or batch (stdin is a file or a pipe:
// one command per line, one result per line) session. Returns the highest
// exit code of its commands in batch mode, 0 interactively.
int RunSession(int argc, char** argv) {
  const bool terminal = isatty(fileno(stdin)) != 0;
  g_stdin_is_commands = true;
  SessionClient shared;
#ifdef KVCTL_HAVE_LIBEDIT
  const std::string history = HistoryFile();
  if (terminal) {
    using_history();
    if (!history.empty()) read_history(history.c_str());
  }
#endif
  if (terminal) {
    std::printf("kvctl %s connected to %s ('help' for help, 'quit' to leave)\n", KVSTORE_VERSION,
                FLAGS_addr.c_str());
  }
  int worst = kExitOk;
  std::string line;
  while (ReadCommandLine(terminal, absl::StrCat("kvctl ", FLAGS_addr, "> "), &line)) {
    absl::StatusOr<std::vector<std::string>> words = SplitCommandLine(line);
    if (!words.ok()) {
      worst = std::max(worst, UsageError(std::string(words.status().message())));
      continue;
    }
    if (words->empty() || (*words)[0][0] == '#') continue;
    if ((*words)[0] == "quit" || (*words)[0] == "exit") break;
    if ((*words)[0] == "help") {
      if (words->size() > 1) {
        PrintUsage(stdout);
      } else {
        std::fputs(kSessionHelp, stdout);
      }
      continue;
    }
    // This line's flags last for this line only.
    gflags::FlagSaver saved_flags;
    std::vector<char*> line_argv = {argv[0]};
    for (std::string& w : *words) line_argv.push_back(w.data());
    absl::StatusOr<ToolArgs> parsed =
        ParseToolFlags(static_cast<int>(line_argv.size()), line_argv.data(), FlagRules());
    int code = kExitOk;
    if (!parsed.ok()) {
      code = UsageError(std::string(parsed.status().message()));
    } else if (parsed->help) {
      PrintUsage(stdout);
    } else if (parsed->positional.empty()) {
      code = UsageError("a line needs a command");
    } else {
      // A line with flags of its own gets its own connection.
      const bool own_flags = parsed->positional.size() != words->size();
      code = Execute(parsed->positional, own_flags ? nullptr : &shared);
    }
    std::fflush(stdout);
    worst = std::max(worst, code);
  }
  if (terminal) std::printf("\n");
#ifdef KVCTL_HAVE_LIBEDIT
  if (terminal && !history.empty()) {
    stifle_history(1000);
    write_history(history.c_str());
  }
#endif
  (void)argc;
  return terminal ? kExitOk : worst;
}

int Run(int argc, char** argv) {
  // KVCTL_<FLAG> for every flag (KVCTL_ADDR for --addr): the environment
  // sets a flag's default; the command line overrides it.
  if (absl::Status env = ApplyToolEnvironment("KVCTL_", FlagRules()); !env.ok()) {
    return UsageError(std::string(env.message()));
  }
  absl::StatusOr<ToolArgs> parsed = ParseToolFlags(argc, argv, FlagRules());
  if (!parsed.ok()) return UsageError(std::string(parsed.status().message()));
  if (parsed->help) {
    PrintUsage(stdout);
    return kExitOk;
  }
  if (parsed->version) {
    std::printf("kvctl %s\n", KVSTORE_VERSION);
    return kExitOk;
  }
  if (parsed->positional.empty()) return RunSession(argc, argv);
  return Execute(parsed->positional, nullptr);
}

}  // namespace
}  // namespace kvstore

int main(int argc, char** argv) {
  gflags::SetUsageMessage("command-line client for kvstore; see kvctl --help");
  int code = kvstore::Run(argc, argv);
  // A value cut short by a full disk or a closed pipe must not look like success.
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    kvstore::PrintError(absl::StatusCode::kInternal,
                        absl::StrCat("cannot write stdout: ", strerror(errno)));
    if (code == kvstore::kExitOk) code = kvstore::kExitError;
  }
  return code;
}

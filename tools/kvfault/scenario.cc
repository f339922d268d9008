#include "tools/kvfault/scenario.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "tools/kvfault/power_loss.h"
#include "yaml-cpp/yaml.h"

namespace kvstore::fault {
namespace {

std::vector<std::string> Strings(const YAML::Node& n) {
  std::vector<std::string> out;
  if (!n) return out;
  if (n.IsScalar()) {
    out.push_back(n.as<std::string>());
  } else {
    for (const auto& x : n) out.push_back(x.as<std::string>());
  }
  return out;
}

absl::Status CheckKeys(const YAML::Node& n, const std::set<std::string>& allowed,
                       const std::string& where) {
  for (const auto& kv : n) {
    const std::string key = kv.first.as<std::string>();
    if (!allowed.count(key)) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": unknown field '", key, "'"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

bool IsDiskAction(const std::string& action) {
  static const std::set<std::string> kDisk = {"failpoint",    "await-exit",  "fill-disk",
                                              "grow-disk",    "clock",       "bitflip-live",
                                              "record-index", "watch-index", "truncate-log"};
  return kDisk.count(action) > 0;
}

absl::StatusOr<Scenario> LoadScenario(const std::string& path) {
  Scenario s;
  s.path = path;
  try {
    const YAML::Node root = YAML::LoadFile(path);
    if (absl::Status st = CheckKeys(root,
                                    {"name",
                                     "description",
                                     "replicas",
                                     "server_flags",
                                     "duration_s",
                                     "max_ops",
                                     "request_timeout_ms",
                                     "workloads",
                                     "nemesis",
                                     "expect",
                                     "check_time_limit_ms",
                                     "preload",
                                     "requires_controls",
                                     "tmpfs",
                                     "faketime",
                                     "network",
                                     "etcd",
                                     "lease_ttl",
                                     "routers",
                                     "shards"},
                                    path);
        !st.ok()) {
      return st;
    }
    s.name = root["name"].as<std::string>();
    s.description = root["description"].as<std::string>("");
    s.replicas = root["replicas"].as<int>(2);
    s.server_flags = Strings(root["server_flags"]);
    s.preload = Strings(root["preload"]);
    s.requires_controls = root["requires_controls"].as<bool>(false);
    if (const YAML::Node t = root["tmpfs"]) {
      if (absl::Status st = CheckKeys(t, {"nodes", "size_mib"}, path + " tmpfs"); !st.ok()) {
        return st;
      }
      s.tmpfs_nodes = Strings(t["nodes"]);
      s.tmpfs_size_mib = t["size_mib"].as<int64_t>(64);
    }
    s.faketime = Strings(root["faketime"]);
    const std::string network = root["network"].as<std::string>("direct");
    if (network != "direct" && network != "proxy" && network != "netns") {
      return absl::InvalidArgumentError(path + ": network is direct, proxy or netns");
    }
    s.proxies = network == "proxy";
    s.netns = network == "netns";
    s.etcd = root["etcd"].as<bool>(false);
    s.lease_ttl = root["lease_ttl"].as<std::string>("2s");
    if (s.etcd) s.proxies = true;  // Each node's link to etcd.
    s.routers = root["routers"].as<int>(0);
    s.shards = root["shards"].as<int>(1);
    if (s.shards < 1 || (s.shards > 1 && s.routers == 0)) {
      // Only the routers know which shard owns a key.
      return absl::InvalidArgumentError(path + ": shards: N (N > 1) needs routers: N and etcd");
    }
    if (s.routers < 0 || (s.routers > 0 && !s.etcd)) {
      // Routers follow the leaders through etcd; a static topology would
      // send them to a leader the nemesis has replaced.
      return absl::InvalidArgumentError(path + ": routers: N needs etcd: true");
    }
    s.load.duration = absl::Milliseconds(1000 * root["duration_s"].as<double>(20));
    s.load.max_ops = root["max_ops"].as<int64_t>(20000);
    s.load.request_timeout = absl::Milliseconds(root["request_timeout_ms"].as<int64_t>(2000));
    s.check_time_limit_ms = root["check_time_limit_ms"].as<int64_t>(10000);
    for (const auto& w : root["workloads"]) {
      if (absl::Status st = CheckKeys(w, {"kind", "clients", "rate", "keys"}, path + " workload");
          !st.ok()) {
        return st;
      }
      WorkloadSpec spec;
      spec.kind = w["kind"].as<std::string>();
      if (spec.kind != "register" && spec.kind != "set" && spec.kind != "replica-reads") {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": workload kind '", spec.kind, "' (register, set, replica-reads)"));
      }
      if (spec.kind == "replica-reads" && s.routers == 0) {
        // The routers pick the replica; without them every read would go
        // to the leader and test nothing a leader read does not.
        return absl::InvalidArgumentError(path + ": workload replica-reads needs routers: N");
      }
      spec.clients = w["clients"].as<int>(8);
      spec.rate = w["rate"].as<double>(250);
      spec.keys = w["keys"].as<int>(5);
      s.load.workloads.push_back(spec);
    }
    if (s.load.workloads.empty()) return absl::InvalidArgumentError(path + ": no workloads");
    static const std::set<std::string> kActions = {
        "kill",         "pause",     "resume",    "restart", "wipe", "promote",
        "await-healed", "powerloss", "bitflip",   "repair",  "net",  "probe-write",
        "promote-race", "settle",    "partition", "loss"};
    const auto known = [&](const std::string& a) { return kActions.count(a) || IsDiskAction(a); };
    for (const auto& n : root["nemesis"]) {
      if (absl::Status st = CheckKeys(n,
                                      {"at_s",
                                       "jitter_s",
                                       "action",
                                       "node",
                                       "as",
                                       "candidates",
                                       "followers",
                                       "force",
                                       "tear",
                                       "until_unsynced_s",
                                       "unsynced_hold_ms",
                                       "until_acked_unsynced_s",
                                       "file",
                                       "where",
                                       "after_bitflip",
                                       "failpoint",
                                       "failnum",
                                       "exit_within_s",
                                       "clock",
                                       "size_mib",
                                       "wait_s",
                                       "bytes",
                                       "expect_log",
                                       "flags",
                                       "link",
                                       "mode",
                                       "delay_ms",
                                       "jitter_ms",
                                       "rate_kbps",
                                       "expect",
                                       "minority",
                                       "percent",
                                       "shard"},
                                      path + " nemesis step");
          !st.ok()) {
        return st;
      }
      Step step;
      step.at_s = n["at_s"].as<double>(0);
      step.jitter_s = n["jitter_s"].as<double>(0);
      step.action = n["action"].as<std::string>();
      if (!known(step.action)) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": unknown action '", step.action, "'"));
      }
      step.node = n["node"].as<std::string>("");
      step.as = n["as"].as<std::string>("");
      step.candidates = Strings(n["candidates"]);
      step.followers = Strings(n["followers"]);
      step.force = n["force"].as<std::string>("never");
      step.tear = n["tear"].as<std::string>("none");
      step.until_unsynced_s = n["until_unsynced_s"].as<double>(0);
      step.unsynced_hold_ms = n["unsynced_hold_ms"].as<double>(0);
      step.until_acked_unsynced_s = n["until_acked_unsynced_s"].as<double>(0);
      if (step.until_acked_unsynced_s > 0 &&
          (step.until_unsynced_s > 0 || step.unsynced_hold_ms > 0)) {
        return absl::InvalidArgumentError(
            path + ": until_acked_unsynced_s replaces until_unsynced_s and unsynced_hold_ms");
      }
      step.file = n["file"].as<std::string>("");
      step.where = n["where"].as<std::string>("middle");
      step.after_bitflip = n["after_bitflip"].as<std::string>("");
      step.failpoint = n["failpoint"].as<std::string>("");
      step.failnum = n["failnum"].as<int>(1);
      step.exit_within_s = n["exit_within_s"].as<double>(0);
      step.clock = n["clock"].as<std::string>("");
      step.size_mib = n["size_mib"].as<int64_t>(0);
      step.wait_s = n["wait_s"].as<double>(10);
      step.bytes = n["bytes"].as<int64_t>(0);
      step.expect_log = n["expect_log"].as<std::string>("");
      step.flags = Strings(n["flags"]);
      if (step.action == "failpoint" && step.failpoint.empty()) {
        return absl::InvalidArgumentError(path + ": failpoint needs failpoint: NAME");
      }
      if (step.action == "clock" && step.clock.empty()) {
        return absl::InvalidArgumentError(path + ": clock needs clock: +N or -N (seconds)");
      }
      step.net.link = n["link"].as<std::string>("");
      step.net.mode = n["mode"].as<std::string>("");
      step.net.delay_ms = n["delay_ms"].as<double>(0);
      step.net.jitter_ms = n["jitter_ms"].as<double>(0);
      step.net.rate_kbps = n["rate_kbps"].as<double>(0);
      step.expect = n["expect"].as<std::string>("");
      step.minority = Strings(n["minority"]);
      step.percent = n["percent"].as<int>(0);
      if (step.action == "partition" || step.action == "loss") {
        if (!s.netns) {
          return absl::InvalidArgumentError(
              absl::StrCat(path, ": ", step.action, " needs network: netns"));
        }
        static const std::set<std::string> kModes = {"isolate", "split", "one-way", "heal"};
        if (step.action == "partition" && kModes.count(step.net.mode) == 0) {
          return absl::InvalidArgumentError(path +
                                            ": partition mode is isolate, split, one-way or heal");
        }
        if (step.action == "loss" && (step.percent < 0 || step.percent > 100)) {
          return absl::InvalidArgumentError(path + ": loss percent is 0 to 100");
        }
      }
      step.shard = n["shard"].as<std::string>("");
      if (step.action == "net") {
        if (absl::Status st = CheckNetStep(step.net); !st.ok()) {
          return absl::InvalidArgumentError(absl::StrCat(path, ": ", st.message()));
        }
        s.proxies = true;
      }
      if (step.action == "probe-write" && step.expect != "refused-naming-leader") {
        return absl::InvalidArgumentError(path +
                                          ": probe-write needs expect: refused-naming-leader");
      }
      if (step.action == "bitflip" && step.file != "wal" && step.file != "snapshot") {
        return absl::InvalidArgumentError(path + ": bitflip needs file: wal or snapshot");
      }
      if (step.where != "middle" && step.where != "random") {
        return absl::InvalidArgumentError(path + ": where is middle or random");
      }
      if (!step.after_bitflip.empty() && step.after_bitflip != "refuse" &&
          step.after_bitflip != "detect") {
        return absl::InvalidArgumentError(path + ": after_bitflip is refuse or detect");
      }
      if (absl::StatusOr<Tear> tear = ParseTear(step.tear); !tear.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": ", tear.status().message()));
      }
      s.nemesis.push_back(step);
    }
    if (const YAML::Node e = root["expect"]) {
      if (absl::Status st =
              CheckKeys(e,
                        {"lost", "allowed_violations", "min_acked", "replicas_equal",
                         "max_lost_age_s", "acked_while_isolated", "min_full_resyncs"},
                        path + " expect");
          !st.ok()) {
        return st;
      }
      s.expect.lost = e["lost"].as<std::string>("zero");
      if (s.expect.lost != "zero" && s.expect.lost != "positive" && s.expect.lost != "any") {
        return absl::InvalidArgumentError(path + ": expect.lost is zero, positive or any");
      }
      s.expect.max_lost_age_s = e["max_lost_age_s"].as<double>(-1);
      s.expect.allowed_violations = Strings(e["allowed_violations"]);
      s.expect.min_acked = e["min_acked"].as<int64_t>(500);
      s.expect.replicas_equal = e["replicas_equal"].as<bool>(true);
      s.expect.acked_while_isolated = e["acked_while_isolated"].as<std::string>("any");
      if (s.expect.acked_while_isolated != "zero" && s.expect.acked_while_isolated != "any") {
        return absl::InvalidArgumentError(path + ": expect.acked_while_isolated is zero or any");
      }
      s.expect.min_full_resyncs = e["min_full_resyncs"].as<int64_t>(0);
    }
    if (s.netns && (s.proxies || s.etcd)) {
      return absl::InvalidArgumentError(
          path + ": network: netns runs without proxies (no net steps) and without etcd");
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", e.what()));
  }
  return s;
}

}  // namespace kvstore::fault

#include "common/topology/topology.h"

#include <algorithm>
#include <exception>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/ring/hash_ring.h"
#include "yaml-cpp/yaml.h"

namespace kvstore {
namespace {

constexpr size_t kMaxShardNameBytes = 64;

// yaml-cpp throws; everything here runs inside ParseTopology's try block and
// reports through Error instead.
class Parser {
 public:
  explicit Parser(const std::string& source) : source_(source) {}

  absl::Status Error(const YAML::Mark& mark, const std::string& what) const {
    if (mark.is_null() || mark.line < 0) {
      return absl::InvalidArgumentError(absl::StrCat("topology ", source_, ": ", what));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("topology ", source_, ":", mark.line + 1, ": ", what));
  }

  absl::StatusOr<Topology> Parse(const YAML::Node& root) {
    if (!root.IsDefined() || root.IsNull()) return Error(root.Mark(), "the file is empty");
    if (!root.IsMap()) return Error(root.Mark(), "expected a map with 'shards' at the top level");
    Topology topology;
    bool have_shards = false;
    std::set<std::string> seen;
    for (const auto& item : root) {
      absl::StatusOr<std::string> key = KeyName(item.first, &seen);
      if (!key.ok()) return key.status();
      if (*key == "vnodes") {
        absl::StatusOr<int> vnodes = Vnodes(item.second);
        if (!vnodes.ok()) return vnodes.status();
        topology.vnodes = *vnodes;
      } else if (*key == "shards") {
        absl::Status s = Shards(item.second, &topology.shards);
        if (!s.ok()) return s;
        have_shards = true;
      } else {
        return Error(item.first.Mark(),
                     absl::StrCat("unknown key '", *key, "' (expected 'vnodes' or 'shards')"));
      }
    }
    if (!have_shards) return Error(root.Mark(), "missing 'shards'");
    return topology;
  }

 private:
  // The key's name; an error when it is not a name or repeats one in `seen`
  // (yaml-cpp keeps both copies of a repeated key, and the last would win).
  absl::StatusOr<std::string> KeyName(const YAML::Node& key, std::set<std::string>* seen) const {
    if (!key.IsScalar()) return Error(key.Mark(), "a key must be a plain name");
    if (!seen->insert(key.Scalar()).second) {
      return Error(key.Mark(), absl::StrCat("key '", key.Scalar(), "' appears twice"));
    }
    return key.Scalar();
  }

  absl::StatusOr<int> Vnodes(const YAML::Node& node) const {
    int vnodes = 0;
    if (!node.IsScalar() || !absl::SimpleAtoi(node.Scalar(), &vnodes) || vnodes < 1 ||
        vnodes > HashRing::kMaxVirtualNodes) {
      return Error(node.Mark(), absl::StrCat("'vnodes' must be an integer from 1 to ",
                                             HashRing::kMaxVirtualNodes));
    }
    return vnodes;
  }

  absl::Status Shards(const YAML::Node& node, std::vector<ShardTopology>* shards) {
    if (!node.IsSequence()) {
      return Error(node.Mark(), "'shards' must be a list of shards (name, leader, replicas)");
    }
    if (node.size() == 0) return Error(node.Mark(), "'shards' is empty: a cluster needs a shard");
    std::map<std::string, YAML::Mark> names;
    for (const YAML::Node& entry : node) {
      ShardTopology shard;
      if (absl::Status s = Shard(entry, &shard); !s.ok()) return s;
      if (auto [it, inserted] = names.emplace(shard.name, entry.Mark()); !inserted) {
        return Error(entry.Mark(),
                     absl::StrCat("shard name '", shard.name, "' appears twice (first at line ",
                                  it->second.line + 1, ")"));
      }
      shards->push_back(std::move(shard));
    }
    return absl::OkStatus();
  }

  absl::Status Shard(const YAML::Node& node, ShardTopology* shard) {
    if (!node.IsMap()) {
      return Error(node.Mark(), "each shard must be a map with name, leader and replicas");
    }
    bool have_name = false;
    bool have_leader = false;
    std::set<std::string> seen;
    for (const auto& item : node) {
      absl::StatusOr<std::string> key = KeyName(item.first, &seen);
      if (!key.ok()) return key.status();
      const YAML::Node& value = item.second;
      if (*key == "name") {
        if (!value.IsScalar()) return Error(value.Mark(), "'name' must be a string");
        shard->name = value.Scalar();
        if (absl::Status s = CheckName(shard->name, value.Mark()); !s.ok()) return s;
        have_name = true;
      } else if (*key == "leader") {
        absl::StatusOr<std::string> address = Address(value, "leader");
        if (!address.ok()) return address.status();
        shard->leader = *std::move(address);
        have_leader = true;
      } else if (*key == "replicas") {
        if (value.IsNull()) continue;  // "replicas:" with nothing after it: none.
        if (!value.IsSequence()) {
          return Error(value.Mark(), "'replicas' must be a list of HOST:PORT addresses");
        }
        for (const YAML::Node& replica : value) {
          absl::StatusOr<std::string> address = Address(replica, "replica");
          if (!address.ok()) return address.status();
          shard->replicas.push_back(*std::move(address));
        }
      } else {
        return Error(item.first.Mark(),
                     absl::StrCat("unknown key '", *key,
                                  "' in a shard (expected 'name', 'leader' or 'replicas')"));
      }
    }
    if (!have_name) return Error(node.Mark(), "a shard has no 'name'");
    if (!have_leader) {
      return Error(node.Mark(), absl::StrCat("shard '", shard->name, "' has no 'leader'"));
    }
    return absl::OkStatus();
  }

  absl::Status CheckName(const std::string& name, const YAML::Mark& mark) const {
    if (absl::Status s = CheckShardName(name); !s.ok())
      return Error(mark, std::string(s.message()));
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> Address(const YAML::Node& node, const char* what) {
    if (!node.IsScalar()) return Error(node.Mark(), absl::StrCat(what, " must be HOST:PORT"));
    const std::string address = node.Scalar();
    if (absl::Status s = CheckHostPort(address); !s.ok()) {
      return Error(node.Mark(), absl::StrCat(what, " '", address, "': ", s.message()));
    }
    if (auto [it, inserted] = addresses_.emplace(address, node.Mark()); !inserted) {
      return Error(node.Mark(),
                   absl::StrCat(what, " address ", address, " is already used at line ",
                                it->second.line + 1, "; each server has one role in one shard"));
    }
    return address;
  }

  const std::string& source_;
  std::map<std::string, YAML::Mark> addresses_;
};

bool IsHostNameChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
}

}  // namespace

std::vector<std::string> Topology::ShardNames() const {
  std::vector<std::string> names;
  names.reserve(shards.size());
  for (const ShardTopology& s : shards) names.push_back(s.name);
  return names;
}

absl::StatusOr<HashRing> Topology::BuildRing() const {
  return HashRing::Build(ShardNames(), vnodes, drain);
}

absl::Status CheckShardName(absl::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError("a shard name is empty");
  if (name.size() > kMaxShardNameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("shard name '", name, "' is longer than ", kMaxShardNameBytes, " bytes"));
  }
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
      return absl::InvalidArgumentError(
          absl::StrCat("shard name '", name, "' may only hold letters, digits, '-', '_' and '.'"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckHostPort(absl::string_view address) {
  const size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos) {
    return absl::InvalidArgumentError("expected HOST:PORT, found no ':'");
  }
  const absl::string_view host = address.substr(0, colon);
  const absl::string_view port_text = address.substr(colon + 1);
  if (host.empty()) return absl::InvalidArgumentError("the host is empty");
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') {
      return absl::InvalidArgumentError("an IPv6 host must look like [::1]");
    }
    for (char c : host.substr(1, host.size() - 2)) {
      if (!absl::ascii_isxdigit(static_cast<unsigned char>(c)) && c != ':' && c != '.') {
        return absl::InvalidArgumentError("an IPv6 host holds only hex digits, ':' and '.'");
      }
    }
  } else {
    for (char c : host) {
      if (!IsHostNameChar(c)) {
        return absl::InvalidArgumentError(
            "the host holds a character other than letters, digits, '-', '.' and '_' (an IPv6 "
            "address goes in brackets)");
      }
    }
  }
  int port = 0;
  const bool digits = !port_text.empty() && port_text.size() <= 5 &&
                      std::all_of(port_text.begin(), port_text.end(), [](char c) {
                        return absl::ascii_isdigit(static_cast<unsigned char>(c));
                      });
  if (!digits || !absl::SimpleAtoi(port_text, &port) || port < 1 || port > 65535) {
    return absl::InvalidArgumentError("the port must be a number from 1 to 65535");
  }
  return absl::OkStatus();
}

absl::StatusOr<Topology> ParseTopology(absl::string_view yaml, const std::string& source) {
  Parser parser(source);
  try {
    YAML::Node root = YAML::Load(std::string(yaml));
    return parser.Parse(root);
  } catch (const YAML::Exception& e) {
    return parser.Error(e.mark, absl::StrCat("not valid YAML: ", e.msg));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("topology ", source, ": ", e.what()));
  }
}

absl::StatusOr<Topology> LoadTopologyFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat("topology ", path, ": cannot read the file"));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    return absl::InvalidArgumentError(absl::StrCat("topology ", path, ": cannot read the file"));
  }
  return ParseTopology(text.str(), path);
}

}  // namespace kvstore

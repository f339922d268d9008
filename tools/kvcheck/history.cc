#include "tools/kvcheck/history.h"

#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace kvstore::check {
namespace {

using Json = nlohmann::json;

absl::Status Bad(int line, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("line ", line, ": ", why));
}

// Field readers: each says which field is missing or of which wrong type.
absl::StatusOr<int64_t> Int(const Json& j, const char* name, int line) {
  auto it = j.find(name);
  if (it == j.end()) return Bad(line, absl::StrCat("no \"", name, "\""));
  if (!it->is_number_integer()) return Bad(line, absl::StrCat("\"", name, "\" is not an integer"));
  if (it->is_number_unsigned() && it->get<uint64_t>() > INT64_MAX) {
    return Bad(line, absl::StrCat("\"", name, "\" is out of range"));
  }
  return it->get<int64_t>();
}

absl::StatusOr<uint64_t> Version(const Json& j, const char* name, int line) {
  auto it = j.find(name);
  if (it == j.end()) return Bad(line, absl::StrCat("no \"", name, "\""));
  if (!it->is_number_unsigned()) {
    return Bad(line, absl::StrCat("\"", name, "\" is not a non-negative integer"));
  }
  return it->get<uint64_t>();
}

absl::StatusOr<std::optional<uint64_t>> OptionalVersion(const Json& j, const char* name, int line) {
  if (!j.contains(name)) return std::optional<uint64_t>();
  absl::StatusOr<uint64_t> v = Version(j, name, line);
  if (!v.ok()) return v.status();
  return std::optional<uint64_t>(*v);
}

absl::StatusOr<std::string> String(const Json& j, const char* name, int line) {
  auto it = j.find(name);
  if (it == j.end()) return Bad(line, absl::StrCat("no \"", name, "\""));
  if (!it->is_string()) return Bad(line, absl::StrCat("\"", name, "\" is not a string"));
  return it->get<std::string>();
}

absl::StatusOr<bool> Bool(const Json& j, const char* name, int line) {
  auto it = j.find(name);
  if (it == j.end()) return Bad(line, absl::StrCat("no \"", name, "\""));
  if (!it->is_boolean()) return Bad(line, absl::StrCat("\"", name, "\" is not a boolean"));
  return it->get<bool>();
}

// `lhs = *expr`, or return expr's error. Local to this file: the readers above
// are its only users.
#define KV_CHECK_CONCAT_INNER(a, b) a##b
#define KV_CHECK_CONCAT(a, b) KV_CHECK_CONCAT_INNER(a, b)
#define KV_ASSIGN_OR_RETURN(lhs, expr) KV_ASSIGN_OR_RETURN_IMPL(KV_CHECK_CONCAT(or_, __LINE__), lhs, expr)
#define KV_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = *std::move(tmp)

// "read-any" is a get from any replica (History::replica_reads).
bool ParseFn(const std::string& s, Fn* f, bool* replica_read) {
  *replica_read = s == "read-any";
  if (*replica_read) {
    *f = Fn::kGet;
    return true;
  }
  if (s == "get") *f = Fn::kGet;
  else if (s == "set") *f = Fn::kSet;
  else if (s == "cas") *f = Fn::kCas;
  else if (s == "delete") *f = Fn::kDelete;
  else return false;
  return true;
}

// The request fields of an invoke line.
absl::Status ReadRequest(const Json& j, int line, Op* op) {
  if (op->WritesValue()) {
    KV_ASSIGN_OR_RETURN(op->value, String(j, "value", line));
  }
  if (op->f != Fn::kGet) {
    KV_ASSIGN_OR_RETURN(op->if_version, OptionalVersion(j, "if_version", line));
  }
  if (op->f == Fn::kSet && op->if_version.has_value()) op->f = Fn::kCas;
  if (op->f == Fn::kCas && !op->if_version.has_value()) {
    return Bad(line, "a cas without \"if_version\"");
  }
  return absl::OkStatus();
}

// A completion may repeat the request; it must then agree with the invoke.
absl::Status CheckEcho(const Json& j, int line, const Op& op) {
  if (op.WritesValue() && j.contains("value")) {
    std::string value;
    KV_ASSIGN_OR_RETURN(value, String(j, "value", line));
    if (value != op.value) {
      return Bad(line, absl::StrCat("\"value\" differs from the invoke's (line ", op.invoke_line, ")"));
    }
  }
  if (op.f != Fn::kGet && j.contains("if_version")) {
    std::optional<uint64_t> v;
    KV_ASSIGN_OR_RETURN(v, OptionalVersion(j, "if_version", line));
    if (v != op.if_version) {
      return Bad(line, absl::StrCat("\"if_version\" differs from the invoke's (line ", op.invoke_line, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status ReadResults(const Json& j, int line, Op* op) {
  if (j.contains("node")) {
    KV_ASSIGN_OR_RETURN(op->node, String(j, "node", line));
  }
  if (op->outcome == Outcome::kFail) {
    KV_ASSIGN_OR_RETURN(op->current_version, OptionalVersion(j, "current_version", line));
    return absl::OkStatus();
  }
  if (op->outcome != Outcome::kOk) return absl::OkStatus();
  switch (op->f) {
    case Fn::kGet: {
      KV_ASSIGN_OR_RETURN(op->found, Bool(j, "found", line));
      if (!op->found) break;
      KV_ASSIGN_OR_RETURN(op->read_value, String(j, "value", line));
      KV_ASSIGN_OR_RETURN(op->version, Version(j, "version", line));
      if (op->version == 0) return Bad(line, "a get that found the key with version 0");
      break;
    }
    case Fn::kSet:
    case Fn::kCas: {
      KV_ASSIGN_OR_RETURN(op->version, Version(j, "version", line));
      if (op->version == 0) return Bad(line, "an ok write with version 0");
      break;
    }
    case Fn::kDelete: {
      KV_ASSIGN_OR_RETURN(op->deleted, Bool(j, "deleted", line));
      if (!op->deleted) break;
      KV_ASSIGN_OR_RETURN(op->version, Version(j, "version", line));
      if (op->version == 0) return Bad(line, "a delete that deleted with version 0");
      break;
    }
  }
  return absl::OkStatus();
}

}  // namespace

const char* FnName(Fn f) {
  switch (f) {
    case Fn::kGet: return "get";
    case Fn::kSet: return "set";
    case Fn::kCas: return "cas";
    case Fn::kDelete: return "delete";
  }
  return "?";
}

const char* OutcomeName(Outcome o) {
  switch (o) {
    case Outcome::kOk: return "ok";
    case Outcome::kFail: return "fail";
    case Outcome::kInfo: return "info";
  }
  return "?";
}

absl::StatusOr<History> ParseHistory(absl::string_view text) {
  History h;
  // proc -> op id; a replica read's id is stored as -(id + 1).
  absl::flat_hash_map<int64_t, int> in_flight;
  auto op_of = [&h](int stored) -> Op& {
    return stored >= 0 ? h.ops[stored] : h.replica_reads[-stored - 1];
  };
  absl::flat_hash_map<int64_t, int> retired;    // proc -> line of its info
  absl::flat_hash_map<std::string, int> writes;  // written value -> its invoke line
  int64_t last_i = INT64_MIN;
  int64_t last_t = INT64_MIN;
  int line = 0;
  for (absl::string_view raw : absl::StrSplit(text, '\n')) {
    ++line;
    absl::string_view s = absl::StripAsciiWhitespace(raw);
    if (s.empty()) continue;
    Json j = Json::parse(s.begin(), s.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return Bad(line, "not valid JSON");
    if (!j.is_object()) return Bad(line, "not a JSON object");

    int64_t i, t_ns, proc;
    std::string type, f_name, key;
    KV_ASSIGN_OR_RETURN(i, Int(j, "i", line));
    KV_ASSIGN_OR_RETURN(t_ns, Int(j, "t_ns", line));
    KV_ASSIGN_OR_RETURN(proc, Int(j, "proc", line));
    KV_ASSIGN_OR_RETURN(type, String(j, "type", line));
    KV_ASSIGN_OR_RETURN(f_name, String(j, "f", line));
    KV_ASSIGN_OR_RETURN(key, String(j, "key", line));
    Fn f;
    bool replica_read = false;
    if (!ParseFn(f_name, &f, &replica_read)) {
      return Bad(line,
                 absl::StrCat("unknown \"f\" \"", f_name, "\" (get, set, cas, delete, read-any)"));
    }
    if (i <= last_i) return Bad(line, absl::StrCat("\"i\" ", i, " does not increase (previous ", last_i, ")"));
    if (t_ns < last_t) {
      return Bad(line, absl::StrCat("\"t_ns\" ", t_ns, " goes backwards (previous ", last_t, ")"));
    }
    last_i = i;
    last_t = t_ns;
    const bool final_phase = j.contains("phase") && j["phase"] == "final";
    const int64_t pos = h.events++;

    if (type == "invoke") {
      if (auto it = retired.find(proc); it != retired.end()) {
        return Bad(line, absl::StrCat("proc ", proc, " issues again after its info at line ", it->second));
      }
      if (auto it = in_flight.find(proc); it != in_flight.end()) {
        return Bad(line, absl::StrCat("proc ", proc, " already has an op in flight (line ",
                                      op_of(it->second).invoke_line, ")"));
      }
      Op op;
      op.id = static_cast<int>(replica_read ? h.replica_reads.size() : h.ops.size());
      op.replica_read = replica_read;
      op.proc = proc;
      op.f = f;
      op.key = std::move(key);
      op.final_phase = final_phase;
      op.invoke_pos = pos;
      op.invoke_i = i;
      op.invoke_t_ns = t_ns;
      op.invoke_line = line;
      if (absl::Status st = ReadRequest(j, line, &op); !st.ok()) return st;
      if (op.WritesValue()) {
        // Reads are traced to their write by value (docs/reliability.md).
        auto [w, fresh] = writes.emplace(op.value, line);
        if (!fresh) {
          return Bad(line, absl::StrCat("value \"", op.value, "\" was already written at line ", w->second,
                                        ": written values must be unique"));
        }
      }
      if (replica_read) {
        in_flight[proc] = -op.id - 1;
        h.replica_reads.push_back(std::move(op));
      } else {
        in_flight[proc] = op.id;
        h.ops.push_back(std::move(op));
      }
      continue;
    }

    Outcome outcome;
    if (type == "ok") outcome = Outcome::kOk;
    else if (type == "fail") outcome = Outcome::kFail;
    else if (type == "info") outcome = Outcome::kInfo;
    else return Bad(line, absl::StrCat("unknown \"type\" \"", type, "\" (invoke, ok, fail, info)"));
    auto it = in_flight.find(proc);
    if (it == in_flight.end()) return Bad(line, absl::StrCat("a completion without an invoke on proc ", proc));
    Op& op = op_of(it->second);
    in_flight.erase(it);
    if (f == Fn::kSet && op.f == Fn::kCas) f = Fn::kCas;
    if (f != op.f || replica_read != op.replica_read || key != op.key) {
      return Bad(line, absl::StrCat("completes ", f_name, " ", key, " but proc ", proc, " invoked ",
                                    op.replica_read ? "read-any" : FnName(op.f), " ", op.key,
                                    " at line ", op.invoke_line));
    }
    op.outcome = outcome;
    op.final_phase = op.final_phase || final_phase;
    op.complete_pos = pos;
    op.complete_i = i;
    op.complete_t_ns = t_ns;
    op.complete_line = line;
    if (absl::Status st = CheckEcho(j, line, op); !st.ok()) return st;
    if (absl::Status st = ReadResults(j, line, &op); !st.ok()) return st;
    if (outcome == Outcome::kInfo) retired[proc] = line;
  }
  // Ops still in flight when the history ends may yet take effect: info.
  for (const auto& [proc, id] : in_flight) op_of(id).outcome = Outcome::kInfo;
  return h;
}

absl::StatusOr<History> ReadHistoryFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read ", path));
  absl::StatusOr<History> h = ParseHistory(text.str());
  if (!h.ok()) return absl::Status(h.status().code(), absl::StrCat(path, ": ", h.status().message()));
  return h;
}

std::map<std::string, std::vector<int>> OpsByKey(const History& h) {
  std::map<std::string, std::vector<int>> by_key;
  for (const Op& op : h.ops) by_key[op.key].push_back(op.id);
  return by_key;
}

std::string DescribeOp(const Op& op) {
  std::string s = absl::StrCat(op.replica_read ? "read-any" : FnName(op.f), " ", op.key);
  if (op.WritesValue()) absl::StrAppend(&s, " ", op.value);
  if (op.if_version.has_value()) absl::StrAppend(&s, " if_version=", *op.if_version);
  absl::StrAppend(&s, " -> ", OutcomeName(op.outcome));
  if (op.outcome == Outcome::kOk) {
    if (op.f == Fn::kGet) {
      if (op.found) absl::StrAppend(&s, " ", op.read_value, "@", op.version);
      else absl::StrAppend(&s, " not found");
    } else if (op.f == Fn::kDelete && !op.deleted) {
      absl::StrAppend(&s, " deleted=false");
    } else {
      absl::StrAppend(&s, " version=", op.version);
    }
  }
  if (op.current_version.has_value()) absl::StrAppend(&s, " current_version=", *op.current_version);
  if (!op.node.empty()) absl::StrAppend(&s, " from ", op.node);
  absl::StrAppend(&s, " (proc ", op.proc, ", i=", op.invoke_i);
  if (op.complete_pos != kNoEvent) absl::StrAppend(&s, "..", op.complete_i);
  absl::StrAppend(&s, ")");
  return s;
}

}  // namespace kvstore::check

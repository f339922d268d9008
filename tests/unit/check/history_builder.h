// Hand-made histories for kvcheck's tests, written as the driver would: one
// JSON line per event, "i" and "t_ns" assigned in order, each completion
// repeating its invoke's "f" and "key". A test reads as the timeline it is:
//
//   HistoryBuilder b;
//   b.Invoke(1, Set("k", "a")).Ok(1, {{"version", 1}});
//   b.Invoke(2, Get("k")).Ok(2, Found("a", 1));
#ifndef KVSTORE_TESTS_UNIT_CHECK_HISTORY_BUILDER_H_
#define KVSTORE_TESTS_UNIT_CHECK_HISTORY_BUILDER_H_

#include <cstdint>
#include <map>
#include <string>

#include "nlohmann/json.hpp"

namespace kvstore::check::testing {

using Json = nlohmann::ordered_json;

inline Json Get(const std::string& key) { return {{"f", "get"}, {"key", key}}; }
inline Json Set(const std::string& key, const std::string& value) {
  return {{"f", "set"}, {"key", key}, {"value", value}};
}
inline Json Cas(const std::string& key, const std::string& value, uint64_t if_version) {
  return {{"f", "cas"}, {"key", key}, {"value", value}, {"if_version", if_version}};
}
// A get with read_mode ANY_REPLICA (may be stale): kvcheck's "read-any".
inline Json ReadAny(const std::string& key) { return {{"f", "read-any"}, {"key", key}}; }
inline Json Delete(const std::string& key) { return {{"f", "delete"}, {"key", key}}; }
inline Json Final(Json op) {
  op["phase"] = "final";
  return op;
}

// Completion fields.
inline Json Version(uint64_t v) { return {{"version", v}}; }
inline Json Found(const std::string& value, uint64_t version) {
  return {{"found", true}, {"value", value}, {"version", version}};
}
inline Json NotFound() { return {{"found", false}}; }
inline Json Deleted(uint64_t version) { return {{"deleted", true}, {"version", version}}; }
inline Json NothingDeleted() { return {{"deleted", false}, {"version", 0}}; }
inline Json CurrentVersion(uint64_t v) { return {{"current_version", v}}; }

class HistoryBuilder {
 public:
  HistoryBuilder& Invoke(int64_t proc, const Json& op) { return Line(proc, "invoke", op); }
  HistoryBuilder& Ok(int64_t proc, const Json& results = Json::object()) { return Complete(proc, "ok", results); }
  HistoryBuilder& Fail(int64_t proc, const Json& results = Json::object()) {
    return Complete(proc, "fail", results);
  }
  HistoryBuilder& Info(int64_t proc) { return Complete(proc, "info", Json::object()); }

  // The history so far, one JSON object per line.
  const std::string& Text() const { return text_; }

 private:
  HistoryBuilder& Complete(int64_t proc, const char* type, const Json& results) {
    Json op = pending_.at(proc);
    pending_.erase(proc);
    Json line = {{"f", op["f"]}, {"key", op["key"]}};
    if (op.contains("phase")) line["phase"] = op["phase"];
    for (const auto& [k, v] : results.items()) line[k] = v;
    return Line(proc, type, line);
  }
  HistoryBuilder& Line(int64_t proc, const char* type, const Json& op) {
    Json line = {{"i", next_i_}, {"t_ns", next_i_ * 1'000'000}, {"proc", proc}, {"type", type}};
    for (const auto& [k, v] : op.items()) line[k] = v;
    if (std::string(type) == "invoke") pending_[proc] = op;
    ++next_i_;
    text_ += line.dump() + "\n";
    return *this;
  }

  int64_t next_i_ = 1;
  std::map<int64_t, Json> pending_;
  std::string text_;
};

}  // namespace kvstore::check::testing

#endif  // KVSTORE_TESTS_UNIT_CHECK_HISTORY_BUILDER_H_

// The power-loss journal (issue 15, docs/reliability.md "Power loss"): what
// libkvfault_preload.so appends while a server runs, and what
// `kvfault powerloss` replays after a kill -9 to cut the data directory back
// to what a power cut would have left. One line per event, fields separated by
// one space, names escaped with EscapeName; inode numbers identify files, so a
// rename keeps a file's durable length and a new file under an old name does
// not inherit it:
//
//   kvfault-journal 1 <root> <st_dev>   first line: the directory it covers
//   dir <rel-dir> <entry>...            the directory's entries are durable (a
//                                       baseline, or a successful fsync of it);
//                                       entry = f:<ino>:<name> or d:<ino>:<name>
//   len <ino> <bytes> <rel>             a file's first <bytes> are durable:
//                                       baseline, or a successful fsync or
//                                       fdatasync (the size when it started)
//   trunc <ino> <bytes> <rel>           ftruncate shortened it (not yet synced)
//   stash <ino> <rel>                   before an unlink or a rename over it,
//                                       the file was hard-linked into the stash
//                                       (<journal>.stash/<ino>), so an unlink no
//                                       directory fsync covered can be undone
//   overwrite <ino> <offset> <bytes> <rel>  a write into existing bytes: the
//                                       cut keeps lengths, not old contents
//
// <rel> is relative to the root ("." for the root itself) and informational;
// only inodes and directory lines decide. Everything in this header is plain
// C++ with no dependency, because the preload library includes it too.
#ifndef KVSTORE_TOOLS_KVFAULT_JOURNAL_FORMAT_H_
#define KVSTORE_TOOLS_KVFAULT_JOURNAL_FORMAT_H_

#include <dirent.h>
#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace kvstore::fault::journal {

constexpr char kMagic[] = "kvfault-journal";
constexpr int kVersion = 1;

// Spaces, '%', ':' and control characters as %XX, so every field is one token.
inline std::string EscapeName(const std::string& name) {
  std::string out;
  for (unsigned char c : name) {
    if (c <= ' ' || c == '%' || c == ':' || c >= 0x7f) {
      char buf[4];
      std::snprintf(buf, sizeof(buf), "%%%02X", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out.empty() ? "." : out;
}

inline bool UnescapeName(const std::string& in, std::string* out) {
  out->clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      *out += in[i];
      continue;
    }
    if (i + 2 >= in.size()) return false;
    unsigned v = 0;
    if (std::sscanf(in.substr(i + 1, 2).c_str(), "%2x", &v) != 1) return false;
    *out += static_cast<char>(v);
    i += 2;
  }
  return true;
}

inline std::string JoinRel(const std::string& dir, const std::string& name) {
  return dir == "." ? name : dir + "/" + name;
}

struct Entry {
  char type = 'f';  // 'f' a file (anything not a directory), 'd' a directory
  uint64_t ino = 0;
  std::string name;
};

// The entries of `root`/`rel` (lstat, no "." or ".."); false if it cannot be read.
inline bool ListEntries(const std::string& root, const std::string& rel,
                        std::vector<Entry>* entries) {
  const std::string dir = rel == "." ? root : root + "/" + rel;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return false;
  entries->clear();
  while (struct dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat st;
    if (lstat((dir + "/" + name).c_str(), &st) != 0) continue;  // Gone meanwhile.
    entries->push_back(
        Entry{S_ISDIR(st.st_mode) ? 'd' : 'f', static_cast<uint64_t>(st.st_ino), name});
  }
  closedir(d);
  return true;
}

inline std::string DirLine(const std::string& rel, const std::vector<Entry>& entries) {
  std::string line = "dir " + EscapeName(rel);
  for (const Entry& e : entries) {
    line += ' ';
    line += e.type;
    line += ':' + std::to_string(e.ino) + ':' + EscapeName(e.name);
  }
  return line + "\n";
}

// Lines that declare everything now under `root` durable, as it is: a "dir"
// line per directory and a "len" line per regular file.
inline void AppendBaseline(const std::string& root, const std::string& rel, std::string* out) {
  std::vector<Entry> entries;
  if (!ListEntries(root, rel, &entries)) return;
  *out += DirLine(rel, entries);
  for (const Entry& e : entries) {
    const std::string child = JoinRel(rel, e.name);
    if (e.type == 'd') {
      AppendBaseline(root, child, out);
      continue;
    }
    struct stat st;
    if (lstat((root + "/" + child).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    *out += "len " + std::to_string(e.ino) + " " + std::to_string(st.st_size) + " " +
            EscapeName(child) + "\n";
  }
}

inline std::string Header(const std::string& root, uint64_t dev) {
  return std::string(kMagic) + " " + std::to_string(kVersion) + " " + EscapeName(root) + " " +
         std::to_string(dev) + "\n";
}

inline std::string StashPath(const std::string& journal_path) { return journal_path + ".stash"; }

}  // namespace kvstore::fault::journal

#endif  // KVSTORE_TOOLS_KVFAULT_JOURNAL_FORMAT_H_

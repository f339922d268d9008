// A scripted writer for power_loss_test: run under libkvfault_preload.so, it
// makes the file-system calls our storage makes (open, write, fdatasync,
// fsync of the directory, rename, unlink, ftruncate) in a known order, then
// kills itself with SIGKILL, so the test can cut the directory and check
// every length and name against what was made durable.
//
//   kvfault_preload_writer DIR SCRIPT      SCRIPT: basic | append
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

std::string g_dir;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "writer: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(2);
}

std::string P(const std::string& name) { return g_dir + "/" + name; }

int Create(const std::string& name) {
  const int fd = open(P(name).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) Die("open " + name);
  return fd;
}

void Write(int fd, size_t n, char fill) {
  const std::string data(n, fill);
  if (write(fd, data.data(), data.size()) != static_cast<ssize_t>(n)) Die("write");
}

void Sync(int fd) {
  if (fdatasync(fd) != 0) Die("fdatasync");
}

void SyncDir() {
  const int fd = open(g_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || fsync(fd) != 0) Die("fsync dir");
  close(fd);
}

// A file of `n` bytes, synced and closed.
void Whole(const std::string& name, size_t n, char fill) {
  const int fd = Create(name);
  Write(fd, n, fill);
  Sync(fd);
  close(fd);
}

void Basic() {
  // a.log: 100 bytes synced, 50 more not.
  const int a = Create("a.log");
  Write(a, 100, 'a');
  Sync(a);
  Write(a, 50, 'A');
  // e.log, f, g, h exist durably (a directory fsync covers them).
  Whole("e.log", 30, 'e');
  Whole("f", 10, 'f');
  Whole("g", 10, 'g');
  Whole("d.tmp", 40, 'd');
  const int h = Create("h");
  Write(h, 100, 'h');
  Sync(h);
  SyncDir();
  // g replaced durably: the new g is the durable one.
  Whole("g.tmp", 20, 'G');
  if (rename(P("g.tmp").c_str(), P("g").c_str()) != 0) Die("rename g");
  SyncDir();
  // Later changes, none covered by a directory fsync.
  Whole("b.log", 30, 'b');                                               // created: gone
  if (rename(P("d.tmp").c_str(), P("d").c_str()) != 0) Die("rename d");  // undone
  if (unlink(P("e.log").c_str()) != 0) Die("unlink e.log");              // back
  Whole("f.tmp", 20, 'F');
  if (rename(P("f.tmp").c_str(), P("f").c_str()) != 0) Die("rename f");  // old f back
  if (ftruncate(h, 40) != 0) Die("ftruncate h");                         // durable 40...
  Write(h, 20, 'H');                                                     // ...not these
}

void Append() {
  const int a = open(P("a.log").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (a < 0) Die("open a.log");
  Write(a, 10, 'z');
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s DIR basic|append\n", argv[0]);
    return 2;
  }
  g_dir = argv[1];
  const std::string script = argv[2];
  if (script == "basic") {
    Basic();
  } else if (script == "append") {
    Append();
  } else {
    std::fprintf(stderr, "unknown script %s\n", script.c_str());
    return 2;
  }
  raise(SIGKILL);  // The "crash": nothing is closed or flushed by us.
  return 3;
}

// ThreadSanitizer builds only (KV_SANITIZE=thread): tells TSan what Abseil's
// synchronisation primitives order.
//
// Debian's Abseil is not built with TSan, so its Mutex, CondVar and
// Notification carry no TSan annotations: TSan sees none of the
// happens-before edges they create and reports every access they protect as
// a race. Abseil is a shared library, so these definitions, linked into the
// test binary, interpose its exported entry points: each forwards to the real
// one (dlsym RTLD_NEXT) and tells TSan "acquire" after a lock is taken and
// "release" before it is let go. Reader locks are treated as exclusive ones,
// which can hide a race between two readers but never invents one.
// Written by hand because no packaged Abseil is built with TSan.
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

extern "C" {
void __tsan_acquire(void* addr);
void __tsan_release(void* addr);
}

namespace {

void* Real(const char* mangled) {
  void* f = dlsym(RTLD_NEXT, mangled);
  if (f == nullptr) {
    std::fprintf(stderr, "tsan_absl_sync: %s not found in Abseil\n", mangled);
    std::abort();
  }
  return f;
}

// The real function, looked up once; `Sig` is its type with `this` first.
#define KV_REAL(Sig, mangled) (reinterpret_cast<Sig>(Real(mangled)))

void Acquire(const void* p) { __tsan_acquire(const_cast<void*>(p)); }
void Release(const void* p) { __tsan_release(const_cast<void*>(p)); }

// Abseil evaluates a waiter's condition with the mutex held inside the
// library (in the waiter, or in the thread unlocking on its behalf), where no
// annotated Lock runs: the wrapper acquires first, then asks the condition.
struct Guarded {
  const absl::Mutex* mu;
  const absl::Condition* cond;
};
bool EvalGuarded(Guarded* g) {
  Acquire(g->mu);
  const bool r = g->cond->Eval();
  Release(g->mu);  // The library may let the mutex go right after, unannotated.
  return r;
}

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

void Mutex::Lock() {
  static auto real = KV_REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex4LockEv");
  real(this);
  Acquire(this);
}

void Mutex::ReaderLock() {
  static auto real = KV_REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex10ReaderLockEv");
  real(this);
  Acquire(this);
}

bool Mutex::TryLock() {
  static auto real = KV_REAL(bool (*)(Mutex*), "_ZN4absl7debian35Mutex7TryLockEv");
  const bool locked = real(this);
  if (locked) Acquire(this);
  return locked;
}

bool Mutex::ReaderTryLock() {
  static auto real = KV_REAL(bool (*)(Mutex*), "_ZN4absl7debian35Mutex13ReaderTryLockEv");
  const bool locked = real(this);
  if (locked) Acquire(this);
  return locked;
}

// An unlock may evaluate the conditions of threads waiting in Await (their
// Condition objects were written before they let the mutex go): acquire what
// they released first.
void Mutex::Unlock() {
  static auto real = KV_REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex6UnlockEv");
  Acquire(this);
  Release(this);
  real(this);
}

void Mutex::ReaderUnlock() {
  static auto real = KV_REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex12ReaderUnlockEv");
  Acquire(this);
  Release(this);
  real(this);
}

// Waiting on a condition lets the mutex go and takes it back.
void Mutex::Await(const Condition& cond) {
  Guarded g{this, &cond};
  static auto real =
      KV_REAL(void (*)(Mutex*, const Condition&), "_ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE");
  Release(this);
  real(this, absl::Condition(&EvalGuarded, &g));
  Acquire(this);
}

bool Mutex::AwaitWithTimeout(const Condition& cond, absl::Duration timeout) {
  Guarded g{this, &cond};
  static auto real =
      KV_REAL(bool (*)(Mutex*, const Condition&, absl::Duration),
              "_ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  Release(this);
  const bool r = real(this, absl::Condition(&EvalGuarded, &g), timeout);
  Acquire(this);
  return r;
}

bool Mutex::AwaitWithDeadline(const Condition& cond, absl::Time deadline) {
  Guarded g{this, &cond};
  static auto real =
      KV_REAL(bool (*)(Mutex*, const Condition&, absl::Time),
              "_ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  Release(this);
  const bool r = real(this, absl::Condition(&EvalGuarded, &g), deadline);
  Acquire(this);
  return r;
}

void Mutex::LockWhen(const Condition& cond) {
  Guarded g{this, &cond};
  Release(this);  // Publishes g to whoever evaluates it.
  static auto real = KV_REAL(void (*)(Mutex*, const Condition&),
                             "_ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE");
  real(this, absl::Condition(&EvalGuarded, &g));
  Acquire(this);
}

void Mutex::ReaderLockWhen(const Condition& cond) {
  Guarded g{this, &cond};
  Release(this);  // Publishes g to whoever evaluates it.
  static auto real = KV_REAL(void (*)(Mutex*, const Condition&),
                             "_ZN4absl7debian35Mutex14ReaderLockWhenERKNS0_9ConditionE");
  real(this, absl::Condition(&EvalGuarded, &g));
  Acquire(this);
}

bool Mutex::LockWhenWithTimeout(const Condition& cond, absl::Duration timeout) {
  Guarded g{this, &cond};
  Release(this);  // Publishes g to whoever evaluates it.
  static auto real =
      KV_REAL(bool (*)(Mutex*, const Condition&, absl::Duration),
              "_ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  const bool r = real(this, absl::Condition(&EvalGuarded, &g), timeout);
  Acquire(this);
  return r;
}

bool Mutex::LockWhenWithDeadline(const Condition& cond, absl::Time deadline) {
  Guarded g{this, &cond};
  Release(this);  // Publishes g to whoever evaluates it.
  static auto real =
      KV_REAL(bool (*)(Mutex*, const Condition&, absl::Time),
              "_ZN4absl7debian35Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  const bool r = real(this, absl::Condition(&EvalGuarded, &g), deadline);
  Acquire(this);
  return r;
}

void CondVar::Wait(Mutex* mu) {
  static auto real =
      KV_REAL(void (*)(CondVar*, Mutex*), "_ZN4absl7debian37CondVar4WaitEPNS0_5MutexE");
  Release(mu);
  real(this, mu);
  Acquire(mu);
}

bool CondVar::WaitWithTimeout(Mutex* mu, absl::Duration timeout) {
  static auto real =
      KV_REAL(bool (*)(CondVar*, Mutex*, absl::Duration),
              "_ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  Release(mu);
  const bool r = real(this, mu, timeout);
  Acquire(mu);
  return r;
}

bool CondVar::WaitWithDeadline(Mutex* mu, absl::Time deadline) {
  static auto real = KV_REAL(bool (*)(CondVar*, Mutex*, absl::Time),
                             "_ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  Release(mu);
  const bool r = real(this, mu, deadline);
  Acquire(mu);
  return r;
}

// A notification orders everything before Notify() before everything after a
// wait (or a HasBeenNotified() that returned true) on it. HasBeenNotified is
// inline (an acquire load of the flag in our own, instrumented code), so the
// release goes on the object and on its flag, which follows the mutex.
void Notification::Notify() {
  static auto real = KV_REAL(void (*)(Notification*), "_ZN4absl7debian312Notification6NotifyEv");
  // Its unlock (inside the library) evaluates the waiters' conditions: acquire
  // what they published first (the mutex is the object's first member).
  Acquire(this);
  Release(this);
  Release(reinterpret_cast<const char*>(this) + sizeof(Mutex));
  real(this);
}

void Notification::WaitForNotification() const {
  static auto real = KV_REAL(void (*)(const Notification*),
                             "_ZNK4absl7debian312Notification19WaitForNotificationEv");
  real(this);
  Acquire(this);
}

bool Notification::WaitForNotificationWithTimeout(absl::Duration timeout) const {
  static auto real =
      KV_REAL(bool (*)(const Notification*, absl::Duration),
              "_ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE");
  const bool r = real(this, timeout);
  if (r) Acquire(this);
  return r;
}

bool Notification::WaitForNotificationWithDeadline(absl::Time deadline) const {
  static auto real =
      KV_REAL(bool (*)(const Notification*, absl::Time),
              "_ZNK4absl7debian312Notification31WaitForNotificationWithDeadlineENS0_4TimeE");
  const bool r = real(this, deadline);
  if (r) Acquire(this);
  return r;
}

ABSL_NAMESPACE_END
}  // namespace absl

/* keylock: one writer at a time per key (container, id). Client writes and
 * the applier both take a key's lock around their backend write, so writes
 * to one key reach the backend one at a time, in arrival order. Owns the
 * table of held keys and their FIFO waiters; in memory only. */
#ifndef MERIDIAN_KEYLOCK_H
#define MERIDIAN_KEYLOCK_H

#include <stdbool.h>
#include <stddef.h>

struct keylock;

typedef void (*keylock_fn)(void *arg);

struct keylock *keylock_new(void);
void keylock_free(struct keylock *kl);

/* Calls fn(arg) now when the key is free, or once every earlier holder has
 * released it. Returns -1 only when memory runs out. */
int keylock_acquire(struct keylock *kl, const char *key, size_t klen, keylock_fn fn, void *arg);

/* Drops a waiter that no longer wants the lock (its request went away). */
void keylock_forget(struct keylock *kl, const char *key, size_t klen, void *arg);

/* Releases the key; the next waiter, if any, is called before this returns. */
void keylock_release(struct keylock *kl, const char *key, size_t klen);

size_t keylock_held(const struct keylock *kl);
bool keylock_is_held(struct keylock *kl, const char *key, size_t klen);

#endif

#include "keylock.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct waiter {
    struct waiter *next;
    keylock_fn fn;
    void *arg;
};

struct held {
    struct held *next;      /* hash chain */
    struct waiter *head, *tail;
    size_t klen;
    char key[];
};

struct keylock {
    struct held **buckets;
    size_t n_buckets;
    size_t n_held;
};

static uint64_t hash(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)k[i]) * 1099511628211ULL;
    return h;
}

struct keylock *keylock_new(void)
{
    struct keylock *kl = calloc(1, sizeof *kl);
    if (!kl)
        return NULL;
    kl->n_buckets = 4096;
    kl->buckets = calloc(kl->n_buckets, sizeof *kl->buckets);
    if (!kl->buckets) {
        free(kl);
        return NULL;
    }
    return kl;
}

void keylock_free(struct keylock *kl)
{
    if (!kl)
        return;
    for (size_t i = 0; i < kl->n_buckets; i++) {
        struct held *h = kl->buckets[i];
        while (h) {
            struct held *next = h->next;
            while (h->head) {
                struct waiter *w = h->head;
                h->head = w->next;
                free(w);
            }
            free(h);
            h = next;
        }
    }
    free(kl->buckets);
    free(kl);
}

static struct held **find(struct keylock *kl, const char *key, size_t klen)
{
    struct held **p = &kl->buckets[hash(key, klen) % kl->n_buckets];
    while (*p && ((*p)->klen != klen || memcmp((*p)->key, key, klen) != 0))
        p = &(*p)->next;
    return p;
}

int keylock_acquire(struct keylock *kl, const char *key, size_t klen, keylock_fn fn, void *arg)
{
    struct held **p = find(kl, key, klen);
    if (*p) {
        struct waiter *w = calloc(1, sizeof *w);
        if (!w)
            return -1;
        *w = (struct waiter){ NULL, fn, arg };
        if ((*p)->tail)
            (*p)->tail->next = w;
        else
            (*p)->head = w;
        (*p)->tail = w;
        return 0;
    }
    struct held *h = calloc(1, sizeof *h + klen);
    if (!h)
        return -1;
    memcpy(h->key, key, klen);
    h->klen = klen;
    *p = h;
    kl->n_held++;
    fn(arg);
    return 0;
}

void keylock_forget(struct keylock *kl, const char *key, size_t klen, void *arg)
{
    struct held *h = *find(kl, key, klen);
    if (!h)
        return;
    struct waiter **w = &h->head, *prev = NULL;
    while (*w && (*w)->arg != arg) {
        prev = *w;
        w = &(*w)->next;
    }
    if (!*w)
        return;
    struct waiter *gone = *w;
    *w = gone->next;
    if (h->tail == gone)
        h->tail = prev;
    free(gone);
}

void keylock_release(struct keylock *kl, const char *key, size_t klen)
{
    struct held **p = find(kl, key, klen), *h = *p;
    if (!h)
        return;
    struct waiter *w = h->head;
    if (!w) {
        *p = h->next;
        free(h);
        kl->n_held--;
        return;
    }
    h->head = w->next;
    if (!h->head)
        h->tail = NULL;
    keylock_fn fn = w->fn;
    void *arg = w->arg;
    free(w);
    fn(arg);
}

bool keylock_is_held(struct keylock *kl, const char *key, size_t klen)
{
    return *find(kl, key, klen) != NULL;
}

size_t keylock_held(const struct keylock *kl)
{
    return kl->n_held;
}

/* bench/pagespy/pagespy.c: an LD_PRELOAD library that records which LMDB
 * pages a process writes, to see which databases a workload's page writes
 * belong to (bench/pagespy/classify.py reads the record).
 *
 * It wraps pwrite, pwrite64 and writev (LMDB's page writes without
 * MDB_WRITEMAP) on files whose path contains PAGESPY_MATCH, and while the
 * file named by PAGESPY_ON exists it appends one line per 4 KiB page to
 * PAGESPY_LOG: page number, page flags, number of keys, and the size and
 * first bytes (hex) of the page's second key (its first when it has one).
 * Meta-page writes (shorter than a page) are not recorded.
 *
 * Build: cc -O2 -shared -fPIC -o pagespy.so pagespy.c -ldl
 * Use:   PAGESPY_MATCH=/west/data.mdb PAGESPY_ON=/tmp/on PAGESPY_LOG=/tmp/pages.log \
 *        LD_PRELOAD=$PWD/pagespy.so meridian ...     then touch /tmp/on ... rm /tmp/on
 * A diagnostic for benchmarks; never part of the product. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define PAGE 4096

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static FILE *out;

static int watched(int fd)
{
    const char *match = getenv("PAGESPY_MATCH");
    char link[64], path[1024];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (!match || n < 0)
        return 0;
    path[n] = '\0';
    return strstr(path, match) != NULL;
}

static void record_key(const unsigned char *p, int nkeys)
{
    uint16_t ptr, ksize;
    memcpy(&ptr, p + 16 + 2 * (nkeys > 1), 2);
    if (ptr + 8 >= PAGE)
        return;
    memcpy(&ksize, p + ptr + 6, 2);
    fprintf(out, " %u ", ksize);
    for (int j = 0; j < ksize && j < 40 && ptr + 8 + j < PAGE; j++)
        fprintf(out, "%02x", p[ptr + 8 + j]);
}

static void record(const unsigned char *b, size_t len, off_t off)
{
    const char *on = getenv("PAGESPY_ON"), *log = getenv("PAGESPY_LOG");
    if (!on || !log || access(on, F_OK) != 0)
        return;
    pthread_mutex_lock(&mu);
    if (!out)
        out = fopen(log, "a");
    for (size_t i = 0; out && i + PAGE <= len; i += PAGE) {
        const unsigned char *p = b + i;
        uint16_t flags, lower;
        memcpy(&flags, p + 10, 2);
        memcpy(&lower, p + 12, 2);
        int nkeys = lower >= 16 ? (lower - 16) / 2 : 0;
        fprintf(out, "%lld %u %d", (long long)(off + (off_t)i) / PAGE, flags, nkeys);
        if ((flags & 3) && nkeys > 0)
            record_key(p, nkeys);
        fputc('\n', out);
    }
    if (out)
        fflush(out);
    pthread_mutex_unlock(&mu);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
    static ssize_t (*real)(int, const void *, size_t, off_t);
    if (!real)
        real = (ssize_t (*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite64");
    if (n >= PAGE && watched(fd))
        record(buf, n, off);
    return real(fd, buf, n, off);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    return pwrite64(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    static ssize_t (*real)(int, const struct iovec *, int);
    if (!real)
        real = (ssize_t (*)(int, const struct iovec *, int))dlsym(RTLD_NEXT, "writev");
    if (watched(fd)) {
        off_t off = lseek(fd, 0, SEEK_CUR); /* LMDB seeks, then writes a run */
        for (int i = 0; i < cnt; i++) {
            record(iov[i].iov_base, iov[i].iov_len, off);
            off += (off_t)iov[i].iov_len;
        }
    }
    return real(fd, iov, cnt);
}

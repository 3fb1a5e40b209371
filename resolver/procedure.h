/* procedure: runs a container's JavaScript conflict resolver (Duktape),
 * isolated in a worker process bounded in time and memory. Owns the worker
 * protocol and the getContext() surface; never touches the store or the log:
 * it turns (incoming, existing, tombstone, conflicting) into a resolution.
 *
 * Worker protocol (one exchange per process, both sides one JSON object):
 *   parent -> child stdin, then EOF:
 *     {"source": "...", "filename": "x.js", "container": "orders",
 *      "incoming": "<json text>"|null, "existing": "<json text>"|null,
 *      "tombstone": false, "conflicting": ["<json text>", ...],
 *      "memory_bytes": 33554432}
 *   child stdout, then exit:
 *     {"doc": "<compact json text>"} | {"delete": true} | {"error": "..."}
 *   An answer counts only when the child exits 0, or when it is an error
 *   (the engine's fatal handler answers, then exits 1). */
#ifndef MERIDIAN_PROCEDURE_H
#define MERIDIAN_PROCEDURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROCEDURE_MAX_SOURCE (1u << 20) /* a procedure file larger than this is refused */
#define PROCEDURE_MAX_DOC (2u << 20)    /* a resolved document larger than this is an error */

struct procedure_input {
    const char *container;          /* container name, for getSelfLink() */
    const char *incoming;           /* JSON object text; NULL when the incoming write is a delete */
    const char *existing;           /* JSON object text; NULL when no existing document */
    bool tombstone;                 /* the incoming write is a delete */
    const char *const *conflicting; /* JSON object texts of other conflicting versions */
    size_t n_conflicting;
};

struct procedure_limits {
    uint32_t timeout_ms;  /* wall clock for the whole run, child start included */
    size_t memory_bytes;  /* heap the script may allocate (the engine's own ~100 KiB included) */
};
#define PROCEDURE_DEFAULT_LIMITS ((struct procedure_limits){ 1000, 32u << 20 })

struct procedure_result {
    bool is_delete;   /* the procedure deleted the document */
    char *doc;        /* compact JSON object text when !is_delete; freed by procedure_result_clear */
    char error[512];  /* when the run failed: a one-line reason */
};

/* Runs procedure file `path` in a child started with posix_spawn from
 * worker_argv (e.g. {"/proc/self/exe", "resolve", "--worker", NULL}), which
 * must end in procedure_worker_main(). SIGKILLs the child when timeout_ms
 * passes and always reaps it (so SIGCHLD must not be SIG_IGN, and nobody
 * else may wait for our child). Blocking, thread-safe, no signal handlers;
 * SIGPIPE is blocked in the calling thread only while it talks to the child.
 * Returns 0 with a resolution in *out, -1 with out->error filled. */
int procedure_run(const char *const *worker_argv, const char *path,
                  const struct procedure_input *in, const struct procedure_limits *lim,
                  struct procedure_result *out);

/* The child's side: reads one request from stdin, runs it with
 * procedure_run_inline, writes the answer to stdout; returns the exit code. */
int procedure_worker_main(void);

/* Runs the procedure in this process: no time bound; the heap is bounded by
 * a counting allocator. The engine's fatal handler writes an error answer to
 * stdout and _exit()s: meant for the worker, not for a server's process.
 * `filename` names the source in error lines. Returns 0 or -1 as above. */
int procedure_run_inline(const char *source, size_t len, const char *filename,
                         const struct procedure_input *in, size_t memory_bytes,
                         struct procedure_result *out);

/* Reads a whole file of at most `max` bytes into a NUL-terminated buffer the
 * caller frees. On failure returns NULL with "PATH: file not found" or
 * "PATH: <strerror>" or "PATH: larger than N bytes" in err. */
char *procedure_read_file(const char *path, size_t max, size_t *len, char *err, size_t errlen);

void procedure_result_clear(struct procedure_result *r);

/* Internal to procedure.c and procedure_worker.c: fills out->error, made
 * one line; always returns -1. */
int procedure_fail(struct procedure_result *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif

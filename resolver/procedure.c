/* procedure: a container's JavaScript resolver, run by Duktape in a worker
 * process. The path of one conflict:
 *
 *   procedure_run (hub's committer thread)
 *     procedure_read_file -> proc_request (JSON)       source + inputs
 *     proc_spawn (posix_spawn worker_argv)             pipes on stdin/stdout
 *     proc_exchange (poll until the deadline)          send request, read answer
 *     proc_kill | proc_reap -> proc_verdict            always reaped
 *   procedure_worker_main (child)
 *     proc_read_stdin -> procedure_run_inline
 *       duk_create_heap (counting allocator, fatal handler answers and _exits)
 *       proc_main: context shim, compile + run the file, find the function,
 *                  call it, finish() applies the result rules
 *     proc_answer(stdout)
 */
#define _GNU_SOURCE
#include "procedure.h"

#include <duktape.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* The answer carries the document inside a JSON string: at most twice as long. */
#define PROC_MAX_ANSWER (2 * PROCEDURE_MAX_DOC + 65536)
#define PROC_MAX_REQUEST ((size_t)1 << 30)
#define PROC_HDR 16 /* bytes before each block: its size; keeps blocks max_align_t aligned */
_Static_assert(_Alignof(max_align_t) <= PROC_HDR, "allocator header too small");

/* Fills out->error, flattened to one line; always returns -1. */
__attribute__((format(printf, 2, 3)))
static int proc_fail(struct procedure_result *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->error, sizeof out->error, fmt, ap);
    va_end(ap);
    for (char *p = out->error; *p; p++)
        if ((unsigned char)*p < 0x20)
            *p = ' ';
    if (!out->error[0])
        snprintf(out->error, sizeof out->error, "unknown error");
    return -1;
}

void procedure_result_clear(struct procedure_result *r)
{
    free(r->doc);
    r->doc = NULL;
    r->is_delete = false;
    r->error[0] = '\0';
}

char *procedure_read_file(const char *path, size_t max, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rbe");
    if (!f) {
        if (errno == ENOENT)
            snprintf(err, errlen, "%s: file not found", path);
        else
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(max + 1);
    size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
    int e = !buf ? ENOMEM : !ferror(f) ? 0 : errno ? errno : EIO;
    fclose(f);
    if (e || n > max) {
        if (e)
            snprintf(err, errlen, "%s: %s", path, strerror(e));
        else
            snprintf(err, errlen, "%s: larger than %zu bytes", path, max);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Duktape keeps a character outside the BMP as two surrogates, and writes
 * them as two 3-byte sequences (CESU-8): rewrites such a pair as one UTF-8
 * sequence, in place; a lone surrogate becomes U+FFFD. Never grows s. */
static void proc_cesu_to_utf8(char *s)
{
    unsigned char *r = (unsigned char *)s, *w = r;
    while (*r) {
        bool sur = r[0] == 0xED && (r[1] & 0xE0) == 0xA0 && (r[2] & 0xC0) == 0x80;
        bool pair = sur && (r[1] & 0xF0) == 0xA0 && r[3] == 0xED && (r[4] & 0xF0) == 0xB0 &&
                    (r[5] & 0xC0) == 0x80;
        if (!sur) {
            *w++ = *r++;
        } else if (!pair) {
            memcpy(w, "\xEF\xBF\xBD", 3);
            w += 3;
            r += 3;
        } else {
            uint32_t hi = ((uint32_t)(r[1] & 0x0F) << 6) | (r[2] & 0x3F);
            uint32_t lo = ((uint32_t)(r[4] & 0x0F) << 6) | (r[5] & 0x3F);
            uint32_t cp = 0x10000 + (hi << 10) + lo;
            *w++ = (unsigned char)(0xF0 | (cp >> 18));
            *w++ = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
            *w++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
            *w++ = (unsigned char)(0x80 | (cp & 0x3F));
            r += 6;
        }
    }
    *w = '\0';
}

/* ------------------------------------------------ the heap and its bound */

struct proc_heap {
    size_t used;
    size_t limit;
    bool refused;  /* an allocation was refused: the script hit the limit */
};

static size_t proc_block_size(void *ptr)
{
    size_t size;
    memcpy(&size, (unsigned char *)ptr - PROC_HDR, sizeof size);
    return size;
}

static void *proc_alloc(void *udata, duk_size_t size)
{
    struct proc_heap *h = udata;
    if (size > h->limit - h->used) {
        h->refused = true;
        return NULL;
    }
    unsigned char *p = malloc(PROC_HDR + size);
    if (!p)
        return NULL;
    memcpy(p, &size, sizeof size);
    h->used += size;
    return p + PROC_HDR;
}

static void proc_free(void *udata, void *ptr)
{
    struct proc_heap *h = udata;
    if (!ptr)
        return;
    h->used -= proc_block_size(ptr);
    free((unsigned char *)ptr - PROC_HDR);
}

static void *proc_realloc(void *udata, void *ptr, duk_size_t size)
{
    struct proc_heap *h = udata;
    if (!ptr)
        return proc_alloc(udata, size);
    if (size == 0) {
        proc_free(udata, ptr);
        return NULL;
    }
    size_t old = proc_block_size(ptr);
    if (size > old && size - old > h->limit - h->used) {
        h->refused = true;
        return NULL;
    }
    unsigned char *p = realloc((unsigned char *)ptr - PROC_HDR, PROC_HDR + size);
    if (!p)
        return NULL;
    memcpy(p, &size, sizeof size);
    h->used = h->used - old + size;
    return p + PROC_HDR;
}

/* ------------------------------------------------ the worker's answer */

/* Writes r as the one JSON answer of the protocol. An error cut inside a
 * character by its 512-byte cap loses its non-ASCII bytes; a document that
 * is still not UTF-8 after proc_cesu_to_utf8 becomes an error. */
static void proc_answer(int fd, const struct procedure_result *r)
{
    json_t *a;
    char error[sizeof r->error];
    snprintf(error, sizeof error, "%s", r->error);
    proc_cesu_to_utf8(error);
    if (error[0])
        a = json_pack("{s:s}", "error", error);
    else if (r->is_delete)
        a = json_pack("{s:b}", "delete", 1);
    else
        a = json_pack("{s:s}", "doc", r->doc ? r->doc : "");
    if (!a && error[0]) {
        for (char *p = error; *p; p++) /* cut inside a character by the 512-byte cap */
            if (*p & 0x80)
                *p = '?';
        a = json_pack("{s:s}", "error", error);
    } else if (!a) {
        a = json_pack("{s:s}", "error", "result is not valid UTF-8");
    }
    /* One buffer: json_dumpfd writes every token with its own syscall. */
    char *text = a ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    for (size_t off = 0, len = text ? strlen(text) : 0; off < len;) {
        ssize_t n = write(fd, text + off, len - off);
        if (n < 0 && errno != EINTR)
            break;
        off += n > 0 ? (size_t)n : 0;
    }
    free(text);
}

/* The engine cannot go on (an error thrown outside any protected call, or
 * memory refused where it cannot throw): answer and end the worker. */
static void proc_fatal(void *udata, const char *msg)
{
    const struct proc_heap *h = udata;
    struct procedure_result r = { 0 };
    if (h->refused)
        proc_fail(&r, "memory limit (%zu bytes) exceeded", h->limit);
    else
        proc_fail(&r, "engine fatal error: %s", msg ? msg : "unknown");
    proc_answer(STDOUT_FILENO, &r);
    _exit(1);
}

/* ------------------------------------------------ running in Duktape */

/* The getContext() surface, evaluated before the procedure: a function of
 * (global, selfLink) that installs getContext and returns the hooks C calls.
 * procedure() picks the function to call among the new globals; finish()
 * applies the result rules. upsertDocument snapshots the document as JSON
 * when called, as a store would. */
static const char PROC_CONTEXT_JS[] =
    "(function (global, selfLink) {\n"
    "  var toStr = Object.prototype.toString, stringify = JSON.stringify, keys = Object.keys;\n"
    "  var st = { kind: null, json: null, body: undefined };\n"
    "  function isDoc(v) { return toStr.call(v) === '[object Object]'; }\n"
    "  function kindOf(v) {\n"
    "    if (v === null || typeof v !== 'object') return v === null ? 'null' : typeof v;\n"
    "    return toStr.call(v).slice(8, -1).toLowerCase();\n"
    "  }\n"
    "  function callback(options, cb) {\n"
    "    return typeof cb === 'function' ? cb : typeof options === 'function' ? options : null;\n"
    "  }\n"
    "  var collection = {\n"
    "    getSelfLink: function () { return selfLink; },\n"
    "    upsertDocument: function (link, doc, options, cb) {\n"
    "      if (!isDoc(doc))\n"
    "        throw new TypeError('upsertDocument: the document is not an object ('\n"
    "                            + kindOf(doc) + ')');\n"
    "      st.kind = 'upsert';\n"
    "      st.json = stringify(doc);\n"
    "      if ((cb = callback(options, cb))) cb(undefined, doc);\n"
    "      return true;\n"
    "    },\n"
    "    deleteDocument: function (link, options, cb) {\n"
    "      st.kind = 'delete';\n"
    "      if ((cb = callback(options, cb))) cb(undefined);\n"
    "      return true;\n"
    "    }\n"
    "  };\n"
    "  var response = {\n"
    "    setBody: function (body) { st.body = body; },\n"
    "    getBody: function () { return st.body; }\n"
    "  };\n"
    "  var context = {\n"
    "    getCollection: function () { return collection; },\n"
    "    getResponse: function () { return response; }\n"
    "  };\n"
    "  global.getContext = function () { return context; };\n"
    "  var before = keys(global);\n"
    "  return {\n"
    "    procedure: function () {\n"
    "      var fresh = keys(global).filter(function (k) {\n"
    "        return before.indexOf(k) < 0 && typeof global[k] === 'function';\n"
    "      });\n"
    "      if (fresh.length === 1) return global[fresh[0]];\n"
    "      if (fresh.length === 0) return 'defines no function';\n"
    "      if (fresh.indexOf('resolver') >= 0) return global.resolver;\n"
    "      return 'defines several functions (' + fresh.join(', ')\n"
    "             + ') and none is named resolver';\n"
    "    },\n"
    "    finish: function () {\n"
    "      if (st.kind === 'delete') return { del: true };\n"
    "      if (st.kind === 'upsert') return { json: st.json };\n"
    "      if (isDoc(st.body)) return { json: stringify(st.body) };\n"
    "      return { error: 'result is not a document (' + kindOf(st.body) + ')' };\n"
    "    }\n"
    "  };\n"
    "})\n";

struct proc_run {
    const struct procedure_input *in;
    const char *source;
    size_t len;
    const char *filename;
    char stage[48];  /* the input being decoded, for its error line; "" once the script runs */
    struct procedure_result *out;
};

/* Pushes the hooks object of PROC_CONTEXT_JS, getContext installed. */
static void proc_push_hooks(duk_context *ctx, const char *container)
{
    duk_push_string(ctx, PROC_CONTEXT_JS);
    duk_push_string(ctx, "meridian-context");
    duk_compile(ctx, DUK_COMPILE_EVAL);
    duk_call(ctx, 0);
    duk_push_global_object(ctx);
    duk_push_sprintf(ctx, "dbs/meridian/colls/%s/", container ? container : "");
    duk_call(ctx, 2);
}

/* Pushes the decoded document `text` (null for NULL); -1 when it is not an object. */
static int proc_push_doc(duk_context *ctx, struct proc_run *run, const char *text)
{
    if (!text) {
        duk_push_null(ctx);
        return 0;
    }
    duk_push_string(ctx, text);
    duk_json_decode(ctx, -1);
    if (duk_is_object(ctx, -1) && !duk_is_array(ctx, -1))
        return 0;
    return proc_fail(run->out, "%s is not a JSON object", run->stage);
}

/* Pushes (incomingItem, existingItem, isTombstone, conflictingItems). */
static int proc_push_args(duk_context *ctx, struct proc_run *run)
{
    const struct procedure_input *in = run->in;
    snprintf(run->stage, sizeof run->stage, "incoming document");
    if (proc_push_doc(ctx, run, in->incoming) < 0)
        return -1;
    snprintf(run->stage, sizeof run->stage, "existing document");
    if (proc_push_doc(ctx, run, in->existing) < 0)
        return -1;
    duk_push_boolean(ctx, in->tombstone);
    duk_push_array(ctx);
    for (size_t i = 0; i < in->n_conflicting; i++) {
        snprintf(run->stage, sizeof run->stage, "conflicting document %zu", i + 1);
        if (proc_push_doc(ctx, run, in->conflicting[i]) < 0)
            return -1;
        duk_put_prop_index(ctx, -2, (duk_uarridx_t)i);
    }
    run->stage[0] = '\0';
    return 0;
}

/* Reads finish()'s verdict into run->out. */
static void proc_take_result(duk_context *ctx, struct proc_run *run)
{
    duk_push_string(ctx, "finish");
    duk_call_prop(ctx, 0, 0);
    if (duk_get_prop_string(ctx, -1, "error")) {
        proc_fail(run->out, "%s", duk_safe_to_string(ctx, -1));
        return;
    }
    if (duk_get_prop_string(ctx, -2, "del")) {
        run->out->is_delete = true;
        return;
    }
    duk_get_prop_string(ctx, -3, "json");
    duk_size_t n = 0;
    const char *json = duk_get_lstring(ctx, -1, &n);
    if (!json)
        proc_fail(run->out, "result is not a document (undefined)");
    else if (n > PROCEDURE_MAX_DOC)
        proc_fail(run->out, "result is %zu bytes, more than %u", (size_t)n, PROCEDURE_MAX_DOC);
    else if (!(run->out->doc = strndup(json, n)))
        proc_fail(run->out, "out of memory");
    else
        proc_cesu_to_utf8(run->out->doc);
}

/* The whole run, inside one protected call: any throw ends it. */
static duk_ret_t proc_main(duk_context *ctx, void *udata)
{
    struct proc_run *run = udata;
    proc_push_hooks(ctx, run->in->container); /* index 0 */
    duk_push_lstring(ctx, run->source, run->len);
    duk_push_string(ctx, run->filename);
    duk_compile(ctx, 0);
    duk_call(ctx, 0);
    duk_pop(ctx);
    duk_push_string(ctx, "procedure");
    duk_call_prop(ctx, 0, 0);
    if (duk_is_string(ctx, -1)) {
        proc_fail(run->out, "%s: %s", run->filename, duk_get_string(ctx, -1));
        return 0;
    }
    if (proc_push_args(ctx, run) < 0)
        return 0;
    duk_call(ctx, 4);
    duk_pop(ctx);
    proc_take_result(ctx, run);
    return 0;
}

/* The line of the innermost frame of the procedure's file in an error stack. */
static long proc_line_of(const char *stack, const char *filename)
{
    char needle[300];
    snprintf(needle, sizeof needle, "(%s:", filename);
    const char *p = stack ? strstr(stack, needle) : NULL;
    return p ? strtol(p + strlen(needle), NULL, 10) : 0;
}

/* Protected: turns the thrown value (index 0) into "Name: message (line N)". */
static duk_ret_t proc_describe(duk_context *ctx, void *udata)
{
    const struct proc_run *run = udata;
    if (!duk_is_error(ctx, 0)) {
        duk_push_sprintf(ctx, "uncaught exception: %s", duk_safe_to_string(ctx, 0));
        return 1;
    }
    duk_get_prop_string(ctx, 0, "stack");
    long line = proc_line_of(duk_get_string(ctx, -1), run->filename);
    duk_pop(ctx);
    const char *text = duk_safe_to_string(ctx, 0);
    if (line > 0 && !strstr(text, "(line "))
        duk_push_sprintf(ctx, "%s (line %ld)", text, line);
    else
        duk_push_string(ctx, text);
    return 1;
}

/* The run threw (the value is on top): explain it in run->out. A refused
 * allocation surfaces as Error "alloc failed", a RangeError, a DoubleError
 * (no memory left to build the error), or a bare value. */
static void proc_explain_throw(duk_context *ctx, struct proc_run *run, const struct proc_heap *h)
{
    bool memory = !duk_is_error(ctx, -1) || duk_get_error_code(ctx, -1) == DUK_ERR_RANGE_ERROR;
    const char *text = NULL;
    if (duk_safe_call(ctx, proc_describe, run, 1, 1) == DUK_EXEC_SUCCESS)
        text = duk_get_string(ctx, -1);
    if (h->refused && (memory || !text || strstr(text, "alloc failed") ||
                       strstr(text, "DoubleError")))
        proc_fail(run->out, "memory limit (%zu bytes) exceeded", h->limit);
    else if (run->stage[0])
        proc_fail(run->out, "%s: %s", run->stage, text ? text : "uncaught exception");
    else
        proc_fail(run->out, "%s", text ? text : "uncaught exception");
}

int procedure_run_inline(const char *source, size_t len, const char *filename,
                         const struct procedure_input *in, size_t memory_bytes,
                         struct procedure_result *out)
{
    memset(out, 0, sizeof *out);
    /* Duktape recurses without end when memory runs out while it builds its
     * built-ins: the bound starts once they exist, and counts them. */
    struct proc_heap heap = { .limit = SIZE_MAX };
    duk_context *ctx = duk_create_heap(proc_alloc, proc_realloc, proc_free, &heap, proc_fatal);
    if (!ctx)
        return proc_fail(out, "cannot start the engine");
    if (heap.used >= memory_bytes) {
        proc_fail(out, "memory limit (%zu bytes) too small: the engine alone takes %zu",
                  memory_bytes, heap.used);
        duk_destroy_heap(ctx);
        return -1;
    }
    heap.limit = memory_bytes;
    struct proc_run run = { .in = in, .source = source, .len = len, .filename = filename,
                            .out = out };
    if (duk_safe_call(ctx, proc_main, &run, 0, 1) != DUK_EXEC_SUCCESS && !out->error[0])
        proc_explain_throw(ctx, &run, &heap);
    duk_destroy_heap(ctx);
    if (!out->error[0])
        return 0;
    free(out->doc);
    out->doc = NULL;
    out->is_delete = false;
    return -1;
}

/* ------------------------------------------------ the worker */

/* Runs the decoded request; -1 when it is malformed (r->error says how). */
static int proc_serve(const json_t *req, struct procedure_result *r)
{
    const json_t *src = json_object_get(req, "source");
    const json_t *conf = json_object_get(req, "conflicting");
    const json_t *mem = json_object_get(req, "memory_bytes");
    if (!json_is_string(src) || !json_is_array(conf) || !json_is_integer(mem) ||
        json_integer_value(mem) <= 0)
        return proc_fail(r, "bad request: wants source, conflicting and memory_bytes");
    size_t n = json_array_size(conf);
    const char **docs = calloc(n ? n : 1, sizeof *docs);
    if (!docs)
        return proc_fail(r, "out of memory");
    for (size_t i = 0; i < n; i++)
        docs[i] = json_string_value(json_array_get(conf, i));
    struct procedure_input in = {
        .container = json_string_value(json_object_get(req, "container")),
        .incoming = json_string_value(json_object_get(req, "incoming")),
        .existing = json_string_value(json_object_get(req, "existing")),
        .tombstone = json_is_true(json_object_get(req, "tombstone")),
        .conflicting = docs,
        .n_conflicting = n,
    };
    const char *filename = json_string_value(json_object_get(req, "filename"));
    (void)procedure_run_inline(json_string_value(src), json_string_length(src),
                               filename ? filename : "procedure.js", &in,
                               (size_t)json_integer_value(mem), r);
    free(docs);
    return 0;
}

/* Reads stdin to EOF (json_loadfd would read it one byte per syscall). */
static char *proc_read_stdin(size_t *len)
{
    size_t cap = 65536;
    char *buf = malloc(cap);
    *len = 0;
    while (buf) {
        if (*len == cap) {
            char *b = cap < PROC_MAX_REQUEST ? realloc(buf, 2 * cap) : NULL;
            if (!b)
                break;
            buf = b;
            cap *= 2;
        }
        ssize_t n = read(STDIN_FILENO, buf + *len, cap - *len);
        if (n == 0)
            return buf;
        if (n < 0 && errno != EINTR)
            break;
        if (n > 0)
            *len += (size_t)n;
    }
    free(buf);
    return NULL;
}

int procedure_worker_main(void)
{
    /* A parent that dies without killing us must not leave a loop running. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    struct procedure_result r = { 0 };
    json_error_t jerr;
    size_t len = 0;
    char *text = proc_read_stdin(&len);
    json_t *req = text ? json_loadb(text, len, JSON_ALLOW_NUL, &jerr) : NULL;
    int rc = req ? proc_serve(req, &r)
                 : proc_fail(&r, "bad request: %s", text ? jerr.text : "cannot read stdin");
    free(text);
    proc_answer(STDOUT_FILENO, &r);
    procedure_result_clear(&r);
    json_decref(req);
    return rc < 0 ? 1 : 0;
}

/* ------------------------------------------------ the parent */

struct proc_child {
    pid_t pid;
    int to_child;    /* the child's stdin; -1 once the request is sent */
    int from_child;  /* the child's stdout */
};

struct proc_io {
    const char *req;
    size_t req_len, sent;
    char *buf;       /* the answer read so far */
    size_t len, cap;
};

static int64_t proc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The request text of the protocol (see procedure.h); NULL with out->error. */
static char *proc_request(const char *source, size_t len, const char *filename,
                          const struct procedure_input *in, size_t memory_bytes,
                          struct procedure_result *out)
{
    json_t *conf = json_array();
    for (size_t i = 0; conf && i < in->n_conflicting; i++)
        if (json_array_append_new(conf, json_string(in->conflicting[i])) < 0) {
            json_decref(conf);
            proc_fail(out, "conflicting document %zu is not valid UTF-8 text", i + 1);
            return NULL;
        }
    json_error_t jerr;
    json_t *req = json_pack_ex(&jerr, 0, "{s:s%, s:s, s:s?, s:s?, s:s?, s:b, s:O, s:I}",
                               "source", source, len, "filename", filename,
                               "container", in->container, "incoming", in->incoming,
                               "existing", in->existing, "tombstone", (int)in->tombstone,
                               "conflicting", conf, "memory_bytes", (json_int_t)memory_bytes);
    json_decref(conf);
    char *text = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!text)
        proc_fail(out, "cannot build the request: %s", req ? "out of memory" : jerr.text);
    return text;
}

/* pipe2 with both ends close-on-exec and above stdio, so the child's dup2
 * onto 0 and 1 never lands on the same descriptor. */
static int proc_pipe(int fds[2])
{
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -1;
    for (int i = 0; i < 2; i++)
        if (fds[i] < 3) {
            int moved = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
            close(fds[i]);
            fds[i] = moved;
        }
    if (fds[0] >= 0 && fds[1] >= 0)
        return 0;
    int e = errno;
    if (fds[0] >= 0)
        close(fds[0]);
    if (fds[1] >= 0)
        close(fds[1]);
    errno = e;
    return -1;
}

/* The child starts with no blocked signals and the usual dispositions, and
 * only stdin, stdout and stderr open. */
static int proc_posix_spawn(pid_t *pid, const char *const *argv, int in_fd, int out_fd)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    sigaddset(&defaults, SIGINT);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGHUP);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in_fd, STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&fa, out_fd, STDOUT_FILENO);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    posix_spawnattr_init(&at);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &defaults);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    int rc = posix_spawn(pid, argv[0], &fa, &at, (char *const *)argv, environ);
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    return rc;
}

static int proc_spawn(const char *const *argv, struct proc_child *c, struct procedure_result *out)
{
    int in[2], res[2];
    if (proc_pipe(in) < 0)
        return proc_fail(out, "cannot create a pipe: %s", strerror(errno));
    if (proc_pipe(res) < 0) {
        int e = errno;
        close(in[0]);
        close(in[1]);
        return proc_fail(out, "cannot create a pipe: %s", strerror(e));
    }
    int rc = proc_posix_spawn(&c->pid, argv, in[0], res[1]);
    close(in[0]);
    close(res[1]);
    c->to_child = in[1];
    c->from_child = res[0];
    if (rc != 0) {
        close(in[1]);
        close(res[0]);
        return proc_fail(out, "cannot start the worker %s: %s", argv[0], strerror(rc));
    }
    fcntl(c->to_child, F_SETFL, O_NONBLOCK);
    fcntl(c->from_child, F_SETFL, O_NONBLOCK);
    return 0;
}

/* Writes what the pipe takes; closes the child's stdin when all is sent or
 * the child is gone (EPIPE: its answer will say why). */
static void proc_send(struct proc_child *c, struct proc_io *io)
{
    ssize_t n = write(c->to_child, io->req + io->sent, io->req_len - io->sent);
    if (n > 0)
        io->sent += (size_t)n;
    if ((n < 0 && errno != EAGAIN && errno != EINTR) || io->sent == io->req_len) {
        close(c->to_child);
        c->to_child = -1;
    }
}

/* Reads what the pipe has. Returns 0 at EOF, 1 to go on, -1 on error. */
static int proc_recv(struct proc_child *c, struct proc_io *io, struct procedure_result *out)
{
    if (io->len == io->cap) {
        if (io->cap >= PROC_MAX_ANSWER)
            return proc_fail(out, "worker answer larger than %u bytes", PROC_MAX_ANSWER);
        size_t cap = io->cap ? 2 * io->cap : 4096;
        cap = cap < PROC_MAX_ANSWER ? cap : PROC_MAX_ANSWER;
        char *b = realloc(io->buf, cap);
        if (!b)
            return proc_fail(out, "out of memory");
        io->buf = b;
        io->cap = cap;
    }
    ssize_t n = read(c->from_child, io->buf + io->len, io->cap - io->len);
    if (n > 0)
        io->len += (size_t)n;
    if (n < 0 && errno != EAGAIN && errno != EINTR)
        return proc_fail(out, "reading the worker: %s", strerror(errno));
    return n == 0 ? 0 : 1;
}

/* Sends the request and reads the answer. Returns 0 at the answer's EOF,
 * 1 when the deadline passed first, -1 on error (out->error). */
static int proc_exchange(struct proc_child *c, struct proc_io *io, int64_t deadline,
                         struct procedure_result *out)
{
    for (;;) {
        int64_t left = deadline - proc_now_ms();
        if (left <= 0)
            return 1;
        struct pollfd p[2] = { { c->from_child, POLLIN, 0 }, { c->to_child, POLLOUT, 0 } };
        int n = poll(p, c->to_child >= 0 ? 2 : 1, (int)left);
        if (n < 0 && errno != EINTR)
            return proc_fail(out, "poll: %s", strerror(errno));
        if (n <= 0)
            continue;
        if (c->to_child >= 0 && p[1].revents)
            proc_send(c, io);
        int r = p[0].revents ? proc_recv(c, io, out) : 1;
        if (r <= 0)
            return r;
    }
}

static void proc_kill(pid_t pid)
{
    int status;
    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
}

/* Waits for a child that closed its stdout; kills it at the deadline.
 * Returns 0 with its wait status, 1 when it had to be killed, -1 when it
 * was not ours to wait for any more (ECHILD). */
static int proc_reap(pid_t pid, int64_t deadline, int *status)
{
    const struct timespec ms = { 0, 1000000 };
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return 0;
        if (r < 0 && errno != EINTR)
            return -1;
        if (r == 0 && proc_now_ms() >= deadline) {
            proc_kill(pid);
            return 1;
        }
        if (r == 0)
            nanosleep(&ms, NULL);
    }
}

/* Reads the answer into out; -1 when there is no well-formed one. */
static int proc_parse_answer(const struct proc_io *io, struct procedure_result *out)
{
    json_t *a = io->len ? json_loadb(io->buf, io->len, 0, NULL) : NULL;
    const char *error = json_string_value(json_object_get(a, "error"));
    const char *doc = json_string_value(json_object_get(a, "doc"));
    int rc = 0;
    if (error)
        proc_fail(out, "%s", error);
    else if (json_is_true(json_object_get(a, "delete")))
        out->is_delete = true;
    else if (!doc || !(out->doc = strdup(doc)))
        rc = -1;
    json_decref(a);
    return rc;
}

/* Judges the exchange by the answer and the exit status: an answer counts
 * after a clean exit, or when it is an error (the fatal path exits 1). */
static int proc_verdict(const struct proc_io *io, int status, struct procedure_result *out)
{
    bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    bool answered = proc_parse_answer(io, out) == 0;
    if (answered && (clean || out->error[0]))
        return out->error[0] ? -1 : 0;
    procedure_result_clear(out);
    const char *how = answered ? "after answering" : "without an answer";
    if (WIFSIGNALED(status))
        return proc_fail(out, "worker killed by signal %d %s", WTERMSIG(status), how);
    if (!clean)
        return proc_fail(out, "worker exited %d %s", WEXITSTATUS(status), how);
    return proc_fail(out, "worker exited 0 without an answer");
}

/* SIGPIPE is blocked in this thread while it writes to the child; one that
 * our writes raised is consumed before the old mask comes back. */
static bool proc_block_sigpipe(sigset_t *old)
{
    sigset_t pipe_set, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigpending(&pending);
    pthread_sigmask(SIG_BLOCK, &pipe_set, old);
    return sigismember(&pending, SIGPIPE) == 1;
}

static void proc_restore_sigpipe(const sigset_t *old, bool was_pending)
{
    sigset_t pipe_set, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigpending(&pending);
    if (!was_pending && sigismember(&pending, SIGPIPE) == 1) {
        const struct timespec zero = { 0, 0 };
        sigtimedwait(&pipe_set, NULL, &zero);
    }
    pthread_sigmask(SIG_SETMASK, old, NULL);
}

/* Spawns the worker, talks to it until the deadline, reaps it. */
static int proc_supervise(const char *const *argv, const char *req, int64_t deadline,
                          uint32_t timeout_ms, struct procedure_result *out)
{
    struct proc_child c;
    if (proc_spawn(argv, &c, out) < 0)
        return -1;
    struct proc_io io = { .req = req, .req_len = strlen(req) };
    sigset_t old;
    bool was_pending = proc_block_sigpipe(&old);
    int r = proc_exchange(&c, &io, deadline, out);
    if (c.to_child >= 0)
        close(c.to_child);
    close(c.from_child);
    proc_restore_sigpipe(&old, was_pending);
    int status = 0;
    if (r != 0)
        proc_kill(c.pid);
    else
        r = proc_reap(c.pid, deadline, &status);
    int rc;
    if (r == 1)
        rc = proc_fail(out, "timed out after %u ms", (unsigned)timeout_ms);
    else if (r < 0)
        rc = out->error[0] ? -1 : proc_fail(out, "worker was reaped by someone else");
    else
        rc = proc_verdict(&io, status, out);
    free(io.buf);
    return rc;
}

int procedure_run(const char *const *worker_argv, const char *path,
                  const struct procedure_input *in, const struct procedure_limits *lim,
                  struct procedure_result *out)
{
    memset(out, 0, sizeof *out);
    int64_t deadline = proc_now_ms() + lim->timeout_ms;
    size_t len = 0;
    char *source = procedure_read_file(path, PROCEDURE_MAX_SOURCE, &len, out->error,
                                       sizeof out->error);
    if (!source)
        return -1;
    const char *slash = strrchr(path, '/');
    char *req = proc_request(source, len, slash ? slash + 1 : path, in, lim->memory_bytes, out);
    free(source);
    if (!req)
        return -1;
    int rc = proc_supervise(worker_argv, req, deadline, lim->timeout_ms, out);
    free(req);
    return rc;
}

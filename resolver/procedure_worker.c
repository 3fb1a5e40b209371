/* procedure_worker: the child's side of a resolver run (see procedure.c):
 *   procedure_worker_main
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
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <signal.h>
#include <unistd.h>

#define PROC_MAX_REQUEST ((size_t)1 << 30)
#define PROC_HDR 16 /* bytes before each block: its size; keeps blocks max_align_t aligned */
_Static_assert(_Alignof(max_align_t) <= PROC_HDR, "allocator header too small");

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
        procedure_fail(&r, "memory limit (%zu bytes) exceeded", h->limit);
    else
        procedure_fail(&r, "engine fatal error: %s", msg ? msg : "unknown");
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
    return procedure_fail(run->out, "%s is not a JSON object", run->stage);
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
        procedure_fail(run->out, "%s", duk_safe_to_string(ctx, -1));
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
        procedure_fail(run->out, "result is not a document (undefined)");
    else if (n > PROCEDURE_MAX_DOC)
        procedure_fail(run->out, "result is %zu bytes, more than %u", (size_t)n, PROCEDURE_MAX_DOC);
    else if (!(run->out->doc = strndup(json, n)))
        procedure_fail(run->out, "out of memory");
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
        procedure_fail(run->out, "%s: %s", run->filename, duk_get_string(ctx, -1));
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
        procedure_fail(run->out, "memory limit (%zu bytes) exceeded", h->limit);
    else if (run->stage[0])
        procedure_fail(run->out, "%s: %s", run->stage, text ? text : "uncaught exception");
    else
        procedure_fail(run->out, "%s", text ? text : "uncaught exception");
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
        return procedure_fail(out, "cannot start the engine");
    if (heap.used >= memory_bytes) {
        procedure_fail(out, "memory limit (%zu bytes) too small: the engine alone takes %zu",
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
        return procedure_fail(r, "bad request: wants source, conflicting and memory_bytes");
    size_t n = json_array_size(conf);
    const char **docs = calloc(n ? n : 1, sizeof *docs);
    if (!docs)
        return procedure_fail(r, "out of memory");
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
                 : procedure_fail(&r, "bad request: %s", text ? jerr.text : "cannot read stdin");
    free(text);
    proc_answer(STDOUT_FILENO, &r);
    procedure_result_clear(&r);
    json_decref(req);
    return rc < 0 ? 1 : 0;
}


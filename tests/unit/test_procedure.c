/* Unit tests of the resolver procedure runner: the seed resolvers and small
 * fixtures run through the real worker (the meridian binary), asserting on
 * the resolution the hub would confirm or the error it would record; the
 * getContext() rules run in-process through procedure_run_inline. */
#include <criterion/criterion.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "resolver/procedure.h"

#define FIXTURES MERIDIAN_SOURCE_DIR "/tests/unit/fixtures/resolvers/"

static const char *const worker[] = { MERIDIAN_BINARY, "resolve", "--worker", NULL };

#define INPUT(...) ((struct procedure_input){ .container = "orders", __VA_ARGS__ })

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int run_with(const char *const *argv, const char *fixture, const struct procedure_input *in,
                    uint32_t timeout_ms, struct procedure_result *out)
{
    char path[512];
    struct procedure_limits lim = PROCEDURE_DEFAULT_LIMITS;
    lim.timeout_ms = timeout_ms;
    /* The seed's ledger resolver is the one the demo deploys. */
    if (strcmp(fixture, "ledger.js") == 0)
        snprintf(path, sizeof path, "%s", MERIDIAN_SOURCE_DIR "/deploy/local/resolvers/ledger.js");
    else
        snprintf(path, sizeof path, FIXTURES "%s", fixture);
    return procedure_run(argv, path, in, &lim, out);
}

static int run_fixture(const char *fixture, const struct procedure_input *in,
                       struct procedure_result *out)
{
    return run_with(worker, fixture, in, 5000, out);
}

static int run_source(const char *src, const struct procedure_input *in, struct procedure_result *out)
{
    return procedure_run_inline(src, strlen(src), "inline.js", in, 8u << 20, out);
}

/* The resolution is a document equal (as JSON) to `want`. */
static void assert_doc(int rc, const struct procedure_result *r, const char *want)
{
    cr_assert_eq(rc, 0, "run failed: %s", r->error);
    cr_assert_not(r->is_delete);
    cr_assert_not_null(r->doc);
    json_t *got = json_loads(r->doc, 0, NULL), *exp = json_loads(want, 0, NULL);
    cr_assert_not_null(exp, "bad expectation %s", want);
    cr_assert(json_equal(got, exp), "got %s, want %s", r->doc, want);
    json_decref(got);
    json_decref(exp);
}

static void assert_error(int rc, const struct procedure_result *r, const char *want)
{
    cr_assert_eq(rc, -1, "run succeeded: %s", r->doc ? r->doc : "deleted");
    cr_assert_null(r->doc);
    cr_assert_not(r->is_delete);
    cr_assert(strstr(r->error, want), "error `%s` lacks `%s`", r->error, want);
}

TestSuite(procedure, .timeout = 30);

/* ------------------------------------------------ the seed resolvers */

Test(procedure, lineitems_merges_by_id_keeping_higher_qty_and_max_status)
{
    const char *conflicting[] = {
        "{\"id\":\"o1\",\"status\":1,\"lineItems\":[{\"id\":\"l2\",\"qty\":2},{\"id\":\"l4\",\"qty\":7}]}",
    };
    struct procedure_input in = INPUT(
        .existing = "{\"id\":\"o1\",\"status\":1,\"lineItems\":[{\"id\":\"l1\",\"qty\":1},"
                    "{\"id\":\"l2\",\"qty\":5}]}",
        .incoming = "{\"id\":\"o1\",\"status\":2,\"lineItems\":[{\"id\":\"l1\",\"qty\":3},"
                    "{\"id\":\"l3\",\"qty\":1}]}",
        .conflicting = conflicting, .n_conflicting = 1);
    struct procedure_result r;
    int rc = run_fixture("lineitems.js", &in, &r);
    cr_assert_eq(rc, 0, "%s", r.error);
    /* Compact JSON, the existing document's key order, line items in first-seen order. */
    cr_assert_str_eq(r.doc, "{\"id\":\"o1\",\"status\":2,\"lineItems\":[{\"id\":\"l1\",\"qty\":3},"
                            "{\"id\":\"l2\",\"qty\":5},{\"id\":\"l3\",\"qty\":1},"
                            "{\"id\":\"l4\",\"qty\":7}]}");
    procedure_result_clear(&r);
}

Test(procedure, lineitems_insert_conflict_without_existing)
{
    struct procedure_input in = INPUT(
        .incoming = "{\"id\":\"o2\",\"status\":1,\"lineItems\":[{\"id\":\"a\",\"qty\":2}]}");
    struct procedure_result r;
    int rc = run_fixture("lineitems.js", &in, &r);
    assert_doc(rc, &r, "{\"id\":\"o2\",\"status\":1,\"lineItems\":[{\"id\":\"a\",\"qty\":2}]}");
    procedure_result_clear(&r);
}

Test(procedure, lineitems_tombstone_deletes)
{
    struct procedure_input in = INPUT(.tombstone = true,
        .existing = "{\"id\":\"o1\",\"status\":2,\"lineItems\":[{\"id\":\"l1\",\"qty\":1}]}");
    struct procedure_result r;
    int rc = run_fixture("lineitems.js", &in, &r);
    cr_assert_eq(rc, 0, "%s", r.error);
    cr_assert(r.is_delete);
    cr_assert_null(r.doc);
    /* Neither side present: resolved is {} and the delete still happens. */
    in.existing = NULL;
    rc = run_fixture("lineitems.js", &in, &r);
    cr_assert_eq(rc, 0, "%s", r.error);
    cr_assert(r.is_delete);
}

Test(procedure, ledger_higher_status_wins_either_side)
{
    struct procedure_input in = INPUT(.existing = "{\"id\":\"t\",\"status\":1,\"by\":\"west\"}",
                                      .incoming = "{\"id\":\"t\",\"status\":2,\"by\":\"east\"}");
    struct procedure_result r;
    int rc = run_fixture("ledger.js", &in, &r);
    assert_doc(rc, &r, "{\"id\":\"t\",\"status\":2,\"by\":\"east\"}");
    procedure_result_clear(&r);
    in = INPUT(.existing = "{\"id\":\"t\",\"status\":2,\"by\":\"west\"}",
               .incoming = "{\"id\":\"t\",\"status\":1,\"by\":\"east\"}");
    rc = run_fixture("ledger.js", &in, &r);
    assert_doc(rc, &r, "{\"id\":\"t\",\"status\":2,\"by\":\"west\"}");
    procedure_result_clear(&r);
}

Test(procedure, ledger_refund_is_never_overwritten)
{
    struct procedure_input in = INPUT(.existing = "{\"id\":\"t\",\"status\":3,\"by\":\"west\"}",
                                      .incoming = "{\"id\":\"t\",\"status\":2,\"by\":\"east\"}");
    struct procedure_result r;
    int rc = run_fixture("ledger.js", &in, &r);
    assert_doc(rc, &r, "{\"id\":\"t\",\"status\":3,\"by\":\"west\"}");
    procedure_result_clear(&r);
    in = INPUT(.existing = "{\"id\":\"t\",\"status\":2,\"by\":\"west\"}",
               .incoming = "{\"id\":\"t\",\"status\":3,\"by\":\"east\"}");
    rc = run_fixture("ledger.js", &in, &r);
    assert_doc(rc, &r, "{\"id\":\"t\",\"status\":3,\"by\":\"east\"}");
    procedure_result_clear(&r);
}

Test(procedure, ledger_folds_in_conflicting_items)
{
    const char *conflicting[] = { "{\"id\":\"t\",\"status\":3,\"by\":\"c1\"}",
                                  "{\"id\":\"t\",\"status\":2,\"by\":\"c2\"}" };
    struct procedure_input in = INPUT(.existing = "{\"id\":\"t\",\"status\":1,\"by\":\"west\"}",
                                      .incoming = "{\"id\":\"t\",\"status\":2,\"by\":\"east\"}",
                                      .conflicting = conflicting, .n_conflicting = 2);
    struct procedure_result r;
    int rc = run_fixture("ledger.js", &in, &r);
    assert_doc(rc, &r, "{\"id\":\"t\",\"status\":3,\"by\":\"c1\"}");
    procedure_result_clear(&r);
}

/* ------------------------------------------------ bounds and failures */

Test(procedure, infinite_loop_times_out)
{
    struct procedure_input in = INPUT(.incoming = "{\"id\":\"x\"}");
    struct procedure_result r;
    int64_t t0 = now_ms();
    int rc = run_with(worker, "loop.js", &in, 400, &r);
    int64_t took = now_ms() - t0;
    assert_error(rc, &r, "timed out after 400 ms");
    cr_assert_geq(took, 400);
    cr_assert_lt(took, 1400, "took %lld ms", (long long)took);
}

Test(procedure, memory_bomb_hits_the_limit_quickly)
{
    struct procedure_input in = INPUT(.incoming = "{\"id\":\"x\"}");
    struct procedure_result r;
    int64_t t0 = now_ms();
    int rc = run_with(worker, "bomb.js", &in, 10000, &r);
    int64_t took = now_ms() - t0;
    assert_error(rc, &r, "memory limit (33554432 bytes) exceeded");
    cr_assert_lt(took, 5000, "took %lld ms", (long long)took);
}

Test(procedure, memory_limit_in_process)
{
    char *src = NULL;
    size_t len = 0;
    char why[512];
    cr_assert_not_null(src = procedure_read_file(FIXTURES "bomb.js", 4096, &len, why, sizeof why));
    struct procedure_input in = INPUT(.incoming = "{\"id\":\"x\"}");
    struct procedure_result r;
    int rc = procedure_run_inline(src, len, "bomb.js", &in, 2u << 20, &r);
    assert_error(rc, &r, "memory limit (2097152 bytes) exceeded");
    free(src);
}

/* Many small objects fill the heap to the brim, until even the error cannot
 * be built; a script that catches the error keeps failing the same way. */
Test(procedure, memory_limit_with_small_objects_and_tiny_heaps)
{
    static const char *const sources[] = {
        "function f() { var head = null;\n  for (;;) head = { next: head }; }",
        "function f() { var head = null;\n  for (;;) try { head = { next: head }; }\n"
        "  catch (e) { head = { next: head, e: e }; } }",
    };
    struct procedure_input in = INPUT(.incoming = "{\"id\":\"x\"}");
    struct procedure_result r;
    for (size_t i = 0; i < 2; i++) {
        int rc = procedure_run_inline(sources[i], strlen(sources[i]), "list.js", &in, 2u << 20, &r);
        assert_error(rc, &r, "memory limit (2097152 bytes) exceeded");
    }
    int rc = procedure_run_inline(sources[0], strlen(sources[0]), "list.js", &in, 16u << 10, &r);
    assert_error(rc, &r, "memory limit (16384 bytes) too small: the engine alone takes");
}

Test(procedure, thrown_error_names_message_and_line)
{
    struct procedure_input in = INPUT(.incoming = "{\"id\":\"o9\",\"total\":-5}");
    struct procedure_result r;
    int rc = run_fixture("throw.js", &in, &r);
    assert_error(rc, &r, "Error: negative total on order o9 (line 3)");
    in.incoming = "{\"id\":\"o9\",\"total\":5}";
    rc = run_fixture("throw.js", &in, &r);
    assert_error(rc, &r, "TypeError: cannot read property 'field' of undefined (line 4)");
}

Test(procedure, non_object_result_is_refused)
{
    struct procedure_input in = INPUT(.incoming = "{\"id\":\"x\"}");
    struct procedure_result r;
    int rc = run_fixture("nonobject.js", &in, &r);
    assert_error(rc, &r, "result is not a document (number)");
}

Test(procedure, missing_file)
{
    struct procedure_input in = INPUT(.incoming = "{\"id\":\"x\"}");
    struct procedure_result r;
    int rc = run_fixture("nope.js", &in, &r);
    assert_error(rc, &r, "/resolvers/nope.js: file not found");
}

Test(procedure, several_functions_without_resolver)
{
    struct procedure_input in = INPUT(.incoming = "{\"id\":\"x\"}");
    struct procedure_result r;
    int rc = run_fixture("several.js", &in, &r);
    cr_assert_eq(rc, -1);
    cr_assert_str_eq(r.error,
                     "several.js: defines several functions (pickNewer, pickOlder) and none is "
                     "named resolver");
}

Test(procedure, last_call_wins_delete_after_upsert)
{
    struct procedure_input in = INPUT(.incoming = "{\"id\":\"x\"}");
    struct procedure_result r;
    int rc = run_fixture("delete.js", &in, &r);
    cr_assert_eq(rc, 0, "%s", r.error);
    cr_assert(r.is_delete);
    cr_assert_null(r.doc);
}

Test(procedure, children_are_reaped)
{
    struct procedure_input in = INPUT(.incoming = "{\"id\":\"t\",\"status\":1}");
    struct procedure_result r;
    cr_assert_eq(run_fixture("ledger.js", &in, &r), 0, "%s", r.error);
    procedure_result_clear(&r);
    cr_assert_eq(run_with(worker, "loop.js", &in, 200, &r), -1);
    cr_assert_eq(run_fixture("bomb.js", &in, &r), -1);
    cr_assert_eq(run_fixture("throw.js", &in, &r), -1);
    int status;
    errno = 0;
    cr_assert_eq(waitpid(-1, &status, WNOHANG), -1, "a child is left behind");
    cr_assert_eq(errno, ECHILD);
}

/* ------------------------------------------------ workers that misbehave */

Test(procedure, worker_that_cannot_start)
{
    static const char *const argv[] = { "/nonexistent/meridian", "resolve", "--worker", NULL };
    struct procedure_input in = INPUT(.incoming = "{\"id\":\"x\"}");
    struct procedure_result r;
    int rc = run_with(argv, "ledger.js", &in, 1000, &r);
    assert_error(rc, &r, "cannot start the worker /nonexistent/meridian: No such file or directory");
}

Test(procedure, worker_exits_or_dies_without_answer)
{
    static const char *const quits[] = { "/bin/sh", "-c", "exit 1", NULL };
    static const char *const dies[] = { "/bin/sh", "-c", "kill -9 $$", NULL };
    struct procedure_input in = INPUT(.incoming = "{\"id\":\"x\"}");
    struct procedure_result r;
    assert_error(run_with(quits, "ledger.js", &in, 2000, &r), &r, "worker exited 1 without an answer");
    assert_error(run_with(dies, "ledger.js", &in, 2000, &r), &r,
                 "worker killed by signal 9 without an answer");
}

/* A worker that leaves without reading a request bigger than a pipe: the
 * write fails with EPIPE, and the SIGPIPE it raises neither kills this
 * process nor stays pending. */
Test(procedure, worker_gone_before_reading_is_no_sigpipe)
{
    static const char *const quits[] = { "/bin/true", NULL };
    size_t n = 1u << 20;
    char *big = malloc(n + 32);
    cr_assert_not_null(big);
    memcpy(big, "{\"pad\":\"", 8);
    memset(big + 8, 'p', n);
    memcpy(big + 8 + n, "\"}", 3);
    struct procedure_input in = INPUT(.incoming = big);
    struct procedure_result r;
    assert_error(run_with(quits, "ledger.js", &in, 2000, &r), &r, "worker exited 0 without an answer");
    sigset_t pending;
    sigpending(&pending);
    cr_assert_eq(sigismember(&pending, SIGPIPE), 0);
    free(big);
}

static void *run_ledger_thread(void *arg)
{
    struct procedure_result *r = arg;
    struct procedure_input in = INPUT(.existing = "{\"id\":\"t\",\"status\":1}",
                                      .incoming = "{\"id\":\"t\",\"status\":2}");
    run_fixture("ledger.js", &in, r);
    return NULL;
}

Test(procedure, runs_from_several_threads_at_once)
{
    pthread_t t[4];
    struct procedure_result r[4];
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, run_ledger_thread, &r[i]), 0);
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_doc(r[i].error[0] ? -1 : 0, &r[i], "{\"id\":\"t\",\"status\":2}");
        procedure_result_clear(&r[i]);
    }
}

/* ------------------------------------------------ getContext() rules, in process */

Test(procedure, context_surface)
{
    struct procedure_input in = INPUT(.incoming = "{\"id\":\"a\"}", .tombstone = false);
    struct procedure_result r;
    int rc = run_source(
        "var resolver = function (inc, ex, tomb, conf) {\n"
        "  var c = getContext().getCollection(), calls = [];\n"
        "  var ok = c.upsertDocument('x', { first: true }, {}, function (e, d) {\n"
        "    calls.push(typeof e + ':' + d.first); });\n"
        "  getContext().getResponse().setBody(7);\n"
        "  c.upsertDocument(c.getSelfLink(), { link: c.getSelfLink(), ok: ok, calls: calls,\n"
        "    ex: ex, tomb: tomb, nconf: conf.length, body: getContext().getResponse().getBody(),\n"
        "    del: c.deleteDocument('l', function (e) { calls.push(typeof e); }) });\n"
        "};\n",
        &in, &r);
    assert_doc(rc, &r,
               "{\"link\":\"dbs/meridian/colls/orders/\",\"ok\":true,\"calls\":"
               "[\"undefined:true\",\"undefined\"],\"ex\":null,\"tomb\":false,\"nconf\":0,"
               "\"body\":7,\"del\":true}");
    procedure_result_clear(&r);
}

Test(procedure, body_is_the_result_without_upsert)
{
    struct procedure_input in = INPUT(.incoming = "{\"id\":\"a\",\"n\":1}");
    struct procedure_result r;
    int rc = run_source("function resolver(i) { i.n++; getContext().getResponse().setBody(i); }",
                        &in, &r);
    assert_doc(rc, &r, "{\"id\":\"a\",\"n\":2}");
    procedure_result_clear(&r);
}

Test(procedure, upsert_snapshots_the_document_when_called)
{
    struct procedure_input in = INPUT(.incoming = "{\"id\":\"a\",\"n\":1}");
    struct procedure_result r;
    int rc = run_source("function resolver(i) {\n"
                        "  getContext().getCollection().upsertDocument('', i); i.n = 99; }",
                        &in, &r);
    assert_doc(rc, &r, "{\"id\":\"a\",\"n\":1}");
    procedure_result_clear(&r);
}

Test(procedure, result_type_errors)
{
    static const struct { const char *src, *want; } cases[] = {
        { "function f() {}", "result is not a document (undefined)" },
        { "function f() { getContext().getResponse().setBody(null); }",
          "result is not a document (null)" },
        { "function f() { getContext().getResponse().setBody([{}]); }",
          "result is not a document (array)" },
        { "function f() { getContext().getResponse().setBody('{}'); }",
          "result is not a document (string)" },
        { "function f() { getContext().getResponse().setBody(new Date(0)); }",
          "result is not a document (date)" },
        { "function f() {\n  getContext().getCollection().upsertDocument('', 5, function () {});\n}",
          "TypeError: upsertDocument: the document is not an object (number) (line 2)" },
        { "function f() { throw 'plain string'; }", "uncaught exception: plain string" },
        { "var x = 1;", "inline.js: defines no function" },
        { "function f( {", "SyntaxError" },
        { "function a() {} function resolver() { getContext().getResponse().setBody({w: 1}); }",
          NULL },
    };
    struct procedure_input in = INPUT(.incoming = "{\"id\":\"a\"}");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct procedure_result r;
        int rc = run_source(cases[i].src, &in, &r);
        if (cases[i].want)
            assert_error(rc, &r, cases[i].want);
        else
            assert_doc(rc, &r, "{\"w\":1}");
        procedure_result_clear(&r);
    }
}

/* Duktape holds a character beyond the BMP as two surrogates: the result is
 * still UTF-8, whether the input wrote it raw or escaped. */
Test(procedure, characters_beyond_the_bmp_come_back_as_utf8)
{
    struct procedure_input in = INPUT(
        .incoming = "{\"raw\":\"caf\xc3\xa9 \xf0\x9f\x98\x80\",\"esc\":\"\\ud83d\\ude00\"}");
    struct procedure_result r;
    int rc = run_source("function f(i) { i.lone = '\\ud800'; getContext().getResponse().setBody(i); }",
                        &in, &r);
    cr_assert_eq(rc, 0, "%s", r.error);
    cr_assert_str_eq(r.doc, "{\"raw\":\"caf\xc3\xa9 \xf0\x9f\x98\x80\",\"esc\":\"\xf0\x9f\x98\x80\","
                            "\"lone\":\"\xef\xbf\xbd\"}");
    procedure_result_clear(&r);
}

Test(procedure, oversized_result_is_refused)
{
    struct procedure_input in = INPUT(.incoming = "{\"id\":\"a\"}");
    struct procedure_result r;
    const char *src = "function f() { var s = 'x';\n"
                      "  while (s.length < 3 * 1024 * 1024) s += s;\n"
                      "  getContext().getResponse().setBody({ s: s }); }";
    int rc = procedure_run_inline(src, strlen(src), "big.js", &in, 64u << 20, &r);
    assert_error(rc, &r, "more than 2097152");
}

Test(procedure, invalid_input_document)
{
    struct procedure_input in = INPUT(.incoming = "{\"id\":", .existing = NULL);
    struct procedure_result r;
    int rc = run_source("function f() {}", &in, &r);
    assert_error(rc, &r, "incoming document: SyntaxError");
    in = INPUT(.incoming = "[1]");
    rc = run_source("function f() {}", &in, &r);
    assert_error(rc, &r, "incoming document is not a JSON object");
}

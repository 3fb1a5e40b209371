/* Unit tests of the embedded store: a real LMDB environment in a fresh
 * temporary directory and a real event_base delivering the committer's
 * completions, asserting on what the proxy would relay to a client. */
#define _GNU_SOURCE /* nftw(), for cleaning up the temporary store */
#include <criterion/criterion.h>
#include <event2/event.h>
#include <ftw.h>
#include <inttypes.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store/docpath.h"
#include "store/embedded.h"
#include "util/committer.h"

#define MAX_REPLIES 1024

struct reply {
    int calls;
    int status;
    char etag[DOCPATH_ETAG_MAX];
    char *location;
    char *body;
};

struct fixture {
    struct event_base *base;
    struct embedded *st;
    char root[64];
    char dir[128];
    int calls;                  /* done callbacks so far, all requests */
    size_t used;
    struct reply replies[MAX_REPLIES];
};

static struct fixture fx;

static void on_done(void *ctx, const struct store_response *resp)
{
    struct reply *r = ctx;

    r->calls++;
    r->status = resp->status;
    snprintf(r->etag, sizeof r->etag, "%s", resp->etag ? resp->etag : "");
    free(r->location);
    r->location = resp->location ? strdup(resp->location) : NULL;
    free(r->body);
    r->body = strndup(resp->body, resp->body_len);
    fx.calls++;
}

static void store_open(void)
{
    struct err err;

    cr_assert_eq(embedded_open(fx.base, fx.dir, &fx.st, &err), 0, "open: %s", err.msg);
}

static void store_close(void)
{
    embedded_close(fx.st);
    fx.st = NULL;
}

static void setup(void)
{
    memset(&fx, 0, sizeof fx);
    snprintf(fx.root, sizeof fx.root, "/tmp/meridian-embedded-XXXXXX");
    cr_assert_not_null(mkdtemp(fx.root));
    /* Two levels that do not exist yet: open must create them. */
    snprintf(fx.dir, sizeof fx.dir, "%s/data/store", fx.root);
    fx.base = event_base_new();
    cr_assert_not_null(fx.base);
    store_open();
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void teardown(void)
{
    store_close();
    event_base_free(fx.base);
    for (size_t i = 0; i < fx.used; i++) {
        free(fx.replies[i].location);
        free(fx.replies[i].body);
    }
    nftw(fx.root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(embedded, .init = setup, .fini = teardown, .timeout = 60);

/* Runs the loop until `n` done callbacks in all have been seen. */
static void drive(int n)
{
    while (fx.calls < n)
        cr_assert_neq(event_base_loop(fx.base, EVLOOP_ONCE), -1);
}

struct req {
    const char *method;
    const char *path;
    const char *body;
    const char *if_match;
    const char *if_none_match;
    bool checked;
};

/* Sends without waiting; the reply fills in once the loop delivers it. */
static struct reply *send_req(struct req q, struct embedded_op **op_out)
{
    cr_assert_lt(fx.used, MAX_REPLIES);
    struct reply *r = &fx.replies[fx.used++];
    struct store_request sr = {
        .method = q.method, .path = q.path, .path_len = strlen(q.path),
        .if_match = q.if_match, .if_none_match = q.if_none_match,
        .body = q.body, .body_len = q.body ? strlen(q.body) : 0, .checked = q.checked,
    };
    struct embedded_op *op = embedded_handle(fx.st, &sr, on_done, r);

    /* The contract: NULL exactly when done already ran. */
    cr_assert_eq(op == NULL, r->calls == 1, "%s %s: op %p, calls %d", q.method, q.path,
                 (void *)op, r->calls);
    if (op_out)
        *op_out = op;
    return r;
}

static struct reply *call(struct req q)
{
    struct reply *r = send_req(q, NULL);

    while (r->calls == 0)
        cr_assert_neq(event_base_loop(fx.base, EVLOOP_ONCE), -1);
    cr_assert_eq(r->calls, 1);
    return r;
}

#define REQ(...) ((struct req){ __VA_ARGS__ })

static void expect(const struct reply *r, int status, const char *body)
{
    cr_assert_eq(r->status, status, "status %d, wanted %d; body %s", r->status, status, r->body);
    if (body)
        cr_assert_str_eq(r->body, body);
}

static uint64_t etag_seq(const char *etag)
{
    cr_assert_eq(etag[0], '"', "etag %s", etag);
    return strtoull(etag + 1, NULL, 16);
}

/* ---- documents ---- */

Test(embedded, put_creates_then_replaces_and_get_returns_it)
{
    struct reply *r = call(REQ(.method = "PUT", .path = "/orders/abc", .body = "{\"n\": 1.5}"));
    expect(r, 201, "{\"id\":\"abc\",\"n\": 1.5}");
    cr_assert_str_eq(r->location, "/orders/abc");
    cr_assert_str_eq(r->etag, "\"1\"");

    r = call(REQ(.method = "PUT", .path = "/orders/abc", .body = "{\"id\":\"abc\",\"n\":2}"));
    expect(r, 200, "{\"id\":\"abc\",\"n\":2}");
    cr_assert_null(r->location);
    cr_assert_str_eq(r->etag, "\"2\"");

    r = call(REQ(.method = "GET", .path = "/orders/abc"));
    expect(r, 200, "{\"id\":\"abc\",\"n\":2}");
    cr_assert_str_eq(r->etag, "\"2\"");
    r = call(REQ(.method = "HEAD", .path = "/orders/abc?ignored=1"));
    expect(r, 200, "{\"id\":\"abc\",\"n\":2}");
    cr_assert_str_eq(r->etag, "\"2\"");
}

Test(embedded, put_of_an_empty_object_gets_the_id)
{
    expect(call(REQ(.method = "PUT", .path = "/o/e", .body = " {} ")), 201, " {\"id\":\"e\"} ");
}

Test(embedded, get_of_a_missing_document_is_404)
{
    expect(call(REQ(.method = "GET", .path = "/orders/nope")), 404,
           "{\"error\":\"not_found\",\"reason\":\"no document 'nope' in /orders/\"}");
}

Test(embedded, delete_removes_then_404)
{
    call(REQ(.method = "PUT", .path = "/orders/abc", .body = "{}"));
    struct reply *r = call(REQ(.method = "DELETE", .path = "/orders/abc"));
    expect(r, 200, "{\"ok\":true,\"id\":\"abc\"}");
    cr_assert_str_eq(r->etag, "\"2\"");
    expect(call(REQ(.method = "GET", .path = "/orders/abc")), 404, NULL);
    expect(call(REQ(.method = "DELETE", .path = "/orders/abc")), 404,
           "{\"error\":\"not_found\",\"reason\":\"no document 'abc' in /orders/\"}");
}

Test(embedded, put_body_id_must_match_the_path)
{
    struct reply *r = call(REQ(.method = "PUT", .path = "/o/a", .body = "{\"id\":\"b\"}"));
    expect(r, 400, "{\"error\":\"bad_request\",\"reason\":\"\\\"id\\\" in the body ('b') does "
                   "not match the id in the path ('a')\"}");
    r = call(REQ(.method = "PUT", .path = "/o/a", .body = "{\"id\":7}"));
    expect(r, 400, "{\"error\":\"bad_request\",\"reason\":\"\\\"id\\\" in the body must be a "
                   "string, got number\"}");
    expect(call(REQ(.method = "GET", .path = "/o/a")), 404, NULL);
}

Test(embedded, body_that_is_not_json_is_400_with_position)
{
    struct reply *r = call(REQ(.method = "PUT", .path = "/o/a", .body = "{\"x\":\n tru}"));
    expect(r, 400, NULL);
    cr_assert(strstr(r->body, "\"reason\":\"body is not valid JSON: ") != NULL, "%s", r->body);
    cr_assert(strstr(r->body, " at line 2 column ") != NULL, "%s", r->body);

    r = call(REQ(.method = "PUT", .path = "/o/a"));
    cr_assert(strstr(r->body, "body is not valid JSON") != NULL, "%s", r->body);
}

Test(embedded, body_that_is_not_an_object_is_400_naming_its_type)
{
    static const char *const cases[][2] = {
        { "[1,2]", "array" }, { "\"s\"", "string" }, { "3", "number" },
        { "2.5", "number" }, { "true", "boolean" }, { "null", "null" },
    };
    char want[160];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(want, sizeof want,
                 "{\"error\":\"bad_request\",\"reason\":\"body must be a JSON object, got %s\"}",
                 cases[i][1]);
        expect(call(REQ(.method = "PUT", .path = "/o/a", .body = cases[i][0])), 400, want);
        expect(call(REQ(.method = "POST", .path = "/o/", .body = cases[i][0])), 400, want);
    }
}

/* ---- POST ---- */

Test(embedded, post_takes_the_id_from_the_body_and_409s_a_duplicate)
{
    struct reply *r = call(REQ(.method = "POST", .path = "/orders/", .body = "{\"id\":\"p 1\"}"));
    expect(r, 201, "{\"id\":\"p 1\"}");
    cr_assert_str_eq(r->location, "/orders/p%201");
    cr_assert_str_eq(r->etag, "\"1\"");

    r = call(REQ(.method = "POST", .path = "/orders/", .body = "{\"id\":\"p 1\",\"v\":2}"));
    expect(r, 409, "{\"error\":\"conflict\",\"reason\":\"document 'p 1' already exists in "
                   "/orders/\"}");
    expect(call(REQ(.method = "GET", .path = "/orders/p%201")), 200, "{\"id\":\"p 1\"}");
}

Test(embedded, post_id_rules)
{
    static const char *const bodies[] = {
        "{\"x\":1}", "{\"id\":5}", "{\"id\":\"\"}", "{\"id\":\"a/b\"}",
    };
    static const char *const reasons[] = {
        "POST needs the new document's \\\"id\\\" in the body",
        "\\\"id\\\" in the body must be a string, got number",
        "\\\"id\\\" in the body must not be empty",
        "\\\"id\\\" in the body must not contain '/'",
    };

    for (size_t i = 0; i < 4; i++) {
        struct reply *r = call(REQ(.method = "POST", .path = "/orders/", .body = bodies[i]));
        expect(r, 400, NULL);
        cr_assert(strstr(r->body, reasons[i]) != NULL, "%s", r->body);
    }
}

Test(embedded, wrong_method_for_the_path_shape_is_405_with_allow)
{
    struct reply *r = call(REQ(.method = "POST", .path = "/orders/abc", .body = "{}"));
    expect(r, 405, NULL);
    cr_assert(strstr(r->body, "\"allow\":\"GET, HEAD, PUT, DELETE\"") != NULL, "%s", r->body);
    r = call(REQ(.method = "PUT", .path = "/orders/", .body = "{}"));
    expect(r, 405, NULL);
    cr_assert(strstr(r->body, "\"allow\":\"GET, HEAD, POST\"") != NULL, "%s", r->body);
    expect(call(REQ(.method = "DELETE", .path = "/orders/")), 405, NULL);
    r = call(REQ(.method = "PATCH", .path = "/orders/abc", .body = "{}"));
    expect(r, 405, NULL);
    cr_assert(strstr(r->body, "\"error\":\"method_not_allowed\"") != NULL, "%s", r->body);
    cr_assert(strstr(r->body, "PATCH is not allowed") != NULL, "%s", r->body);
}

/* ---- preconditions ---- */

Test(embedded, if_none_match_star_creates_only)
{
    struct reply *r = call(REQ(.method = "PUT", .path = "/o/a", .body = "{}",
                               .if_none_match = "*"));
    expect(r, 201, NULL);
    r = call(REQ(.method = "PUT", .path = "/o/a", .body = "{\"v\":2}", .if_none_match = "*"));
    expect(r, 412, NULL);
    cr_assert(strstr(r->body, "\"error\":\"precondition_failed\"") != NULL, "%s", r->body);
    cr_assert_str_eq(r->etag, "\"1\"");
    expect(call(REQ(.method = "GET", .path = "/o/a")), 200, "{\"id\":\"a\"}");
}

Test(embedded, if_match_guards_put_and_delete)
{
    struct reply *r = call(REQ(.method = "PUT", .path = "/o/a", .body = "{}"));
    cr_assert_str_eq(r->etag, "\"1\"");

    expect(call(REQ(.method = "PUT", .path = "/o/a", .body = "{}", .if_match = "\"9\"")), 412,
           NULL);
    /* If-Match compares strongly: a weak tag never matches. */
    expect(call(REQ(.method = "PUT", .path = "/o/a", .body = "{}", .if_match = "W/\"1\"")), 412,
           NULL);
    r = call(REQ(.method = "PUT", .path = "/o/a", .body = "{}", .if_match = "\"7\", \"1\""));
    expect(r, 200, NULL);
    cr_assert_str_eq(r->etag, "\"2\"");
    expect(call(REQ(.method = "DELETE", .path = "/o/a", .if_match = "\"1\"")), 412, NULL);
    expect(call(REQ(.method = "DELETE", .path = "/o/a", .if_match = "*")), 200, NULL);
    r = call(REQ(.method = "PUT", .path = "/o/a", .body = "{}", .if_match = "*"));
    expect(r, 412, NULL);
    cr_assert(strstr(r->body, "does not exist") != NULL, "%s", r->body);
}

Test(embedded, later_writes_in_a_batch_see_earlier_ones)
{
    /* Queued back to back, before the loop runs: whether they share a batch
     * or not, each is decided against the ones before it. */
    struct reply *a = send_req(REQ(.method = "PUT", .path = "/o/x", .body = "{}",
                                   .if_none_match = "*"), NULL);
    struct reply *b = send_req(REQ(.method = "PUT", .path = "/o/x", .body = "{}",
                                   .if_none_match = "*"), NULL);
    struct reply *c = send_req(REQ(.method = "POST", .path = "/o/", .body = "{\"id\":\"y\"}"),
                               NULL);
    struct reply *d = send_req(REQ(.method = "POST", .path = "/o/", .body = "{\"id\":\"y\"}"),
                               NULL);
    struct reply *e = send_req(REQ(.method = "DELETE", .path = "/o/y", .if_match = "\"2\""),
                               NULL);
    drive(5);
    expect(a, 201, NULL);
    expect(b, 412, NULL);
    expect(c, 201, NULL);
    cr_assert_str_eq(c->etag, "\"2\"");
    expect(d, 409, NULL);
    expect(e, 200, NULL);
}

/* ---- paths ---- */

Test(embedded, ids_are_percent_decoded)
{
    struct reply *r = call(REQ(.method = "PUT", .path = "/o/a%20b%C3%A9", .body = "{}"));
    expect(r, 201, "{\"id\":\"a b\xc3\xa9\"}");
    cr_assert_str_eq(r->location, "/o/a%20b%C3%A9");
    expect(call(REQ(.method = "GET", .path = "/o/a%20b%c3%a9?x=%zz")), 200, NULL);
    expect(call(REQ(.method = "PUT", .path = "/o/%61", .body = "{\"id\":\"a\"}")), 201, NULL);
    expect(call(REQ(.method = "GET", .path = "/o/a")), 200, "{\"id\":\"a\"}");
}

Test(embedded, bad_ids_are_400)
{
    static const char *const paths[] = { "/o/a%2Fb", "/o/a%00b", "/o/%zz", "/o/a%4", "/o/%FF",
                                         "orders/a" };

    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        struct reply *r = call(REQ(.method = "PUT", .path = paths[i], .body = "{}"));
        expect(r, 400, NULL);
        cr_assert(strstr(r->body, "\"error\":\"bad_request\"") != NULL, "%s", r->body);
        expect(call(REQ(.method = "GET", .path = paths[i])), 400, NULL);
    }
    struct reply *r = call(REQ(.method = "GET", .path = "/o/a%2Fb"));
    cr_assert(strstr(r->body, "contains '/'") != NULL, "%s", r->body);
}

Test(embedded, keys_beyond_lmdb_limit_are_400)
{
    char path[700] = "/o/";

    memset(path + 3, 'k', 600);
    path[603] = '\0';
    struct reply *r = call(REQ(.method = "PUT", .path = path, .body = "{}"));
    expect(r, 400, NULL);
    cr_assert(strstr(r->body, "at most 511") != NULL, "%s", r->body);
    expect(call(REQ(.method = "GET", .path = path)), 400, NULL);
}

/* ---- listings ---- */

static void put_ids(const char *coll, const char *const *ids, size_t n)
{
    char path[128];

    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s%s", coll, ids[i]);
        expect(call(REQ(.method = "PUT", .path = path, .body = "{}")), 201, NULL);
    }
}

Test(embedded, listing_pages_in_id_order)
{
    static const char *const ids[] = { "c", "a", "e", "b", "d" };
    static const char *const other[] = { "zz" };
    put_ids("/items/", ids, 5);
    put_ids("/items/sub/", other, 1);
    put_ids("/itemsX/", other, 1);

    struct reply *r = call(REQ(.method = "GET", .path = "/items/?limit=2"));
    expect(r, 200, "{\"documents\":[{\"id\":\"a\"},{\"id\":\"b\"}],\"count\":2,\"next\":\"b\"}");
    cr_assert_str_eq(r->etag, "\"7\"");
    r = call(REQ(.method = "GET", .path = "/items/?after=b&limit=2"));
    expect(r, 200, "{\"documents\":[{\"id\":\"c\"},{\"id\":\"d\"}],\"count\":2,\"next\":\"d\"}");
    r = call(REQ(.method = "GET", .path = "/items/?limit=2&after=d"));
    expect(r, 200, "{\"documents\":[{\"id\":\"e\"}],\"count\":1,\"next\":null}");
    r = call(REQ(.method = "HEAD", .path = "/items/"));
    expect(r, 200, "{\"documents\":[{\"id\":\"a\"},{\"id\":\"b\"},{\"id\":\"c\"},{\"id\":\"d\"},"
                   "{\"id\":\"e\"}],\"count\":5,\"next\":null}");
    /* Exactly `limit` left: no next page. */
    r = call(REQ(.method = "GET", .path = "/items/?after=c&limit=2"));
    expect(r, 200, "{\"documents\":[{\"id\":\"d\"},{\"id\":\"e\"}],\"count\":2,\"next\":null}");
    /* `after` need not name an existing id. */
    r = call(REQ(.method = "GET", .path = "/items/?after=bb&limit=1"));
    expect(r, 200, "{\"documents\":[{\"id\":\"c\"}],\"count\":1,\"next\":\"c\"}");
    expect(call(REQ(.method = "GET", .path = "/empty/")), 200,
           "{\"documents\":[],\"count\":0,\"next\":null}");
}

Test(embedded, listing_after_is_percent_decoded)
{
    static const char *const ids[] = { "a%20b", "a%20c", "b" };
    put_ids("/l/", ids, 3);

    expect(call(REQ(.method = "GET", .path = "/l/?after=a%20b")), 200,
           "{\"documents\":[{\"id\":\"a c\"},{\"id\":\"b\"}],\"count\":2,\"next\":null}");
    expect(call(REQ(.method = "GET", .path = "/l/?after=a+c")), 200,
           "{\"documents\":[{\"id\":\"b\"}],\"count\":1,\"next\":null}");
}

Test(embedded, listing_limit_must_be_1_to_1000)
{
    static const char *const bad[] = { "/l/?limit=0", "/l/?limit=1001", "/l/?limit=abc",
                                       "/l/?limit=", "/l/?limit=-1", "/l/?limit=99999" };

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct reply *r = call(REQ(.method = "GET", .path = bad[i]));
        expect(r, 400, NULL);
        cr_assert(strstr(r->body, "limit must be an integer from 1 to 1000") != NULL, "%s",
                  r->body);
    }
    expect(call(REQ(.method = "GET", .path = "/l/?limit=1000&x=y")), 200, NULL);
}

Test(embedded, listing_etag_follows_every_write)
{
    struct reply *r = call(REQ(.method = "GET", .path = "/l/"));
    cr_assert_str_eq(r->etag, "\"0\"");
    call(REQ(.method = "PUT", .path = "/l/a", .body = "{}"));
    cr_assert_str_eq(call(REQ(.method = "GET", .path = "/l/"))->etag, "\"1\"");
    call(REQ(.method = "DELETE", .path = "/l/a"));
    cr_assert_str_eq(call(REQ(.method = "GET", .path = "/l/"))->etag, "\"2\"");
    /* A refused write takes no sequence. */
    call(REQ(.method = "DELETE", .path = "/l/a"));
    cr_assert_str_eq(call(REQ(.method = "GET", .path = "/l/"))->etag, "\"2\"");
}

/* ---- the committer ---- */

struct holder {
    pid_t pid;
    int go;
};

/* Another process takes LMDB's writer lock on the store (as mdb_copy or a
 * stray second node would), so the committer blocks in mdb_txn_begin until
 * release_writer_lock(): whatever is queued meanwhile forms one batch. */
static struct holder hold_writer_lock(const char *dir)
{
    int ready[2], go[2];
    char c;

    cr_assert_eq(pipe(ready), 0);
    cr_assert_eq(pipe(go), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        MDB_env *env;
        MDB_txn *txn;
        close(ready[0]);
        close(go[1]);
        if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 2) || mdb_env_open(env, dir, 0, 0644) ||
            mdb_txn_begin(env, NULL, 0, &txn))
            _exit(1);
        if (write(ready[1], "r", 1) != 1 || read(go[0], &c, 1) != 1)
            _exit(2);
        mdb_txn_abort(txn);
        mdb_env_close(env);
        _exit(0);
    }
    close(ready[1]);
    close(go[0]);
    cr_assert_eq(read(ready[0], &c, 1), 1, "the lock holder did not start");
    close(ready[0]);
    return (struct holder){ pid, go[1] };
}

static void release_writer_lock(struct holder h)
{
    int status;

    cr_assert_eq(write(h.go, "g", 1), 1);
    close(h.go);
    cr_assert_eq(waitpid(h.pid, &status, 0), h.pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "lock holder status %d", status);
}

Test(embedded, concurrent_writes_share_commits)
{
    char path[32];
    unsigned long before = embedded_commit_count(fx.st);

    for (int i = 0; i < 200; i++) {
        snprintf(path, sizeof path, "/g/%03d", i);
        send_req(REQ(.method = "PUT", .path = path, .body = "{\"v\":1}"), NULL);
    }
    drive(200);
    for (size_t i = 0; i < 200; i++)
        expect(&fx.replies[i], 201, NULL);
    unsigned long commits = embedded_commit_count(fx.st) - before;
    cr_log_info("200 queued writes took %lu commits", commits);
    cr_assert_lt(commits, 50, "200 writes took %lu commits", commits);
    struct reply *r = call(REQ(.method = "GET", .path = "/g/?limit=1000"));
    cr_assert(strstr(r->body, "\"count\":200,") != NULL);
}

/* The committer's counters (meridian_commit_* metrics): every write is a job,
 * each batch one transaction; the durable batches' meta pages are made
 * durable by a timed syncer fsync or covered by the next commit (a fsync or
 * a cover may take several batches at once), and the last batch, with no
 * commit after it, by a syncer fsync; reads add nothing. */
Test(embedded, commit_counters_count_jobs_batches_and_fsyncs)
{
    char path[32];
    struct committer_stats a, b;
    committer_stats(embedded_committer(fx.st), &a);
    for (int i = 0; i < 100; i++) {
        snprintf(path, sizeof path, "/s/%03d", i);
        send_req(REQ(.method = "PUT", .path = path, .body = "{\"v\":1}"), NULL);
    }
    drive(100);
    expect(call(REQ(.method = "GET", .path = "/s/007")), 200, NULL);
    committer_stats(embedded_committer(fx.st), &b);
    cr_assert_eq(b.jobs - a.jobs, 100, "jobs %lu", b.jobs - a.jobs);
    cr_assert_geq(b.batches - a.batches, 1);
    cr_assert_lt(b.batches - a.batches, 100, "100 queued writes took %lu batches",
                 b.batches - a.batches);
    unsigned long syncs = b.syncs - a.syncs, covered = b.covered - a.covered;
    cr_assert_geq(syncs, 1, "the last batch was not fsynced");
    cr_assert_leq(syncs + covered, b.batches - a.batches,
                  "%lu fsyncs and %lu covers for %lu batches", syncs, covered,
                  b.batches - a.batches);
    cr_assert_gt(b.sync_seconds, a.sync_seconds);
    cr_assert_eq(embedded_commit_count(fx.st), b.batches);
}

/* With the committer stuck behind a slow commit (here: another process holding
 * the writer lock), everything queued meanwhile goes out in one more commit,
 * and reads keep being answered on the loop. */
Test(embedded, writes_queued_behind_a_busy_committer_share_one_commit)
{
    char path[32];
    expect(call(REQ(.method = "PUT", .path = "/g/seen", .body = "{}")), 201, NULL);
    unsigned long before = embedded_commit_count(fx.st);
    struct holder h = hold_writer_lock(fx.dir);

    for (int i = 0; i < 200; i++) {
        snprintf(path, sizeof path, "/g/%03d", i);
        send_req(REQ(.method = "PUT", .path = path, .body = "{\"v\":1}"), NULL);
    }
    struct reply *r = send_req(REQ(.method = "GET", .path = "/g/seen"), NULL);
    expect(r, 200, "{\"id\":\"seen\"}");
    cr_assert_eq(fx.calls, 2, "a write was answered while the writer lock was held");
    release_writer_lock(h);
    drive(202);
    for (size_t i = 1; i < 201; i++)
        expect(&fx.replies[i], 201, NULL);
    /* The first write may have been taken alone before the rest queued. */
    unsigned long commits = embedded_commit_count(fx.st) - before;
    cr_assert_leq(commits, 2, "200 writes took %lu commits", commits);
}

Test(embedded, reopen_keeps_acknowledged_writes_and_the_sequence_grows)
{
    char path[32];

    for (int i = 0; i < 50; i++) {
        snprintf(path, sizeof path, "/r/%02d", i);
        send_req(REQ(.method = "PUT", .path = path, .body = "{\"v\":1}"), NULL);
    }
    drive(50);
    uint64_t last = 0;
    for (size_t i = 0; i < 50; i++) {
        expect(&fx.replies[i], 201, NULL);
        uint64_t s = etag_seq(fx.replies[i].etag);
        cr_assert_gt(s, last);
        last = s;
    }
    store_close();
    store_open();
    for (int i = 0; i < 50; i++) {
        snprintf(path, sizeof path, "/r/%02d", i);
        struct reply *r = call(REQ(.method = "GET", .path = path));
        expect(r, 200, NULL);
        cr_assert_str_eq(r->etag, fx.replies[i].etag);
    }
    struct reply *r = call(REQ(.method = "PUT", .path = "/r/00", .body = "{}"));
    cr_assert_eq(etag_seq(r->etag), last + 1);
}

Test(embedded, close_finishes_queued_writes_and_answers_them)
{
    send_req(REQ(.method = "PUT", .path = "/c/a", .body = "{}"), NULL);
    send_req(REQ(.method = "POST", .path = "/c/", .body = "{\"id\":\"b\"}"), NULL);
    store_close();
    cr_assert_eq(fx.calls, 2);
    expect(&fx.replies[0], 201, NULL);
    expect(&fx.replies[1], 201, NULL);
    store_open();
    expect(call(REQ(.method = "GET", .path = "/c/b")), 200, "{\"id\":\"b\"}");
}

Test(embedded, cancelled_write_is_applied_without_a_callback)
{
    struct embedded_op *op;
    struct reply *cancelled = send_req(REQ(.method = "PUT", .path = "/x/a", .body = "{}"), &op);
    cr_assert_not_null(op);
    embedded_cancel(op);
    /* Ops complete in queue order, so once this one is answered the
     * cancelled one has been applied (and freed). */
    struct reply *after = call(REQ(.method = "PUT", .path = "/x/b", .body = "{}"));
    expect(after, 201, NULL);
    cr_assert_eq(cancelled->calls, 0);
    cr_assert_eq(fx.calls, 1);
    expect(call(REQ(.method = "GET", .path = "/x/a")), 200, "{\"id\":\"a\"}");
}

Test(embedded, check_reports_a_live_store)
{
    struct err err;

    cr_assert_eq(embedded_check(fx.st, &err), 0, "%s", err.msg);
    cr_assert_eq(embedded_check(NULL, &err), -1);
    cr_assert(strstr(err.msg, "not open") != NULL);
}

Test(embedded, open_reports_an_unusable_directory)
{
    struct embedded *st = NULL;
    struct err err;
    char file[160];

    snprintf(file, sizeof file, "%s/plain-file", fx.root);
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    fclose(f);
    cr_assert_eq(embedded_open(fx.base, file, &st, &err), -1);
    cr_assert(strstr(err.msg, file) != NULL, "%s", err.msg);
}

/* A write that LMDB cannot hold fails alone: it answers 500 with LMDB's
 * reason and is not visible, while the writes that shared its commit are
 * applied (each write is its own nested transaction); the store keeps
 * working. */
Test(embedded, write_lmdb_cannot_hold_fails_alone)
{
    static char big[300 * 1024 + 16];
    char paths[4][32];
    struct reply *r[4];
    struct err err;

    store_close();
    snprintf(fx.dir, sizeof fx.dir, "%s/small", fx.root);
    cr_assert_eq(embedded_open_sized(fx.base, fx.dir, 256 * 1024, &fx.st, &err), 0, "%s",
                 err.msg);
    strcpy(big, "{\"pad\":\"");
    memset(big + 8, 'p', 300 * 1024);
    strcpy(big + 8 + 300 * 1024, "\"}");
    /* Held, so the ops form at most two batches (what the committer took
     * before blocking, and the rest): the big one shares a batch with a valid
     * write either way. */
    struct holder h = hold_writer_lock(fx.dir);
    for (int i = 0; i < 4; i++) {
        snprintf(paths[i], sizeof paths[i], "/b/%d", i);
        r[i] = send_req(REQ(.method = "PUT", .path = paths[i], .body = i == 2 ? big : "{}"),
                        NULL);
    }
    release_writer_lock(h);
    drive(4);
    cr_assert_eq(r[2]->status, 500);
    cr_assert(strstr(r[2]->body, "MDB_MAP_FULL") != NULL, "%s", r[2]->body);
    expect(call(REQ(.method = "GET", .path = paths[2])), 404, NULL);
    for (int i = 0; i < 4; i++) {
        if (i == 2)
            continue;
        expect(r[i], 201, NULL);
        expect(call(REQ(.method = "GET", .path = paths[i])), 200, NULL);
    }
    expect(call(REQ(.method = "PUT", .path = "/b/after", .body = "{}")), 201, NULL);
}

/* A PUT of a body the caller checked already (the applier's documents from
 * the confirmed log) is scanned for its "id", not parsed; the outcome is
 * the same as for any PUT. */
Test(embedded, checked_put_answers_as_any_put)
{
    expect(call(REQ(.method = "PUT", .path = "/k/a", .body = "{\"v\":1.50}", .checked = true)),
           201, "{\"id\":\"a\",\"v\":1.50}");
    expect(call(REQ(.method = "PUT", .path = "/k/b", .body = "{}", .checked = true)), 201,
           "{\"id\":\"b\"}");
    expect(call(REQ(.method = "PUT", .path = "/k/c", .body = "{\"x\":{\"id\":1},\"id\":\"c\"}",
                    .checked = true)), 201, "{\"x\":{\"id\":1},\"id\":\"c\"}");
    struct reply *r = call(REQ(.method = "PUT", .path = "/k/d", .body = "{\"id\":\"e\"}",
                               .checked = true));
    expect(r, 400, NULL);
    cr_assert(strstr(r->body, "does not match") != NULL, "%s", r->body);
    /* Escapes and non-strings take the parsing path, with its answers. */
    expect(call(REQ(.method = "PUT", .path = "/k/f", .body = "{\"id\":\"\\u0066\"}",
                    .checked = true)), 201, NULL);
    expect(call(REQ(.method = "PUT", .path = "/k/g", .body = "{\"id\":7}", .checked = true)),
           400, NULL);
    expect(call(REQ(.method = "GET", .path = "/k/f")), 200, "{\"id\":\"\\u0066\"}");
}

/* ---- docpath, the pure part ---- */

Test(embedded, docpath_splits_collection_id_and_query)
{
    struct docpath dp;
    struct err err;

    cr_assert_eq(docpath_parse("/a/b/c%2Bd?x=1", 14, &dp, &err), 0, "%s", err.msg);
    cr_assert_eq(dp.coll_len, 5);
    cr_assert_eq(strncmp(dp.coll, "/a/b/", 5), 0);
    cr_assert_str_eq(dp.id, "c+d");
    cr_assert_eq(dp.query_len, 3);
    docpath_release(&dp);
    cr_assert_eq(docpath_parse("/a/?q/x", 7, &dp, &err), 0);
    cr_assert_null(dp.id);
    cr_assert_eq(dp.coll_len, 3);
    docpath_release(&dp);
    cr_assert_eq(docpath_parse("", 0, &dp, &err), -1);
    cr_assert_eq(docpath_parse("/a\0b/c", 6, &dp, &err), -1);
    cr_assert(strstr(err.msg, "NUL") != NULL);
}

Test(embedded, docpath_decodes_and_encodes_segments)
{
    char *out, *enc;
    size_t len;
    struct err err;

    cr_assert_eq(docpath_decode("a+b%41", 6, true, false, &out, &len, &err), 0);
    cr_assert_str_eq(out, "a bA");
    free(out);
    cr_assert_eq(docpath_decode("a+b", 3, false, false, &out, &len, &err), 0);
    cr_assert_str_eq(out, "a+b");
    free(out);
    cr_assert_eq(docpath_decode("%2f", 3, false, true, &out, &len, &err), 0);
    free(out);
    cr_assert_eq(docpath_decode("%2f", 3, false, false, &out, &len, &err), -1);
    cr_assert_eq(docpath_decode("%ED%A0%80", 9, false, false, &out, &len, &err), -1);
    cr_assert(strstr(err.msg, "UTF-8") != NULL);
    cr_assert_eq(docpath_decode("%", 1, false, false, &out, &len, &err), -1);
    enc = docpath_encode_segment("a b/\xc3\xa9~", 7);
    cr_assert_str_eq(enc, "a%20b%2F%C3%A9~");
    free(enc);
}

Test(embedded, docpath_utf8_rules)
{
    cr_assert(docpath_utf8_valid("h\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 10));
    cr_assert_not(docpath_utf8_valid("\xc0\xaf", 2));          /* overlong '/' */
    cr_assert_not(docpath_utf8_valid("\xe2\x82", 2));          /* truncated */
    cr_assert_not(docpath_utf8_valid("\xf4\x90\x80\x80", 4));  /* beyond U+10FFFF */
    char s[] = "a\xffz\xe2\x82";
    docpath_utf8_sanitize(s, strlen(s));
    cr_assert_str_eq(s, "a?z??");
}

Test(embedded, docpath_preconditions_decide_like_rfc9110)
{
    struct err err;

    cr_assert_eq(docpath_preconditions(NULL, NULL, NULL, &err), 0);
    cr_assert_eq(docpath_preconditions("\"1\"", NULL, "\"1\"", &err), 0);
    cr_assert_eq(docpath_preconditions(" \"3\" , \"1\"", NULL, "\"1\"", &err), 0);
    cr_assert_eq(docpath_preconditions("*", NULL, "\"1\"", &err), 0);
    cr_assert_eq(docpath_preconditions("*", NULL, NULL, &err), -1);
    cr_assert_eq(docpath_preconditions("W/\"1\"", NULL, "\"1\"", &err), -1);
    cr_assert_eq(docpath_preconditions("\"11\"", NULL, "\"1\"", &err), -1);
    cr_assert_eq(docpath_preconditions("garbage", NULL, "\"1\"", &err), -1);
    cr_assert_eq(docpath_preconditions(NULL, "*", NULL, &err), 0);
    cr_assert_eq(docpath_preconditions(NULL, "*", "\"1\"", &err), -1);
    cr_assert_eq(docpath_preconditions(NULL, "W/\"1\"", "\"1\"", &err), -1);
    cr_assert_eq(docpath_preconditions(NULL, "\"2\"", "\"1\"", &err), 0);
}

Test(embedded, docpath_list_query)
{
    struct docpath_list q;
    struct err err;

    cr_assert_eq(docpath_parse_list(NULL, 0, &q, &err), 0);
    cr_assert_eq(q.limit, 100);
    cr_assert_null(q.after);
    cr_assert_eq(docpath_parse_list("after=x&limit=7&after=a%2Fb&z", 29, &q, &err), 0);
    cr_assert_eq(q.limit, 7);
    cr_assert_str_eq(q.after, "a/b");
    docpath_list_release(&q);
    cr_assert_eq(docpath_parse_list("after=%00", 9, &q, &err), -1);
    cr_assert_null(q.after);
    cr_assert_eq(docpath_parse_list("limit=1001", 10, &q, &err), -1);
}

Test(embedded, docpath_etag_format)
{
    char tag[DOCPATH_ETAG_MAX];

    docpath_etag_format(26, tag);
    cr_assert_str_eq(tag, "\"1a\"");
    docpath_etag_format(UINT64_MAX, tag);
    cr_assert_str_eq(tag, "\"ffffffffffffffff\"");
}

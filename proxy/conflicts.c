/* conflicts: custom conflict resolution as the node drives it, and the
 * conflicts feed's HTTP surface, in every region:
 *   GET    {route}_conflicts?after=ID&limit=N  the container's feed, oldest first
 *   GET    {route}_conflicts/ID                one conflict
 *   DELETE {route}_conflicts/ID                the application has resolved it:
 *                                              removed in every region
 * A removal is decided by the hub, like a write: it appends a "dismissed"
 * entry to the confirmed log, and every region drops the conflict when it
 * applies that entry. A satellite forwards the DELETE to the hub's peer port
 * (DELETE /_meridian/v1/conflicts/CONTAINER/ID) and relays the answer. */
#include <jansson.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../replication/confirm.h"
#include "../replication/feed.h"
#include "../util/log.h"
#include "backend.h"
#include "downstream.h"
#include "node.h"
#include "repl.h"
#include "route.h"

#define FEED_PAGE_DEFAULT 100
#define FEED_PAGE_MAX 1000

static const char *const worker_argv[] = { "/proc/self/exe", "resolve", "--worker", NULL };

/* --- policies --------------------------------------------------------------- */

/* Each container's policy as the hub applies it, by name: an immutable
 * table, swapped whole on a reload (the committer thread reads it while
 * deciding), the old ones kept until close. */
struct policy_table {
    struct policy_table *retired;  /* tables in force before this one */
    size_t n;
    struct {
        const char *name;
        struct confirm_policy p;
    } items[];
};

static const struct confirm_policy *policy_of(void *ctx, const char *container)
{
    struct repl *r = ctx;
    const struct policy_table *t = __atomic_load_n(&r->policies, __ATOMIC_ACQUIRE);
    for (size_t i = 0; t && i < t->n; i++)
        if (strcmp(t->items[i].name, container) == 0)
            return t->items[i].p.custom ? &t->items[i].p : NULL;
    return NULL;
}

/* A container's first policy, recorded by the committer (never a write
 * transaction on the loop). */
struct policy_job {
    struct repl *r;
    char container[256], policy[300];
};

static int policy_apply(MDB_txn *txn, void *arg, struct err *err)
{
    struct policy_job *pj = arg;
    return feed_policy_put(txn, pj->r->j, pj->container, pj->policy, err);
}

static void policy_done(void *arg, int rc, const char *reason)
{
    struct policy_job *pj = arg;
    if (rc < 0)
        log_error("recording the policy of container '%s': %s", pj->container, reason);
    else
        log_info("container '%s' created with conflict policy '%s'", pj->container, pj->policy);
    free(pj);
}

/* The policy a container was created with may never change. */
static int policy_fixed(struct repl *r, const struct conf_container *ct, struct err *err)
{
    char now[300], stored[300];
    snprintf(now, sizeof now, "%s%s%s", conf_conflict_mode_name(ct->mode),
             ct->lww_path ? " on " : "", ct->lww_path ? ct->lww_path : "");
    int rc = feed_policy_get(r->j, ct->name, stored, sizeof stored);
    if (rc < 0)
        return err_set(err, "container '%s': its recorded policy cannot be read", ct->name);
    if (rc == 1 && strcmp(stored, now) != 0)
        return err_set(err,
                       "container '%s': conflict_resolution is '%s' in the configuration but "
                       "the container was created with '%s'; a container's conflict policy "
                       "(mode and path) is fixed when it is created: create a new container "
                       "for a new policy",
                       ct->name, now, stored);
    if (rc == 1)
        return 0;
    struct policy_job *pj = calloc(1, sizeof *pj);
    if (!pj)
        return err_set(err, "out of memory");
    pj->r = r;
    snprintf(pj->container, sizeof pj->container, "%s", ct->name);
    snprintf(pj->policy, sizeof pj->policy, "%s", now);
    if (committer_submit(r->j->committer, policy_apply, policy_done, pj, true) < 0) {
        free(pj);
        return err_set(err, "out of memory");
    }
    return 0;
}

/* Checks `conf`'s containers against the policies they were created with
 * (recording new ones), then puts its table in force. */
int conflicts_reload(struct repl *r, const struct conf *conf, struct err *err)
{
    struct policy_table *t = calloc(1, sizeof *t + conf->n_containers * sizeof t->items[0]);
    if (!t)
        return err_set(err, "out of memory");
    for (size_t i = 0; i < conf->n_containers; i++) {
        const struct conf_container *ct = &conf->containers[i];
        if (policy_fixed(r, ct, err) < 0) {
            free(t);
            return -1;
        }
        t->items[t->n].name = ct->name;
        t->items[t->n++].p = (struct confirm_policy){
            .custom = ct->mode == CONFLICT_CUSTOM, .procedure = ct->procedure,
            .metadata_field = ct->metadata_field,
            .limits = { conf->limits.procedure_timeout_ms, conf->limits.procedure_memory_bytes },
        };
    }
    t->retired = r->policies;
    __atomic_store_n(&r->policies, t, __ATOMIC_RELEASE);
    return 0;
}

int conflicts_init(struct repl *r, struct err *err)
{
    return conflicts_reload(r, r->node->conf, err);
}

void conflicts_close(struct repl *r)
{
    while (r->policies) {
        struct policy_table *t = r->policies;
        r->policies = t->retired;
        free(t);
    }
}

void conflicts_prepare(struct repl *r, struct confirm_batch *b)
{
    b->policy = policy_of;
    b->policy_ctx = r;
    b->worker_argv = worker_argv;
}

void conflicts_count(struct repl *r, const struct confirm_batch *b)
{
    for (int k = 0; k <= LWW_DELETE; k++)
        for (int o = 0; o < LWW_OUTCOMES; o++)
            r->stats.conflicts[k][o] += b->conflicts[k][o];
    r->stats.procedure_runs += b->procedure_runs;
    r->stats.procedure_failures += b->procedure_failures;
    r->stats.procedure_ms += b->procedure_ms;
    if (b->procedure_failures)
        log_warn("%u of %u resolver procedure run%s failed; the conflict%s went to the "
                 "conflicts feed",
                 b->procedure_failures, b->procedure_runs, b->procedure_runs == 1 ? "" : "s",
                 b->procedure_failures == 1 ? "" : "s");
}

/* --- the feed, read ---------------------------------------------------------- */

static void iso_time(uint64_t ms, char *buf, size_t cap)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, cap - n, ".%03uZ", (unsigned)(ms % 1000));
}

static json_t *doc_or_null(const char *doc)
{
    json_t *j = doc ? json_loads(doc, 0, NULL) : NULL;
    return j ? j : json_null();
}

static json_t *version_or_null(struct version v)
{
    char buf[VERSION_TEXT_MAX];
    version_format(v, buf);
    return buf[0] ? json_string(buf) : json_null();
}

/* A conflict as the feed shows it, from the confirmed-log entry that filed
 * it, read in txn; NULL when `id` is not a filed entry of `container`. */
static json_t *conflict_json(struct repl *r, MDB_txn *txn, const char *container, uint64_t id)
{
    struct clog_entry e;
    struct err err;
    if (!txn || journal_clog_get(txn, r->j, id, &e, &err) < 0)
        return NULL;
    json_t *j = NULL;
    if (e.outcome == LWW_FILED && strcmp(e.w.container, container) == 0) {
        char at[40];
        iso_time(HLC_MS(e.crts), at, sizeof at);
        j = json_pack("{s:I,s:s,s:s,s:s,s:o,s:s,s:b,s:o,s:{s:o,s:b,s:o},s:s}", "id",
                      (json_int_t)id, "container", container, "docId", e.w.id, "kind",
                      lww_conflict_name(e.conflict), "version",
                      version_or_null(repl_write_version(&e.w)), "region",
                      repl_region_name(r, e.w.origin), "isTombstone", e.w.is_delete, "content",
                      doc_or_null(e.w.doc), "head", "version", version_or_null(e.head),
                      "deleted", e.head_delete, "content", doc_or_null(e.head_doc),
                      "recordedAt", at);
        if (j && e.error)
            json_object_set_new(j, "error", json_string(e.error));
    }
    clog_entry_clear(&e);
    return j;
}

struct feed_page {
    struct repl *r;
    MDB_txn *txn;
    const char *container;
    json_t *list;
    size_t limit;
    uint64_t last;
};

static int feed_page_one(void *arg, uint64_t id)
{
    struct feed_page *fp = arg;
    json_t *j = conflict_json(fp->r, fp->txn, fp->container, id);
    if (j)
        json_array_append_new(fp->list, j);
    fp->last = id;
    return json_array_size(fp->list) >= fp->limit;
}

static void feed_list(struct repl *r, struct downstream *c, const struct conf_container *ct)
{
    const char *target = hdr_block_line(&downstream_request(c)->head);
    bool bad = false;
    uint64_t after = route_query_u64(target, "after", 0, &bad);
    uint64_t limit = route_query_u64(target, "limit", FEED_PAGE_DEFAULT, &bad);
    if (bad || limit == 0 || limit > FEED_PAGE_MAX) {
        downstream_reply_error(c, 400, "bad_request",
                               "_conflicts takes after=ID and limit=N (1..1000), both decimal");
        return;
    }
    struct feed_page fp = { r, journal_rtxn(r->j), ct->name, json_array(), limit, after };
    if (fp.txn)
        feed_scan(fp.txn, r->j, ct->name, after, feed_page_one, &fp);
    journal_rtxn_done(r->j);
    repl_reply_json(c, 200, json_pack("{s:s,s:o,s:I}", "container", ct->name, "conflicts", fp.list,
                                 "last", (json_int_t)fp.last));
}

static void feed_one(struct repl *r, struct downstream *c, const struct conf_container *ct,
                     uint64_t id)
{
    MDB_txn *txn = journal_rtxn(r->j);
    json_t *j = txn && feed_listed(txn, r->j, id) ? conflict_json(r, txn, ct->name, id) : NULL;
    journal_rtxn_done(r->j);
    if (!j) {
        char why[200];
        snprintf(why, sizeof why, "container '%s' has no conflict %llu in its feed", ct->name,
                 (unsigned long long)id);
        downstream_reply_error(c, 404, "not_found", why);
        return;
    }
    repl_reply_json(c, 200, j);
}

/* --- the feed, dismissed ------------------------------------------------------ */

struct dismiss_req {
    struct repl *r;
    struct downstream *c;          /* NULL once the client went away */
    struct backend_call *call;     /* a satellite's call to the hub */
    char *container;
    uint64_t id, crts;
    uint64_t crts_floor;
    bool found;
    char *answer;                  /* a satellite: the hub's 200, kept until the local removal */
    size_t answer_len;
};

static void dismiss_free(struct dismiss_req *d)
{
    if (d->c && downstream_backend(d->c)->dismiss == d)
        downstream_backend(d->c)->dismiss = NULL;
    free(d->container);
    free(d->answer);
    free(d);
}

void conflicts_detach(struct dismiss_req *d)
{
    if (!d)
        return;
    d->c = NULL;
    if (d->call) {
        backend_cancel(d->call);
        dismiss_free(d);
    } /* else a hub job: freed when it completes */
}

/* At the hub, on the committer thread: the filed entry leaves the feed and a
 * "dismissed" entry goes into the confirmed log, in one transaction. */
static int dismiss_apply(MDB_txn *txn, void *arg, struct err *err)
{
    struct dismiss_req *d = arg;
    struct journal *j = d->r->j;
    struct clog_entry f;
    struct err missing;
    d->found = false;
    if (journal_clog_get(txn, j, d->id, &f, &missing) < 0)
        return 0;
    bool listed = false;
    int rc = 0;
    if (f.outcome == LWW_FILED && strcmp(f.w.container, d->container) == 0)
        rc = feed_del(txn, j, d->id, &listed, err);
    if (rc == 0 && listed) {
        uint64_t last = journal_get_meta(txn, j, "last_crts");
        d->crts = last + 1 > d->crts_floor ? last + 1 : d->crts_floor;
        struct clog_entry e = { .crts = d->crts, .outcome = LWW_DISMISSED,
                                .conflict = f.conflict, .w = f.w, .conflict_id = d->id };
        char *text = clog_entry_text(&e);
        rc = text ? journal_put_clog(txn, j, d->crts, text, strlen(text), err)
                  : err_set(err, "out of memory");
        if (rc == 0)
            rc = journal_put_meta(txn, j, "last_crts", d->crts, err);
        free(text);
        d->found = rc == 0;
    }
    clog_entry_clear(&f);
    return rc;
}

static void dismiss_done(void *arg, int rc, const char *reason)
{
    struct dismiss_req *d = arg;
    struct repl *r = d->r;
    if (rc == 0 && d->found) {
        r->stats.conflicts_dismissed++;
        log_info("conflict %llu of container %s dismissed (crts %llu)",
                 (unsigned long long)d->id, d->container, (unsigned long long)d->crts);
        repl_log_grew(r, d->crts);
    }
    if (d->c) {
        char why[200];
        if (rc < 0)
            downstream_reply_error(d->c, 500, "journal_failed", reason);
        else if (!d->found) {
            snprintf(why, sizeof why, "container '%s' has no conflict %llu in its feed",
                     d->container, (unsigned long long)d->id);
            downstream_reply_error(d->c, 404, "not_found", why);
        } else
            repl_reply_json(d->c, 200, json_pack("{s:I,s:s,s:I}", "dismissed", (json_int_t)d->id,
                                            "container", d->container, "crts",
                                            (json_int_t)d->crts));
    }
    dismiss_free(d);
}

/* A satellite drops a conflict the hub dismissed from its own feed at once,
 * so that its client reads its removal here; applying the hub's entry later
 * finds it gone. */
static int dismiss_local_apply(MDB_txn *txn, void *arg, struct err *err)
{
    struct dismiss_req *d = arg;
    bool found;
    return feed_del(txn, d->r->j, d->id, &found, err);
}

static void dismiss_local_done(void *arg, int rc, const char *reason)
{
    struct dismiss_req *d = arg;
    if (rc < 0)
        log_warn("dropping conflict %llu from this region's feed: %s (it goes when the hub's "
                 "entry is applied)", (unsigned long long)d->id, reason);
    if (d->c)
        downstream_reply(d->c, 200, NULL, 0, "application/json", d->answer, d->answer_len);
    dismiss_free(d);
}

/* A satellite relays the hub's answer. */
static void dismiss_relayed(void *arg, const struct backend_answer *a)
{
    struct dismiss_req *d = arg;
    d->call = NULL;
    if (a->status == 200 && !d->r->closing && (d->answer = malloc(a->body_len + 1))) {
        memcpy(d->answer, a->body, a->body_len);
        d->answer_len = a->body_len;
        if (committer_submit(d->r->j->committer, dismiss_local_apply, dismiss_local_done, d,
                             false) == 0)
            return;
    }
    if (d->c && a->status == 0) {
        char why[400];
        snprintf(why, sizeof why, "the hub (%s) decides removals from the conflicts feed and "
                                  "could not be reached: %s",
                 d->r->hub->name, a->error ? a->error : "no answer");
        downstream_reply_error(d->c, 503, "hub_unreachable", why);
    } else if (d->c) {
        downstream_reply(d->c, a->status, NULL, 0, "application/json", a->body, a->body_len);
    }
    dismiss_free(d);
}

/* DELETE of conflict `id` of `container`, from a client or a satellite. */
static void dismiss(struct repl *r, struct downstream *c, const char *container, uint64_t id)
{
    struct dismiss_req *d = calloc(1, sizeof *d);
    if (d)
        d->container = strdup(container);
    if (!d || !d->container) {
        free(d);
        downstream_reply_error(c, 500, "internal", "out of memory");
        return;
    }
    *d = (struct dismiss_req){ .r = r, .c = c, .container = d->container, .id = id,
                               .crts_floor = repl_hlc_now(r) };
    downstream_backend(c)->dismiss = d;
    if (r->is_hub) {
        if (committer_submit(r->j->committer, dismiss_apply, dismiss_done, d, true) < 0)
            dismiss_done(d, -1, "out of memory");
        return;
    }
    if (!r->hub_pool) {
        dismiss_relayed(d, &(struct backend_answer){ .error = "shutting down" });
        return;
    }
    char path[700];
    snprintf(path, sizeof path, "/_meridian/v1/conflicts/%s/%llu", container,
             (unsigned long long)id);
    d->call = backend_http(r->node, r->hub_pool, "DELETE", path, NULL, 0, dismiss_relayed, d);
}

/* --- dispatch ------------------------------------------------------------------ */

/* A decimal id >= 1 filling s[0..len). */
static bool parse_id(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0 || len > 19 || s[0] == '0')
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

bool conflicts_route(struct downstream *c, const struct conf_container *ct)
{
    struct repl *r = downstream_node(c)->repl;
    const struct ds_request *req = downstream_request(c);
    const char *target = hdr_block_line(&req->head);
    size_t rl = strlen(ct->route), pl = route_path_len(target, req->head.line_len);
    static const char word[] = "_conflicts";
    size_t wl = sizeof word - 1;
    if (pl < rl + wl || memcmp(target + rl, word, wl) != 0 || (pl > rl + wl && target[rl + wl] != '/'))
        return false;
    const char *rest = target + rl + wl + 1;
    size_t rest_len = pl > rl + wl ? pl - rl - wl - 1 : 0;
    uint64_t id = 0;
    bool one = pl > rl + wl;
    if (one && !parse_id(rest, rest_len, &id))
        downstream_reply_error(c, 400, "bad_request",
                               "a conflict is named by its decimal id: {route}_conflicts/ID");
    else if (!one && req->method == HTTP_GET)
        feed_list(r, c, ct);
    else if (one && req->method == HTTP_GET)
        feed_one(r, c, ct, id);
    else if (one && req->method == HTTP_DELETE)
        dismiss(r, c, ct->name, id);
    else
        downstream_reply_error(c, 405, "method_not_allowed",
                               "the conflicts feed takes GET {route}_conflicts, GET and DELETE "
                               "{route}_conflicts/ID");
    return true;
}

void conflicts_peer_dismiss(struct repl *r, struct downstream *c, const char *rest, size_t len)
{
    const char *slash = memchr(rest, '/', len);
    char name[256];
    uint64_t id = 0;
    if (!slash || (size_t)(slash - rest) >= sizeof name ||
        !parse_id(slash + 1, len - (size_t)(slash - rest) - 1, &id)) {
        downstream_reply_error(c, 400, "bad_request",
                               "expected DELETE /_meridian/v1/conflicts/CONTAINER/ID");
        return;
    }
    memcpy(name, rest, (size_t)(slash - rest));
    name[slash - rest] = '\0';
    if (!r->is_hub)
        downstream_reply_error(c, 409, "not_hub", "this region is not the hub");
    else if (!conf_container_by_name(r->node->conf, name))
        downstream_reply_error(c, 404, "not_found", "no such container");
    else
        dismiss(r, c, name, id);
}

/* --- metrics --------------------------------------------------------------------- */

int conflicts_render(struct repl *r, struct sbuf *out)
{
    const char *region = r->self->name;
    const struct repl_stats *st = &r->stats;
    return sbuf_printf(
        out,
        "# HELP meridian_conflicts_feed Conflicts listed in this region's conflicts feeds.\n"
        "# TYPE meridian_conflicts_feed gauge\nmeridian_conflicts_feed{region=\"%s\"} %llu\n"
        "# HELP meridian_conflicts_dismissed_total Conflicts removed from the feed (hub only).\n"
        "# TYPE meridian_conflicts_dismissed_total counter\n"
        "meridian_conflicts_dismissed_total{region=\"%s\"} %llu\n"
        "# HELP meridian_procedure_runs_total Resolver procedure runs (hub only).\n"
        "# TYPE meridian_procedure_runs_total counter\n"
        "meridian_procedure_runs_total{region=\"%s\"} %llu\n"
        "# HELP meridian_procedure_failures_total Runs that threw, timed out, ran out of "
        "memory or returned no document; their conflicts went to the feed.\n"
        "# TYPE meridian_procedure_failures_total counter\n"
        "meridian_procedure_failures_total{region=\"%s\"} %llu\n"
        "# HELP meridian_procedure_seconds_total Time spent running procedures.\n"
        "# TYPE meridian_procedure_seconds_total counter\n"
        "meridian_procedure_seconds_total{region=\"%s\"} %.3f\n",
        region, (unsigned long long)feed_count(r->j), region,
        (unsigned long long)st->conflicts_dismissed, region,
        (unsigned long long)st->procedure_runs, region,
        (unsigned long long)st->procedure_failures, region, st->procedure_ms / 1000.0);
}

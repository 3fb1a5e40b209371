/* session: this region's progress as session tokens see it: the token of
 * an answer (the request's, merged with what this region has applied and,
 * for a write or a read of an own tentative write, its LSN), and the
 * per-origin marks of what is applied here, kept as entries are applied and
 * rebuilt at start-up. replication/consistency decides with them. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "downstream.h"
#include "node.h"
#include "repl.h"

int repl_request_token(const struct hdr_block *req, struct session_token *t, struct err *err)
{
    size_t n = 0;
    const char *h = hdr_block_get(req, "x-session-token", &n);
    if (!h)
        h = hdr_block_get(req, "x-ms-session-token", &n);
    memset(t, 0, sizeof *t);
    return h ? session_token_parse(h, n, t, err) : 0;
}

int repl_session_token(struct repl *r, const struct hdr_block *req, uint64_t lsn, uint64_t crts,
                       char *out, struct err *err)
{
    struct session_token t, mine = { .topology = r->topology,
                                     .confirmed = crts > r->j->applied_crts ? crts
                                                                             : r->j->applied_crts };
    if (repl_request_token(req, &t, err) < 0)
        return -1;
    if (lsn)
        session_token_note(&mine, r->self->id, lsn);
    session_token_merge(&t, &mine);
    session_token_format(&t, out);
    return 0;
}

void repl_add_token(struct repl *r, struct downstream *c, uint64_t lsn, uint64_t crts)
{
    char token[SESSION_TOKEN_TEXT_MAX];
    struct err err;
    if (repl_session_token(r, &downstream_request(c)->head, lsn, crts, token, &err) == 0)
        downstream_add_header(c, "X-Session-Token", token);
}

void repl_note_applied(struct repl *r, const struct clog_entry *e)
{
    if (e->outcome != LWW_DISMISSED && e->w.origin)
        session_token_note(&r->applied, e->w.origin, e->w.lsn);
    if (e->outcome != LWW_DISMISSED && e->w.origin == r->hub->id)
        hub_window_note(&r->hub_applied, e->w.lsn);
    r->applied.confirmed = r->j->applied_crts;
    if (!TAILQ_EMPTY(&r->write_waits) && e->w.origin == r->self->id) {
        writewait_decided(r, e);
        writewait_tick(r, node_now_ms(r->node));
    }
}

#define APPLIED_REBUILD_MAX 200000

struct applied_rebuild {
    struct repl *r;
    size_t missing;                /* regions whose mark is not found yet */
    bool hub_done;                 /* the hub's window is filled */
};

/* Walking back: notes hub write `lsn`; false once below the window. */
static bool hub_window_rebuild(struct hub_window *w, uint64_t lsn)
{
    if (w->max && w->max - lsn >= CONSISTENCY_HUB_WINDOW)
        return false;
    hub_window_note(w, lsn);
    return true;
}

static int applied_rebuild_one(void *arg, uint64_t crts, const char *json, size_t len)
{
    struct applied_rebuild *ab = arg;
    struct clog_entry e;
    struct err err;
    if (clog_entry_parse(json, len, &e, &err) == 0) {
        if (e.outcome != LWW_DISMISSED && e.w.origin == ab->r->hub->id)
            ab->hub_done = !hub_window_rebuild(&ab->r->hub_applied, e.w.lsn);
        if (e.outcome != LWW_DISMISSED && !session_token_lsn(&ab->r->applied, e.w.origin) &&
            repl_region_index(ab->r, e.w.origin) >= 0) {
            session_token_note(&ab->r->applied, e.w.origin, e.w.lsn);
            ab->missing--;
        }
        clog_entry_clear(&e);
    }
    (void)crts;
    return ab->missing == 0 && ab->hub_done;
}

/* The per-origin applied marks, from the newest applied entries backwards
 * (an origin's writes are decided in LSN order, so its newest applied entry
 * carries its mark). An origin not met within the bound counts as 0: its
 * writes named by a token are then looked for elsewhere, never assumed. */
void repl_applied_rebuild(struct repl *r)
{
    struct applied_rebuild ab = { r, r->node->conf->n_regions, r->is_hub };
    r->applied.confirmed = r->j->applied_crts;
    if (r->j->applied_crts)
        journal_scan_clog_back(r->j, r->j->applied_crts, APPLIED_REBUILD_MAX, applied_rebuild_one,
                               &ab);
}


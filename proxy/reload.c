/* reload: the configuration file read again on SIGHUP and when it changes
 * on disk (its size, mtime or inode, checked every maintenance tick), then
 * validated as a whole and swapped in at once, or refused with the file,
 * line and reason in the log and in meridian_config_reloads_total{result}.
 *
 * What reloads: containers added and removed (an existing container's
 * route, partition key, conflict policy, metadata field and profile stay
 * as created), procedures, the default consistency and its bounds, the
 * session/forwarding knobs, clock drift, limits and timeouts, proxy.unmatched,
 * log settings, a region's HTTP backend URL, and the regions themselves:
 * added, removed, reordered (which moves the hub), another region's peer
 * address (topology.c carries the change out). What does not (the reload
 * is refused and says so): multi_region_writes, this region's own listen
 * and peer addresses, data directory and kind of backend, and a region's
 * id.
 *
 * Requests in flight keep the container they started with: every
 * configuration ever in force stays allocated until the process exits (a
 * few kilobytes a reload). Limits and timeouts apply from the swap on. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../util/log.h"
#include "node.h"
#include "repl.h"
#include "upstream.h"

struct retired {
    struct retired *next;
    struct conf *conf;
};

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static int fixed_containers(const struct conf *a, const struct conf *b, char *why, size_t cap)
{
    for (size_t i = 0; i < b->n_containers; i++) {
        const struct conf_container *y = &b->containers[i];
        const struct conf_container *x = conf_container_by_name(a, y->name);
        if (!x)
            continue; /* a new container */
        const char *field =
            x->mode != y->mode || !same_str(x->lww_path, y->lww_path) ? "conflict_resolution"
            : x->auto_version != y->auto_version ? "conflict_resolution.auto_version"
            : strcmp(x->route, y->route)         ? "route"
            : strcmp(x->partition_key, y->partition_key) ? "partition_key"
            : strcmp(x->metadata_field, y->metadata_field) ? "metadata_field"
            : x->profile != y->profile           ? "backend_profile"
                                                 : NULL;
        if (field) {
            snprintf(why, cap, "%s:%d: containers[%zu].%s: '%s' was created with another %s; "
                               "a container's conflict policy, route and document layout are "
                               "fixed when it is created: create a new container instead",
                     b->path, y->line, i, field, y->name, field);
            return -1;
        }
    }
    return 0;
}

struct retired_pool {
    struct retired_pool *next;
    struct upstream_pool *pool;
};

void node_retire_pool(struct node *n, struct upstream_pool *pool)
{
    struct retired_pool *old = malloc(sizeof *old);
    if (!old) {
        upstream_pool_free(pool); /* what it has in flight fails */
        return;
    }
    *old = (struct retired_pool){ n->retired_pools, pool };
    n->retired_pools = old;
}

/* This region's backend moved: new requests go to a new pool; the old one
 * finishes what it has in flight (swept by node_sweep_retired). */
static int swap_backend(struct node *n, const struct conf_region *now, char *why, size_t cap)
{
    if (!n->pool || !now || same_str(n->region->backend_url, now->backend_url))
        return 0;
    struct upstream_pool *pool = NULL;
    struct err err;
    if (upstream_pool_new(n, now->backend_url, now->backend.host, now->backend.port, &pool,
                          &err) < 0) {
        snprintf(why, cap, "regions: the new backend %s: %s", now->backend_url, err.msg);
        return -1;
    }
    node_retire_pool(n, n->pool);
    log_info("backend of region %s: %s from now on (was %s)", now->name, now->backend_url,
             upstream_pool_name(n->pool));
    n->pool = pool;
    return 0;
}

void node_sweep_retired(struct node *n, uint64_t now)
{
    for (struct retired_pool **p = &n->retired_pools; *p;) {
        struct retired_pool *rp = *p;
        upstream_sweep(rp->pool, now);
        if (!upstream_pool_unused(rp->pool) && n->state != NODE_STOPPED) {
            p = &rp->next;
            continue;
        }
        *p = rp->next;
        upstream_pool_free(rp->pool);
        free(rp);
    }
}

static void refuse(struct node *n, const char *cause, const char *why)
{
    n->stats.reloads_refused++;
    log_error("configuration reload refused (%s), still serving the previous one: %s", cause,
              why);
}

/* Notes the file's identity (inode, size, mtime); true when it differs
 * from the one noted before. */
static bool note_file(struct node *n)
{
    struct stat st;
    if (stat(n->conf->path, &st) != 0)
        return false; /* gone for a moment (being replaced): look again next tick */
    long long mtime_ns = (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
    bool changed = n->watch.ino != st.st_ino || n->watch.size != st.st_size ||
                   n->watch.mtime_ns != mtime_ns;
    bool first = n->watch.ino == 0; /* (the file could not be read at start) */
    n->watch.ino = st.st_ino;
    n->watch.size = st.st_size;
    n->watch.mtime_ns = mtime_ns;
    return changed && !first;
}

int node_reload(struct node *n, const char *cause)
{
    struct conf *next = NULL;
    struct err err;
    char why[700];
    /* The file read now is the one the watcher has seen: a SIGHUP after an
     * edit reloads (or refuses) it once, not once more on the next tick. */
    note_file(n);
    if (conf_load(n->conf->path, &next, &err) < 0) {
        refuse(n, cause, err.msg);
        return -1;
    }
    if (next->multi_region_writes != n->conf->multi_region_writes) {
        snprintf(why, sizeof why, "%s: account.multi_region_writes: changed; it needs a restart "
                                  "of every region", next->path);
        goto refused;
    }
    if (topology_reload_check(n->repl, next, &err) < 0) {
        snprintf(why, sizeof why, "%s", err.msg);
        goto refused;
    }
    if (fixed_containers(n->conf, next, why, sizeof why) < 0)
        goto refused;
    struct retired *old = malloc(sizeof *old);
    if (!old) {
        snprintf(why, sizeof why, "out of memory");
        goto refused;
    }
    const struct conf_region *self = conf_region_by_name(next, n->region->name);
    if (swap_backend(n, self, why, sizeof why) < 0) {
        free(old);
        goto refused;
    }
    if (repl_reload(n->repl, next, &err) < 0) { /* the last check: then it is in force */
        free(old);
        snprintf(why, sizeof why, "%s", err.msg);
        goto refused;
    }
    *old = (struct retired){ n->retired, n->conf };
    n->retired = old;
    n->conf = next;
    if (self) /* a region removed from the file keeps its old entry (topology.c) */
        n->region = self;
    topology_swapped(n->repl, old->conf, self);
    enum log_level level;
    if (next->log_level && log_level_parse(next->log_level, &level) == 0)
        log_set_level(level);
    n->stats.reloads_ok++;
    log_info("configuration reloaded (%s): %zu container%s, consistency %s", cause,
             next->n_containers, next->n_containers == 1 ? "" : "s",
             conf_consistency_name(next->consistency));
    return 0;
refused:
    conf_free(next);
    refuse(n, cause, why);
    return -1;
}

/* The file's identity: a reload when it changes (an editor's rename, a
 * rewrite in place). */
void node_watch_config(struct node *n)
{
    if (note_file(n))
        node_reload(n, "the file changed");
}

const char *node_region_name_ever(const struct node *n, uint32_t id)
{
    for (const struct retired *r = n->retired; r; r = r->next)
        for (size_t i = 0; i < r->conf->n_regions; i++)
            if (r->conf->regions[i].id == id)
                return r->conf->regions[i].name;
    return "unknown";
}

void node_free_retired(struct node *n)
{
    while (n->retired) {
        struct retired *r = n->retired;
        n->retired = r->next;
        conf_free(r->conf);
        free(r);
    }
}

/* conf_rules: the configuration's rules that involve more than one key
 * (unique names, ids and addresses, overlapping routes, a container's policy
 * as a whole, strong consistency with multi-region writes) and the defaults
 * derived from other keys; run after the walk of conf.c, blaming the line of
 * the dotted path they print. */
#define _DEFAULT_SOURCE /* realpath() */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf_parse.h"

/* Defaults that depend on other keys. */
static int derive_defaults(struct parse *p, struct conf *c)
{
    for (size_t i = 0; i < c->n_regions; i++) {
        struct conf_region *r = &c->regions[i];
        size_t size = strlen(r->name) + sizeof "./data/";
        if (r->data_dir)
            continue;
        if (!(r->data_dir = malloc(size)))
            return fail_field(p, "regions", i, "data_dir", "out of memory");
        snprintf(r->data_dir, size, "./data/%s", r->name);
    }
    for (size_t i = 0; i < c->n_containers; i++) {
        struct conf_container *ct = &c->containers[i];
        /* CouchDB refuses top-level fields that start with '_'. */
        const char *def = ct->profile == PROFILE_COUCHDB ? "meridian" : "_meridian";
        if (!ct->metadata_field && !(ct->metadata_field = strdup(def)))
            return fail_field(p, "containers", i, "metadata_field", "out of memory");
    }
    return 0;
}

static int check_account(struct parse *p, const struct conf *c)
{
    if (c->consistency == CONS_STRONG && c->multi_region_writes)
        return fail(p, (struct at){ "account.consistency", line_at(p, "account.consistency") },
                    "'strong' is not allowed with multi_region_writes: true");
    return 0;
}

static int check_regions(struct parse *p, const struct conf *c)
{
    for (size_t i = 0; i < c->n_regions; i++) {
        const struct conf_region *r = &c->regions[i];
        for (size_t j = 0; j < i; j++) {
            if (strcmp(r->name, c->regions[j].name) == 0)
                return fail_field(p, "regions", i, "name", "'%s' is already the name of regions[%zu]",
                                  r->name, j);
            if (r->id == c->regions[j].id)
                return fail_field(p, "regions", i, "id", "%u is already the id of regions[%zu]",
                                  (unsigned)r->id, j);
        }
    }
    return 0;
}

static const char *const addr_keys[] = { "listen", "peer_listen" };

/* Every region's listen and peer_listen, numbered 2*region + (0 listen, 1 peer). */
static const struct conf_addr *region_addr(const struct conf *c, size_t e)
{
    const struct conf_region *r = &c->regions[e / 2];
    return e % 2 ? &r->peer_listen : &r->listen;
}

static bool addr_same(const struct conf_addr *a, const struct conf_addr *b)
{
    return a->port == b->port && strcasecmp(a->host, b->host) == 0;
}

static int check_addresses(struct parse *p, const struct conf *c)
{
    for (size_t e = 0; e < 2 * c->n_regions; e++)
        for (size_t f = 0; f < e; f++)
            if (addr_same(region_addr(c, e), region_addr(c, f)))
                return fail_field(p, "regions", e / 2, addr_keys[e % 2],
                                  "%s is already used by regions[%zu].%s",
                                  region_addr(c, e)->text, f / 2, addr_keys[f % 2]);
    for (size_t i = 0; i < c->n_regions; i++)
        for (size_t f = 0; !c->regions[i].backend_embedded && f < 2 * c->n_regions; f++)
            if (addr_same(&c->regions[i].backend, region_addr(c, f)))
                return fail_field(p, "regions", i, "backend",
                                  "%s is regions[%zu].%s: Meridian would forward to itself",
                                  c->regions[i].backend.text, f / 2, addr_keys[f % 2]);
    return 0;
}

static bool routes_overlap(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    return strncmp(a, b, la < lb ? la : lb) == 0;
}

/* A procedure's path is relative to the directory of the configuration
 * file; it is kept absolute, and must name a readable file now. */
static int resolve_procedure(struct parse *p, struct conf_container *ct, size_t i)
{
    char joined[PATH_MAX], real[PATH_MAX];
    const char *slash = strrchr(p->file, '/');
    if (ct->procedure[0] == '/' || !slash)
        snprintf(joined, sizeof joined, "%s", ct->procedure);
    else
        snprintf(joined, sizeof joined, "%.*s/%s", (int)(slash - p->file), p->file, ct->procedure);
    struct stat st;
    const char *why = NULL;
    if (!realpath(joined, real) || stat(real, &st) != 0 || access(real, R_OK) != 0)
        why = strerror(errno);
    else if (!S_ISREG(st.st_mode))
        why = "not a regular file";
    if (why)
        return fail_field(p, "containers", i, "conflict_resolution.procedure",
                          "cannot read '%s': %s", joined, why);
    char *abs = strdup(real);
    if (!abs)
        return fail_field(p, "containers", i, "conflict_resolution.procedure", "out of memory");
    free(ct->procedure);
    ct->procedure = abs;
    return 0;
}

/* The rules of one container alone. */
static int check_policy(struct parse *p, struct conf_container *ct, size_t i)
{
    if (ct->mode == CONFLICT_CUSTOM && ct->lww_path)
        return fail_field(p, "containers", i, "conflict_resolution.path",
                          "only used with mode: last_writer_wins (a custom container's "
                          "conflicts go to its procedure or its conflicts feed)");
    if (ct->procedure && ct->mode == CONFLICT_CUSTOM)
        return resolve_procedure(p, ct, i);
    if (ct->procedure && ct->mode != CONFLICT_CUSTOM)
        return fail_field(p, "containers", i, "conflict_resolution.procedure",
                          "only used with mode: custom");
    if (ct->auto_version && (ct->mode != CONFLICT_LAST_WRITER_WINS || !ct->lww_path))
        return fail_field(p, "containers", i, "conflict_resolution.auto_version",
                          "needs mode: last_writer_wins and a path to write the version into");
    if (ct->profile == PROFILE_COUCHDB && ct->metadata_field[0] == '_')
        return fail_field(p, "containers", i, "metadata_field",
                          "'%s': CouchDB refuses document fields that start with '_'",
                          ct->metadata_field);
    return 0;
}

static int check_containers(struct parse *p, struct conf *c)
{
    for (size_t i = 0; i < c->n_containers; i++) {
        struct conf_container *ct = &c->containers[i];
        if (check_policy(p, ct, i) < 0)
            return -1;
        for (size_t j = 0; j < i; j++) {
            const struct conf_container *other = &c->containers[j];
            if (strcmp(ct->name, other->name) == 0)
                return fail_field(p, "containers", i, "name",
                                  "'%s' is already the name of containers[%zu]", ct->name, j);
            if (routes_overlap(ct->route, other->route))
                return fail_field(p, "containers", i, "route",
                                  "'%s' overlaps '%s', the route of containers[%zu]", ct->route,
                                  other->route, j);
        }
    }
    return 0;
}

int conf_check_rules(struct parse *p, struct conf *c)
{
    if (derive_defaults(p, c) < 0 || check_account(p, c) < 0 || check_regions(p, c) < 0 ||
        check_addresses(p, c) < 0 || check_containers(p, c) < 0)
        return -1;
    return 0;
}

/* conf: reads the cluster's one YAML file into a validated struct conf.
 *
 * Every key is declared once, in the tables below: its name, its kind, where
 * its value goes, its default, and whether a reload may change it. One walker
 * reads any table (parse_map), one releases any table (release_map), so
 * adding a key is adding a row. Rules that involve more than one key run after
 * the walk (conf_rules.c), and find the line they blame through the same
 * dotted path they print. Every message is "FILE:LINE: KEY: what is wrong". */
#define _DEFAULT_SOURCE /* strndup(), strncasecmp() */
#include "conf.h"
#include "conf_parse.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#define CONF_MAX_FILE  (1024 * 1024) /* a config past this is the wrong file */
#define MAX_KEYS       16            /* keys in one table; DEFINE_TABLE checks */

/* What a value is and how it is read; MAP and SEQ nest another table. */
enum kind {
    K_MAP, K_SEQ,   /* nested table; a sequence of tables */
    K_STR,          /* non-empty string */
    K_IDENT,        /* name: letters, digits, '-', '_' */
    K_BOOL,         /* true | false */
    K_U32, K_U64,   /* decimal, within [min, max] */
    K_ENUM,         /* one of `words`, stored as its index */
    K_WORD,         /* one of `words`, stored as a string */
    K_POINTER,      /* JSON pointer */
    K_ROUTE,        /* URL path prefix, "/.../" */
    K_ADDR,         /* host:port into a struct conf_addr */
    K_BACKEND,      /* embedded | http://host:port[/base]: fills three region fields */
};

#define REQUIRED   1u /* no default: the file must say it */
#define RELOADABLE 2u /* a reload may change it (sequences: add and remove entries) */

struct conf_table;

struct conf_key {
    const char *name;
    enum kind kind;
    size_t off;                     /* field offset in the object the table fills */
    const char *def;                /* default, written as in the file; NULL: none */
    unsigned flags;
    uint64_t min, max;              /* integers (max 0: the field's limit); sequences: min entries */
    const char *const *words;       /* K_ENUM, K_WORD: allowed words, NULL-terminated */
    const struct conf_table *sub;   /* K_MAP, K_SEQ */
    size_t count_off;               /* K_SEQ: where the entry count goes */
};

/* A mapping's keys. A nested mapping fills the same object as its parent;
 * a sequence's entries are objects of `size` bytes with their line at line_off. */
struct conf_table {
    const struct conf_key *keys;
    size_t n;
    size_t size;
    size_t line_off;
};

#define N_KEYS(keys) (sizeof(keys) / sizeof((keys)[0]))
#define DEFINE_TABLE(tname, keys, size, line_off)                              \
    _Static_assert(N_KEYS(keys) <= MAX_KEYS, #keys " has more than MAX_KEYS"); \
    static const struct conf_table tname = { keys, N_KEYS(keys), size, line_off }
#define KEY(n, k, o, d, f, ...) \
    { .name = n, .kind = k, .off = o, .def = d, .flags = f, __VA_ARGS__ }

#define IN_CONF(f)      offsetof(struct conf, f)
#define IN_REGION(f)    offsetof(struct conf_region, f)
#define IN_CONTAINER(f) offsetof(struct conf_container, f)

_Static_assert(sizeof(enum consistency) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum conflict_mode) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum backend_profile) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum unmatched_policy) == sizeof(int), "enums are stored as int");

static const char *const consistency_words[] = {
    [CONS_EVENTUAL] = "eventual", [CONS_CONSISTENT_PREFIX] = "consistent_prefix",
    [CONS_SESSION] = "session", [CONS_BOUNDED_STALENESS] = "bounded_staleness",
    [CONS_STRONG] = "strong", [CONS_STRONG + 1] = NULL,
};
static const char *const mode_words[] = {
    [CONFLICT_LAST_WRITER_WINS] = "last_writer_wins", [CONFLICT_CUSTOM] = "custom",
    [CONFLICT_CUSTOM + 1] = NULL,
};
static const char *const profile_words[] = {
    [PROFILE_GENERIC] = "generic", [PROFILE_COUCHDB] = "couchdb", [PROFILE_COUCHDB + 1] = NULL,
};
static const char *const unmatched_words[] = {
    [UNMATCHED_PASS] = "pass", [UNMATCHED_REFUSE] = "refuse", [UNMATCHED_REFUSE + 1] = NULL,
};
static const char *const level_words[] = { "debug", "info", "warn", "error", NULL };

/* ---- the tables: every key of the file, once ---- */

static const struct conf_key staleness_keys[] = {
    KEY("max_lag_versions", K_U64, IN_CONF(max_lag_versions), "100000", RELOADABLE, .min = 1),
    KEY("max_lag_seconds", K_U32, IN_CONF(max_lag_seconds), "300", RELOADABLE, .min = 1),
};
DEFINE_TABLE(staleness_table, staleness_keys, 0, 0);

static const struct conf_key account_keys[] = {
    KEY("multi_region_writes", K_BOOL, IN_CONF(multi_region_writes), "true", 0),
    KEY("consistency", K_ENUM, IN_CONF(consistency), "session", RELOADABLE,
        .words = consistency_words),
    KEY("bounded_staleness", K_MAP, 0, NULL, 0, .sub = &staleness_table),
    KEY("max_clock_drift_ms", K_U32, IN_CONF(max_clock_drift_ms), "60000", RELOADABLE, .min = 1),
    KEY("session_wait_ms", K_U32, IN_CONF(session_wait_ms), "1000", RELOADABLE, .max = 60000),
    KEY("forward_fanout", K_U32, IN_CONF(forward_fanout), "1", RELOADABLE, .min = 1, .max = 8),
    KEY("forward_timeout_ms", K_U32, IN_CONF(forward_timeout_ms), "5000", RELOADABLE, .min = 1,
        .max = 120000),
};
DEFINE_TABLE(account_table, account_keys, 0, 0);

static const struct conf_key region_keys[] = {
    KEY("name", K_IDENT, IN_REGION(name), NULL, REQUIRED),
    KEY("id", K_U32, IN_REGION(id), NULL, REQUIRED, .min = 1, .max = 65535),
    KEY("listen", K_ADDR, IN_REGION(listen), NULL, REQUIRED),
    KEY("peer_listen", K_ADDR, IN_REGION(peer_listen), NULL, REQUIRED),
    KEY("backend", K_BACKEND, 0, NULL, REQUIRED),
    KEY("data_dir", K_STR, IN_REGION(data_dir), NULL, 0), /* default ./data/<name>: derive_defaults */
};
DEFINE_TABLE(region_table, region_keys, sizeof(struct conf_region), IN_REGION(line));

static const struct conf_key resolution_keys[] = {
    KEY("mode", K_ENUM, IN_CONTAINER(mode), NULL, REQUIRED, .words = mode_words),
    KEY("path", K_POINTER, IN_CONTAINER(lww_path), NULL, 0),
    KEY("auto_version", K_BOOL, IN_CONTAINER(auto_version), "false", 0),
    KEY("procedure", K_STR, IN_CONTAINER(procedure), NULL, RELOADABLE),
};
DEFINE_TABLE(resolution_table, resolution_keys, 0, 0);

static const struct conf_key container_keys[] = {
    KEY("name", K_IDENT, IN_CONTAINER(name), NULL, REQUIRED),
    KEY("route", K_ROUTE, IN_CONTAINER(route), NULL, REQUIRED),
    KEY("partition_key", K_POINTER, IN_CONTAINER(partition_key), NULL, REQUIRED),
    KEY("conflict_resolution", K_MAP, 0, NULL, REQUIRED, .sub = &resolution_table),
    /* default "_meridian", or "meridian" for couchdb: derive_defaults */
    KEY("metadata_field", K_STR, IN_CONTAINER(metadata_field), NULL, 0),
    KEY("backend_profile", K_ENUM, IN_CONTAINER(profile), "generic", 0, .words = profile_words),
};
DEFINE_TABLE(container_table, container_keys, sizeof(struct conf_container), IN_CONTAINER(line));

#define LIMIT(name, def, least) \
    KEY(#name, K_U32, IN_CONF(limits.name), def, RELOADABLE, .min = least)
static const struct conf_key limits_keys[] = {
    LIMIT(max_header_bytes, "16384", 1024),
    LIMIT(max_body_bytes, "1048576", 1),
    LIMIT(header_timeout_ms, "10000", 1),
    LIMIT(idle_timeout_ms, "60000", 1),
    LIMIT(upstream_connect_timeout_ms, "3000", 1),
    LIMIT(upstream_response_timeout_ms, "30000", 1),
    LIMIT(upstream_pool_size, "128", 1),
    LIMIT(max_connections, "10000", 1),
    LIMIT(drain_timeout_ms, "30000", 1),
    LIMIT(procedure_timeout_ms, "1000", 10),
    LIMIT(procedure_memory_bytes, "33554432", 1048576),
};
DEFINE_TABLE(limits_table, limits_keys, 0, 0);

static const struct conf_key proxy_keys[] = {
    KEY("unmatched", K_ENUM, IN_CONF(unmatched), "pass", RELOADABLE, .words = unmatched_words),
};
DEFINE_TABLE(proxy_table, proxy_keys, 0, 0);

static const struct conf_key log_keys[] = {
    KEY("level", K_WORD, IN_CONF(log_level), "info", RELOADABLE, .words = level_words),
    KEY("access", K_BOOL, IN_CONF(access_log), "false", RELOADABLE),
};
DEFINE_TABLE(log_table, log_keys, 0, 0);

static const struct conf_key root_keys[] = {
    KEY("account", K_MAP, 0, NULL, 0, .sub = &account_table),
    KEY("regions", K_SEQ, IN_CONF(regions), NULL, REQUIRED | RELOADABLE, .sub = &region_table,
        .count_off = IN_CONF(n_regions), .min = 1),
    KEY("containers", K_SEQ, IN_CONF(containers), NULL, RELOADABLE, .sub = &container_table,
        .count_off = IN_CONF(n_containers)),
    KEY("limits", K_MAP, 0, NULL, 0, .sub = &limits_table),
    KEY("proxy", K_MAP, 0, NULL, 0, .sub = &proxy_table),
    KEY("log", K_MAP, 0, NULL, 0, .sub = &log_table),
};
DEFINE_TABLE(root_table, root_keys, 0, 0);

/* ---- messages ---- */

static int vfail(struct parse *p, struct at at, const char *fmt, va_list ap)
{
    char why[400];
    vsnprintf(why, sizeof why, fmt, ap);
    return err_set(p->err, "%s:%d: %s: %s", p->file, at.line,
                   at.path[0] ? at.path : "(top level)", why);
}

int fail(struct parse *p, struct at at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(p, at, fmt, ap);
    va_end(ap);
    return -1;
}

static int line_of(const yaml_node_t *n)
{
    return (int)n->start_mark.line + 1;
}

static const char *text_of(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

/* The value stored under key[0..len) in a mapping node, or NULL. */
static yaml_node_t *map_value(yaml_document_t *doc, const yaml_node_t *map, const char *key,
                              size_t len)
{
    if (map->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start;
         pair < map->data.mapping.pairs.top; pair++) {
        const yaml_node_t *k = yaml_document_get_node(doc, pair->key);
        if (k->type == YAML_SCALAR_NODE && k->data.scalar.length == len &&
            memcmp(k->data.scalar.value, key, len) == 0)
            return yaml_document_get_node(doc, pair->value);
    }
    return NULL;
}

static yaml_node_t *seq_item(yaml_document_t *doc, const yaml_node_t *seq, size_t i)
{
    if (seq->type != YAML_SEQUENCE_NODE ||
        i >= (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start))
        return NULL;
    return yaml_document_get_node(doc, seq->data.sequence.items.start[i]);
}

/* The line of the value at a dotted path such as "containers[1].route", or of
 * the deepest part of it the file has (a defaulted key has no line of its own). */
int line_at(const struct parse *p, const char *path)
{
    yaml_node_t *n = yaml_document_get_root_node(p->doc);
    int line = n ? line_of(n) : 1;
    while (n && *path) {
        if (*path == '[') {
            char *end;
            n = seq_item(p->doc, n, strtoul(path + 1, &end, 10));
            path = *end ? end + 1 : end;
        } else {
            size_t len = strcspn(path, ".[");
            n = map_value(p->doc, n, path, len);
            path += len;
        }
        if (*path == '.')
            path++;
        if (n)
            line = line_of(n);
    }
    return line;
}

/* Fails at "SEQ[I].KEY", on the line that key has in the file. */
int fail_field(struct parse *p, const char *seq, size_t i, const char *key, const char *fmt,
               ...)
{
    char path[CONF_PATH_LEN];
    snprintf(path, sizeof path, "%s[%zu].%s", seq, i, key);
    va_list ap;
    va_start(ap, fmt);
    vfail(p, (struct at){ path, line_at(p, path) }, fmt, ap);
    va_end(ap);
    return -1;
}

/* YAML's null: an empty or ~/null plain scalar. */
static bool is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *s = text_of(n);
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") ||
           !strcmp(s, "NULL");
}

/* "a mapping", "a sequence", "nothing" or the scalar quoted, for "found ..." */
static const char *describe(const yaml_node_t *n, char *buf, size_t len)
{
    if (n->type == YAML_MAPPING_NODE)
        return "a mapping";
    if (n->type == YAML_SEQUENCE_NODE)
        return "a sequence";
    if (is_null(n))
        return "nothing";
    snprintf(buf, len, "'%s'", text_of(n));
    return buf;
}

static const char *join(char *buf, size_t len, const char *path, const char *key)
{
    snprintf(buf, len, "%s%s%s", path, path[0] ? "." : "", key);
    return buf;
}

/* "a, b or c" */
static const char *word_list(const char *const *words, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; words[i] && used < len; i++) {
        const char *sep = i == 0 ? "" : words[i + 1] ? ", " : " or ";
        used += (size_t)snprintf(buf + used, len - used, "%s%s", sep, words[i]);
    }
    return buf;
}

static int word_index(const char *const *words, const char *s)
{
    for (int i = 0; words[i]; i++)
        if (strcmp(words[i], s) == 0)
            return i;
    return -1;
}

static uint64_t int_max(const struct conf_key *k)
{
    if (k->max)
        return k->max;
    return k->kind == K_U32 ? UINT32_MAX : UINT64_MAX;
}

/* What a key accepts, for "expected ..." */
static const char *expectation(const struct conf_key *k, char *buf, size_t len)
{
    static const char *const what[] = {
        [K_MAP] = "a mapping", [K_SEQ] = "a sequence", [K_STR] = "a string",
        [K_IDENT] = "a name", [K_BOOL] = "true or false",
        [K_POINTER] = "a JSON pointer such as /tenantId", [K_ROUTE] = "a route such as /orders/",
        [K_ADDR] = "host:port", [K_BACKEND] = "embedded or an http://host:port URL",
    };
    if (k->kind == K_ENUM || k->kind == K_WORD)
        return word_list(k->words, buf, len);
    if (k->kind != K_U32 && k->kind != K_U64)
        return what[k->kind];
    if (int_max(k) != (k->kind == K_U32 ? UINT32_MAX : UINT64_MAX))
        snprintf(buf, len, "an integer from %llu to %llu", (unsigned long long)k->min,
                 (unsigned long long)int_max(k));
    else if (k->min > 1)
        snprintf(buf, len, "an integer of at least %llu", (unsigned long long)k->min);
    else
        snprintf(buf, len, "a positive integer");
    return buf;
}

/* ---- scalar kinds: read one value into its field, release it ---- */

static int store_str(struct parse *p, struct at at, const char *text, void *field)
{
    char *s = strdup(text);
    if (!s)
        return fail(p, at, "out of memory");
    *(char **)field = s;
    return 0;
}

static int parse_str(struct parse *p, const struct conf_key *k, struct at at, const char *text,
                     void *field)
{
    (void)k; /* every kind has the same signature */
    if (!*text)
        return fail(p, at, "must not be empty");
    return store_str(p, at, text, field);
}

static int parse_ident(struct parse *p, const struct conf_key *k, struct at at, const char *text,
                       void *field)
{
    (void)k;
    static const char ok[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
    if (!*text || strspn(text, ok) != strlen(text))
        return fail(p, at, "'%s': a name is made of letters, digits, '-' and '_'", text);
    return store_str(p, at, text, field);
}

static int parse_bool(struct parse *p, const struct conf_key *k, struct at at, const char *text,
                      void *field)
{
    (void)k;
    if (strcmp(text, "true") != 0 && strcmp(text, "false") != 0)
        return fail(p, at, "expected true or false, found '%s'", text);
    *(bool *)field = text[0] == 't';
    return 0;
}

static bool read_decimal(const char *s, uint64_t *out)
{
    if (!*s || strspn(s, "0123456789") != strlen(s))
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, NULL, 10);
    if (errno == ERANGE)
        return false;
    *out = v;
    return true;
}

static int parse_uint(struct parse *p, const struct conf_key *k, struct at at, const char *text,
                      void *field)
{
    uint64_t v;
    char what[80];
    if (!read_decimal(text, &v) || v < k->min || v > int_max(k))
        return fail(p, at, "expected %s, found '%s'", expectation(k, what, sizeof what), text);
    if (k->kind == K_U32)
        *(uint32_t *)field = (uint32_t)v;
    else
        *(uint64_t *)field = v;
    return 0;
}

static int parse_enum(struct parse *p, const struct conf_key *k, struct at at, const char *text,
                      void *field)
{
    char what[160];
    int i = word_index(k->words, text);
    if (i < 0)
        return fail(p, at, "expected %s, found '%s'", expectation(k, what, sizeof what), text);
    if (k->kind == K_WORD)
        return store_str(p, at, k->words[i], field);
    *(int *)field = i;
    return 0;
}

static int parse_pointer(struct parse *p, const struct conf_key *k, struct at at,
                         const char *text, void *field)
{
    (void)k;
    if (text[0] != '/')
        return fail(p, at, "expected a JSON pointer such as /tenantId, found '%s'", text);
    for (const char *t = strchr(text, '~'); t; t = strchr(t + 1, '~'))
        if (t[1] != '0' && t[1] != '1')
            return fail(p, at, "'%s': in a JSON pointer '~' must be followed by 0 or 1", text);
    return store_str(p, at, text, field);
}

static int parse_route(struct parse *p, const struct conf_key *k, struct at at, const char *text,
                       void *field)
{
    (void)k;
    size_t n = strlen(text);
    if (text[0] != '/' || text[n - 1] != '/')
        return fail(p, at, "'%s' must start and end with '/'", text);
    if (strpbrk(text, "?# \t"))
        return fail(p, at, "'%s' must not contain '?', '#' or spaces", text);
    if (strncmp(text, "/_meridian/", 11) == 0)
        return fail(p, at, "'%s' is under /_meridian/, which Meridian keeps for itself", text);
    return store_str(p, at, text, field);
}

static void release_str(void *field)
{
    char **s = field;
    free(*s);
    *s = NULL;
}

static void release_addr(void *field)
{
    struct conf_addr *a = field;
    free(a->text);
    free(a->host);
    a->text = NULL;
    a->host = NULL;
}

static bool hostname_ok(const char *h)
{
    static const char ok[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
    for (;;) {
        size_t n = strcspn(h, ".");
        if (n == 0 || n > 63 || h[0] == '-' || h[n - 1] == '-' || strspn(h, ok) < n)
            return false;
        if (!h[n])
            return true;
        h += n + 1;
    }
}

/* NULL if host[0..len) is an IPv4 address, a host name or (v6) an IPv6 address. */
static const char *host_check(const char *host, size_t len, bool v6)
{
    char buf[256];
    unsigned char addr[16];
    if (len == 0)
        return "the host is empty";
    if (len >= sizeof buf)
        return "the host is too long";
    memcpy(buf, host, len);
    buf[len] = '\0';
    if (v6)
        return inet_pton(AF_INET6, buf, addr) == 1 ? NULL : "not a valid IPv6 address";
    if (strspn(buf, "0123456789.") == len)
        return inet_pton(AF_INET, buf, addr) == 1 ? NULL : "not a valid IPv4 address";
    return hostname_ok(buf) ? NULL : "not a valid host name";
}

static const char *port_read(const char *s, size_t len, uint16_t *port)
{
    unsigned v = 0;
    if (len == 0)
        return "the port is missing";
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9' || v > 65535)
            return "the port must be a number from 1 to 65535";
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v < 1 || v > 65535)
        return "the port must be a number from 1 to 65535";
    *port = (uint16_t)v;
    return NULL;
}

static const char *addr_store(struct conf_addr *out, const char *s, size_t len, const char *host,
                              size_t hlen, uint16_t port, bool port_written)
{
    size_t size = len + sizeof ":65535";
    char *text = malloc(size);
    out->host = strndup(host, hlen);
    if (!text || !out->host) {
        free(text);
        release_addr(out);
        return "out of memory";
    }
    if (port_written)
        snprintf(text, size, "%.*s", (int)len, s);
    else
        snprintf(text, size, "%.*s:%u", (int)len, s, (unsigned)port);
    out->text = text;
    out->port = port;
    return NULL;
}

/* Splits "host:port" ("[v6]:port") of length len into out; default_port 0
 * means the port is required. Returns NULL, or why it is not an address. */
static const char *addr_split(const char *s, size_t len, uint16_t default_port,
                              struct conf_addr *out)
{
    const char *end = s + len, *host = s, *colon;
    size_t hlen;
    bool v6 = len > 0 && s[0] == '[';
    if (v6) {
        const char *close = memchr(s, ']', len);
        if (!close)
            return "missing ']' after the IPv6 address";
        host = s + 1;
        hlen = (size_t)(close - host);
        colon = close + 1 < end ? close + 1 : NULL;
        if (colon && *colon != ':')
            return "expected ':' after ']'";
    } else {
        colon = memchr(s, ':', len);
        hlen = colon ? (size_t)(colon - s) : len;
        if (colon && memchr(colon + 1, ':', (size_t)(end - colon - 1)))
            return "an IPv6 address needs brackets, as in [::1]:7001";
    }
    const char *why = host_check(host, hlen, v6);
    uint16_t port = default_port;
    if (!why && colon)
        why = port_read(colon + 1, (size_t)(end - colon - 1), &port);
    else if (!why && !default_port)
        why = "the port is missing";
    return why ? why : addr_store(out, s, len, host, hlen, port, colon != NULL);
}

static int parse_addr(struct parse *p, const struct conf_key *k, struct at at, const char *text,
                      void *field)
{
    (void)k;
    const char *why = addr_split(text, strlen(text), 0, field);
    return why ? fail(p, at, "'%s': %s", text, why) : 0;
}

/* The backend key fills the region's backend_embedded, backend_url and backend. */
static int parse_backend(struct parse *p, const struct conf_key *k, struct at at,
                         const char *text, void *field)
{
    (void)k;
    struct conf_region *r = field;
    if (strcmp(text, "embedded") == 0) {
        r->backend_embedded = true;
        return 0;
    }
    if (strncasecmp(text, "https://", 8) == 0)
        return fail(p, at, "'%s': TLS to backends is not supported yet; use http://", text);
    if (strncasecmp(text, "http://", 7) != 0)
        return fail(p, at, "expected embedded or an http://host:port URL, found '%s'", text);
    const char *hostport = text + 7;
    const char *why = addr_split(hostport, strcspn(hostport, "/"), 80, &r->backend);
    if (why)
        return fail(p, at, "'%s': %s", text, why);
    return store_str(p, at, text, &r->backend_url);
}

static void release_backend(void *field)
{
    struct conf_region *r = field;
    release_str(&r->backend_url);
    release_addr(&r->backend);
}

typedef int scalar_parse_fn(struct parse *p, const struct conf_key *k, struct at at,
                            const char *text, void *field);

static const struct {
    scalar_parse_fn *parse;
    void (*release)(void *field);
} kinds[] = {
    [K_STR] = { parse_str, release_str },         [K_IDENT] = { parse_ident, release_str },
    [K_BOOL] = { parse_bool, NULL },              [K_U32] = { parse_uint, NULL },
    [K_U64] = { parse_uint, NULL },               [K_ENUM] = { parse_enum, NULL },
    [K_WORD] = { parse_enum, release_str },       [K_POINTER] = { parse_pointer, release_str },
    [K_ROUTE] = { parse_route, release_str },     [K_ADDR] = { parse_addr, release_addr },
    [K_BACKEND] = { parse_backend, release_backend },
};

/* ---- the walker: any table, any depth ---- */

static int parse_map(struct parse *p, yaml_node_t *n, const struct conf_table *t, void *base,
                     struct at at);

static void *field_of(void *base, const struct conf_key *k)
{
    return (char *)base + k->off;
}

static int parse_scalar(struct parse *p, yaml_node_t *n, const struct conf_key *k, void *base,
                        struct at at)
{
    char what[160], found[80];
    if (n->type != YAML_SCALAR_NODE || is_null(n))
        return fail(p, at, "expected %s, found %s", expectation(k, what, sizeof what),
                    describe(n, found, sizeof found));
    if (strlen(text_of(n)) != n->data.scalar.length)
        return fail(p, at, "contains a NUL character");
    return kinds[k->kind].parse(p, k, at, text_of(n), field_of(base, k));
}

/* Entry i of a sequence: a table filling the object at `entry`. */
static int parse_entry(struct parse *p, const yaml_node_t *seq, size_t i,
                       const struct conf_table *t, char *entry, const char *path)
{
    yaml_node_t *n = seq_item(p->doc, seq, i);
    char sub[CONF_PATH_LEN];
    int line = line_of(n);
    snprintf(sub, sizeof sub, "%.*s[%zu]", (int)(sizeof sub - 24), path, i);
    memcpy(entry + t->line_off, &line, sizeof line);
    return parse_map(p, n, t, entry, (struct at){ sub, line });
}

/* A sequence becomes an array of the sub-table's objects, owned by base. */
static int parse_seq(struct parse *p, yaml_node_t *n, const struct conf_key *k, void *base,
                     struct at at)
{
    char found[80];
    size_t count = 0;
    if (n->type == YAML_SEQUENCE_NODE)
        count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    else if (!is_null(n))
        return fail(p, at, "expected a sequence, found %s", describe(n, found, sizeof found));
    if (count < k->min)
        return fail(p, at, "must list at least one entry");
    if (count == 0)
        return 0;
    char *arr = calloc(count, k->sub->size);
    if (!arr)
        return fail(p, at, "out of memory");
    memcpy(field_of(base, k), &arr, sizeof arr);
    memcpy((char *)base + k->count_off, &count, sizeof count);
    for (size_t i = 0; i < count; i++)
        if (parse_entry(p, n, i, k->sub, arr + i * k->sub->size, at.path) < 0)
            return -1;
    return 0;
}

static int parse_value(struct parse *p, yaml_node_t *n, const struct conf_key *k, void *base,
                       struct at at)
{
    switch (k->kind) {
    case K_MAP:
        return parse_map(p, is_null(n) ? NULL : n, k->sub, base, at);
    case K_SEQ:
        return parse_seq(p, n, k, base, at);
    default:
        return parse_scalar(p, n, k, base, at);
    }
}

static int unknown_key(struct parse *p, const struct conf_table *t, struct at at,
                       const char *key)
{
    char allowed[300];
    size_t used = 0;
    allowed[0] = '\0';
    for (size_t i = 0; i < t->n && used < sizeof allowed; i++)
        used += (size_t)snprintf(allowed + used, sizeof allowed - used, "%s%s",
                                 i ? ", " : "", t->keys[i].name);
    return fail(p, at, "unknown key '%s' (allowed: %s)", key, allowed);
}

/* One "key: value" of a mapping; seen[i] keeps the line key i was first given on. */
static int parse_pair(struct parse *p, const yaml_node_pair_t *pair, const struct conf_table *t,
                      void *base, const char *path, int *seen)
{
    yaml_node_t *key = yaml_document_get_node(p->doc, pair->key);
    yaml_node_t *value = yaml_document_get_node(p->doc, pair->value);
    char sub[CONF_PATH_LEN];
    struct at at = { path, line_of(key) };
    if (key->type != YAML_SCALAR_NODE)
        return fail(p, at, "a key must be a plain word, not a mapping or a sequence");
    at.path = join(sub, sizeof sub, path, text_of(key));
    size_t i = 0;
    while (i < t->n && strcmp(t->keys[i].name, text_of(key)) != 0)
        i++;
    if (i == t->n)
        return unknown_key(p, t, at, text_of(key));
    if (seen[i])
        return fail(p, at, "duplicate key (first given on line %d)", seen[i]);
    seen[i] = at.line;
    at.line = line_of(value);
    return parse_value(p, value, &t->keys[i], base, at);
}

/* A key the file leaves out: required, or its default (a nested table's defaults). */
static int absent_key(struct parse *p, const struct conf_key *k, void *base, struct at at)
{
    if (k->flags & REQUIRED)
        return fail(p, at, "required key is missing");
    if (k->kind == K_MAP)
        return parse_map(p, NULL, k->sub, base, at);
    if (!k->def)
        return 0;
    return kinds[k->kind].parse(p, k, at, k->def, field_of(base, k));
}

/* Fills base from mapping n by table t; n NULL reads as an empty mapping. */
static int parse_map(struct parse *p, yaml_node_t *n, const struct conf_table *t, void *base,
                     struct at at)
{
    int seen[MAX_KEYS] = { 0 };
    char found[80], sub[CONF_PATH_LEN];
    if (n && n->type != YAML_MAPPING_NODE)
        return fail(p, at, "expected a mapping, found %s", describe(n, found, sizeof found));
    yaml_node_pair_t *pair = n ? n->data.mapping.pairs.start : NULL;
    yaml_node_pair_t *end = n ? n->data.mapping.pairs.top : NULL;
    for (; pair < end; pair++)
        if (parse_pair(p, pair, t, base, at.path, seen) < 0)
            return -1;
    for (size_t i = 0; i < t->n; i++) {
        struct at kat = { join(sub, sizeof sub, at.path, t->keys[i].name), at.line };
        if (!seen[i] && absent_key(p, &t->keys[i], base, kat) < 0)
            return -1;
    }
    return 0;
}

static void release_map(const struct conf_table *t, void *base);

static void release_seq(const struct conf_key *k, void *base)
{
    char *arr;
    size_t count;
    memcpy(&arr, field_of(base, k), sizeof arr);
    memcpy(&count, (char *)base + k->count_off, sizeof count);
    for (size_t i = 0; i < count; i++)
        release_map(k->sub, arr + i * k->sub->size);
    free(arr);
    memset(field_of(base, k), 0, sizeof arr);
    memset((char *)base + k->count_off, 0, sizeof count);
}

static void release_map(const struct conf_table *t, void *base)
{
    for (size_t i = 0; i < t->n; i++) {
        const struct conf_key *k = &t->keys[i];
        if (k->kind == K_MAP)
            release_map(k->sub, base);
        else if (k->kind == K_SEQ)
            release_seq(k, base);
        else if (kinds[k->kind].release)
            kinds[k->kind].release(field_of(base, k));
    }
}

/* ---- loading ---- */

static int syntax_error(struct parse *p, const yaml_parser_t *parser, const char *text)
{
    struct at at = { "syntax", (int)parser->problem_mark.line + 1 };
    if (parser->error == YAML_MEMORY_ERROR)
        return fail(p, at, "out of memory");
    if (parser->error == YAML_READER_ERROR) {
        at.line = 1;
        for (size_t i = 0; i < parser->problem_offset; i++)
            at.line += text[i] == '\n';
        return fail(p, at, "%s", parser->problem);
    }
    if (parser->context)
        return fail(p, at, "%s (%s on line %d)", parser->problem, parser->context,
                    (int)parser->context_mark.line + 1);
    return fail(p, at, "%s", parser->problem ? parser->problem : "cannot be read");
}

/* A second document would be silently ignored by everyone: refuse it. */
static int only_one_document(struct parse *p, yaml_parser_t *parser, const char *text)
{
    yaml_document_t next;
    if (!yaml_parser_load(parser, &next))
        return syntax_error(p, parser, text);
    const yaml_node_t *root = yaml_document_get_root_node(&next);
    int line = root ? line_of(root) : 0;
    yaml_document_delete(&next);
    if (line)
        return fail(p, (struct at){ "", line }, "a second YAML document; put everything in one");
    return 0;
}

/* Loads text into p->doc; on failure p->doc holds nothing to free. */
static int load_document(struct parse *p, const char *text, size_t len)
{
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return err_set(p->err, "%s: out of memory", p->file);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    int rc = 0;
    if (!yaml_parser_load(&parser, p->doc))
        rc = syntax_error(p, &parser, text);
    else if ((rc = only_one_document(p, &parser, text)) < 0)
        yaml_document_delete(p->doc);
    yaml_parser_delete(&parser);
    return rc;
}

static int fill(struct parse *p, struct conf *c)
{
    yaml_node_t *root = yaml_document_get_root_node(p->doc);
    c->path = strdup(p->file);
    if (!c->path)
        return err_set(p->err, "%s: out of memory", p->file);
    if (parse_map(p, root, &root_table, c, (struct at){ "", root ? line_of(root) : 1 }) < 0)
        return -1;
    return conf_check_rules(p, c);
}

int conf_parse(const char *name, const char *text, size_t len, struct conf **out,
               struct err *err)
{
    yaml_document_t doc;
    struct parse p = { name, &doc, err };
    *out = NULL;
    struct conf *c = calloc(1, sizeof *c);
    if (!c)
        return err_set(err, "%s: out of memory", name);
    if (load_document(&p, text, len) < 0) {
        free(c);
        return -1;
    }
    int rc = fill(&p, c);
    yaml_document_delete(&doc);
    if (rc < 0) {
        conf_free(c);
        return -1;
    }
    *out = c;
    return 0;
}

/* Reads the whole file into a new NUL-terminated buffer the caller frees. */
static int read_file(const char *path, char **text, size_t *len, struct err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(err, "%s: cannot open: %s", path, strerror(errno));
    char *buf = malloc(CONF_MAX_FILE + 1);
    if (!buf) {
        fclose(f);
        return err_set(err, "%s: out of memory", path);
    }
    size_t n = fread(buf, 1, CONF_MAX_FILE + 1, f);
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        return err_set(err, "%s: cannot read", path);
    }
    if (n > CONF_MAX_FILE) {
        free(buf);
        return err_set(err, "%s: larger than %d bytes; is this the right file?", path,
                       CONF_MAX_FILE);
    }
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return 0;
}

int conf_load(const char *path, struct conf **out, struct err *err)
{
    char *text = NULL;
    size_t len = 0;
    *out = NULL;
    if (read_file(path, &text, &len, err) < 0)
        return -1;
    int rc = conf_parse(path, text, len, out, err);
    free(text);
    return rc;
}

void conf_free(struct conf *conf)
{
    if (!conf)
        return;
    release_map(&root_table, conf);
    free(conf->path);
    free(conf);
}

const struct conf_region *conf_region_by_name(const struct conf *conf, const char *name)
{
    for (size_t i = 0; i < conf->n_regions; i++)
        if (strcmp(conf->regions[i].name, name) == 0)
            return &conf->regions[i];
    return NULL;
}

const struct conf_container *conf_container_by_name(const struct conf *conf, const char *name)
{
    for (size_t i = 0; i < conf->n_containers; i++)
        if (strcmp(conf->containers[i].name, name) == 0)
            return &conf->containers[i];
    return NULL;
}

const char *conf_consistency_name(enum consistency c)
{
    return (unsigned)c <= CONS_STRONG ? consistency_words[c] : "unknown";
}

const char *conf_conflict_mode_name(enum conflict_mode m)
{
    return (unsigned)m <= CONFLICT_CUSTOM ? mode_words[m] : "unknown";
}

int conf_consistency_parse(const char *name, enum consistency *out)
{
    int i = word_index(consistency_words, name);
    if (i < 0)
        return -1;
    *out = (enum consistency)i;
    return 0;
}

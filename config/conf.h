/* conf: the configuration of a Meridian cluster, parsed from one YAML file.
 * Owns the parsed, validated `struct conf`; depends on no other part of
 * Meridian and does no I/O but reading the file it is given. Never hands out
 * a half-validated configuration: conf_load() returns a complete one or none. */
#ifndef MERIDIAN_CONF_H
#define MERIDIAN_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../util/err.h"

enum consistency {
    CONS_EVENTUAL,
    CONS_CONSISTENT_PREFIX,
    CONS_SESSION,
    CONS_BOUNDED_STALENESS,
    CONS_STRONG,
};

enum conflict_mode {
    CONFLICT_LAST_WRITER_WINS,
    CONFLICT_CUSTOM,
};

enum backend_profile {
    PROFILE_GENERIC,
    PROFILE_COUCHDB,
};

enum unmatched_policy {
    UNMATCHED_PASS,   /* requests outside every container go to the backend untouched */
    UNMATCHED_REFUSE, /* ... or are answered 404 by Meridian */
};

/* "host:port" as written, plus its parts. */
struct conf_addr {
    char *text;
    char *host;
    uint16_t port;
};

struct conf_region {
    char *name;
    uint32_t id;
    struct conf_addr listen;
    struct conf_addr peer_listen;
    bool backend_embedded;       /* backend: embedded */
    char *backend_url;           /* backend: http://host:port[/base], NULL when embedded */
    struct conf_addr backend;    /* host and port of backend_url (text is "host:port") */
    char *data_dir;              /* default: ./data/<name> */
    int line;                    /* line of this region's entry in the file */
};

struct conf_container {
    char *name;
    char *route;                 /* starts and ends with '/' */
    char *partition_key;         /* JSON pointer, e.g. "/tenantId" */
    enum conflict_mode mode;
    char *lww_path;              /* JSON pointer or NULL (NULL: the write's HLC) */
    bool auto_version;           /* Meridian sets lww_path from the HLC */
    char *procedure;             /* custom mode: JS file (absolute once loaded), or NULL */
    char *metadata_field;        /* default "_meridian" */
    enum backend_profile profile;
    int line;
};

struct conf_limits {
    uint32_t max_header_bytes;             /* 431 above this; default 16384 */
    uint32_t max_body_bytes;               /* 413 above this; default 1048576 */
    uint32_t header_timeout_ms;            /* 408 if headers take longer; default 10000 */
    uint32_t idle_timeout_ms;              /* idle keep-alive close; default 60000 */
    uint32_t upstream_connect_timeout_ms;  /* 504; default 3000 */
    uint32_t upstream_response_timeout_ms; /* 504; default 30000 */
    uint32_t upstream_pool_size;           /* idle keep-alive connections kept; default 128 */
    uint32_t max_connections;              /* client connections; default 10000 */
    uint32_t drain_timeout_ms;             /* SIGTERM: give in-flight this long; default 30000 */
    uint32_t procedure_timeout_ms;         /* a resolver procedure's run; default 1000 */
    uint32_t procedure_memory_bytes;       /* its heap; default 32 MiB */
};

struct conf {
    char *path;                  /* file it was loaded from */
    bool multi_region_writes;    /* account.multi_region_writes, default true */
    enum consistency consistency;/* account.consistency, default session */
    uint64_t max_lag_versions;   /* account.bounded_staleness.max_lag_versions, default 100000 */
    uint32_t max_lag_seconds;    /* account.bounded_staleness.max_lag_seconds, default 300 */
    uint32_t max_clock_drift_ms; /* account.max_clock_drift_ms: a peer clock further ahead
                                    is refused, not adopted; default 60000 */
    uint32_t session_wait_ms;    /* account.session_wait_ms: how long a session read (or write)
                                    waits for apply to catch up before it is forwarded; 1000 */
    uint32_t forward_fanout;     /* account.forward_fanout: regions a forwarded read goes to at
                                    once, first qualifying answer wins; default 1 */
    uint32_t forward_timeout_ms; /* account.forward_timeout_ms: a forwarded request's answer;
                                    then the next candidate, or a refusal; default 5000 */
    struct conf_region *regions; /* in file order; regions[0] is the hub */
    size_t n_regions;
    struct conf_container *containers;
    size_t n_containers;
    struct conf_limits limits;
    enum unmatched_policy unmatched;  /* proxy.unmatched: pass | refuse, default pass */
    char *log_level;                  /* log.level: debug|info|warn|error, default info */
    bool access_log;                  /* log.access: default false */
};

/* Parses and validates FILE. On success *out is a new conf owned by the caller
 * (free with conf_free). On failure returns -1 and err says
 * "FILE:LINE: KEY: what is wrong". */
int conf_load(const char *path, struct conf **out, struct err *err) MUST_CHECK;

/* Same as conf_load, from an in-memory YAML text; `name` is used in messages. */
int conf_parse(const char *name, const char *text, size_t len, struct conf **out,
               struct err *err) MUST_CHECK;

void conf_free(struct conf *conf);

/* The region called `name`, or NULL. */
const struct conf_region *conf_region_by_name(const struct conf *conf, const char *name);

/* The container called `name`, or NULL. */
const struct conf_container *conf_container_by_name(const struct conf *conf, const char *name);

const char *conf_consistency_name(enum consistency c);
const char *conf_conflict_mode_name(enum conflict_mode m);
int conf_consistency_parse(const char *name, enum consistency *out);

#endif

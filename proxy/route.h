/* route: which container, if any, a request target belongs to. Pure: a
 * function of the configuration and the path, no I/O. */
#ifndef MERIDIAN_ROUTE_H
#define MERIDIAN_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../config/conf.h"

enum route_kind {
    ROUTE_OPS,        /* /_meridian/...: Meridian's own endpoints */
    ROUTE_CONTAINER,  /* under a container's route prefix */
    ROUTE_UNMATCHED,  /* everything else */
};

struct route_result {
    enum route_kind kind;
    const struct conf_container *container; /* ROUTE_CONTAINER only */
};

/* Classifies `target` (path plus optional query, as received). The container
 * pointer borrows from `conf`. */
struct route_result route_match(const struct conf *conf, const char *target, size_t len);

/* Length of the path part of a request target (up to '?' or '#'). */
size_t route_path_len(const char *target, size_t len);

/* The decimal query parameter `name` of the NUL-terminated `target`, or
 * `dflt` when absent; sets *bad when present but not a number. */
uint64_t route_query_u64(const char *target, const char *name, uint64_t dflt, bool *bad);

#endif

/* stats: the node's counters, gauges and latency histograms, and their
 * Prometheus text rendering. Owns plain numbers only; updating a metric is a
 * few additions on the event-loop thread and never allocates. */
#ifndef MERIDIAN_STATS_H
#define MERIDIAN_STATS_H

#include <stdint.h>

#include "headers.h"

enum stats_method {
    SM_GET, SM_HEAD, SM_PUT, SM_POST, SM_PATCH, SM_DELETE, SM_OPTIONS, SM_OTHER, SM__COUNT
};

enum stats_upstream_error {
    SUE_REFUSED,          /* connection refused or unreachable */
    SUE_CONNECT_TIMEOUT,
    SUE_RESPONSE_TIMEOUT,
    SUE_RESET,            /* reset or closed before the response was complete */
    SUE_BAD_RESPONSE,     /* the backend's answer did not parse */
    SUE__COUNT
};

enum stats_client_error {
    SCE_BAD_REQUEST, SCE_HEADER_TOO_LARGE, SCE_BODY_TOO_LARGE, SCE_HEADER_TIMEOUT,
    SCE_IDLE_TIMEOUT, SCE_CLOSED_IN_FLIGHT, SCE__COUNT
};

#define STATS_BUCKETS 20

struct histogram {
    uint64_t buckets[STATS_BUCKETS]; /* non-cumulative counts per upper bound */
    uint64_t count;
    double sum;
};

struct stats {
    uint64_t requests[SM__COUNT][600];   /* by method and status code */
    uint64_t upstream_errors[SUE__COUNT];
    uint64_t client_errors[SCE__COUNT];
    uint64_t connections_accepted;
    uint64_t connections_refused;        /* over max_connections */
    int64_t connections_open;
    int64_t upstream_open;
    uint64_t upstream_reused;
    uint64_t upstream_connects;
    uint64_t reloads_ok, reloads_refused;  /* configuration reloads (reload.c) */
    struct histogram request_seconds;
    struct histogram upstream_seconds;
};

enum stats_method stats_method_index(int llhttp_method);
void stats_request(struct stats *st, enum stats_method m, int status, double seconds);
void stats_observe(struct histogram *h, double seconds);

/* Appends the Prometheus text exposition of `st` for region `region`. */
int stats_render(const struct stats *st, const char *region, struct sbuf *out);

const char *stats_upstream_error_name(enum stats_upstream_error e);

/* The bucket, sum and count lines of one histogram series. `labels` ends in
 * the name of the label that gets the region ("source=\"a\",target"), or is
 * NULL for just region="...". */
int stats_render_histogram_series(struct sbuf *out, const char *name, const char *labels,
                                  const char *region, const struct histogram *h);

#endif

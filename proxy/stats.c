#include "stats.h"

#include <llhttp.h>
#include <stdio.h>

/* Fine around tens of milliseconds, where replication over a WAN lives. */
static const double bucket_bounds[STATS_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.04,
    0.05, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1, 5, 30,
};

static const char *const method_names[SM__COUNT] = {
    "GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "OTHER",
};

static const char *const upstream_error_names[SUE__COUNT] = {
    "refused", "connect_timeout", "response_timeout", "reset", "bad_response",
};

static const char *const client_error_names[SCE__COUNT] = {
    "bad_request", "header_too_large", "body_too_large", "header_timeout", "idle_timeout",
    "closed_in_flight",
};

const char *stats_upstream_error_name(enum stats_upstream_error e)
{
    return upstream_error_names[e];
}

enum stats_method stats_method_index(int m)
{
    switch (m) {
    case HTTP_GET: return SM_GET;
    case HTTP_HEAD: return SM_HEAD;
    case HTTP_PUT: return SM_PUT;
    case HTTP_POST: return SM_POST;
    case HTTP_PATCH: return SM_PATCH;
    case HTTP_DELETE: return SM_DELETE;
    case HTTP_OPTIONS: return SM_OPTIONS;
    default: return SM_OTHER;
    }
}

void stats_observe(struct histogram *h, double seconds)
{
    int i = 0;
    while (i < STATS_BUCKETS - 1 && seconds > bucket_bounds[i])
        i++;
    if (seconds <= bucket_bounds[i])
        h->buckets[i]++;
    h->count++;
    h->sum += seconds;
}

void stats_request(struct stats *st, enum stats_method m, int status, double seconds)
{
    if (status < 100 || status > 599)
        status = 0;
    st->requests[m][status]++;
    stats_observe(&st->request_seconds, seconds);
}

int stats_render_histogram_series(struct sbuf *out, const char *name, const char *labels,
                                  const char *region, const struct histogram *h)
{
    char lb[256];
    snprintf(lb, sizeof lb, "%s%s=\"%s\"", labels ? labels : "", labels ? "" : "region", region);
    uint64_t cum = 0;
    for (int i = 0; i < STATS_BUCKETS; i++) {
        cum += h->buckets[i];
        if (sbuf_printf(out, "%s_bucket{%s,le=\"%g\"} %llu\n", name, lb, bucket_bounds[i],
                        (unsigned long long)cum) < 0)
            return -1;
    }
    return sbuf_printf(out, "%s_bucket{%s,le=\"+Inf\"} %llu\n%s_sum{%s} %.6f\n%s_count{%s} %llu\n",
                       name, lb, (unsigned long long)h->count, name, lb, h->sum, name, lb,
                       (unsigned long long)h->count);
}

static int render_histogram(struct sbuf *out, const char *name, const char *help,
                            const struct histogram *h, const char *region)
{
    if (sbuf_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name) < 0)
        return -1;
    return stats_render_histogram_series(out, name, NULL, region, h);
}

static int render_requests(const struct stats *st, const char *region, struct sbuf *out)
{
    if (sbuf_adds(out, "# HELP meridian_requests_total Client requests answered, by method "
                       "and status.\n# TYPE meridian_requests_total counter\n") < 0)
        return -1;
    for (int m = 0; m < SM__COUNT; m++)
        for (int s = 0; s < 600; s++)
            if (st->requests[m][s] &&
                sbuf_printf(out,
                            "meridian_requests_total{region=\"%s\",method=\"%s\",status=\"%d\"} "
                            "%llu\n",
                            region, method_names[m], s,
                            (unsigned long long)st->requests[m][s]) < 0)
                return -1;
    return 0;
}

static int render_labeled(struct sbuf *out, const char *name, const char *help,
                          const char *label, const char *const *names, const uint64_t *vals,
                          int n, const char *region)
{
    if (sbuf_printf(out, "# HELP %s %s\n# TYPE %s counter\n", name, help, name) < 0)
        return -1;
    for (int i = 0; i < n; i++)
        if (sbuf_printf(out, "%s{region=\"%s\",%s=\"%s\"} %llu\n", name, region, label, names[i],
                        (unsigned long long)vals[i]) < 0)
            return -1;
    return 0;
}

static int render_scalar(struct sbuf *out, const char *name, const char *type, const char *help,
                         long long v, const char *region)
{
    return sbuf_printf(out, "# HELP %s %s\n# TYPE %s %s\n%s{region=\"%s\"} %lld\n", name, help,
                       name, type, name, region, v);
}

int stats_render(const struct stats *st, const char *region, struct sbuf *out)
{
    if (render_requests(st, region, out) < 0 ||
        render_labeled(out, "meridian_upstream_errors_total",
                       "Failed exchanges with the backend, by kind.", "kind",
                       upstream_error_names, st->upstream_errors, SUE__COUNT, region) < 0 ||
        render_labeled(out, "meridian_client_errors_total",
                       "Client requests refused or cut short, by reason.", "reason",
                       client_error_names, st->client_errors, SCE__COUNT, region) < 0 ||
        render_scalar(out, "meridian_connections_open", "gauge", "Open client connections.",
                      st->connections_open, region) < 0 ||
        render_scalar(out, "meridian_connections_accepted_total", "counter",
                      "Client connections accepted.", (long long)st->connections_accepted,
                      region) < 0 ||
        render_scalar(out, "meridian_connections_refused_total", "counter",
                      "Client connections closed at once because max_connections was reached.",
                      (long long)st->connections_refused, region) < 0 ||
        render_scalar(out, "meridian_upstream_connections_open", "gauge",
                      "Open connections to the backend.", st->upstream_open, region) < 0 ||
        render_scalar(out, "meridian_upstream_connects_total", "counter",
                      "New connections opened to the backend.",
                      (long long)st->upstream_connects, region) < 0 ||
        render_scalar(out, "meridian_upstream_reused_total", "counter",
                      "Backend exchanges served on a kept-alive connection.",
                      (long long)st->upstream_reused, region) < 0 ||
        sbuf_printf(out, "# HELP meridian_config_reloads_total Configuration reloads (SIGHUP or "
                         "the file changing), by result: ok, or refused (the previous "
                         "configuration kept serving).\n"
                         "# TYPE meridian_config_reloads_total counter\n"
                         "meridian_config_reloads_total{region=\"%s\",result=\"ok\"} %llu\n"
                         "meridian_config_reloads_total{region=\"%s\",result=\"refused\"} %llu\n",
                    region, (unsigned long long)st->reloads_ok, region,
                    (unsigned long long)st->reloads_refused) < 0 ||
        render_histogram(out, "meridian_request_duration_seconds",
                         "Time from a request's first byte to the end of its answer.",
                         &st->request_seconds, region) < 0 ||
        render_histogram(out, "meridian_upstream_duration_seconds",
                         "Time from sending a request to the backend to the end of its answer.",
                         &st->upstream_seconds, region) < 0)
        return -1;
    return 0;
}

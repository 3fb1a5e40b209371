/* Unit tests for config/conf: good files load with every field as written or
 * defaulted; every bad file is refused with its exact "FILE:LINE: KEY: why". */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/conf.h"

#ifndef MERIDIAN_SOURCE_DIR /* CMake passes it; a hand build runs from the tree's top */
#define MERIDIAN_SOURCE_DIR "."
#endif

/* The example of the design brief, as deploy/local/meridian.yaml holds it. */
static const char example[] =
    "account:\n"
    "  multi_region_writes: true\n"
    "  consistency: session\n"
    "  bounded_staleness: { max_lag_versions: 100000, max_lag_seconds: 300 }\n"
    "regions:\n"
    "  - { name: east,  id: 1, listen: 127.0.0.1:7001, peer_listen: 127.0.0.1:7101, backend: embedded, data_dir: ./data/east }\n"
    "  - { name: west,  id: 2, listen: 127.0.0.1:7002, peer_listen: 127.0.0.1:7102, backend: embedded, data_dir: ./data/west }\n"
    "  - { name: south, id: 3, listen: 127.0.0.1:7003, peer_listen: 127.0.0.1:7103, backend: embedded, data_dir: ./data/south }\n"
    "containers:\n"
    "  - name: orders\n"
    "    route: /orders/\n"
    "    partition_key: /tenantId\n"
    "    conflict_resolution: { mode: last_writer_wins, path: /version }\n";

static struct conf *parse_ok(const char *text)
{
    struct conf *c = NULL;
    struct err e = { "" };
    int rc = conf_parse("good.yaml", text, strlen(text), &c, &e);
    cr_assert_eq(rc, 0, "refused: %s", e.msg);
    cr_assert_not_null(c);
    return c;
}

static void expect_addr(const struct conf_addr *a, const char *text, const char *host,
                        unsigned port)
{
    cr_expect_str_eq(a->text, text);
    cr_expect_str_eq(a->host, host);
    cr_expect_eq(a->port, port, "%s: port %u, expected %u", text, a->port, port);
}

static void expect_default_limits(const struct conf_limits *l)
{
    cr_expect_eq(l->max_header_bytes, 16384);
    cr_expect_eq(l->max_body_bytes, 1048576);
    cr_expect_eq(l->header_timeout_ms, 10000);
    cr_expect_eq(l->idle_timeout_ms, 60000);
    cr_expect_eq(l->upstream_connect_timeout_ms, 3000);
    cr_expect_eq(l->upstream_response_timeout_ms, 30000);
    cr_expect_eq(l->upstream_pool_size, 128);
    cr_expect_eq(l->max_connections, 10000);
    cr_expect_eq(l->drain_timeout_ms, 30000);
    cr_expect_eq(l->procedure_timeout_ms, 1000);
    cr_expect_eq(l->procedure_memory_bytes, 33554432);
}

static void expect_embedded_region(const struct conf_region *r, const char *name, unsigned id,
                                   int line)
{
    char listen[32], peer[32], dir[32];
    snprintf(listen, sizeof listen, "127.0.0.1:700%u", id);
    snprintf(peer, sizeof peer, "127.0.0.1:710%u", id);
    snprintf(dir, sizeof dir, "./data/%s", name);
    cr_expect_str_eq(r->name, name);
    cr_expect_eq(r->id, id);
    expect_addr(&r->listen, listen, "127.0.0.1", 7000 + id);
    expect_addr(&r->peer_listen, peer, "127.0.0.1", 7100 + id);
    cr_expect(r->backend_embedded);
    cr_expect_null(r->backend_url);
    cr_expect_null(r->backend.text);
    cr_expect_null(r->backend.host);
    cr_expect_eq(r->backend.port, 0);
    cr_expect_str_eq(r->data_dir, dir);
    cr_expect_eq(r->line, line);
}

/* Every field of the example, those it writes and those it leaves to defaults. */
static void expect_example(const struct conf *c, int first_line)
{
    cr_expect(c->multi_region_writes);
    cr_expect_eq(c->consistency, CONS_SESSION);
    cr_expect_eq(c->max_lag_versions, 100000);
    cr_expect_eq(c->max_lag_seconds, 300);
    cr_assert_eq(c->n_regions, 3);
    expect_embedded_region(&c->regions[0], "east", 1, first_line + 5);
    expect_embedded_region(&c->regions[1], "west", 2, first_line + 6);
    expect_embedded_region(&c->regions[2], "south", 3, first_line + 7);
    cr_assert_geq(c->n_containers, 1);
    const struct conf_container *ct = &c->containers[0];
    cr_expect_str_eq(ct->name, "orders");
    cr_expect_str_eq(ct->route, "/orders/");
    cr_expect_str_eq(ct->partition_key, "/tenantId");
    cr_expect_eq(ct->mode, CONFLICT_LAST_WRITER_WINS);
    cr_expect_str_eq(ct->lww_path, "/version");
    cr_expect_not(ct->auto_version);
    cr_expect_null(ct->procedure);
    cr_expect_str_eq(ct->metadata_field, "_meridian");
    cr_expect_eq(ct->profile, PROFILE_GENERIC);
    cr_expect_eq(ct->line, first_line + 9);
    expect_default_limits(&c->limits);
    cr_expect_eq(c->unmatched, UNMATCHED_PASS);
    cr_expect_str_eq(c->log_level, "info");
    cr_expect_not(c->access_log);
}

Test(conf, example_every_field)
{
    struct conf *c = parse_ok(example);
    cr_expect_str_eq(c->path, "good.yaml");
    expect_example(c, 1);
    conf_free(c);
}

Test(conf, deploy_local_file_loads)
{
    const char *path = MERIDIAN_SOURCE_DIR "/deploy/local/meridian.yaml";
    struct conf *c = NULL;
    struct err e = { "" };
    cr_assert_eq(conf_load(path, &c, &e), 0, "refused: %s", e.msg);
    cr_expect_str_eq(c->path, path);
    /* The file is the example under a four-line comment header, and two
     * custom containers: the seed's ledger resolver, and a feed-only one. */
    expect_example(c, 5);
    cr_assert_eq(c->n_containers, 3);
    const struct conf_container *ledger = &c->containers[1], *notes = &c->containers[2];
    cr_expect_eq(ledger->mode, CONFLICT_CUSTOM);
    cr_expect_str_eq(ledger->procedure, MERIDIAN_SOURCE_DIR "/deploy/local/resolvers/ledger.js",
                     "procedure paths are relative to the file's directory, kept absolute");
    cr_expect_eq(notes->mode, CONFLICT_CUSTOM);
    cr_expect_null(notes->procedure);
    conf_free(c);
}

Test(conf, minimal_file_takes_every_default)
{
    struct conf *c = parse_ok(
        "regions:\n"
        "  - { name: solo, id: 7, listen: localhost:9000, peer_listen: LocalHost:9100, backend: embedded }\n");
    cr_expect(c->multi_region_writes);
    cr_expect_eq(c->consistency, CONS_SESSION);
    cr_expect_eq(c->max_lag_versions, 100000);
    cr_expect_eq(c->max_lag_seconds, 300);
    cr_assert_eq(c->n_regions, 1);
    cr_expect_str_eq(c->regions[0].data_dir, "./data/solo");
    expect_addr(&c->regions[0].listen, "localhost:9000", "localhost", 9000);
    expect_addr(&c->regions[0].peer_listen, "LocalHost:9100", "LocalHost", 9100);
    cr_expect_eq(c->regions[0].line, 2);
    cr_expect_eq(c->n_containers, 0);
    cr_expect_null(c->containers);
    expect_default_limits(&c->limits);
    cr_expect_eq(c->unmatched, UNMATCHED_PASS);
    cr_expect_str_eq(c->log_level, "info");
    cr_expect_not(c->access_log);
    conf_free(c);
}

Test(conf, empty_sections_read_as_absent)
{
    struct conf *c = parse_ok(
        "account:\n"
        "regions:\n"
        "  - { name: solo, id: 7, listen: localhost:9000, peer_listen: localhost:9100, backend: embedded }\n"
        "containers:\n"
        "limits:\n"
        "log:\n");
    cr_expect(c->multi_region_writes);
    cr_expect_eq(c->consistency, CONS_SESSION);
    cr_expect_eq(c->n_containers, 0);
    expect_default_limits(&c->limits);
    cr_expect_str_eq(c->log_level, "info");
    conf_free(c);
}

static const char every_key[] =
    "account:\n"
    "  multi_region_writes: false\n"
    "  consistency: strong\n"
    "  bounded_staleness: { max_lag_versions: 5000000000, max_lag_seconds: 7 }\n"
    "regions:\n"
    "  - name: hub\n"
    "    id: 65535\n"
    "    listen: \"[::1]:8001\"\n"
    "    peer_listen: peer.example.com:8101\n"
    "    backend: http://db.example.com:5984/base/\n"
    "    data_dir: /var/lib/meridian\n"
    "  - { name: edge_2, id: 1, listen: 0.0.0.0:8002, peer_listen: 10.0.0.2:8102, backend: HTTP://10.0.0.9 }\n"
    "containers:\n"
    "  - name: orders\n"
    "    route: /orders/\n"
    "    partition_key: /tenantId\n"
    "    conflict_resolution: { mode: last_writer_wins, path: /version, auto_version: true }\n"
    "    metadata_field: meta\n"
    "    backend_profile: couchdb\n"
    "  - name: carts\n"
    "    route: /shop/carts/\n"
    "    partition_key: /a~1b\n"
    "    conflict_resolution: { mode: last_writer_wins, auto_version: false }\n"
    "    backend_profile: couchdb\n"
    "limits: { max_header_bytes: 1024, max_body_bytes: 2, header_timeout_ms: 3, idle_timeout_ms: 4,\n"
    "          upstream_connect_timeout_ms: 5, upstream_response_timeout_ms: 6,\n"
    "          upstream_pool_size: 7, max_connections: 8, drain_timeout_ms: 4294967295 }\n"
    "proxy: { unmatched: refuse }\n"
    "log: { level: debug, access: true }\n";

Test(conf, every_optional_key_is_read)
{
    struct conf *c = parse_ok(every_key);
    cr_expect_not(c->multi_region_writes);
    cr_expect_eq(c->consistency, CONS_STRONG);
    cr_expect_eq(c->max_lag_versions, 5000000000ull);
    cr_expect_eq(c->max_lag_seconds, 7);
    cr_assert_eq(c->n_regions, 2);
    const struct conf_region *hub = &c->regions[0], *edge = &c->regions[1];
    cr_expect_str_eq(hub->name, "hub");
    cr_expect_eq(hub->id, 65535);
    expect_addr(&hub->listen, "[::1]:8001", "::1", 8001);
    expect_addr(&hub->peer_listen, "peer.example.com:8101", "peer.example.com", 8101);
    cr_expect_not(hub->backend_embedded);
    cr_expect_str_eq(hub->backend_url, "http://db.example.com:5984/base/");
    expect_addr(&hub->backend, "db.example.com:5984", "db.example.com", 5984);
    cr_expect_str_eq(hub->data_dir, "/var/lib/meridian");
    cr_expect_eq(hub->line, 6);
    cr_expect_str_eq(edge->name, "edge_2");
    cr_expect_str_eq(edge->backend_url, "HTTP://10.0.0.9");
    expect_addr(&edge->backend, "10.0.0.9:80", "10.0.0.9", 80);
    cr_expect_str_eq(edge->data_dir, "./data/edge_2");
    cr_expect_eq(edge->line, 12);

    cr_assert_eq(c->n_containers, 2);
    const struct conf_container *orders = &c->containers[0], *carts = &c->containers[1];
    cr_expect_str_eq(orders->lww_path, "/version");
    cr_expect(orders->auto_version);
    cr_expect_str_eq(orders->metadata_field, "meta");
    cr_expect_eq(orders->profile, PROFILE_COUCHDB);
    cr_expect_eq(orders->line, 14);
    cr_expect_str_eq(carts->route, "/shop/carts/");
    cr_expect_str_eq(carts->partition_key, "/a~1b");
    cr_expect_null(carts->lww_path);
    cr_expect_not(carts->auto_version);
    /* CouchDB refuses fields starting with '_': its default has none. */
    cr_expect_str_eq(carts->metadata_field, "meridian");
    cr_expect_eq(carts->line, 20);

    const struct conf_limits *l = &c->limits;
    cr_expect_eq(l->max_header_bytes, 1024);
    cr_expect_eq(l->max_body_bytes, 2);
    cr_expect_eq(l->header_timeout_ms, 3);
    cr_expect_eq(l->idle_timeout_ms, 4);
    cr_expect_eq(l->upstream_connect_timeout_ms, 5);
    cr_expect_eq(l->upstream_response_timeout_ms, 6);
    cr_expect_eq(l->upstream_pool_size, 7);
    cr_expect_eq(l->max_connections, 8);
    cr_expect_eq(l->drain_timeout_ms, 4294967295u);
    cr_expect_eq(c->unmatched, UNMATCHED_REFUSE);
    cr_expect_str_eq(c->log_level, "debug");
    cr_expect(c->access_log);
    conf_free(c);
}

Test(conf, region_by_name)
{
    struct conf *c = parse_ok(example);
    cr_expect_eq(conf_region_by_name(c, "west"), &c->regions[1]);
    cr_expect_eq(conf_region_by_name(c, "east"), &c->regions[0]);
    cr_expect_null(conf_region_by_name(c, "north"));
    cr_expect_null(conf_region_by_name(c, "Eas"));
    conf_free(c);
}

Test(conf, consistency_names_round_trip)
{
    static const char *const names[] = { "eventual", "consistent_prefix", "session",
                                         "bounded_staleness", "strong" };
    for (int i = CONS_EVENTUAL; i <= CONS_STRONG; i++) {
        enum consistency c = CONS_SESSION;
        cr_expect_str_eq(conf_consistency_name((enum consistency)i), names[i]);
        cr_expect_eq(conf_consistency_parse(names[i], &c), 0);
        cr_expect_eq(c, i);
    }
    enum consistency c = CONS_EVENTUAL;
    cr_expect_eq(conf_consistency_parse("Strong", &c), -1);
    cr_expect_eq(conf_consistency_parse("", &c), -1);
    cr_expect_eq(c, CONS_EVENTUAL);
}

Test(conf, missing_file)
{
    struct conf *c = (struct conf *)1;
    struct err e = { "" };
    cr_expect_eq(conf_load("/nonexistent/meridian.yaml", &c, &e), -1);
    cr_expect_null(c);
    cr_expect_str_eq(e.msg, "/nonexistent/meridian.yaml: cannot open: No such file or directory");
}

Test(conf, load_names_the_file_in_messages)
{
    char path[] = "/tmp/meridian-conf-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    static const char text[] = "regions: []\n";
    cr_assert_eq(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    struct conf *c = NULL;
    struct err e = { "" };
    char want[128];
    snprintf(want, sizeof want, "%s:1: regions: must list at least one entry", path);
    cr_expect_eq(conf_load(path, &c, &e), -1);
    unlink(path);
    cr_expect_null(c);
    cr_expect_str_eq(e.msg, want);
}

Test(conf, free_null)
{
    conf_free(NULL);
}

/* ---- refused files: each with its exact message ---- */

struct bad_case {
    const char *yaml;
    const char *msg;
};

#define R0 "  - { name: east, id: 1, listen: 127.0.0.1:7001, peer_listen: 127.0.0.1:7101, backend: embedded }\n"
#define REGIONS "regions:\n" R0
#define ORDERS(resolution) \
    "containers:\n"        \
    "  - name: orders\n"   \
    "    route: /orders/\n" \
    "    partition_key: /tenantId\n" \
    "    conflict_resolution: " resolution "\n"
#define LWW "{ mode: last_writer_wins, path: /version }"

/* One region whose fields are `fields` (line 2). */
#define REGION(fields) "regions:\n  - { " fields " }\n"
#define ADDRS "listen: 127.0.0.1:7001, peer_listen: 127.0.0.1:7101"

/* A region list whose second entry is `fields` (line 3). */
#define SECOND(fields) REGIONS "  - { " fields " }\n"

/* The orders container plus a second one on /r/ (line 8) with the given line. */
#define TWO(name, route) REGIONS ORDERS(LWW) \
    "  - { name: " name ", route: " route ", partition_key: /k, conflict_resolution: { mode: last_writer_wins } }\n"

static const struct bad_case cases[] = {
    /* YAML itself */
    { "regions: [\n",
      "bad.yaml:2: syntax: did not find expected node content (while parsing a flow node on line 2)" },
    { "account:\n  consistency: session\n bad: 1\n" REGIONS,
      "bad.yaml:3: syntax: did not find expected key (while parsing a block mapping on line 1)" },
    { "account:\n\tconsistency: session\n" REGIONS,
      "bad.yaml:2: syntax: found character that cannot start any token (while scanning for the next token on line 2)" },
    { REGIONS "name: \xff\n", "bad.yaml:3: syntax: invalid leading UTF-8 octet" },
    { REGIONS "---\nregions: []\n",
      "bad.yaml:4: (top level): a second YAML document; put everything in one" },
    /* shapes */
    { "- east\n", "bad.yaml:1: (top level): expected a mapping, found a sequence" },
    { "# nothing here\n", "bad.yaml:1: regions: required key is missing" },
    { "account: [session]\n" REGIONS, "bad.yaml:1: account: expected a mapping, found a sequence" },
    { "regions: { name: east }\n", "bad.yaml:1: regions: expected a sequence, found a mapping" },
    { "regions:\n  - east\n", "bad.yaml:2: regions[0]: expected a mapping, found 'east'" },
    { "regions: []\n", "bad.yaml:1: regions: must list at least one entry" },
    { REGIONS "containers: orders\n", "bad.yaml:3: containers: expected a sequence, found 'orders'" },
    { REGIONS "log:\n  level: { verbose: 1 }\n",
      "bad.yaml:4: log.level: expected debug, info, warn or error, found a mapping" },
    { REGION("name: east, id: 1, listen: [127.0.0.1, 7001], peer_listen: 127.0.0.1:7101, backend: embedded"),
      "bad.yaml:2: regions[0].listen: expected host:port, found a sequence" },
    { "regions:\n  - name: east\n    id: 1\n    listen:\n    peer_listen: 127.0.0.1:7101\n    backend: embedded\n",
      "bad.yaml:4: regions[0].listen: expected host:port, found nothing" },
    { REGIONS "? [a, b]\n: 1\n",
      "bad.yaml:3: (top level): a key must be a plain word, not a mapping or a sequence" },
    { REGION("name: \"ea\\0st\", id: 1, " ADDRS ", backend: embedded"),
      "bad.yaml:2: regions[0].name: contains a NUL character" },
    /* unknown keys */
    { REGIONS "colour: blue\n",
      "bad.yaml:3: colour: unknown key 'colour' (allowed: account, regions, containers, limits, proxy, log)" },
    { "account:\n  consistancy: eventual\n" REGIONS,
      "bad.yaml:2: account.consistancy: unknown key 'consistancy' (allowed: multi_region_writes, consistency, bounded_staleness, max_clock_drift_ms, session_wait_ms, forward_fanout, forward_timeout_ms)" },
    { "account:\n  bounded_staleness: { max_lag: 5 }\n" REGIONS,
      "bad.yaml:2: account.bounded_staleness.max_lag: unknown key 'max_lag' (allowed: max_lag_versions, max_lag_seconds)" },
    { REGION("name: east, id: 1, zone: a, " ADDRS ", backend: embedded"),
      "bad.yaml:2: regions[0].zone: unknown key 'zone' (allowed: name, id, listen, peer_listen, backend, data_dir)" },
    { REGIONS ORDERS("{ mode: last_writer_wins, paht: /version }"),
      "bad.yaml:7: containers[0].conflict_resolution.paht: unknown key 'paht' (allowed: mode, path, auto_version, procedure)" },
    { REGIONS ORDERS(LWW) "    ttl: 5\n",
      "bad.yaml:8: containers[0].ttl: unknown key 'ttl' (allowed: name, route, partition_key, conflict_resolution, metadata_field, backend_profile)" },
    { REGIONS "limits:\n  max_body: 10\n",
      "bad.yaml:4: limits.max_body: unknown key 'max_body' (allowed: max_header_bytes, max_body_bytes, header_timeout_ms, idle_timeout_ms, upstream_connect_timeout_ms, upstream_response_timeout_ms, upstream_pool_size, max_connections, drain_timeout_ms, procedure_timeout_ms, procedure_memory_bytes)" },
    { REGIONS "proxy: { tls: on }\n", "bad.yaml:3: proxy.tls: unknown key 'tls' (allowed: unmatched)" },
    { REGIONS "log: { file: x }\n", "bad.yaml:3: log.file: unknown key 'file' (allowed: level, access)" },
    /* duplicate keys */
    { "account:\n  consistency: session\n  consistency: eventual\n" REGIONS,
      "bad.yaml:3: account.consistency: duplicate key (first given on line 2)" },
    { REGIONS REGIONS, "bad.yaml:3: regions: duplicate key (first given on line 1)" },
    { REGION("name: east, id: 1, id: 2, " ADDRS ", backend: embedded"),
      "bad.yaml:2: regions[0].id: duplicate key (first given on line 2)" },
    /* missing keys */
    { "account:\n  consistency: session\n", "bad.yaml:1: regions: required key is missing" },
    { REGION("id: 1, " ADDRS ", backend: embedded"), "bad.yaml:2: regions[0].name: required key is missing" },
    { REGION("name: east, " ADDRS ", backend: embedded"), "bad.yaml:2: regions[0].id: required key is missing" },
    { REGION("name: east, id: 1, peer_listen: 127.0.0.1:7101, backend: embedded"),
      "bad.yaml:2: regions[0].listen: required key is missing" },
    { REGION("name: east, id: 1, listen: 127.0.0.1:7001, backend: embedded"),
      "bad.yaml:2: regions[0].peer_listen: required key is missing" },
    { REGION("name: east, id: 1, " ADDRS), "bad.yaml:2: regions[0].backend: required key is missing" },
    { REGIONS "containers:\n  - { route: /o/, partition_key: /k, conflict_resolution: { mode: last_writer_wins } }\n",
      "bad.yaml:4: containers[0].name: required key is missing" },
    { REGIONS "containers:\n  - { name: o, partition_key: /k, conflict_resolution: { mode: last_writer_wins } }\n",
      "bad.yaml:4: containers[0].route: required key is missing" },
    { REGIONS "containers:\n  - name: orders\n    route: /orders/\n    conflict_resolution: { mode: last_writer_wins }\n",
      "bad.yaml:4: containers[0].partition_key: required key is missing" },
    { REGIONS "containers:\n  - name: orders\n    route: /orders/\n    partition_key: /tenantId\n",
      "bad.yaml:4: containers[0].conflict_resolution: required key is missing" },
    { REGIONS ORDERS("{ path: /version }"),
      "bad.yaml:7: containers[0].conflict_resolution.mode: required key is missing" },
    /* booleans */
    { "account:\n  multi_region_writes: yes\n" REGIONS,
      "bad.yaml:2: account.multi_region_writes: expected true or false, found 'yes'" },
    { REGIONS "log: { access: 1 }\n", "bad.yaml:3: log.access: expected true or false, found '1'" },
    { REGIONS ORDERS("{ mode: last_writer_wins, path: /v, auto_version: True }"),
      "bad.yaml:7: containers[0].conflict_resolution.auto_version: expected true or false, found 'True'" },
    /* integers */
    { REGION("name: east, id: 0, " ADDRS ", backend: embedded"),
      "bad.yaml:2: regions[0].id: expected an integer from 1 to 65535, found '0'" },
    { REGION("name: east, id: 65536, " ADDRS ", backend: embedded"),
      "bad.yaml:2: regions[0].id: expected an integer from 1 to 65535, found '65536'" },
    { REGION("name: east, id: 0x1, " ADDRS ", backend: embedded"),
      "bad.yaml:2: regions[0].id: expected an integer from 1 to 65535, found '0x1'" },
    { REGION("name: east, id: '', " ADDRS ", backend: embedded"),
      "bad.yaml:2: regions[0].id: expected an integer from 1 to 65535, found ''" },
    { REGIONS "limits:\n  max_body_bytes: 0\n",
      "bad.yaml:4: limits.max_body_bytes: expected a positive integer, found '0'" },
    { REGIONS "limits:\n  idle_timeout_ms: -5\n",
      "bad.yaml:4: limits.idle_timeout_ms: expected a positive integer, found '-5'" },
    { REGIONS "limits:\n  header_timeout_ms: 1.5\n",
      "bad.yaml:4: limits.header_timeout_ms: expected a positive integer, found '1.5'" },
    { REGIONS "limits:\n  upstream_pool_size: 4294967296\n",
      "bad.yaml:4: limits.upstream_pool_size: expected a positive integer, found '4294967296'" },
    { REGIONS "limits:\n  max_connections: +5\n",
      "bad.yaml:4: limits.max_connections: expected a positive integer, found '+5'" },
    { REGIONS "limits:\n  max_header_bytes: 1023\n",
      "bad.yaml:4: limits.max_header_bytes: expected an integer of at least 1024, found '1023'" },
    { "account:\n  bounded_staleness: { max_lag_versions: 0 }\n" REGIONS,
      "bad.yaml:2: account.bounded_staleness.max_lag_versions: expected a positive integer, found '0'" },
    { "account:\n  bounded_staleness: { max_lag_versions: 18446744073709551616 }\n" REGIONS,
      "bad.yaml:2: account.bounded_staleness.max_lag_versions: expected a positive integer, found '18446744073709551616'" },
    { "account:\n  bounded_staleness: { max_lag_seconds: 0 }\n" REGIONS,
      "bad.yaml:2: account.bounded_staleness.max_lag_seconds: expected a positive integer, found '0'" },
    /* consistency */
    { "account:\n  consistency: linearizable\n" REGIONS,
      "bad.yaml:2: account.consistency: expected eventual, consistent_prefix, session, bounded_staleness or strong, found 'linearizable'" },
    { "account:\n  multi_region_writes: true\n  consistency: strong\n" REGIONS,
      "bad.yaml:3: account.consistency: 'strong' is not allowed with multi_region_writes: true" },
    { "account:\n  consistency: strong\n" REGIONS,
      "bad.yaml:2: account.consistency: 'strong' is not allowed with multi_region_writes: true" },
    /* regions: names, ids, addresses */
    { SECOND("name: east, id: 2, listen: 127.0.0.1:7002, peer_listen: 127.0.0.1:7102, backend: embedded"),
      "bad.yaml:3: regions[1].name: 'east' is already the name of regions[0]" },
    { SECOND("name: west, id: 1, listen: 127.0.0.1:7002, peer_listen: 127.0.0.1:7102, backend: embedded"),
      "bad.yaml:3: regions[1].id: 1 is already the id of regions[0]" },
    { SECOND("name: west, id: 2, listen: 127.0.0.1:7001, peer_listen: 127.0.0.1:7102, backend: embedded"),
      "bad.yaml:3: regions[1].listen: 127.0.0.1:7001 is already used by regions[0].listen" },
    { SECOND("name: west, id: 2, listen: 127.0.0.1:7002, peer_listen: 127.0.0.1:7101, backend: embedded"),
      "bad.yaml:3: regions[1].peer_listen: 127.0.0.1:7101 is already used by regions[0].peer_listen" },
    { SECOND("name: west, id: 2, listen: 127.0.0.1:7101, peer_listen: 127.0.0.1:7102, backend: embedded"),
      "bad.yaml:3: regions[1].listen: 127.0.0.1:7101 is already used by regions[0].peer_listen" },
    { REGION("name: east, id: 1, listen: Node1:7001, peer_listen: node1:7001, backend: embedded"),
      "bad.yaml:2: regions[0].peer_listen: node1:7001 is already used by regions[0].listen" },
    { REGION("name: east/1, id: 1, " ADDRS ", backend: embedded"),
      "bad.yaml:2: regions[0].name: 'east/1': a name is made of letters, digits, '-' and '_'" },
    { REGION("name: '', id: 1, " ADDRS ", backend: embedded"),
      "bad.yaml:2: regions[0].name: '': a name is made of letters, digits, '-' and '_'" },
    { REGION("name: east, id: 1, " ADDRS ", backend: embedded, data_dir: ''"),
      "bad.yaml:2: regions[0].data_dir: must not be empty" },
    { REGION("name: east, id: 1, listen: 127.0.0.1, peer_listen: 127.0.0.1:7101, backend: embedded"),
      "bad.yaml:2: regions[0].listen: '127.0.0.1': the port is missing" },
    { REGION("name: east, id: 1, listen: '127.0.0.1:', peer_listen: 127.0.0.1:7101, backend: embedded"),
      "bad.yaml:2: regions[0].listen: '127.0.0.1:': the port is missing" },
    { REGION("name: east, id: 1, listen: 127.0.0.1:0, peer_listen: 127.0.0.1:7101, backend: embedded"),
      "bad.yaml:2: regions[0].listen: '127.0.0.1:0': the port must be a number from 1 to 65535" },
    { REGION("name: east, id: 1, listen: 127.0.0.1:65536, peer_listen: 127.0.0.1:7101, backend: embedded"),
      "bad.yaml:2: regions[0].listen: '127.0.0.1:65536': the port must be a number from 1 to 65535" },
    { REGION("name: east, id: 1, listen: 127.0.0.1:http, peer_listen: 127.0.0.1:7101, backend: embedded"),
      "bad.yaml:2: regions[0].listen: '127.0.0.1:http': the port must be a number from 1 to 65535" },
    { REGION("name: east, id: 1, listen: ':7001', peer_listen: 127.0.0.1:7101, backend: embedded"),
      "bad.yaml:2: regions[0].listen: ':7001': the host is empty" },
    { REGION("name: east, id: 1, listen: 300.1.1.1:7001, peer_listen: 127.0.0.1:7101, backend: embedded"),
      "bad.yaml:2: regions[0].listen: '300.1.1.1:7001': not a valid IPv4 address" },
    { REGION("name: east, id: 1, listen: 127.0.0.1:7001, peer_listen: '::1:7101', backend: embedded"),
      "bad.yaml:2: regions[0].peer_listen: '::1:7101': an IPv6 address needs brackets, as in [::1]:7001" },
    { REGION("name: east, id: 1, listen: '[::zz]:7001', peer_listen: 127.0.0.1:7101, backend: embedded"),
      "bad.yaml:2: regions[0].listen: '[::zz]:7001': not a valid IPv6 address" },
    { REGION("name: east, id: 1, listen: '[::1:7001', peer_listen: 127.0.0.1:7101, backend: embedded"),
      "bad.yaml:2: regions[0].listen: '[::1:7001': missing ']' after the IPv6 address" },
    { REGION("name: east, id: 1, listen: east-.local:7001, peer_listen: 127.0.0.1:7101, backend: embedded"),
      "bad.yaml:2: regions[0].listen: 'east-.local:7001': not a valid host name" },
    /* backends */
    { REGION("name: east, id: 1, " ADDRS ", backend: 'https://db:5984'"),
      "bad.yaml:2: regions[0].backend: 'https://db:5984': TLS to backends is not supported yet; use http://" },
    { REGION("name: east, id: 1, " ADDRS ", backend: 'ftp://db'"),
      "bad.yaml:2: regions[0].backend: expected embedded or an http://host:port URL, found 'ftp://db'" },
    { REGION("name: east, id: 1, " ADDRS ", backend: lmdb"),
      "bad.yaml:2: regions[0].backend: expected embedded or an http://host:port URL, found 'lmdb'" },
    { REGION("name: east, id: 1, " ADDRS ", backend: 'http://db:x/base'"),
      "bad.yaml:2: regions[0].backend: 'http://db:x/base': the port must be a number from 1 to 65535" },
    { REGION("name: east, id: 1, " ADDRS ", backend: 'http:///base'"),
      "bad.yaml:2: regions[0].backend: 'http:///base': the host is empty" },
    { REGION("name: east, id: 1, " ADDRS ", backend: 'http://127.0.0.1:7001/'"),
      "bad.yaml:2: regions[0].backend: 127.0.0.1:7001 is regions[0].listen: Meridian would forward to itself" },
    /* containers: routes, names, pointers */
    { REGIONS ORDERS(LWW) "    route: /again/\n",
      "bad.yaml:8: containers[0].route: duplicate key (first given on line 5)" },
    { REGIONS "containers:\n  - { name: o, route: orders/, partition_key: /k, conflict_resolution: { mode: last_writer_wins } }\n",
      "bad.yaml:4: containers[0].route: 'orders/' must start and end with '/'" },
    { REGIONS "containers:\n  - { name: o, route: /orders, partition_key: /k, conflict_resolution: { mode: last_writer_wins } }\n",
      "bad.yaml:4: containers[0].route: '/orders' must start and end with '/'" },
    { REGIONS "containers:\n  - { name: o, route: /_meridian/o/, partition_key: /k, conflict_resolution: { mode: last_writer_wins } }\n",
      "bad.yaml:4: containers[0].route: '/_meridian/o/' is under /_meridian/, which Meridian keeps for itself" },
    { REGIONS "containers:\n  - { name: o, route: '/o?x=1/', partition_key: /k, conflict_resolution: { mode: last_writer_wins } }\n",
      "bad.yaml:4: containers[0].route: '/o?x=1/' must not contain '?', '#' or spaces" },
    { TWO("eu", "/orders/eu/"),
      "bad.yaml:8: containers[1].route: '/orders/eu/' overlaps '/orders/', the route of containers[0]" },
    { TWO("all", "/"), "bad.yaml:8: containers[1].route: '/' overlaps '/orders/', the route of containers[0]" },
    { TWO("again", "/orders/"),
      "bad.yaml:8: containers[1].route: '/orders/' overlaps '/orders/', the route of containers[0]" },
    { TWO("orders", "/carts/"), "bad.yaml:8: containers[1].name: 'orders' is already the name of containers[0]" },
    { REGIONS "containers:\n  - { name: o, route: /o/, partition_key: tenantId, conflict_resolution: { mode: last_writer_wins } }\n",
      "bad.yaml:4: containers[0].partition_key: expected a JSON pointer such as /tenantId, found 'tenantId'" },
    { REGIONS "containers:\n  - { name: o, route: /o/, partition_key: /a~2b, conflict_resolution: { mode: last_writer_wins } }\n",
      "bad.yaml:4: containers[0].partition_key: '/a~2b': in a JSON pointer '~' must be followed by 0 or 1" },
    { REGIONS ORDERS("{ mode: last_writer_wins, path: version }"),
      "bad.yaml:7: containers[0].conflict_resolution.path: expected a JSON pointer such as /tenantId, found 'version'" },
    /* conflict resolution */
    { REGIONS ORDERS("{ mode: first_writer_wins }"),
      "bad.yaml:7: containers[0].conflict_resolution.mode: expected last_writer_wins or custom, found 'first_writer_wins'" },
    { REGIONS ORDERS("{ mode: custom, path: /version }"),
      "bad.yaml:7: containers[0].conflict_resolution.path: only used with mode: last_writer_wins (a custom container's conflicts go to its procedure or its conflicts feed)" },
    { REGIONS ORDERS("{ mode: custom, procedure: no-such-resolver.js }"),
      "bad.yaml:7: containers[0].conflict_resolution.procedure: cannot read 'no-such-resolver.js': No such file or directory" },
    { REGIONS ORDERS("{ mode: custom, procedure: /tmp }"),
      "bad.yaml:7: containers[0].conflict_resolution.procedure: cannot read '/tmp': not a regular file" },
    { REGIONS ORDERS("\n      mode: last_writer_wins\n      procedure: resolve.js"),
      "bad.yaml:9: containers[0].conflict_resolution.procedure: only used with mode: custom" },
    { REGIONS ORDERS("\n      mode: last_writer_wins\n      auto_version: true"),
      "bad.yaml:9: containers[0].conflict_resolution.auto_version: needs mode: last_writer_wins and a path to write the version into" },
    /* container options */
    { REGIONS ORDERS(LWW) "    metadata_field: ''\n", "bad.yaml:8: containers[0].metadata_field: must not be empty" },
    { REGIONS ORDERS(LWW) "    backend_profile: couchdb\n    metadata_field: _meridian\n",
      "bad.yaml:9: containers[0].metadata_field: '_meridian': CouchDB refuses document fields that start with '_'" },
    { REGIONS ORDERS(LWW) "    backend_profile: mongodb\n",
      "bad.yaml:8: containers[0].backend_profile: expected generic or couchdb, found 'mongodb'" },
    /* proxy and log */
    { REGIONS "proxy: { unmatched: drop }\n", "bad.yaml:3: proxy.unmatched: expected pass or refuse, found 'drop'" },
    { REGIONS "log:\n  level: verbose\n", "bad.yaml:4: log.level: expected debug, info, warn or error, found 'verbose'" },
};

/* Criterion runs each case in a new process where pointers into this one
 * mean nothing, so the parameter is the index into `cases`. */
ParameterizedTestParameters(conf, refuses)
{
    static size_t index[sizeof cases / sizeof cases[0]];
    for (size_t i = 0; i < sizeof index / sizeof index[0]; i++)
        index[i] = i;
    return cr_make_param_array(size_t, index, sizeof index / sizeof index[0]);
}

ParameterizedTest(size_t *i, conf, refuses)
{
    const struct bad_case *bc = &cases[*i];
    struct conf *c = (struct conf *)1;
    struct err e = { "" };
    int rc = conf_parse("bad.yaml", bc->yaml, strlen(bc->yaml), &c, &e);
    cr_assert_eq(rc, -1, "accepted:\n%s", bc->yaml);
    cr_expect_null(c);
    cr_expect_str_eq(e.msg, bc->msg, "for:\n%s", bc->yaml);
}

#include <criterion/criterion.h>
#include <string.h>

#include "proxy/route.h"

static struct conf_container containers[] = {
    { .name = "orders", .route = "/orders/" },
    { .name = "ledger", .route = "/api/ledger/" },
};
static struct conf conf = { .containers = containers, .n_containers = 2 };

static struct route_result match(const char *target)
{
    return route_match(&conf, target, strlen(target));
}

Test(route, container_prefix_matches)
{
    struct route_result r = match("/orders/abc");
    cr_assert_eq(r.kind, ROUTE_CONTAINER);
    cr_assert_str_eq(r.container->name, "orders");
    r = match("/api/ledger/p-1?x=/orders/");
    cr_assert_eq(r.kind, ROUTE_CONTAINER);
    cr_assert_str_eq(r.container->name, "ledger");
    cr_assert_eq(match("/orders/").kind, ROUTE_CONTAINER);
}

Test(route, non_prefixes_are_unmatched)
{
    cr_assert_eq(match("/orders").kind, ROUTE_UNMATCHED);
    cr_assert_eq(match("/ordersx/1").kind, ROUTE_UNMATCHED);
    cr_assert_eq(match("/api/ledger").kind, ROUTE_UNMATCHED);
    cr_assert_eq(match("/").kind, ROUTE_UNMATCHED);
    /* The query string does not take part in matching. */
    cr_assert_eq(match("/x?/orders/1").kind, ROUTE_UNMATCHED);
}

Test(route, ops_endpoints_win)
{
    cr_assert_eq(match("/_meridian/metrics").kind, ROUTE_OPS);
    cr_assert_eq(match("/_meridian/health?x").kind, ROUTE_OPS);
    cr_assert_eq(match("/_meridian").kind, ROUTE_UNMATCHED);
}

Test(route, path_length_stops_at_query_or_fragment)
{
    cr_assert_eq(route_path_len("/a/b?c", 6), 4);
    cr_assert_eq(route_path_len("/a#f", 4), 2);
    cr_assert_eq(route_path_len("/a", 2), 2);
}

Test(route, query_numbers)
{
    bool bad = false;
    cr_assert_eq(route_query_u64("/o/_changes?since=42&limit=5", "since", 0, &bad), 42);
    cr_assert_eq(route_query_u64("/o/_changes?since=42&limit=5", "limit", 9, &bad), 5);
    cr_assert_eq(route_query_u64("/o/_changes?since=42", "limit", 9, &bad), 9);
    cr_assert_eq(route_query_u64("/o/_changes", "since", 7, &bad), 7);
    cr_assert_not(bad);
    const char *bads[] = { "/x?since=", "/x?since=-1", "/x?since= 1", "/x?since=1a", "/x?since=+2" };
    for (size_t i = 0; i < sizeof bads / sizeof *bads; i++) {
        bad = false;
        route_query_u64(bads[i], "since", 0, &bad);
        cr_assert(bad, "%s should be refused", bads[i]);
    }
    bad = false;
    cr_assert_eq(route_query_u64("/x?sinceX=3&since=4", "since", 0, &bad), 4);
    cr_assert_not(bad);
}

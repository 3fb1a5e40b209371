#include <criterion/criterion.h>
#include <string.h>

#include "proxy/headers.h"

/* Fills a block the way llhttp's callbacks do, splitting every piece in two
 * to exercise the joining of partial callbacks. */
static void feed(struct hdr_block *b, const char *line, const char *const *kv, size_t n)
{
    size_t ll = strlen(line);
    cr_assert_eq(hdr_block_add_line(b, line, ll / 2), 0);
    cr_assert_eq(hdr_block_add_line(b, line + ll / 2, ll - ll / 2), 0);
    cr_assert_eq(hdr_block_end_line(b), 0);
    for (size_t i = 0; i < n; i++) {
        const char *name = kv[2 * i], *val = kv[2 * i + 1];
        size_t nl = strlen(name), vl = strlen(val);
        cr_assert_eq(hdr_block_add_name(b, name, nl / 2), 0);
        cr_assert_eq(hdr_block_add_name(b, name + nl / 2, nl - nl / 2), 0);
        cr_assert_eq(hdr_block_end_name(b), 0);
        if (vl) {
            cr_assert_eq(hdr_block_add_value(b, val, vl / 2), 0);
            cr_assert_eq(hdr_block_add_value(b, val + vl / 2, vl - vl / 2), 0);
        }
        cr_assert_eq(hdr_block_end_value(b), 0);
    }
}

Test(headers, pieces_join_and_lookup_is_case_insensitive)
{
    struct hdr_block b = { 0 };
    const char *kv[] = { "Host", "example", "X-Empty", "", "Content-Type", "application/json" };
    feed(&b, "/orders/abc?x=1", kv, 3);
    cr_assert_str_eq(hdr_block_line(&b), "/orders/abc?x=1");
    size_t n = 0;
    cr_assert_str_eq(hdr_block_get(&b, "content-type", &n), "application/json");
    cr_assert_eq(n, 16);
    cr_assert_str_eq(hdr_block_get(&b, "x-empty", &n), "");
    cr_assert_eq(n, 0);
    cr_assert_null(hdr_block_get(&b, "missing", NULL));
    hdr_block_free(&b);
}

Test(headers, hop_by_hop_list_and_connection_tokens)
{
    const char *conn = "keep-alive, X-Secret ,Upgrade";
    cr_assert(headers_is_hop_by_hop("Transfer-Encoding", 17, NULL, 0));
    cr_assert(headers_is_hop_by_hop("keep-alive", 10, NULL, 0));
    cr_assert(headers_is_hop_by_hop("x-secret", 8, conn, strlen(conn)));
    cr_assert_not(headers_is_hop_by_hop("X-Secrets", 9, conn, strlen(conn)));
    cr_assert_not(headers_is_hop_by_hop("Content-Type", 12, conn, strlen(conn)));
}

Test(headers, forwarded_request_drops_hop_by_hop_and_extends_forwarding)
{
    struct hdr_block b = { 0 };
    const char *kv[] = {
        "Host", "db.local", "Connection", "keep-alive, X-Secret", "X-Secret", "1",
        "Keep-Alive", "timeout=5", "Transfer-Encoding", "chunked", "Expect", "100-continue",
        "X-Forwarded-For", "10.0.0.9", "Via", "1.0 edge", "Accept", "*/*",
        "Content-Length", "7",
    };
    feed(&b, "/x", kv, 10);
    struct sbuf out = { 0 };
    struct fwd_info fi = { .client_ip = "127.0.0.2", .proto = "http", .via = "1.1 meridian-east",
                           .default_host = "backend:80" };
    cr_assert_eq(headers_write_request(&out, &b, &fi), 0);
    cr_assert_str_eq(out.p, "Host: db.local\r\n"
                            "Accept: */*\r\n"
                            "X-Forwarded-For: 10.0.0.9, 127.0.0.2\r\n"
                            "X-Forwarded-Proto: http\r\n"
                            "Via: 1.0 edge, 1.1 meridian-east\r\n");
    sbuf_free(&out);
    hdr_block_free(&b);
}

Test(headers, forwarded_request_gets_host_when_client_sent_none)
{
    struct hdr_block b = { 0 };
    const char *kv[] = { "Accept", "*/*" };
    feed(&b, "/x", kv, 1);
    struct sbuf out = { 0 };
    struct fwd_info fi = { .client_ip = "::1", .proto = "http", .via = "1.1 m",
                           .default_host = "backend:8080" };
    cr_assert_eq(headers_write_request(&out, &b, &fi), 0);
    cr_assert_str_eq(out.p, "Accept: */*\r\nHost: backend:8080\r\nX-Forwarded-For: ::1\r\n"
                            "X-Forwarded-Proto: http\r\nVia: 1.1 m\r\n");
    sbuf_free(&out);
    hdr_block_free(&b);
}

Test(headers, relayed_response_drops_framing_and_adds_via)
{
    struct hdr_block b = { 0 };
    const char *kv[] = { "Content-Type", "application/json", "Transfer-Encoding", "chunked",
                         "Content-Length", "10", "Connection", "close", "ETag", "\"1\"" };
    feed(&b, "OK", kv, 5);
    struct sbuf out = { 0 };
    cr_assert_eq(headers_write_response(&out, &b, "1.1 meridian-west"), 0);
    cr_assert_str_eq(out.p, "Content-Type: application/json\r\nETag: \"1\"\r\n"
                            "Via: 1.1 meridian-west\r\n");
    cr_assert_str_eq(hdr_block_line(&b), "OK");
    sbuf_free(&out);
    hdr_block_free(&b);
}

Test(headers, list_membership)
{
    cr_assert(headers_list_has("gzip, 100-continue", 18, "100-CONTINUE"));
    cr_assert_not(headers_list_has("", 0, "close"));
    cr_assert_not(headers_list_has("closed", 6, "close"));
    cr_assert(headers_list_has(" , close", 8, "close"));
}

Test(headers, reset_reuses_the_block)
{
    struct hdr_block b = { 0 };
    const char *kv1[] = { "A", "1", "B", "2" };
    const char *kv2[] = { "C", "3" };
    feed(&b, "/one", kv1, 2);
    hdr_block_reset(&b);
    feed(&b, "/two", kv2, 1);
    cr_assert_eq(b.n, 1);
    cr_assert_str_eq(hdr_block_line(&b), "/two");
    cr_assert_null(hdr_block_get(&b, "a", NULL));
    cr_assert_str_eq(hdr_block_get(&b, "c", NULL), "3");
    hdr_block_free(&b);
}

Test(headers, forward_request_is_complete)
{
    struct hdr_block b = { 0 };
    const char *kv[] = { "Host", "db", "Transfer-Encoding", "chunked" };
    feed(&b, "/orders/a", kv, 2);
    struct sbuf out = { 0 };
    struct fwd_info fi = { .client_ip = "10.1.1.1", .proto = "http", .via = "1.1 m" };
    cr_assert_eq(headers_write_forward(&out, "PUT", "/orders/a", &b, &fi,
                                       "Content-Type: application/json\r\n", "{}", 2, true), 0);
    cr_assert_str_eq(out.p, "PUT /orders/a HTTP/1.1\r\nHost: db\r\nX-Forwarded-For: 10.1.1.1\r\n"
                            "X-Forwarded-Proto: http\r\nVia: 1.1 m\r\n"
                            "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
    out.len = 0;
    cr_assert_eq(headers_write_forward(&out, "GET", "/x", NULL, &fi, NULL, NULL, 0, false), 0);
    cr_assert_str_eq(out.p, "GET /x HTTP/1.1\r\nX-Forwarded-For: 10.1.1.1\r\n"
                            "X-Forwarded-Proto: http\r\nVia: 1.1 m\r\n\r\n");
    out.len = 0;
    cr_assert_eq(headers_write_forward(&out, "POST", "/c/", NULL, &fi, NULL, NULL, 0, true), 0);
    cr_assert(strstr(out.p, "Content-Length: 0\r\n\r\n") != NULL);
    sbuf_free(&out);
    hdr_block_free(&b);
}

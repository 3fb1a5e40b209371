/* Unit tests of replication/tag (a client's document tagged as text) and of
 * the jsonscan checks it relies on: what the text path accepts Jansson must
 * accept too, the tagged text must mean what the parsed path's did (the
 * client's members, `_ts`, the metadata object, the auto-versioned path),
 * and what it cannot do as text it must hand back (TAG_SLOW), never guess. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "replication/hlc.h"
#include "replication/tag.h"
#include "util/jsonscan.h"

#define HLC_AT(ms, c) (((uint64_t)(ms) << 16) | (uint64_t)(c))

static const struct tag_meta meta = {
    .region = "west", .region_id = 2, .lsn = 17, .hlc = HLC_AT(1700000000123ULL, 4),
    .base = { 1, 9 },
};

static struct tag_spec spec_of(const char *lww_path, bool auto_version)
{
    struct tag_spec s;
    cr_assert(tag_spec_of(&s, "_meridian", lww_path, auto_version));
    return s;
}

/* Tags `body` as text; returns the parsed result (the caller decrefs). */
static json_t *tagged(const char *body, const struct tag_spec *s, const struct tag_meta *m)
{
    struct tag_doc d;
    size_t len;
    cr_assert_eq(tag_scan(&d, body, strlen(body), s), TAG_OK, "scan of %s", body);
    char *text = tag_apply(&d, s, m, &len);
    cr_assert_not_null(text);
    cr_assert_eq(len, strlen(text));
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    cr_assert_not_null(j, "tagged text is not JSON (%s): %s", je.text, text);
    free(text);
    tag_doc_clear(&d);
    return j;
}

Test(tag, adds_ts_and_metadata_and_keeps_the_clients_members)
{
    struct tag_spec s = spec_of("/version", false);
    json_t *j = tagged(" {\"id\":\"a\", \"n\": 1.50, \"s\":\"\\u00e9\"}\n", &s, &meta);
    cr_expect_str_eq(json_string_value(json_object_get(j, "id")), "a");
    cr_expect(json_real_value(json_object_get(j, "n")) == 1.5);
    cr_expect_str_eq(json_string_value(json_object_get(j, "s")), "\xc3\xa9");
    cr_expect_eq(json_integer_value(json_object_get(j, "_ts")), 1700000000);
    json_t *m = json_object_get(j, "_meridian");
    cr_expect_str_eq(json_string_value(json_object_get(m, "region")), "west");
    cr_expect_eq(json_integer_value(json_object_get(m, "regionId")), 2);
    cr_expect_eq(json_integer_value(json_object_get(m, "lsn")), 17);
    cr_expect_eq((uint64_t)json_integer_value(json_object_get(m, "hlc")), meta.hlc);
    cr_expect_str_eq(json_string_value(json_object_get(m, "base")), "1:9");
    cr_expect_eq(json_object_size(j), 5);
    json_decref(j);
}

Test(tag, empty_object_and_no_base)
{
    struct tag_spec s = spec_of(NULL, false);
    struct tag_meta m = meta;
    m.base = VERSION_NONE;
    json_t *j = tagged("{ }", &s, &m);
    cr_expect(json_is_null(json_object_get(json_object_get(j, "_meridian"), "base")));
    cr_expect_eq(json_object_size(j), 2);
    json_decref(j);
}

Test(tag, replaces_a_clients_ts_in_place)
{
    struct tag_spec s = spec_of(NULL, false);
    json_t *j = tagged("{\"_ts\":\"x\",\"a\":1,\"_ts\":[1,2]}", &s, &meta);
    cr_expect_eq(json_integer_value(json_object_get(j, "_ts")), 1700000000);
    cr_expect_eq(json_object_size(j), 3);
    json_decref(j);
}

Test(tag, auto_versioned_top_level_path_is_set_or_added)
{
    struct tag_spec s = spec_of("/version", true);
    json_t *j = tagged("{\"version\":3,\"a\":{}}", &s, &meta);
    cr_expect_eq((uint64_t)json_integer_value(json_object_get(j, "version")), meta.hlc);
    json_decref(j);
    j = tagged("{\"a\":true}", &s, &meta);
    cr_expect_eq((uint64_t)json_integer_value(json_object_get(j, "version")), meta.hlc);
    json_decref(j);
}

Test(tag, new_id_is_appended)
{
    struct tag_spec s = spec_of(NULL, false);
    struct tag_meta m = meta;
    m.new_id = "gen-1";
    json_t *j = tagged("{\"a\":1}", &s, &m);
    cr_expect_str_eq(json_string_value(json_object_get(j, "id")), "gen-1");
    json_decref(j);
}

Test(tag, lww_value_is_read_as_sent)
{
    struct tag_spec s = spec_of("/version", false);
    struct tag_doc d;
    double v = 0;
    const char *body = "{\"version\":1,\"version\":-2.5e3}";
    cr_assert_eq(tag_scan(&d, body, strlen(body), &s), TAG_OK);
    cr_expect(tag_lww_value(&d, &v));
    cr_expect(v == -2500.0, "the last one, as Jansson reads it: %g", v);
    tag_doc_clear(&d);
    body = "{\"version\":\"7\"}";
    cr_assert_eq(tag_scan(&d, body, strlen(body), &s), TAG_OK);
    cr_expect_not(tag_lww_value(&d, &v));
    tag_doc_clear(&d);
}

Test(tag, plain_post_id_only)
{
    struct tag_spec s = spec_of(NULL, false);
    const char *ok[] = { "{\"id\":\"abc\"}" };
    const char *no[] = { "{\"id\":\"\"}", "{\"id\":\"a/b\"}", "{\"id\":\"a\\u0041\"}", "{\"id\":5}" };
    struct tag_doc d;
    const char *id;
    size_t n;
    cr_assert_eq(tag_scan(&d, ok[0], strlen(ok[0]), &s), TAG_OK);
    cr_expect(tag_plain_id(&d, &id, &n) && n == 3 && memcmp(id, "abc", 3) == 0);
    tag_doc_clear(&d);
    for (size_t i = 0; i < sizeof no / sizeof *no; i++) {
        cr_assert_eq(tag_scan(&d, no[i], strlen(no[i]), &s), TAG_OK);
        cr_expect_not(tag_plain_id(&d, &id, &n), "%s", no[i]);
        tag_doc_clear(&d);
    }
}

Test(tag, forged_metadata_is_refused)
{
    struct tag_spec s = spec_of(NULL, false);
    struct tag_doc d;
    const char *body = "{\"a\":1,\"_meridian\":{}}";
    cr_expect_eq(tag_scan(&d, body, strlen(body), &s), TAG_FORGED);
    tag_doc_clear(&d);
}

/* What the text path leaves to Jansson: anything it is not sure of. */
Test(tag, hands_back_what_it_cannot_do_as_text)
{
    struct tag_spec s = spec_of("/version", true);
    const char *slow[] = {
        "[1]", "\"x\"", "", "{", "{\"a\":1} x", "{\"a\":1}{}", "{\"\\u005fmeridian\":1}",
        "{\"a\":01}", "{\"a\":\"\\ud800\"}", "{\"a\":\"\\udc00\"}",
        "{\"a\":99999999999999999999}", "{\"a\":1e400}", "{\"a\":\"\x80\"}",
        "{\"a\":1,\"_meridian\":1,", /* forged, but not JSON: Jansson names the error */
    };
    struct tag_doc d;
    for (size_t i = 0; i < sizeof slow / sizeof *slow; i++) {
        cr_expect_eq(tag_scan(&d, slow[i], strlen(slow[i]), &s), TAG_SLOW, "%s", slow[i]);
        tag_doc_clear(&d);
    }
    struct tag_spec n;
    cr_expect_not(tag_spec_of(&n, "_meridian", "/a/b", true), "nested auto-versioned path");
    cr_expect(tag_spec_of(&n, "_meridian", "/a/b", false));
    cr_expect_null(n.lww_key);
    cr_expect_not(tag_spec_of(&n, "_meridian", "/_ts", false));
    cr_expect_not(tag_spec_of(&n, "_meridian", "/id", true));
}

/* jsonscan accepts nothing Jansson refuses. */
Test(jsonscan, refuses_what_jansson_refuses)
{
    const char *bad[] = {
        "\"\\ud800\"", "\"\\ud800\\u0041\"", "\"\\udfff\"", "\"\\u0000\"",
        "9223372036854775808", "-9223372036854775809", "1e309", "-1.5e400", "[1,]", "01",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *t = bad[i];
        cr_expect_neq(jsonscan_value(t, t + strlen(t)), t + strlen(t), "%s accepted", t);
        cr_expect_null(json_loads(t, JSON_DECODE_ANY, NULL), "Jansson took %s", t);
    }
    const char *good[] = {
        "\"\\ud83d\\ude00\"", "9223372036854775807", "-9223372036854775808", "1e308",
        "1e-400", "123456789012345678", "0.000000000000000000000000000001",
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        const char *t = good[i];
        cr_expect_eq(jsonscan_value(t, t + strlen(t)), t + strlen(t), "%s refused", t);
        json_t *j = json_loads(t, JSON_DECODE_ANY, NULL);
        cr_expect_not_null(j, "Jansson refused %s", t);
        json_decref(j);
    }
}

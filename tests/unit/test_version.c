#include <criterion/criterion.h>
#include <string.h>

#include "replication/version.h"

static int parse(const char *s, struct version *out)
{
    return version_parse(s, strlen(s), out);
}

Test(version, formats_region_colon_lsn)
{
    char buf[VERSION_TEXT_MAX];

    version_format((struct version){ 3, 17 }, buf);
    cr_assert_str_eq(buf, "3:17");
    version_format((struct version){ UINT32_MAX, UINT64_MAX }, buf);
    cr_assert_str_eq(buf, "4294967295:18446744073709551615");
}

Test(version, none_is_the_empty_text)
{
    char buf[VERSION_TEXT_MAX] = "junk";
    struct version v = { 7, 7 };

    version_format(VERSION_NONE, buf);
    cr_assert_str_eq(buf, "");
    cr_assert_eq(parse("", &v), 0);
    cr_assert(version_is_none(v));
}

Test(version, round_trips)
{
    static const struct version table[] = {
        { 1, 1 }, { 2, 17 }, { 42, 1700000000000 }, { 1, UINT64_MAX },
        { UINT32_MAX, 1 }, { UINT32_MAX, UINT64_MAX }, { 10, 100 },
    };

    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        char buf[VERSION_TEXT_MAX];
        struct version v = VERSION_NONE;
        version_format(table[i], buf);
        cr_assert_eq(parse(buf, &v), 0, "'%s'", buf);
        cr_assert(version_eq(v, table[i]), "'%s'", buf);
    }
}

Test(version, parses_only_len_bytes)
{
    struct version v = VERSION_NONE;

    cr_assert_eq(version_parse("12:34xyz", 4, &v), 0);
    cr_assert(version_eq(v, (struct version){ 12, 3 }));
}

Test(version, region_zero_names_a_resolved_document)
{
    struct version v = VERSION_NONE;
    cr_assert_eq(parse("0:17", &v), 0);
    cr_expect(version_eq(v, (struct version){ 0, 17 }));
    cr_expect(!version_is_none(v));
    char buf[VERSION_TEXT_MAX];
    version_format(v, buf);
    cr_expect_str_eq(buf, "0:17");
}

Test(version, rejects_malformed_text)
{
    static const char *const table[] = {
        "1", ":", "1:", ":1", "1:0", "0:0", "-1:1", "1:-1", "+1:1", "1:+1",
        " 1:1", "1:1 ", "1: 1", "1 :1", "1:1:1", "1:1x", "x:1", "1:0x10", "a:b",
        "1;1", "4294967296:1", "99999999999999999999:1", "1:18446744073709551616",
        "1:99999999999999999999", "01:1", "1:01", "1:1.0", "1e3:1", "\t1:1",
    };

    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        struct version v = { 5, 5 };
        cr_expect_eq(parse(table[i], &v), -1, "'%s' was accepted", table[i]);
        cr_expect(version_eq(v, (struct version){ 5, 5 }), "'%s' touched out", table[i]);
    }
}

Test(version, rejects_embedded_nul)
{
    struct version v;

    cr_assert_eq(version_parse("1:2\0003", 5, &v), -1);
    cr_assert_eq(version_parse("1\000:2", 4, &v), -1);
}

Test(version, equality_and_none)
{
    cr_assert(version_is_none(VERSION_NONE));
    cr_assert_not(version_is_none((struct version){ 1, 0 }));
    cr_assert(version_eq((struct version){ 2, 9 }, (struct version){ 2, 9 }));
    cr_assert_not(version_eq((struct version){ 2, 9 }, (struct version){ 3, 9 }));
    cr_assert_not(version_eq((struct version){ 2, 9 }, (struct version){ 2, 8 }));
}

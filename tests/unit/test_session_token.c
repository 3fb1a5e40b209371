#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "replication/session_token.h"

#define RANDOM_TOKENS 300

static int parse(const char *s, struct session_token *t, struct err *err)
{
    return session_token_parse(s, strlen(s), t, err);
}

static struct session_token parsed(const char *s)
{
    struct session_token t;
    struct err err = { "" };

    cr_assert_eq(parse(s, &t, &err), 0, "'%s': %s", s, err.msg);
    return t;
}

static const char *formatted(const struct session_token *t, char *buf)
{
    session_token_format(t, buf);
    return buf;
}

static bool token_eq(const struct session_token *a, const struct session_token *b)
{
    if (a->topology != b->topology || a->confirmed != b->confirmed || a->n != b->n)
        return false;
    for (uint32_t i = 0; i < a->n; i++)
        if (a->v[i].region != b->v[i].region || a->v[i].lsn != b->v[i].lsn)
            return false;
    return true;
}

/* splitmix64: a fixed seed gives the same tokens on every run. */
static uint64_t next_random(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* A canonical token: regions from a small range so that tokens overlap. */
static struct session_token random_token(uint64_t *rng)
{
    struct session_token t = { 0 };

    t.topology = (uint32_t)(next_random(rng) % 4);
    t.confirmed = next_random(rng) % 3 == 0 ? 0 : next_random(rng) % 100000;
    for (uint32_t region = 1; region <= 24; region++) {
        if (next_random(rng) % 3 != 0)
            continue;
        t.v[t.n].region = region;
        t.v[t.n++].lsn = 1 + next_random(rng) % 500;
    }
    return t;
}

Test(session_token, parses_the_documented_example)
{
    struct session_token t = parsed("1#1700000000000#2=17#3=5");

    cr_assert_eq(t.topology, 1);
    cr_assert_eq(t.confirmed, 1700000000000);
    cr_assert_eq(t.n, 2);
    cr_assert_eq(t.v[0].region, 2);
    cr_assert_eq(t.v[0].lsn, 17);
    cr_assert_eq(t.v[1].region, 3);
    cr_assert_eq(t.v[1].lsn, 5);
    cr_assert_eq(session_token_lsn(&t, 3), 5);
    cr_assert_eq(session_token_lsn(&t, 4), 0);
}

Test(session_token, empty_text_is_the_empty_token)
{
    struct session_token t = parsed("");
    char buf[SESSION_TOKEN_TEXT_MAX] = "junk";

    cr_assert_eq(t.topology, 0);
    cr_assert_eq(t.confirmed, 0);
    cr_assert_eq(t.n, 0);
    cr_assert_str_eq(formatted(&t, buf), "");
    t = parsed("0#0");
    cr_assert_str_eq(formatted(&t, buf), "");
}

Test(session_token, no_regions_is_valid)
{
    struct session_token t = parsed("1#0");
    char buf[SESSION_TOKEN_TEXT_MAX];

    cr_assert_eq(t.topology, 1);
    cr_assert_eq(t.n, 0);
    cr_assert_str_eq(formatted(&t, buf), "1#0");
}

Test(session_token, canonical_text_sorts_and_omits_zero_lsns)
{
    char buf[SESSION_TOKEN_TEXT_MAX];
    struct session_token t = parsed("3#9#7=1#2=17#5=0#4=4");

    cr_assert_eq(t.n, 3, "the lsn 0 entry asks for nothing and is dropped");
    cr_assert_str_eq(formatted(&t, buf), "3#9#2=17#4=4#7=1");

    /* A struct filled by hand, out of order, formats the same way. */
    struct session_token h = { .topology = 3, .confirmed = 9, .n = 4 };
    h.v[0].region = 7, h.v[0].lsn = 1;
    h.v[1].region = 5, h.v[1].lsn = 0;
    h.v[2].region = 4, h.v[2].lsn = 4;
    h.v[3].region = 2, h.v[3].lsn = 17;
    cr_assert_str_eq(formatted(&h, buf), "3#9#2=17#4=4#7=1");
}

Test(session_token, round_trips_random_tokens)
{
    uint64_t rng = 42;

    for (int i = 0; i < RANDOM_TOKENS; i++) {
        char text[SESSION_TOKEN_TEXT_MAX], again[SESSION_TOKEN_TEXT_MAX];
        struct session_token t = random_token(&rng);
        struct session_token back = parsed(formatted(&t, text));
        cr_assert(token_eq(&t, &back) || (t.topology == 0 && t.confirmed == 0 && t.n == 0),
                  "'%s'", text);
        cr_assert_str_eq(formatted(&back, again), text);
    }
}

Test(session_token, round_trips_extreme_values)
{
    const char *text = "4294967295#18446744073709551615#1=1#4294967295=18446744073709551615";
    char buf[SESSION_TOKEN_TEXT_MAX];
    struct session_token t = parsed(text);

    cr_assert_str_eq(formatted(&t, buf), text);
}

struct bad_token {
    const char *text;
    size_t len;          /* 0: strlen(text) */
    const char *message; /* a substring of the expected reason */
};

static const struct bad_token bad_tokens[] = {
    { "x", 0, "session token: topology version ('x') is not a number" },
    { "1", 0, "session token: the confirmed position is missing" },
    { "#1", 0, "topology version ('') is empty" },
    { "1#", 0, "confirmed position ('') is empty" },
    { "-1#0", 0, "topology version ('-1') is not a number" },
    { "+1#0", 0, "topology version ('+1') is not a number" },
    { " 1#0", 0, "topology version (' 1') is not a number" },
    { "01#0", 0, "topology version ('01') has a leading zero" },
    { "4294967296#0", 0, "topology version ('4294967296') is larger than 4294967295" },
    { "1#18446744073709551616", 0, "confirmed position ('18446744073709551616') is larger than 18446744073709551615" },
    { "1#0x10", 0, "confirmed position ('0x10') is not a number" },
    { "1#0#", 0, "session token: region entry 1 is empty" },
    { "1#0##2=1", 0, "region entry 1 is empty" },
    { "1#0#2=1#", 0, "region entry 2 is empty" },
    { "1#1700000000000#2=17#x=1", 0, "session token: region entry 2 ('x=1'): region id is not a number" },
    { "1#0#2", 0, "region entry 1 ('2'): expected REGION=LSN" },
    { "1#0#=5", 0, "region entry 1 ('=5'): region id is empty" },
    { "1#0#0=5", 0, "region entry 1 ('0=5'): region id 0 is not allowed" },
    { "1#0#4294967296=1", 0, "region entry 1 ('4294967296=1'): region id is larger than 4294967295" },
    { "1#0#2=", 0, "region entry 1 ('2='): lsn is empty" },
    { "1#0#2=x", 0, "region entry 1 ('2=x'): lsn is not a number" },
    { "1#0#2=1=3", 0, "region entry 1 ('2=1=3'): lsn is not a number" },
    { "1#0#2=-1", 0, "lsn is not a number" },
    { "1#0#2=05", 0, "region entry 1 ('2=05'): lsn has a leading zero" },
    { "1#0#2=18446744073709551616", 0, "lsn is larger than 18446744073709551615" },
    { "1#0#2=1 ", 0, "region entry 1 ('2=1 '): lsn is not a number" },
    { "1#0#2=5#3=1#2=7", 0, "region entry 3: region 2 already appears in entry 1" },
    { "1,0", 0, "topology version ('1,0') is not a number" },
    { "1#0\0", 4, "confirmed position ('0?') is not a number" },
    { "1#0#2='\n", 0, "region entry 1 ('2=?" "?'): lsn is not a number" },
};

Test(session_token, rejects_malformed_tokens_with_a_reason)
{
    for (size_t i = 0; i < sizeof bad_tokens / sizeof bad_tokens[0]; i++) {
        const struct bad_token *b = &bad_tokens[i];
        struct session_token t = { .topology = 77 };
        struct err err = { "" };
        size_t len = b->len ? b->len : strlen(b->text);
        cr_expect_eq(session_token_parse(b->text, len, &t, &err), -1, "'%s' was accepted", b->text);
        cr_expect(strstr(err.msg, b->message), "'%s': got \"%s\", want \"%s\"", b->text,
                  err.msg, b->message);
        cr_expect_eq(t.topology, 77, "'%s' touched out", b->text);
    }
}

Test(session_token, quotes_long_input_briefly)
{
    char text[300];
    struct session_token t;
    struct err err = { "" };

    memset(text, 'z', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    cr_assert_eq(parse(text, &t, &err), -1);
    cr_assert(strstr(err.msg, "zzz...') is not a number"), "%s", err.msg);
    cr_assert_lt(strlen(err.msg), 120);
}

/* "1#0" then `n` entries "#R=1" for regions 1..n. */
static void build_entries(char *buf, size_t size, int n)
{
    size_t used = (size_t)snprintf(buf, size, "1#0");

    for (int r = 1; r <= n; r++)
        used += (size_t)snprintf(buf + used, size - used, "#%d=1", r);
}

Test(session_token, region_count_is_bounded)
{
    char text[2 * SESSION_TOKEN_TEXT_MAX];
    struct session_token t;
    struct err err = { "" };

    build_entries(text, sizeof text, SESSION_TOKEN_MAX_REGIONS);
    t = parsed(text);
    cr_assert_eq(t.n, SESSION_TOKEN_MAX_REGIONS);
    build_entries(text, sizeof text, SESSION_TOKEN_MAX_REGIONS + 1);
    cr_assert_eq(parse(text, &t, &err), -1);
    cr_assert(strstr(err.msg, "more than 64 region entries"), "%s", err.msg);
}

Test(session_token, length_is_bounded)
{
    char text[SESSION_TOKEN_TEXT_MAX + 1];
    struct session_token t;
    struct err err = { "" };

    /* "1#" and a confirmed position of zeros padded to the limit. */
    memset(text, '0', sizeof text);
    memcpy(text, "1#1", 3);
    cr_assert_eq(session_token_parse(text, SESSION_TOKEN_TEXT_MAX, &t, &err), -1);
    cr_assert(strstr(err.msg, "1600 bytes is longer than the limit of 1599"), "%s", err.msg);
    /* At the limit, length is not the complaint. */
    cr_assert_eq(session_token_parse(text, SESSION_TOKEN_TEXT_MAX - 1, &t, &err), -1);
    cr_assert(strstr(err.msg, "is larger than"), "%s", err.msg);
}

Test(session_token, format_always_fits_and_parses)
{
    struct session_token t = { .topology = UINT32_MAX, .confirmed = UINT64_MAX };
    char buf[SESSION_TOKEN_TEXT_MAX];
    struct session_token back;

    for (uint32_t i = 0; i < SESSION_TOKEN_MAX_REGIONS; i++) {
        t.v[i].region = UINT32_MAX - SESSION_TOKEN_MAX_REGIONS + i + 1;
        t.v[i].lsn = UINT64_MAX - i;
    }
    t.n = SESSION_TOKEN_MAX_REGIONS;
    session_token_format(&t, buf);
    cr_assert_lt(strlen(buf), SESSION_TOKEN_TEXT_MAX);
    back = parsed(buf);
    cr_assert_gt(back.n, 0);
    cr_assert_eq(back.v[0].region, t.v[0].region, "entries are kept from the lowest region");
}

Test(session_token, merge_takes_the_maximum_of_each_component)
{
    struct session_token a = parsed("1#500#2=17#3=5");
    struct session_token b = parsed("2#400#3=9#4=1");
    char buf[SESSION_TOKEN_TEXT_MAX];

    session_token_merge(&a, &b);
    cr_assert_str_eq(formatted(&a, buf), "2#500#2=17#3=9#4=1");
}

Test(session_token, merge_is_commutative_idempotent_associative)
{
    uint64_t rng = 7;

    for (int i = 0; i < RANDOM_TOKENS; i++) {
        struct session_token a = random_token(&rng), b = random_token(&rng);
        struct session_token c = random_token(&rng);
        struct session_token ab = a, ba = b, aa = a, ab_c, a_bc, bc = b;

        session_token_merge(&ab, &b);
        session_token_merge(&ba, &a);
        cr_assert(token_eq(&ab, &ba), "commutative, round %d", i);
        session_token_merge(&aa, &a);
        cr_assert(token_eq(&aa, &a), "idempotent, round %d", i);
        ab_c = ab;
        session_token_merge(&ab_c, &c);
        session_token_merge(&bc, &c);
        a_bc = a;
        session_token_merge(&a_bc, &bc);
        cr_assert(token_eq(&ab_c, &a_bc), "associative, round %d", i);
        for (uint32_t r = 1; r <= 24; r++)
            cr_assert_geq(session_token_lsn(&ab, r), session_token_lsn(&a, r));
    }
}

Test(session_token, merge_into_itself)
{
    struct session_token a = parsed("1#5#2=3");
    char buf[SESSION_TOKEN_TEXT_MAX];

    session_token_merge(&a, &a);
    cr_assert_str_eq(formatted(&a, buf), "1#5#2=3");
}

/* Two full tokens with disjoint regions: more than fit. The lowest ids are
 * kept whatever the order, so merge stays commutative. */
Test(session_token, merge_overflow_keeps_the_lowest_regions)
{
    struct session_token a = { .n = SESSION_TOKEN_MAX_REGIONS }, b = a, ab, ba;

    for (uint32_t i = 0; i < SESSION_TOKEN_MAX_REGIONS; i++) {
        a.v[i].region = 2 * i + 1, a.v[i].lsn = 1;
        b.v[i].region = 2 * i + 2, b.v[i].lsn = 2;
    }
    ab = a, ba = b;
    session_token_merge(&ab, &b);
    session_token_merge(&ba, &a);
    cr_assert(token_eq(&ab, &ba));
    cr_assert_eq(ab.n, SESSION_TOKEN_MAX_REGIONS);
    cr_assert_eq(ab.v[0].region, 1);
    cr_assert_eq(ab.v[SESSION_TOKEN_MAX_REGIONS - 1].region, SESSION_TOKEN_MAX_REGIONS);
}

Test(session_token, note_raises_and_inserts_in_order)
{
    struct session_token t = parsed("1#0#3=5#7=2");
    char buf[SESSION_TOKEN_TEXT_MAX];

    session_token_note(&t, 3, 9);
    cr_assert_str_eq(formatted(&t, buf), "1#0#3=9#7=2", "raised");
    session_token_note(&t, 3, 4);
    cr_assert_str_eq(formatted(&t, buf), "1#0#3=9#7=2", "never lowered");
    session_token_note(&t, 5, 1);
    session_token_note(&t, 1, 8);
    session_token_note(&t, 9, 3);
    cr_assert_str_eq(formatted(&t, buf), "1#0#1=8#3=9#5=1#7=2#9=3", "inserted in order");
    cr_assert_eq(t.n, 5);
    for (uint32_t i = 1; i < t.n; i++)
        cr_assert_lt(t.v[i - 1].region, t.v[i].region);
    session_token_note(&t, 4, 0);
    session_token_note(&t, 0, 6);
    cr_assert_eq(t.n, 5, "lsn 0 and region 0 add nothing");
    cr_assert_eq(session_token_lsn(&t, 9), 3);
}

Test(session_token, note_on_the_empty_token)
{
    struct session_token t = parsed("");
    char buf[SESSION_TOKEN_TEXT_MAX];

    session_token_note(&t, 2, 17);
    cr_assert_str_eq(formatted(&t, buf), "0#0#2=17");
    cr_assert_eq(parsed(buf).v[0].lsn, 17);
}

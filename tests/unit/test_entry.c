/* Unit tests of replication/entry: the JSON forms of a region's write and of
 * a hub decision must survive the wire unchanged (to_json → text → parse →
 * from_json), a malformed frame must be refused with a reason that names the
 * field a peer's operator has to fix, and the LWW inputs read from a write
 * must be the ones the hub decides on. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "replication/entry.h"

/* A realistic HLC: 48-bit milliseconds, 16-bit counter. */
#define HLC(ms, c) (((uint64_t)(ms) << 16) | (uint64_t)(c))
#define T0 1700000000000ULL

/* --- helpers -------------------------------------------------------------- */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* A write with heap strings, as the journal and the shipper hold them. */
static struct repl_write mkwrite(uint32_t origin, uint64_t lsn, uint64_t hlc, struct version base,
                                 bool is_delete, const char *doc)
{
    return (struct repl_write){
        .origin = origin, .lsn = lsn, .hlc = hlc, .base = base, .is_delete = is_delete,
        .container = strdup("orders"), .id = strdup("order-17"), .doc = dup_or_null(doc),
    };
}

/* Two documents are the same when they parse to equal JSON (the encoder may
 * compact whitespace); NULL equals only NULL. */
static void expect_same_doc(const char *got, const char *want, const char *what)
{
    if (!want) {
        cr_expect_null(got, "%s: expected no document, got %s", what, got);
        return;
    }
    cr_assert_not_null(got, "%s: expected %s, got no document", what, want);
    json_t *a = json_loads(got, JSON_DECODE_ANY, NULL);
    json_t *b = json_loads(want, JSON_DECODE_ANY, NULL);
    cr_assert_not_null(a, "%s: unparsable document %s", what, got);
    cr_expect(json_equal(a, b), "%s: got %s, want %s", what, got, want);
    json_decref(a);
    json_decref(b);
}

static void expect_same_write(const struct repl_write *got, const struct repl_write *want)
{
    cr_expect_eq(got->origin, want->origin);
    cr_expect_eq(got->lsn, want->lsn);
    cr_expect_eq(got->hlc, want->hlc);
    cr_expect(version_eq(got->base, want->base), "base %u:%llu, want %u:%llu",
              got->base.region, (unsigned long long)got->base.lsn, want->base.region,
              (unsigned long long)want->base.lsn);
    cr_expect_eq(got->is_delete, want->is_delete);
    cr_expect_eq(got->has_value, want->has_value);
    if (want->has_value)
        cr_expect_eq(got->value, want->value, "value %g, want %g", got->value, want->value);
    cr_expect_str_eq(got->container, want->container);
    cr_expect_str_eq(got->id, want->id);
    expect_same_doc(got->doc, want->doc, "write doc");
}

/* to_json → compact text → parse → from_json, as a frame crosses the wire. */
static void write_round_trip(const struct repl_write *in, struct repl_write *out)
{
    struct err err = { "" };
    char *text = entry_dump(repl_write_to_json(in));
    cr_assert_not_null(text, "encoding failed");
    json_error_t je;
    json_t *root = json_loads(text, 0, &je);
    cr_assert_not_null(root, "encoder wrote unparsable JSON (%s): %s", je.text, text);
    cr_assert_eq(repl_write_from_json(root, out, &err), 0, "decode of %s: %s", text, err.msg);
    json_decref(root);
    free(text);
}

/* to_json → text → parse, both ways a node decodes a log entry: from the
 * parsed tree (clog_entry_from_json) and from the text with its documents
 * kept as text (clog_entry_parse, the follower's and the applier's). Both
 * must agree; `out` is the latter. */
static void clog_round_trip(const struct clog_entry *in, struct clog_entry *out)
{
    struct err err = { "" };
    struct clog_entry tree;
    char *text = entry_dump(clog_entry_to_json(in));
    cr_assert_not_null(text, "encoding failed");
    json_t *root = json_loads(text, 0, NULL);
    cr_assert_not_null(root, "encoder wrote unparsable JSON: %s", text);
    cr_assert_eq(clog_entry_from_json(root, &tree, &err), 0, "decode of %s: %s", text, err.msg);
    json_decref(root);
    cr_assert_eq(clog_entry_parse(text, strlen(text), out, &err), 0, "parse of %s: %s", text,
                 err.msg);
    cr_expect_eq(out->crts, tree.crts);
    cr_expect_eq(out->outcome, tree.outcome);
    cr_expect_eq(out->conflict, tree.conflict);
    expect_same_write(&out->w, &tree.w);
    cr_expect(version_eq(out->head, tree.head));
    cr_expect_eq(out->head_hlc, tree.head_hlc);
    cr_expect_eq(out->head_delete, tree.head_delete);
    expect_same_doc(out->head_doc, tree.head_doc, "head doc, parse vs from_json");
    clog_entry_clear(&tree);
    free(text);
}

/* The log's stored text (documents spliced, not re-encoded) parses back to
 * the same entry as the Jansson encoding, for every outcome. */
static void text_round_trip(const struct clog_entry *in)
{
    struct err err = { "" };
    struct clog_entry a, b;
    char *text = clog_entry_text(in);
    cr_assert_not_null(text, "encoding failed");
    json_t *root = json_loads(text, 0, NULL);
    cr_assert_not_null(root, "not JSON: %s", text);
    json_decref(root);
    cr_assert_eq(clog_entry_parse(text, strlen(text), &a, &err), 0, "%s: %s", text, err.msg);
    clog_round_trip(in, &b);
    cr_expect_eq(a.crts, b.crts);
    cr_expect_eq(a.outcome, b.outcome);
    cr_expect_eq(a.conflict, b.conflict);
    expect_same_write(&a.w, &b.w);
    cr_expect(version_eq(a.head, b.head));
    cr_expect_eq(a.head_hlc, b.head_hlc);
    cr_expect_eq(a.head_delete, b.head_delete);
    expect_same_doc(a.head_doc, b.head_doc, "head doc");
    cr_expect((a.error == NULL) == (b.error == NULL) && (!a.error || !strcmp(a.error, b.error)));
    cr_expect_eq(a.conflict_id, b.conflict_id);
    clog_entry_clear(&a);
    clog_entry_clear(&b);
    free(text);
}

Test(entry, stored_text_matches_the_json_encoding_for_every_outcome)
{
    struct clog_entry es[] = {
        { .crts = HLC(T0, 1), .outcome = LWW_CONFIRMED,
          .w = mkwrite(2, 3, HLC(T0, 0), VERSION_NONE, false, "{\"a\":\"\\u00e9\\n\",\"n\":[1,2.5]}") },
        { .crts = HLC(T0, 2), .outcome = LWW_CONFIRMED,
          .w = mkwrite(2, 4, HLC(T0, 1), (struct version){ 2, 3 }, true, NULL) },
        { .crts = HLC(T0, 3), .outcome = LWW_SUPERSEDED, .conflict = LWW_REPLACE,
          .w = mkwrite(3, 1, HLC(T0, 2), (struct version){ 2, 3 }, false, "{\"v\":1}"),
          .head = { 2, 4 }, .head_hlc = HLC(T0, 1), .head_delete = true },
        { .crts = HLC(T0, 4), .outcome = LWW_RESOLVED, .conflict = LWW_INSERT,
          .w = mkwrite(3, 2, HLC(T0, 3), VERSION_NONE, false, "{\"s\":1}"),
          .head = { 0, HLC(T0, 4) }, .head_hlc = HLC(T0, 4), .head_doc = strdup("{\"s\":2}") },
        { .crts = HLC(T0, 5), .outcome = LWW_FILED, .conflict = LWW_DELETE,
          .w = mkwrite(3, 3, HLC(T0, 4), VERSION_NONE, true, NULL), .head = { 2, 9 },
          .head_hlc = 7, .head_doc = strdup("{}"), .error = strdup("timed out after 5 ms") },
        { .crts = HLC(T0, 6), .outcome = LWW_DISMISSED, .conflict = LWW_DELETE,
          .w = mkwrite(3, 3, HLC(T0, 4), VERSION_NONE, true, NULL), .conflict_id = HLC(T0, 5) },
    };
    es[0].w.has_value = true;
    es[0].w.value = -2.5;
    for (size_t i = 0; i < sizeof es / sizeof es[0]; i++) {
        text_round_trip(&es[i]);
        clog_entry_clear(&es[i]);
    }
}

/* --- repl_write round trips --------------------------------------------- */

Test(entry, put_with_base_value_and_state_round_trips)
{
    struct repl_write in = mkwrite(2, 41, HLC(T0, 3), (struct version){ 1, 40 }, false,
                                   "{\"v\":12.5,\"name\":\"Zoë \\\"quoted\\\"\",\"n\":{\"a\":[1,2,null]}}");
    in.has_value = true;
    in.value = 12.5;
    in.state = WRITE_COMMITTED;
    struct repl_write out;

    write_round_trip(&in, &out);
    expect_same_write(&out, &in);
    cr_expect_eq(out.state, WRITE_COMMITTED);
    repl_write_clear(&out);
    repl_write_clear(&in);
}

Test(entry, put_without_base_or_value_round_trips)
{
    struct repl_write in = mkwrite(7, 1, HLC(T0, 0), VERSION_NONE, false, "{}");
    struct repl_write out;

    write_round_trip(&in, &out);
    expect_same_write(&out, &in);
    cr_expect(version_is_none(out.base));
    cr_expect_not(out.has_value);
    cr_expect_eq(out.state, 0);
    repl_write_clear(&out);
    repl_write_clear(&in);
}

Test(entry, negative_and_whole_values_round_trip)
{
    static const double values[] = { -3.25, 0.0, 42.0, 1e15, -1e-9 };

    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        struct repl_write in = mkwrite(2, 5, HLC(T0, 1), VERSION_NONE, false, "{\"v\":1}");
        struct repl_write out;
        in.has_value = true;
        in.value = values[i];
        write_round_trip(&in, &out);
        cr_expect(out.has_value, "value %g lost", values[i]);
        cr_expect_eq(out.value, values[i], "value %g came back as %g", values[i], out.value);
        repl_write_clear(&out);
        repl_write_clear(&in);
    }
}

Test(entry, delete_with_base_round_trips)
{
    struct repl_write in = mkwrite(3, 9, HLC(T0 + 5, 0), (struct version){ 2, 41 }, true, NULL);
    in.state = WRITE_INTENT;
    struct repl_write out;

    write_round_trip(&in, &out);
    expect_same_write(&out, &in);
    cr_expect_null(out.doc);
    cr_expect_eq(out.state, WRITE_INTENT);
    repl_write_clear(&out);
    repl_write_clear(&in);
}

Test(entry, delete_without_base_round_trips)
{
    struct repl_write in = mkwrite(3, 10, HLC(T0 + 6, 2), VERSION_NONE, true, NULL);
    struct repl_write out;

    write_round_trip(&in, &out);
    expect_same_write(&out, &in);
    repl_write_clear(&out);
    repl_write_clear(&in);
}

Test(entry, largest_origin_and_lsn_round_trip)
{
    struct repl_write in = mkwrite(UINT32_MAX, (uint64_t)INT64_MAX, HLC(T0, 0xffff),
                                   (struct version){ UINT32_MAX, (uint64_t)INT64_MAX - 1 }, false,
                                   "{\"v\":1}");
    struct repl_write out;

    write_round_trip(&in, &out);
    expect_same_write(&out, &in);
    repl_write_clear(&out);
    repl_write_clear(&in);
}

Test(entry, copy_is_deep)
{
    struct repl_write src = mkwrite(2, 4, HLC(T0, 0), (struct version){ 2, 3 }, false, "{\"v\":1}");
    src.has_value = true;
    src.value = 1;
    struct repl_write dst;

    cr_assert_eq(repl_write_copy(&dst, &src), 0);
    cr_expect_neq(dst.container, src.container);
    cr_expect_neq(dst.id, src.id);
    cr_expect_neq(dst.doc, src.doc);
    expect_same_write(&dst, &src);
    repl_write_clear(&src);
    /* the copy outlives its source */
    cr_expect_str_eq(dst.container, "orders");
    cr_expect_str_eq(dst.doc, "{\"v\":1}");
    repl_write_clear(&dst);
    cr_expect_null(dst.container);
}

/* --- clog_entry round trips --------------------------------------------- */

Test(entry, confirmed_put_round_trips_with_itself_as_head)
{
    struct clog_entry in = {
        .crts = HLC(T0 + 100, 1), .outcome = LWW_CONFIRMED, .conflict = LWW_INSERT,
        .w = mkwrite(2, 41, HLC(T0, 3), VERSION_NONE, false, "{\"v\":3,\"x\":\"y\"}"),
    };
    in.w.has_value = true;
    in.w.value = 3;
    in.w.state = WRITE_COMMITTED; /* journal-only: not part of a log entry */
    struct clog_entry out;

    clog_round_trip(&in, &out);
    cr_expect_eq(out.crts, in.crts);
    cr_expect_eq(out.outcome, LWW_CONFIRMED);
    cr_expect_eq(out.conflict, LWW_INSERT);
    expect_same_write(&out.w, &in.w);
    cr_expect_eq(out.w.state, 0, "a log entry carries no journal state, got %d", out.w.state);
    /* a confirmed write is the head after the decision */
    cr_expect(version_eq(out.head, (struct version){ 2, 41 }));
    cr_expect_eq(out.head_hlc, in.w.hlc);
    cr_expect_not(out.head_delete);
    expect_same_doc(out.head_doc, in.w.doc, "head doc");
    clog_entry_clear(&out);
    clog_entry_clear(&in);
}

Test(entry, confirmed_delete_round_trips_as_a_tombstone_head)
{
    struct clog_entry in = {
        .crts = 77, .outcome = LWW_CONFIRMED, .conflict = LWW_NO_CONFLICT,
        .w = mkwrite(3, 2, HLC(T0 + 1, 0), (struct version){ 2, 41 }, true, NULL),
    };
    struct clog_entry out;

    clog_round_trip(&in, &out);
    cr_expect_eq(out.crts, 77);
    cr_expect_eq(out.conflict, LWW_NO_CONFLICT);
    expect_same_write(&out.w, &in.w);
    cr_expect(version_eq(out.head, (struct version){ 3, 2 }));
    cr_expect(out.head_delete);
    cr_expect_null(out.head_doc);
    clog_entry_clear(&out);
    clog_entry_clear(&in);
}

Test(entry, superseded_entry_carries_the_winner_and_its_document)
{
    struct clog_entry in = {
        .crts = HLC(T0 + 200, 0), .outcome = LWW_SUPERSEDED, .conflict = LWW_REPLACE,
        .w = mkwrite(3, 8, HLC(T0 + 10, 0), (struct version){ 2, 40 }, false, "{\"v\":1}"),
        .head = { 2, 41 }, .head_hlc = HLC(T0 + 20, 4), .head_delete = false,
        .head_doc = strdup("{\"v\":9,\"who\":\"winner\"}"),
    };
    in.w.has_value = true;
    in.w.value = 1;
    struct clog_entry out;

    clog_round_trip(&in, &out);
    cr_expect_eq(out.crts, in.crts);
    cr_expect_eq(out.outcome, LWW_SUPERSEDED);
    cr_expect_eq(out.conflict, LWW_REPLACE);
    expect_same_write(&out.w, &in.w);
    cr_expect(version_eq(out.head, in.head), "head %u:%llu", out.head.region,
              (unsigned long long)out.head.lsn);
    cr_expect_eq(out.head_hlc, in.head_hlc);
    cr_expect_not(out.head_delete);
    expect_same_doc(out.head_doc, in.head_doc, "head doc");
    clog_entry_clear(&out);
    clog_entry_clear(&in);
}

/* A procedure's result: the incoming write lost, the head is a document
 * the hub made, named 0:crts. */
Test(entry, resolved_entry_carries_the_procedure_result)
{
    uint64_t crts = HLC(T0 + 300, 1);
    struct clog_entry in = {
        .crts = crts, .outcome = LWW_RESOLVED, .conflict = LWW_REPLACE,
        .w = mkwrite(3, 9, HLC(T0 + 10, 0), (struct version){ 2, 40 }, false, "{\"status\":1}"),
        .head = { 0, crts }, .head_hlc = crts, .head_doc = strdup("{\"status\":2}"),
    };
    struct clog_entry out;

    clog_round_trip(&in, &out);
    cr_expect_eq(out.outcome, LWW_RESOLVED);
    cr_expect(version_eq(out.head, (struct version){ 0, crts }));
    cr_expect_eq(out.head_hlc, crts);
    expect_same_doc(out.head_doc, "{\"status\":2}", "resolved doc");
    cr_expect_null(out.error);
    cr_expect_str_eq(clog_outcome_name(out.outcome), "resolved");
    clog_entry_clear(&out);
    clog_entry_clear(&in);
}

/* A conflict sent to the feed keeps the head and says why the procedure
 * failed; removing it from the feed names the filed entry. */
Test(entry, filed_and_dismissed_entries_round_trip)
{
    struct clog_entry in = {
        .crts = HLC(T0 + 400, 0), .outcome = LWW_FILED, .conflict = LWW_INSERT,
        .w = mkwrite(2, 5, HLC(T0 + 20, 0), VERSION_NONE, false, "{\"n\":1}"),
        .head = { 1, 7 }, .head_hlc = HLC(T0 + 15, 0), .head_doc = strdup("{\"n\":0}"),
        .error = strdup("timed out after 1000 ms"),
    };
    struct clog_entry out;
    clog_round_trip(&in, &out);
    cr_expect_eq(out.outcome, LWW_FILED);
    cr_expect_str_eq(out.error, "timed out after 1000 ms");
    cr_expect(version_eq(out.head, (struct version){ 1, 7 }));
    expect_same_doc(out.head_doc, "{\"n\":0}", "filed head doc");
    clog_entry_clear(&out);

    struct clog_entry d = { .crts = in.crts + 5, .outcome = LWW_DISMISSED, .conflict = LWW_INSERT,
                            .conflict_id = in.crts };
    cr_assert_eq(repl_write_copy(&d.w, &in.w), 0);
    clog_round_trip(&d, &out);
    cr_expect_eq(out.outcome, LWW_DISMISSED);
    cr_expect_eq(out.conflict_id, in.crts);
    expect_same_write(&out.w, &in.w);
    clog_entry_clear(&out);
    clog_entry_clear(&d);
    clog_entry_clear(&in);
}

Test(entry, superseded_entry_with_a_tombstone_head_round_trips)
{
    struct clog_entry in = {
        .crts = 9001, .outcome = LWW_SUPERSEDED, .conflict = LWW_DELETE,
        .w = mkwrite(2, 42, HLC(T0 + 30, 0), (struct version){ 2, 41 }, false, "{\"v\":100}"),
        .head = { 3, 2 }, .head_hlc = HLC(T0 + 1, 0), .head_delete = true, .head_doc = NULL,
    };
    struct clog_entry out;

    clog_round_trip(&in, &out);
    cr_expect_eq(out.outcome, LWW_SUPERSEDED);
    cr_expect_eq(out.conflict, LWW_DELETE);
    expect_same_write(&out.w, &in.w);
    cr_expect(version_eq(out.head, (struct version){ 3, 2 }));
    cr_expect_eq(out.head_hlc, in.head_hlc);
    cr_expect(out.head_delete);
    cr_expect_null(out.head_doc);
    clog_entry_clear(&out);
    clog_entry_clear(&in);
}

Test(entry, superseded_delete_round_trips)
{
    struct clog_entry in = {
        .crts = 12, .outcome = LWW_SUPERSEDED, .conflict = LWW_DELETE,
        .w = mkwrite(4, 3, HLC(T0, 0), (struct version){ 2, 41 }, true, NULL),
        .head = { 5, 6 }, .head_hlc = HLC(T0 + 9, 0), .head_delete = true,
    };
    struct clog_entry out;

    clog_round_trip(&in, &out);
    expect_same_write(&out.w, &in.w);
    cr_expect(version_eq(out.head, (struct version){ 5, 6 }));
    cr_expect(out.head_delete);
    clog_entry_clear(&out);
    clog_entry_clear(&in);
}

Test(entry, every_conflict_kind_round_trips)
{
    static const enum lww_conflict kinds[] = { LWW_NO_CONFLICT, LWW_INSERT, LWW_REPLACE,
                                               LWW_DELETE };

    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        struct clog_entry in = {
            .crts = 1 + i, .outcome = LWW_CONFIRMED, .conflict = kinds[i],
            .w = mkwrite(2, 1 + i, HLC(T0, i), VERSION_NONE, false, "{\"v\":1}"),
        };
        struct clog_entry out;
        clog_round_trip(&in, &out);
        cr_expect_eq(out.conflict, kinds[i], "%s came back as %s", lww_conflict_name(kinds[i]),
                     lww_conflict_name(out.conflict));
        clog_entry_clear(&out);
        clog_entry_clear(&in);
    }
}

Test(entry, dump_of_null_is_null)
{
    cr_expect_null(entry_dump(NULL));
}

/* --- malformed frames ----------------------------------------------------- */

struct bad_frame {
    const char *name;
    const char *json;
    const char *field;  /* the reason must contain this */
};

#define GOOD_REST "\"container\":\"orders\",\"id\":\"o1\",\"doc\":{\"v\":1}"

static const struct bad_frame bad_writes[] = {
    { "not an object", "[1,2]", "object" },
    { "missing origin", "{\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false," GOOD_REST "}", "'origin'" },
    { "origin 0", "{\"origin\":0,\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false," GOOD_REST "}", "'origin'" },
    { "origin as text", "{\"origin\":\"2\",\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false," GOOD_REST "}", "'origin'" },
    { "origin beyond 32 bits", "{\"origin\":4294967296,\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false," GOOD_REST "}", "'origin'" },
    { "negative origin", "{\"origin\":-2,\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false," GOOD_REST "}", "'origin'" },
    { "lsn 0", "{\"origin\":2,\"lsn\":0,\"hlc\":5,\"base\":null,\"delete\":false," GOOD_REST "}", "'lsn'" },
    { "missing lsn", "{\"origin\":2,\"hlc\":5,\"base\":null,\"delete\":false," GOOD_REST "}", "'lsn'" },
    { "fractional lsn", "{\"origin\":2,\"lsn\":1.5,\"hlc\":5,\"base\":null,\"delete\":false," GOOD_REST "}", "'lsn'" },
    { "negative hlc", "{\"origin\":2,\"lsn\":1,\"hlc\":-5,\"base\":null,\"delete\":false," GOOD_REST "}", "'hlc'" },
    { "missing hlc", "{\"origin\":2,\"lsn\":1,\"base\":null,\"delete\":false," GOOD_REST "}", "'hlc'" },
    { "base without colon", "{\"origin\":2,\"lsn\":3,\"hlc\":5,\"base\":\"2-1\",\"delete\":false," GOOD_REST "}", "'base'" },
    { "base lsn 0", "{\"origin\":2,\"lsn\":3,\"hlc\":5,\"base\":\"1:0\",\"delete\":false," GOOD_REST "}", "'base'" },
    { "base with a sign", "{\"origin\":2,\"lsn\":3,\"hlc\":5,\"base\":\"2:+1\",\"delete\":false," GOOD_REST "}", "'base'" },
    { "base as a number", "{\"origin\":2,\"lsn\":3,\"hlc\":5,\"base\":21,\"delete\":false," GOOD_REST "}", "'base'" },
    { "delete as text", "{\"origin\":2,\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":\"false\"," GOOD_REST "}", "'delete'" },
    { "delete as 0", "{\"origin\":2,\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":0," GOOD_REST "}", "'delete'" },
    { "missing delete", "{\"origin\":2,\"lsn\":1,\"hlc\":5,\"base\":null," GOOD_REST "}", "'delete'" },
    { "put doc is an array", "{\"origin\":2,\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false,\"container\":\"orders\",\"id\":\"o1\",\"doc\":[1]}", "'doc'" },
    { "put doc is text", "{\"origin\":2,\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false,\"container\":\"orders\",\"id\":\"o1\",\"doc\":\"{}\"}", "'doc'" },
    { "put doc is null", "{\"origin\":2,\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false,\"container\":\"orders\",\"id\":\"o1\",\"doc\":null}", "'doc'" },
    { "put without doc", "{\"origin\":2,\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false,\"container\":\"orders\",\"id\":\"o1\"}", "'doc'" },
    { "delete doc is a number", "{\"origin\":2,\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":true,\"container\":\"orders\",\"id\":\"o1\",\"doc\":3}", "'doc'" },
    { "missing container", "{\"origin\":2,\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false,\"id\":\"o1\",\"doc\":{}}", "'container'" },
    { "empty container", "{\"origin\":2,\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false,\"container\":\"\",\"id\":\"o1\",\"doc\":{}}", "'container'" },
    { "missing id", "{\"origin\":2,\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false,\"container\":\"orders\",\"doc\":{}}", "'id'" },
    { "empty id", "{\"origin\":2,\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false,\"container\":\"orders\",\"id\":\"\",\"doc\":{}}", "'id'" },
    { "id as a number", "{\"origin\":2,\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false,\"container\":\"orders\",\"id\":7,\"doc\":{}}", "'id'" },
};

static const struct bad_frame bad_entries[] = {
    { "not an object", "\"confirmed\"", "object" },
    { "missing crts", "{\"outcome\":\"confirmed\",\"conflict\":\"none\",\"write\":{\"origin\":2,\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false," GOOD_REST "}}", "'crts'" },
    { "negative crts", "{\"crts\":-1,\"outcome\":\"confirmed\",\"conflict\":\"none\",\"write\":{\"origin\":2,\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false," GOOD_REST "}}", "'crts'" },
    { "unknown outcome", "{\"crts\":4,\"outcome\":\"won\",\"conflict\":\"none\",\"write\":{\"origin\":2,\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false," GOOD_REST "}}", "'outcome'" },
    { "missing outcome", "{\"crts\":4,\"conflict\":\"none\",\"write\":{\"origin\":2,\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false," GOOD_REST "}}", "'outcome'" },
    { "outcome as a number", "{\"crts\":4,\"outcome\":0,\"conflict\":\"none\",\"write\":{\"origin\":2,\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false," GOOD_REST "}}", "'outcome'" },
    { "missing write", "{\"crts\":4,\"outcome\":\"confirmed\",\"conflict\":\"none\"}", "write" },
    { "write with lsn 0", "{\"crts\":4,\"outcome\":\"confirmed\",\"conflict\":\"none\",\"write\":{\"origin\":2,\"lsn\":0,\"hlc\":5,\"base\":null,\"delete\":false," GOOD_REST "}}", "'lsn'" },
    { "superseded without head", "{\"crts\":4,\"outcome\":\"superseded\",\"conflict\":\"insert\",\"write\":{\"origin\":2,\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false," GOOD_REST "}}", "'head'" },
    { "superseded head not an object", "{\"crts\":4,\"outcome\":\"superseded\",\"conflict\":\"insert\",\"write\":{\"origin\":2,\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false," GOOD_REST "},\"head\":\"3:1\"}", "'head'" },
    { "head without delete", "{\"crts\":4,\"outcome\":\"superseded\",\"conflict\":\"insert\",\"write\":{\"origin\":2,\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false," GOOD_REST "},\"head\":{\"version\":\"3:1\",\"hlc\":9,\"doc\":{}}}", "'delete'" },
    { "head with a bad version", "{\"crts\":4,\"outcome\":\"superseded\",\"conflict\":\"insert\",\"write\":{\"origin\":2,\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false," GOOD_REST "},\"head\":{\"version\":\"3:x\",\"hlc\":9,\"delete\":false,\"doc\":{}}}", "'version'" },
    { "head with a negative hlc", "{\"crts\":4,\"outcome\":\"superseded\",\"conflict\":\"insert\",\"write\":{\"origin\":2,\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false," GOOD_REST "},\"head\":{\"version\":\"3:1\",\"hlc\":-9,\"delete\":false,\"doc\":{}}}", "'hlc'" },
    { "dismissed without conflict_id", "{\"crts\":4,\"outcome\":\"dismissed\",\"conflict\":\"insert\",\"write\":{\"origin\":2,\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false," GOOD_REST "}}", "'conflict_id'" },
    { "filed with a numeric error", "{\"crts\":4,\"outcome\":\"filed\",\"conflict\":\"insert\",\"error\":5,\"write\":{\"origin\":2,\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false," GOOD_REST "},\"head\":{\"version\":\"3:1\",\"hlc\":9,\"delete\":true,\"doc\":null}}", "'error'" },
    { "resolved without head", "{\"crts\":4,\"outcome\":\"resolved\",\"conflict\":\"insert\",\"write\":{\"origin\":2,\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false," GOOD_REST "}}", "'head'" },
    { "live head without a document", "{\"crts\":4,\"outcome\":\"superseded\",\"conflict\":\"insert\",\"write\":{\"origin\":2,\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false," GOOD_REST "},\"head\":{\"version\":\"3:1\",\"hlc\":9,\"delete\":false,\"doc\":null}}", "'doc'" },
};

/* The same frames, minus the flaw, must decode: otherwise the table above
 * would prove nothing. */
Test(entry, the_unflawed_frames_decode)
{
    static const char *const good_write =
        "{\"origin\":2,\"lsn\":3,\"hlc\":5,\"base\":\"2:1\",\"delete\":false," GOOD_REST "}";
    static const char *const good_entry =
        "{\"crts\":4,\"outcome\":\"superseded\",\"conflict\":\"insert\",\"write\":{\"origin\":2,"
        "\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false," GOOD_REST "},\"head\":{\"version\":"
        "\"3:1\",\"hlc\":9,\"delete\":false,\"doc\":{}}}";
    struct err err = { "" };
    struct repl_write w;
    struct clog_entry e;

    json_t *root = json_loads(good_write, 0, NULL);
    cr_assert_eq(repl_write_from_json(root, &w, &err), 0, "%s", err.msg);
    cr_expect(version_eq(w.base, (struct version){ 2, 1 }));
    repl_write_clear(&w);
    json_decref(root);
    root = json_loads(good_entry, 0, NULL);
    cr_assert_eq(clog_entry_from_json(root, &e, &err), 0, "%s", err.msg);
    cr_expect(version_eq(e.head, (struct version){ 3, 1 }));
    clog_entry_clear(&e);
    json_decref(root);
}

Test(entry, malformed_writes_are_refused_naming_the_field)
{
    for (size_t i = 0; i < sizeof bad_writes / sizeof bad_writes[0]; i++) {
        const struct bad_frame *f = &bad_writes[i];
        struct err err = { "" };
        struct repl_write w;
        json_t *root = json_loads(f->json, JSON_DECODE_ANY, NULL);
        cr_assert_not_null(root, "row '%s' is not JSON", f->name);
        cr_expect_eq(repl_write_from_json(root, &w, &err), -1, "%s: accepted", f->name);
        cr_expect(strstr(err.msg, f->field) != NULL, "%s: reason \"%s\" does not name %s",
                  f->name, err.msg, f->field);
        /* nothing is left for the caller to free */
        cr_expect(w.container == NULL && w.id == NULL && w.doc == NULL, "%s: leftovers", f->name);
        json_decref(root);
    }
}

Test(entry, malformed_log_entries_are_refused_naming_the_field)
{
    for (size_t i = 0; i < sizeof bad_entries / sizeof bad_entries[0]; i++) {
        const struct bad_frame *f = &bad_entries[i];
        struct err err = { "" };
        struct clog_entry e;
        json_t *root = json_loads(f->json, JSON_DECODE_ANY, NULL);
        cr_assert_not_null(root, "row '%s' is not JSON", f->name);
        cr_expect_eq(clog_entry_from_json(root, &e, &err), -1, "%s: accepted", f->name);
        cr_expect(strstr(err.msg, f->field) != NULL, "%s: reason \"%s\" does not name %s",
                  f->name, err.msg, f->field);
        cr_expect(e.w.container == NULL && e.w.id == NULL && e.w.doc == NULL && e.head_doc == NULL,
                  "%s: leftovers", f->name);
        json_decref(root);
        cr_expect_eq(clog_entry_parse(f->json, strlen(f->json), &e, &err), -1,
                     "%s: accepted by clog_entry_parse", f->name);
        cr_expect(strstr(err.msg, f->field) != NULL, "%s: parse reason \"%s\" does not name %s",
                  f->name, err.msg, f->field);
        cr_expect(e.w.container == NULL && e.w.doc == NULL && e.head_doc == NULL,
                  "%s: parse leftovers", f->name);
    }
}

#define ENTRY_HEAD "{\"crts\":9,\"write\":{\"origin\":2,\"lsn\":3,\"hlc\":4,\"base\":null," \
                   "\"delete\":false,\"container\":\"c\",\"id\":\"i\",\"doc\":"
#define ENTRY_TAIL "},\"outcome\":\"confirmed\",\"conflict\":\"none\"}"

/* The documents are kept as the hub sent them, byte for byte (number
 * formatting, member order, escapes), for the write and as the head. */
Test(entry, parse_keeps_documents_as_sent)
{
    const char *doc = "{\"n\":1.50,\"b\":[true,null,{}],\"s\":\"\\u00e9\\n\xc3\xa9\",\"a\":-0e+1}";
    char text[512];
    struct clog_entry e;
    struct err err;
    snprintf(text, sizeof text, "%s%s%s", ENTRY_HEAD, doc, ENTRY_TAIL);
    cr_assert_eq(clog_entry_parse(text, strlen(text), &e, &err), 0, "%s", err.msg);
    cr_expect_str_eq(e.w.doc, doc);
    cr_expect_str_eq(e.head_doc, doc);
    cr_expect_eq(e.crts, 9);
    clog_entry_clear(&e);
}

/* A document that is not valid JSON makes the whole entry invalid, as it
 * does for Jansson; an escaped member name is still understood. */
Test(entry, parse_checks_documents_it_does_not_parse)
{
    static const char *const bad[] = {
        "{\"a\":\"\xc3\"}", "{\"a\":\"\xed\xa0\x80\"}", "{\"a\":01}", "{\"a\":1.}",
        "{\"a\":\"\\u0000\"}", "{\"a\":\"\\x\"}", "{\"a\":tru}", "{\"a\":[1,]}",
        "{\"a\":1,}", "{\"a\" 1}", "{\"a\":\"\t\"}", "{\"a\":{\"b\":[}}",
    };
    char text[512];
    struct clog_entry e;
    struct err err;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text, "%s%s%s", ENTRY_HEAD, bad[i], ENTRY_TAIL);
        cr_expect_eq(clog_entry_parse(text, strlen(text), &e, &err), -1, "accepted %s", bad[i]);
    }
    snprintf(text, sizeof text, "%s",
             "{\"crts\":9,\"write\":{\"origin\":2,\"lsn\":3,\"hlc\":4,\"base\":null,"
             "\"delete\":false,\"container\":\"c\",\"id\":\"i\",\"d\\u006fc\":{\"x\":1}"
             ENTRY_TAIL);
    cr_assert_eq(clog_entry_parse(text, strlen(text), &e, &err), 0, "%s: %s", text, err.msg);
    expect_same_doc(e.w.doc, "{\"x\":1}", "escaped key");
    clog_entry_clear(&e);
}

/* A present but unreadable conflict kind is a bad frame like any other: it
 * must not silently decode as "none" (the change feed and the conflict
 * counters would then report a conflict that happened as no conflict). */
Test(entry, unknown_conflict_kind_is_refused)
{
    static const char *const frame =
        "{\"crts\":4,\"outcome\":\"confirmed\",\"conflict\":\"sideways\",\"write\":{\"origin\":2,"
        "\"lsn\":1,\"hlc\":5,\"base\":null,\"delete\":false," GOOD_REST "}}";
    struct err err = { "" };
    struct clog_entry e;
    json_t *root = json_loads(frame, 0, NULL);

    int rc = clog_entry_from_json(root, &e, &err);
    if (rc == 0) {
        cr_expect_fail("conflict \"sideways\" accepted, decoded as \"%s\"",
                       lww_conflict_name(e.conflict));
        clog_entry_clear(&e);
    } else {
        cr_expect(strstr(err.msg, "'conflict'") != NULL, "reason \"%s\"", err.msg);
    }
    json_decref(root);
}

/* The hub decides on the shipped value as it is: a value that is present but
 * not a number must be refused, not read as "the path held no number" (which
 * silently turns a path-value decision into an HLC decision). */
Test(entry, non_numeric_value_is_refused)
{
    static const char *const frame =
        "{\"origin\":2,\"lsn\":3,\"hlc\":5,\"base\":null,\"delete\":false,\"value\":\"9\","
        GOOD_REST "}";
    struct err err = { "" };
    struct repl_write w;
    json_t *root = json_loads(frame, 0, NULL);

    int rc = repl_write_from_json(root, &w, &err);
    if (rc == 0) {
        cr_expect_fail("value \"9\" accepted (has_value %d)", w.has_value);
        repl_write_clear(&w);
    } else {
        cr_expect(strstr(err.msg, "'value'") != NULL, "reason \"%s\"", err.msg);
    }
    json_decref(root);
}

/* --- entry_path_number ---------------------------------------------------- */

static const char *const path_doc =
    "{\"v\":5,\"neg\":-2.5,\"big\":1700000000000123,\"a\":{\"b\":{\"c\":3.75}},"
    "\"s\":\"12\",\"t\":true,\"n\":null,\"o\":{},\"arr\":[1,2],\"\":{\"x\":8}}";

Test(entry, path_number_reads_top_level_and_nested_numbers)
{
    static const struct { const char *path; double want; } rows[] = {
        { "/v", 5 }, { "/neg", -2.5 }, { "/big", 1700000000000123.0 }, { "/a/b/c", 3.75 },
    };

    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        double got = -1;
        cr_expect(entry_path_number(path_doc, rows[i].path, &got), "%s not found", rows[i].path);
        cr_expect_eq(got, rows[i].want, "%s: %g, want %g", rows[i].path, got, rows[i].want);
    }
}

Test(entry, path_number_is_false_for_missing_or_non_numeric)
{
    static const char *const paths[] = {
        "/missing", "/a/missing", "/a/b/c/d", "/v/x", "/a", "/a/b", "/s", "/t", "/n", "/o",
        "/arr", "v", "", "/",
    };

    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        double got = 42;
        cr_expect_not(entry_path_number(path_doc, paths[i], &got), "'%s' read as %g", paths[i], got);
        cr_expect_eq(got, 42, "'%s' wrote %g on failure", paths[i], got);
    }
}

Test(entry, path_number_is_false_for_null_path_bad_doc_or_huge_path)
{
    double got = 42;
    char huge[2048];

    cr_expect_not(entry_path_number(path_doc, NULL, &got));
    cr_expect_not(entry_path_number(NULL, "/v", &got));
    cr_expect_not(entry_path_number("{\"v\":", "/v", &got));
    cr_expect_not(entry_path_number("[5]", "/v", &got));
    memset(huge, 'k', sizeof huge - 1);
    huge[0] = '/';
    huge[sizeof huge - 1] = '\0';
    cr_expect_not(entry_path_number(path_doc, huge, &got));
    cr_expect_eq(got, 42);
}

Test(entry, path_number_reads_a_long_key)
{
    char key[256], doc[400], path[300];
    double got = 0;

    memset(key, 'k', 255);
    key[255] = '\0';
    snprintf(doc, sizeof doc, "{\"%s\":{\"v\":7}}", key);
    snprintf(path, sizeof path, "/%s/v", key);
    cr_expect(entry_path_number(doc, path, &got));
    cr_expect_eq(got, 7);
}

/* --- repl_write_lww --------------------------------------------------------- */

Test(entry, lww_input_carries_the_write_fields)
{
    struct repl_write w = mkwrite(3, 19, HLC(T0, 7), (struct version){ 2, 18 }, false, "{\"v\":4}");
    w.has_value = true;
    w.value = 4;

    struct lww_write l = repl_write_lww(&w);
    cr_expect(version_eq(l.version, (struct version){ 3, 19 }));
    cr_expect(version_eq(l.base, (struct version){ 2, 18 }));
    cr_expect_eq(l.hlc, HLC(T0, 7));
    cr_expect_not(l.is_delete);
    cr_expect(l.has_value);
    cr_expect_eq(l.value, 4);
    repl_write_clear(&w);

    w = mkwrite(4, 1, HLC(T0, 8), VERSION_NONE, true, NULL);
    l = repl_write_lww(&w);
    cr_expect(version_eq(l.version, (struct version){ 4, 1 }));
    cr_expect(version_is_none(l.base));
    cr_expect(l.is_delete);
    cr_expect_not(l.has_value);
    repl_write_clear(&w);
}

/* A shipped frame is written without Jansson: it must decode to the same
 * write (escapes in the id, a whole-number value, a base, a delete). */
Test(entry, frame_decodes_to_the_same_write)
{
    struct repl_write in[] = {
        mkwrite(3, 8, HLC(T0, 1), (struct version){ 2, 40 }, false, "{\"v\":1,\"s\":\"\\u00e9\"}"),
        mkwrite(3, 9, HLC(T0, 2), VERSION_NONE, true, NULL),
    };
    free(in[0].id);
    in[0].id = strdup("a\"b\\c\n\x01\xc3\xa9/d");
    in[0].has_value = true;
    in[0].value = 42;
    in[1].has_value = true;
    in[1].value = -0.1;
    for (size_t i = 0; i < 2; i++) {
        struct repl_write out;
        struct err err = { "" };
        char *frame = repl_write_frame(&in[i]);
        cr_assert_not_null(frame);
        json_t *root = json_loads(frame, 0, NULL);
        cr_assert_not_null(root, "unparsable frame %s", frame);
        cr_assert_eq(repl_write_from_json(root, &out, &err), 0, "%s: %s", frame, err.msg);
        expect_same_write(&out, &in[i]);
        cr_expect(json_is_real(json_object_get(root, "value")), "%s", frame);
        json_decref(root);
        repl_write_clear(&out);
        free(frame);
        repl_write_clear(&in[i]);
    }
    struct repl_write bad = mkwrite(3, 10, HLC(T0, 3), VERSION_NONE, false, "{}");
    free(bad.id);
    bad.id = strdup("\xc3");
    cr_expect_null(repl_write_frame(&bad), "an id that is not UTF-8 cannot be shipped");
    repl_write_clear(&bad);
}

#include "entry.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/jsonscan.h"

void repl_write_clear(struct repl_write *w)
{
    free(w->container);
    free(w->id);
    free(w->doc);
    memset(w, 0, sizeof *w);
}

static int dup_or_null(char **dst, const char *src)
{
    *dst = NULL;
    if (!src)
        return 0;
    *dst = strdup(src);
    return *dst ? 0 : -1;
}

int repl_write_copy(struct repl_write *dst, const struct repl_write *src)
{
    *dst = *src;
    dst->container = dst->id = dst->doc = NULL;
    if (dup_or_null(&dst->container, src->container) < 0 || dup_or_null(&dst->id, src->id) < 0 ||
        dup_or_null(&dst->doc, src->doc) < 0) {
        repl_write_clear(dst);
        return -1;
    }
    return 0;
}

static json_t *version_json(struct version v)
{
    char buf[VERSION_TEXT_MAX];
    if (version_is_none(v))
        return json_null();
    version_format(v, buf);
    return json_string(buf);
}

static json_t *doc_json(const char *doc)
{
    return doc ? json_loads(doc, JSON_DECODE_ANY, NULL) : json_null();
}

json_t *repl_write_to_json(const struct repl_write *w)
{
    json_t *j = json_pack("{s:I,s:I,s:I,s:o,s:b,s:s,s:s,s:o}", "origin", (json_int_t)w->origin,
                          "lsn", (json_int_t)w->lsn, "hlc", (json_int_t)w->hlc, "base",
                          version_json(w->base), "delete", w->is_delete, "container",
                          w->container, "id", w->id, "doc", doc_json(w->doc));
    if (j && w->has_value)
        json_object_set_new(j, "value", json_real(w->value));
    if (j && w->state)
        json_object_set_new(j, "state", json_integer(w->state));
    return j;
}

static int get_u64(const json_t *j, const char *key, uint64_t *out, struct err *err)
{
    const json_t *v = json_object_get(j, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return err_set(err, "field '%s' must be a non-negative integer", key);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int get_str(const json_t *j, const char *key, char **out, struct err *err)
{
    const json_t *v = json_object_get(j, key);
    if (!json_is_string(v) || json_string_length(v) == 0)
        return err_set(err, "field '%s' must be a non-empty string", key);
    *out = strdup(json_string_value(v));
    return *out ? 0 : err_set(err, "out of memory");
}

static int get_version(const json_t *j, const char *key, struct version *out, struct err *err)
{
    const json_t *v = json_object_get(j, key);
    *out = VERSION_NONE;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v) || version_parse(json_string_value(v), json_string_length(v), out) < 0)
        return err_set(err, "field '%s' must be a version \"REGION:LSN\" or null", key);
    return 0;
}

/* A document travels as a JSON object (or null for a delete). */
static int get_doc(const json_t *j, const char *key, bool is_delete, char **out, struct err *err)
{
    const json_t *v = json_object_get(j, key);
    *out = NULL;
    if (is_delete && (!v || json_is_null(v)))
        return 0;
    if (!json_is_object(v))
        return err_set(err, "field '%s' must be a JSON object%s", key,
                       is_delete ? " or null" : "");
    *out = json_dumps(v, JSON_COMPACT);
    return *out ? 0 : err_set(err, "out of memory");
}

int repl_write_from_json(const json_t *j, struct repl_write *w, struct err *err)
{
    uint64_t origin = 0;
    memset(w, 0, sizeof *w);
    if (!json_is_object(j))
        return err_set(err, "a write must be a JSON object");
    const json_t *del = json_object_get(j, "delete");
    if (!json_is_boolean(del))
        return err_set(err, "field 'delete' must be true or false");
    w->is_delete = json_is_true(del);
    if (get_u64(j, "origin", &origin, err) < 0 || get_u64(j, "lsn", &w->lsn, err) < 0 ||
        get_u64(j, "hlc", &w->hlc, err) < 0 || get_version(j, "base", &w->base, err) < 0)
        return -1;
    if (origin == 0 || origin > UINT32_MAX || w->lsn == 0)
        return err_set(err, "fields 'origin' and 'lsn' must be positive");
    w->origin = (uint32_t)origin;
    const json_t *val = json_object_get(j, "value");
    if (val && (!json_is_number(val) || !isfinite(json_number_value(val))))
        return err_set(err, "field 'value' must be a finite number when present");
    if (val) {
        w->has_value = true;
        w->value = json_number_value(val);
    }
    const json_t *st = json_object_get(j, "state");
    if (json_is_integer(st))
        w->state = (enum write_state)json_integer_value(st);
    if (get_str(j, "container", &w->container, err) < 0 || get_str(j, "id", &w->id, err) < 0 ||
        get_doc(j, "doc", w->is_delete, &w->doc, err) < 0) {
        repl_write_clear(w);
        return -1;
    }
    return 0;
}

/* A finite double as Jansson writes one: 17 significant digits, and a
 * ".0" when that reads as an integer, so it decodes as a real again. */
static size_t frame_real(char *out, size_t cap, double v)
{
    int n = snprintf(out, cap, "%.17g", v);
    if (n < 0 || (size_t)n >= cap - 2)
        return 0;
    if (!strpbrk(out, ".eE")) {
        memcpy(out + n, ".0", 3);
        n += 2;
    }
    return (size_t)n;
}

char *repl_write_frame(const struct repl_write *w)
{
    size_t cl = strlen(w->container), il = strlen(w->id), dl = w->doc ? strlen(w->doc) : 4;
    char base[VERSION_TEXT_MAX], value[40];
    if (!jsonscan_utf8(w->container, cl) || !jsonscan_utf8(w->id, il))
        return NULL; /* as Jansson would refuse it */
    version_format(w->base, base);
    size_t cap = 200 + 6 * (cl + il) + dl + sizeof base + sizeof value;
    char *f = malloc(cap);
    if (!f)
        return NULL;
    size_t n = (size_t)snprintf(f, cap, "{\"origin\":%u,\"lsn\":%llu,\"hlc\":%llu,\"base\":%s%s%s,"
                                "\"delete\":%s,\"container\":", w->origin,
                                (unsigned long long)w->lsn, (unsigned long long)w->hlc,
                                base[0] ? "\"" : "", base[0] ? base : "null", base[0] ? "\"" : "",
                                w->is_delete ? "true" : "false");
    n += jsonscan_quote(f + n, w->container, cl);
    memcpy(f + n, ",\"id\":", 6);
    n += 6;
    n += jsonscan_quote(f + n, w->id, il);
    if (w->has_value) {
        size_t vl = frame_real(value, sizeof value, w->value);
        if (!vl) {
            free(f);
            return NULL;
        }
        n += (size_t)snprintf(f + n, cap - n, ",\"value\":%s", value);
    }
    /* The document as it is, unparsed: JSON Meridian produced itself. */
    memcpy(f + n, ",\"doc\":", 7);
    memcpy(f + n + 7, w->doc ? w->doc : "null", dl);
    memcpy(f + n + 7 + dl, "}", 2);
    return f;
}

int clog_entry_head_of_write(struct clog_entry *e)
{
    e->head = repl_write_version(&e->w);
    e->head_hlc = e->w.hlc;
    e->head_delete = e->w.is_delete;
    free(e->head_doc);
    e->head_doc = NULL;
    return dup_or_null(&e->head_doc, e->w.doc);
}

void clog_entry_clear(struct clog_entry *e)
{
    repl_write_clear(&e->w);
    free(e->head_doc);
    free(e->error);
    memset(e, 0, sizeof *e);
}

static const char *const outcome_names[LWW_OUTCOMES] = {
    "confirmed", "superseded", "resolved", "filed", "dismissed",
};

const char *clog_outcome_name(enum lww_outcome o)
{
    return o < LWW_OUTCOMES ? outcome_names[o] : "?";
}

json_t *clog_entry_to_json(const struct clog_entry *e)
{
    json_t *w = repl_write_to_json(&e->w);
    if (!w)
        return NULL;
    json_object_del(w, "state");
    json_t *j = json_pack("{s:I,s:o,s:s,s:s}", "crts", (json_int_t)e->crts, "write", w,
                          "outcome", outcome_names[e->outcome], "conflict",
                          lww_conflict_name(e->conflict));
    if (j && e->outcome != LWW_CONFIRMED && e->outcome != LWW_DISMISSED)
        json_object_set_new(j, "head",
                            json_pack("{s:o,s:I,s:b,s:o}", "version", version_json(e->head),
                                      "hlc", (json_int_t)e->head_hlc, "delete", e->head_delete,
                                      "doc", doc_json(e->head_doc)));
    if (j && e->error)
        json_object_set_new(j, "error", json_string(e->error));
    if (j && e->outcome == LWW_DISMISSED)
        json_object_set_new(j, "conflict_id", json_integer((json_int_t)e->conflict_id));
    return j;
}

char *clog_entry_text(const struct clog_entry *e)
{
    bool has_head = e->outcome != LWW_CONFIRMED && e->outcome != LWW_DISMISSED;
    /* Jansson leaves out an error that is not UTF-8; so does this. */
    size_t el = e->error && jsonscan_utf8(e->error, strlen(e->error)) ? strlen(e->error) : 0;
    const char *hd = e->head_doc ? e->head_doc : "null";
    char *frame = repl_write_frame(&e->w), hv[VERSION_TEXT_MAX];
    size_t cap = (frame ? strlen(frame) : 0) + 6 * el + (has_head ? strlen(hd) : 0) + 256;
    char *out = frame ? malloc(cap) : NULL;
    if (!out) {
        free(frame);
        return NULL;
    }
    size_t n = (size_t)sprintf(out, "{\"crts\":%llu,\"outcome\":\"%s\",\"conflict\":\"%s\"",
                               (unsigned long long)e->crts, outcome_names[e->outcome],
                               lww_conflict_name(e->conflict));
    if (el) {
        n += (size_t)sprintf(out + n, ",\"error\":");
        n += jsonscan_quote(out + n, e->error, el);
    }
    if (e->outcome == LWW_DISMISSED)
        n += (size_t)sprintf(out + n, ",\"conflict_id\":%llu", (unsigned long long)e->conflict_id);
    /* The documents as they are, unparsed: JSON Meridian produced. */
    n += (size_t)sprintf(out + n, ",\"write\":%s", frame);
    if (has_head) {
        version_format(e->head, hv);
        n += (size_t)sprintf(out + n, ",\"head\":{\"version\":%s%s%s,\"hlc\":%llu,\"delete\":%s,"
                             "\"doc\":%s}", hv[0] ? "\"" : "", hv[0] ? hv : "null",
                             hv[0] ? "\"" : "", (unsigned long long)e->head_hlc,
                             e->head_delete ? "true" : "false", hd);
    }
    strcpy(out + n, "}");
    free(frame);
    return out;
}

static int parse_outcome(const json_t *j, struct clog_entry *e, struct err *err)
{
    const char *o = json_string_value(json_object_get(j, "outcome"));
    const char *k = json_string_value(json_object_get(j, "conflict"));
    int found = -1;
    for (int i = 0; o && i < LWW_OUTCOMES; i++)
        if (strcmp(o, outcome_names[i]) == 0)
            found = i;
    if (found < 0)
        return err_set(err, "field 'outcome' must be one of confirmed, superseded, resolved, "
                            "filed, dismissed");
    e->outcome = (enum lww_outcome)found;
    for (int i = LWW_NO_CONFLICT; k && i <= LWW_DELETE; i++)
        if (strcmp(k, lww_conflict_name((enum lww_conflict)i)) == 0) {
            e->conflict = (enum lww_conflict)i;
            return 0;
        }
    return err_set(err, "field 'conflict' must be one of none, insert, replace, delete");
}

static int parse_head(const json_t *h, struct clog_entry *e, struct err *err)
{
    const json_t *del = json_object_get(h, "delete");
    if (!json_is_object(h) || !json_is_boolean(del))
        return err_set(err, "a %s entry needs a 'head' object with 'delete'",
                       outcome_names[e->outcome]);
    e->head_delete = json_is_true(del);
    if (get_version(h, "version", &e->head, err) < 0 || get_u64(h, "hlc", &e->head_hlc, err) < 0)
        return -1;
    return get_doc(h, "doc", e->head_delete, &e->head_doc, err);
}

int clog_entry_from_json(const json_t *j, struct clog_entry *e, struct err *err)
{
    memset(e, 0, sizeof *e);
    if (!json_is_object(j))
        return err_set(err, "a log entry must be a JSON object");
    if (get_u64(j, "crts", &e->crts, err) < 0 || parse_outcome(j, e, err) < 0 ||
        repl_write_from_json(json_object_get(j, "write"), &e->w, err) < 0)
        return -1;
    if (e->outcome == LWW_CONFIRMED) {
        if (clog_entry_head_of_write(e) < 0)
            goto fail;
        return 0;
    }
    if (e->outcome == LWW_DISMISSED) {
        if (get_u64(j, "conflict_id", &e->conflict_id, err) == 0 && e->conflict_id)
            return 0;
        err_set(err, "a dismissed entry needs a 'conflict_id' >= 1");
        goto fail;
    }
    const json_t *why = json_object_get(j, "error");
    if (why && (!json_is_string(why) || dup_or_null(&e->error, json_string_value(why)) < 0)) {
        err_set(err, "field 'error' must be a string");
        goto fail;
    }
    if (parse_head(json_object_get(j, "head"), e, err) == 0)
        return 0;
fail:
    clog_entry_clear(e);
    return -1;
}

/* Where the documents of a log entry's text are ("doc" of "write" and of
 * "head"), found without parsing them. `slow` when the text is anything but
 * plain (escaped keys, invalid JSON): then Jansson does all of it. */
struct doc_spans {
    const char *at[2], *end[2];    /* [0] write, [1] head */
    bool slow;
};

static void doc_span_find(const struct jsonscan_member *in, struct doc_spans *d, int which)
{
    struct jsonscan_object o;
    struct jsonscan_member m;
    if (!jsonscan_object_open(&o, in->value, in->value_end))
        return;
    while (jsonscan_member(&o, &m)) {
        d->slow |= m.key_escaped;
        if (m.key_len == 3 && memcmp(m.key, "doc", 3) == 0 && *m.value == '{') {
            d->at[which] = m.value;
            d->end[which] = m.value_end;
        }
    }
    d->slow |= o.failed;
}

static void doc_spans_find(const char *text, size_t len, struct doc_spans *d)
{
    struct jsonscan_object o;
    struct jsonscan_member m;
    *d = (struct doc_spans){ .slow = !jsonscan_object_open(&o, text, text + len) };
    while (!d->slow && jsonscan_member(&o, &m)) {
        d->slow |= m.key_escaped;
        if (m.key_len == 5 && memcmp(m.key, "write", 5) == 0)
            doc_span_find(&m, d, 0);
        else if (m.key_len == 4 && memcmp(m.key, "head", 4) == 0)
            doc_span_find(&m, d, 1);
    }
    /* What follows the object is left to Jansson, which parses the rest. */
    d->slow |= o.failed || (d->at[0] && d->at[1] && d->at[1] < d->at[0]);
}

/* The entry's text with each document replaced by {}: what Jansson parses. */
static char *doc_spans_cut(const char *text, size_t len, const struct doc_spans *d, size_t *out)
{
    char *env = malloc(len + 1), *q = env;
    const char *p = text;
    if (!env)
        return NULL;
    for (int i = 0; i < 2; i++) {
        if (!d->at[i])
            continue;
        memcpy(q, p, (size_t)(d->at[i] - p));
        q += d->at[i] - p;
        memcpy(q, "{}", 2);
        q += 2;
        p = d->end[i];
    }
    memcpy(q, p, (size_t)(text + len - p));
    q += text + len - p;
    *out = (size_t)(q - env);
    return env;
}

static int doc_take(char **doc, const char *at, const char *end)
{
    if (!*doc || !at)
        return 0;
    free(*doc);
    *doc = strndup(at, (size_t)(end - at));
    return *doc ? 0 : -1;
}

/* Jansson's tree of the text with its documents cut out (of all of it when
 * d->slow); *fast says which it was. */
static json_t *doc_spans_load(const char *text, size_t len, const struct doc_spans *d,
                              bool *fast, json_error_t *je)
{
    size_t elen = len;
    char *env = d->slow ? NULL : doc_spans_cut(text, len, d, &elen);
    *fast = env != NULL;
    json_t *root = json_loadb(*fast ? env : text, elen, JSON_DECODE_ANY, je);
    free(env);
    return root;
}

/* --- decoding by scanning alone ------------------------------------------
 * The common entry, plain (no escapes, every field of its type), decoded
 * without Jansson. Anything else makes these return false, and the Jansson
 * path decides and names what is wrong. */

static bool key_is(const struct jsonscan_member *m, const char *key)
{
    size_t n = strlen(key);
    return m->key_len == n && memcmp(m->key, key, n) == 0;
}

/* A non-negative integer (jsonscan checked that it fits int64). */
static bool scan_u64(const struct jsonscan_member *m, uint64_t *out)
{
    uint64_t v = 0;
    if (m->value == m->value_end)
        return false;
    for (const char *p = m->value; p < m->value_end; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *out = v;
    return true;
}

/* A string without escapes: its bytes between the quotes. */
static bool scan_str(const struct jsonscan_member *m, const char **s, size_t *n)
{
    if (*m->value != '"' || memchr(m->value, '\\', (size_t)(m->value_end - m->value)))
        return false;
    *s = m->value + 1;
    *n = (size_t)(m->value_end - m->value) - 2;
    return true;
}

static bool scan_bool(const struct jsonscan_member *m, bool *out)
{
    *out = *m->value == 't';
    return *m->value == 't' || *m->value == 'f';
}

static bool scan_version(const struct jsonscan_member *m, struct version *out)
{
    const char *s;
    size_t n;
    *out = VERSION_NONE;
    if (*m->value == 'n')
        return true;
    return scan_str(m, &s, &n) && version_parse(s, n, out) == 0;
}

static bool scan_value(const struct jsonscan_member *m, double *out)
{
    char buf[64];
    size_t n = (size_t)(m->value_end - m->value);
    if (n >= sizeof buf || (*m->value != '-' && (*m->value < '0' || *m->value > '9')))
        return false;
    memcpy(buf, m->value, n);
    buf[n] = '\0';
    *out = strtod(buf, NULL);
    return isfinite(*out);
}

static bool scan_strdup(const struct jsonscan_member *m, char **out)
{
    const char *s;
    size_t n;
    if (!scan_str(m, &s, &n) || n == 0)
        return false;
    free(*out);
    *out = strndup(s, n);
    return *out != NULL;
}

/* The span of a document member: an object, or null where that is allowed
 * (then *at is NULL). */
static bool scan_doc(const struct jsonscan_member *m, const char **at, const char **end)
{
    *at = *m->value == '{' ? m->value : NULL;
    *end = m->value_end;
    return *at || *m->value == 'n';
}

static bool write_scan_member(const struct jsonscan_member *m, struct repl_write *w,
                              uint64_t *origin, unsigned *seen, const char **doc,
                              const char **doc_end)
{
    if (key_is(m, "origin"))
        return (*seen |= 1, scan_u64(m, origin));
    if (key_is(m, "lsn"))
        return (*seen |= 2, scan_u64(m, &w->lsn));
    if (key_is(m, "hlc"))
        return (*seen |= 4, scan_u64(m, &w->hlc));
    if (key_is(m, "delete"))
        return (*seen |= 8, scan_bool(m, &w->is_delete));
    if (key_is(m, "container"))
        return (*seen |= 16, scan_strdup(m, &w->container));
    if (key_is(m, "id"))
        return (*seen |= 32, scan_strdup(m, &w->id));
    if (key_is(m, "doc"))
        return (*seen |= 64, scan_doc(m, doc, doc_end));
    if (key_is(m, "base"))
        return scan_version(m, &w->base);
    if (key_is(m, "value"))
        return (w->has_value = true, scan_value(m, &w->value));
    if (key_is(m, "state")) {
        uint64_t st;
        if (!scan_u64(m, &st) || st > WRITE_COMMITTED)
            return false;
        w->state = (enum write_state)st;
        return true;
    }
    return true;
}

static bool only_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p == end;
}

/* A write object at [at, end) (nothing but whitespace after it), as
 * repl_write_from_json would take it. */
static bool write_scan(const char *at, const char *end, struct repl_write *w)
{
    struct jsonscan_object o;
    struct jsonscan_member m;
    const char *doc = NULL, *doc_end = NULL;
    uint64_t origin = 0;
    unsigned seen = 0;
    bool ok = jsonscan_object_open(&o, at, end);
    memset(w, 0, sizeof *w);
    while (ok && jsonscan_member(&o, &m))
        ok = !m.key_escaped && write_scan_member(&m, w, &origin, &seen, &doc, &doc_end);
    ok = ok && !o.failed && only_ws(o.p, end) && (seen & 63) == 63 && origin > 0 && origin <= UINT32_MAX &&
         w->lsn > 0 && (doc ? true : w->is_delete);
    w->origin = (uint32_t)origin;
    if (ok && doc)
        ok = (w->doc = strndup(doc, (size_t)(doc_end - doc))) != NULL;
    if (!ok)
        repl_write_clear(w);
    return ok;
}

/* The index in [0, n) whose name(i) is the member's string, or -1. */
static int name_scan(const struct jsonscan_member *m, const char *(*name)(int), int n)
{
    const char *s;
    size_t len;
    if (!scan_str(m, &s, &len))
        return -1;
    for (int i = 0; i < n; i++)
        if (strlen(name(i)) == len && memcmp(s, name(i), len) == 0)
            return i;
    return -1;
}

static const char *outcome_name_of(int i)
{
    return outcome_names[i];
}

static const char *conflict_name_of(int i)
{
    return lww_conflict_name((enum lww_conflict)i);
}

static bool outcome_scan(const struct jsonscan_member *m, struct clog_entry *e)
{
    int i = name_scan(m, outcome_name_of, LWW_OUTCOMES);
    e->outcome = i < 0 ? e->outcome : (enum lww_outcome)i;
    return i >= 0;
}

static bool conflict_scan(const struct jsonscan_member *m, struct clog_entry *e)
{
    int i = name_scan(m, conflict_name_of, LWW_DELETE + 1);
    e->conflict = i < 0 ? e->conflict : (enum lww_conflict)i;
    return i >= 0;
}

/* The "head" object of a decision other than confirmed or dismissed. */
static bool head_scan(const struct jsonscan_member *in, struct clog_entry *e)
{
    struct jsonscan_object o;
    struct jsonscan_member m;
    const char *doc = NULL, *doc_end = NULL;
    unsigned seen = 0;
    bool ok = jsonscan_object_open(&o, in->value, in->value_end);
    while (ok && jsonscan_member(&o, &m)) {
        ok = !m.key_escaped;
        if (ok && key_is(&m, "delete"))
            ok = (seen |= 1, scan_bool(&m, &e->head_delete));
        else if (ok && key_is(&m, "hlc"))
            ok = (seen |= 2, scan_u64(&m, &e->head_hlc));
        else if (ok && key_is(&m, "version"))
            ok = scan_version(&m, &e->head);
        else if (ok && key_is(&m, "doc"))
            ok = (seen |= 4, scan_doc(&m, &doc, &doc_end));
    }
    ok = ok && !o.failed && (seen & 3) == 3 && (doc || e->head_delete);
    if (ok && doc)
        ok = (e->head_doc = strndup(doc, (size_t)(doc_end - doc))) != NULL;
    return ok;
}

struct clog_fields {
    const struct jsonscan_member *write, *head;
    struct jsonscan_member wm, hm;
    bool crts, outcome, conflict, conflict_id;
};

static bool clog_scan_member(const struct jsonscan_member *m, struct clog_entry *e,
                             struct clog_fields *f)
{
    const char *s;
    size_t n;
    if (key_is(m, "crts"))
        return (f->crts = true, scan_u64(m, &e->crts));
    if (key_is(m, "outcome"))
        return (f->outcome = true, outcome_scan(m, e));
    if (key_is(m, "conflict"))
        return (f->conflict = true, conflict_scan(m, e));
    if (key_is(m, "conflict_id"))
        return (f->conflict_id = true, scan_u64(m, &e->conflict_id));
    if (key_is(m, "write"))
        return (f->wm = *m, f->write = &f->wm, *m->value == '{');
    if (key_is(m, "head"))
        return (f->hm = *m, f->head = &f->hm, *m->value == '{');
    if (key_is(m, "error")) {
        if (!scan_str(m, &s, &n))
            return false;
        free(e->error);
        e->error = strndup(s, n);
        return e->error != NULL;
    }
    return true;
}

/* The decision that follows from the write when confirmed. */
static bool clog_scan_head(struct clog_entry *e, const struct clog_fields *f)
{
    if (e->outcome == LWW_CONFIRMED || e->outcome == LWW_DISMISSED) {
        free(e->error); /* only a filed entry's is kept */
        e->error = NULL;
    }
    if (e->outcome == LWW_CONFIRMED)
        return clog_entry_head_of_write(e) == 0;
    if (e->outcome == LWW_DISMISSED)
        return f->conflict_id && e->conflict_id > 0;
    return f->head && head_scan(f->head, e);
}

static bool clog_scan(const char *text, size_t len, struct clog_entry *e)
{
    struct jsonscan_object o;
    struct jsonscan_member m;
    struct clog_fields f = { 0 };
    bool ok = jsonscan_object_open(&o, text, text + len);
    memset(e, 0, sizeof *e);
    while (ok && jsonscan_member(&o, &m))
        ok = !m.key_escaped && clog_scan_member(&m, e, &f);
    ok = ok && !o.failed && only_ws(o.p, text + len) && f.crts && f.outcome && f.conflict && f.write &&
         write_scan(f.write->value, f.write->value_end, &e->w) && clog_scan_head(e, &f);
    if (!ok)
        clog_entry_clear(e);
    return ok;
}

int repl_write_parse(const char *text, size_t len, struct repl_write *w, struct err *err)
{
    if (write_scan(text, text + len, w))
        return 0;
    struct doc_spans d = { .slow = false };
    const struct jsonscan_member whole = { .value = text, .value_end = text + len };
    json_error_t je;
    bool fast;
    doc_span_find(&whole, &d, 0);
    json_t *root = doc_spans_load(text, len, &d, &fast, &je);
    if (!root) {
        memset(w, 0, sizeof *w);
        return err_set(err, "a write must be JSON: %s", je.text);
    }
    int rc = repl_write_from_json(root, w, err);
    json_decref(root);
    if (rc == 0 && fast && doc_take(&w->doc, d.at[0], d.end[0]) < 0) {
        repl_write_clear(w);
        return err_set(err, "out of memory");
    }
    return rc;
}

int clog_entry_parse(const char *text, size_t len, struct clog_entry *e, struct err *err)
{
    if (clog_scan(text, len, e))
        return 0;
    struct doc_spans d;
    json_error_t je;
    bool fast;
    doc_spans_find(text, len, &d);
    json_t *root = doc_spans_load(text, len, &d, &fast, &je);
    if (!root) {
        memset(e, 0, sizeof *e);
        return err_set(err, "a log entry must be JSON: %s", je.text);
    }
    int rc = clog_entry_from_json(root, e, err);
    json_decref(root);
    if (rc < 0 || !fast)
        return rc;
    /* A confirmed entry's head is its write. */
    const char *head_at = d.at[1], *head_end = d.end[1];
    if (e->outcome == LWW_CONFIRMED)
        head_at = d.at[0], head_end = d.end[0];
    if (doc_take(&e->w.doc, d.at[0], d.end[0]) < 0 ||
        doc_take(&e->head_doc, head_at, head_end) < 0) {
        clog_entry_clear(e);
        return err_set(err, "out of memory");
    }
    return 0;
}

char *entry_dump(json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return text;
}

struct lww_write repl_write_lww(const struct repl_write *w)
{
    return (struct lww_write){
        .version = repl_write_version(w),
        .base = w->base,
        .hlc = w->hlc,
        .is_delete = w->is_delete,
        .has_value = w->has_value,
        .value = w->value,
    };
}

bool entry_path_number(const char *doc, const char *path, double *out)
{
    if (!doc || !path || path[0] != '/')
        return false;
    json_t *root = json_loads(doc, 0, NULL);
    bool ok = entry_json_number(root, path, out);
    json_decref(root);
    return ok;
}

bool entry_json_number(const json_t *root, const char *path, double *out)
{
    if (!root || !path || path[0] != '/')
        return false;
    const json_t *cur = root;
    const char *p = path;
    while (cur && *p == '/') {
        const char *end = strchr(p + 1, '/');
        size_t n = end ? (size_t)(end - p - 1) : strlen(p + 1);
        char seg[256];
        if (n >= sizeof seg)
            cur = NULL;
        else {
            memcpy(seg, p + 1, n);
            seg[n] = '\0';
            cur = json_object_get(cur, seg);
        }
        p += n + 1;
    }
    bool ok = cur && json_is_number(cur) && isfinite(json_number_value(cur));
    if (ok)
        *out = json_number_value(cur);
    return ok;
}

#include "tag.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/jsonscan.h"
#include "hlc.h"

bool tag_spec_of(struct tag_spec *s, const char *metadata_field, const char *lww_path,
                 bool auto_version)
{
    *s = (struct tag_spec){ .metadata_field = metadata_field, .auto_version = auto_version };
    if (!lww_path || lww_path[0] != '/')
        return true;
    const char *key = lww_path + 1;
    size_t n = strlen(key);
    /* A member the tag writes anyway: the parsed path knows which wins. */
    if (strcmp(key, "_ts") == 0 || strcmp(key, "id") == 0 || strcmp(key, metadata_field) == 0)
        return false;
    /* Nested: read from the tagged text by the caller; set only by the
     * parsed path. */
    if (strchr(key, '/') || n >= 256)
        return !auto_version;
    s->lww_key = key;
    s->lww_key_len = n;
    return true;
}

static bool key_is(const struct jsonscan_member *m, const char *key, size_t n)
{
    return m->key_len == n && memcmp(m->key, key, n) == 0;
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

enum tag_result tag_scan(struct tag_doc *d, const char *body, size_t len,
                         const struct tag_spec *s)
{
    struct jsonscan_object o;
    struct jsonscan_member m;
    const char *end = body + len;
    bool forged = false;
    memset(d, 0, sizeof *d);
    if (!body || !jsonscan_object_open(&o, body, end))
        return TAG_SLOW;
    const char *open = o.p - 1;
    d->empty = true;
    while (jsonscan_member(&o, &m)) {
        d->empty = false;
        if (m.key_escaped)
            return TAG_SLOW;
        forged |= key_is(&m, s->metadata_field, strlen(s->metadata_field));
        bool lww = s->lww_key && key_is(&m, s->lww_key, s->lww_key_len);
        if (key_is(&m, "_ts", 3) || (lww && s->auto_version)) {
            if (d->n == TAG_REPLACE_MAX)
                return TAG_SLOW;
            d->rep[d->n++] = (struct tag_span){ (size_t)(m.value - open),
                                                (size_t)(m.value_end - open), lww };
        }
        if (key_is(&m, "id", 2)) {
            d->has_id = true;
            d->id_at = (size_t)(m.value - open);
            d->id_end = (size_t)(m.value_end - open);
        }
        if (lww) {
            d->has_lww = true;
            d->lww_at = (size_t)(m.value - open);
            d->lww_end = (size_t)(m.value_end - open);
        }
    }
    for (const char *q = o.p; !o.failed && q < end; q++)
        if (!is_ws(*q))
            return TAG_SLOW; /* Jansson names what follows the object */
    if (o.failed)
        return TAG_SLOW;
    if (forged)
        return TAG_FORGED;
    d->len = (size_t)(o.p - open);
    d->text = malloc(d->len + 1);
    if (!d->text)
        return TAG_SLOW;
    memcpy(d->text, open, d->len);
    d->text[d->len] = '\0';
    return TAG_OK;
}

/* Appends ,"key": (or "key": first) at out + *n. */
static void put_key(char *out, size_t *n, bool *first, const char *key, size_t klen)
{
    if (!*first)
        out[(*n)++] = ',';
    *first = false;
    *n += jsonscan_quote(out + *n, key, klen);
    out[(*n)++] = ':';
}

static size_t put_meta(char *out, const struct tag_meta *m)
{
    char base[VERSION_TEXT_MAX];
    size_t n = 0;
    version_format(m->base, base);
    memcpy(out, "{\"region\":", 10);
    n = 10 + jsonscan_quote(out + 10, m->region, strlen(m->region));
    n += (size_t)sprintf(out + n, ",\"regionId\":%u,\"lsn\":%llu,\"hlc\":%llu,\"base\":%s%s%s}",
                         m->region_id, (unsigned long long)m->lsn, (unsigned long long)m->hlc,
                         base[0] ? "\"" : "", base[0] ? base : "null", base[0] ? "\"" : "");
    return n;
}

char *tag_apply(const struct tag_doc *d, const struct tag_spec *s, const struct tag_meta *m,
                size_t *out_len)
{
    size_t idl = m->new_id ? strlen(m->new_id) : 0, fl = strlen(s->metadata_field);
    size_t cap = d->len + 6 * (strlen(m->region) + idl + fl + s->lww_key_len) +
                 24 * (d->n + 1) + 256;
    char *out = malloc(cap);
    unsigned long long secs = (unsigned long long)(HLC_MS(m->hlc) / 1000);
    size_t n = 0, pos = 0;
    bool first = d->empty, has_ts = false, has_lww = false;
    if (!out)
        return NULL;
    for (size_t i = 0; i < d->n; i++) {
        memcpy(out + n, d->text + pos, d->rep[i].at - pos);
        n += d->rep[i].at - pos;
        n += (size_t)sprintf(out + n, "%llu", d->rep[i].lww ? (unsigned long long)m->hlc : secs);
        pos = d->rep[i].end;
        has_ts |= !d->rep[i].lww;
        has_lww |= d->rep[i].lww;
    }
    memcpy(out + n, d->text + pos, d->len - 1 - pos); /* all but the closing '}' */
    n += d->len - 1 - pos;
    if (m->new_id) {
        put_key(out, &n, &first, "id", 2);
        n += jsonscan_quote(out + n, m->new_id, idl);
    }
    if (!has_ts) {
        put_key(out, &n, &first, "_ts", 3);
        n += (size_t)sprintf(out + n, "%llu", secs);
    }
    put_key(out, &n, &first, s->metadata_field, fl);
    n += put_meta(out + n, m);
    if (s->auto_version && s->lww_key && !has_lww) {
        put_key(out, &n, &first, s->lww_key, s->lww_key_len);
        n += (size_t)sprintf(out + n, "%llu", (unsigned long long)m->hlc);
    }
    out[n++] = '}';
    out[n] = '\0';
    *out_len = n;
    return out;
}

bool tag_lww_value(const struct tag_doc *d, double *out)
{
    char buf[64];
    size_t n = d->lww_end - d->lww_at;
    if (!d->has_lww || n == 0 || n >= sizeof buf)
        return false;
    memcpy(buf, d->text + d->lww_at, n);
    buf[n] = '\0';
    if (buf[0] != '-' && (buf[0] < '0' || buf[0] > '9'))
        return false;
    *out = strtod(buf, NULL);
    return isfinite(*out);
}

bool tag_plain_id(const struct tag_doc *d, const char **id, size_t *len)
{
    if (!d->has_id || d->text[d->id_at] != '"' || d->id_end - d->id_at < 3)
        return false;
    *id = d->text + d->id_at + 1;
    *len = d->id_end - d->id_at - 2;
    return !memchr(*id, '\\', *len) && !memchr(*id, '/', *len);
}

void tag_doc_clear(struct tag_doc *d)
{
    free(d->text);
    memset(d, 0, sizeof *d);
}

/* conf_parse: what the configuration's parser (conf.c) shares with its
 * rules across keys (conf_rules.c). Private to config/. */
#ifndef MERIDIAN_CONF_PARSE_H
#define MERIDIAN_CONF_PARSE_H

#include <stddef.h>
#include <yaml.h>

#include "../util/err.h"
#include "conf.h"

#define CONF_PATH_LEN 160 /* "containers[12].conflict_resolution.mode" */

struct parse {
    const char *file;       /* name used in messages */
    yaml_document_t *doc;
    struct err *err;
};

/* Where a value sits: its dotted key path and its line. */
struct at {
    const char *path;
    int line;
};

/* Sets the error "FILE:LINE: PATH: why"; returns -1. */
int fail(struct parse *p, struct at at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The line of the value at a dotted path such as "containers[1].route", or of
 * the deepest part of it the file has. */
int line_at(const struct parse *p, const char *path);
/* Fails at "SEQ[I].KEY", on the line that key has in the file. */
int fail_field(struct parse *p, const char *seq, size_t i, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* conf_rules.c: defaults that depend on other keys, then the rules that
 * involve more than one key; -1 with the first broken one. */
int conf_check_rules(struct parse *p, struct conf *c);

#endif

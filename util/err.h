/* err: the one status type for fallible calls.
 * A failing call returns -1 and leaves a human-readable reason in its
 * `struct err`, which travels unchanged to the log line or the HTTP error body. */
#ifndef MERIDIAN_ERR_H
#define MERIDIAN_ERR_H

#define MUST_CHECK __attribute__((warn_unused_result))

struct err {
    char msg[512];
};

/* Formats the reason into e (when e is not NULL); always returns -1. */
int err_set(struct err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif

/* procedure: a container's JavaScript resolver, run by Duktape in a worker
 * process. The path of one conflict:
 *
 *   procedure_run (hub's committer thread)
 *     procedure_read_file -> proc_request (JSON)       source + inputs
 *     proc_spawn (posix_spawn worker_argv)             pipes on stdin/stdout
 *     proc_exchange (poll until the deadline)          send request, read answer
 *     proc_kill | proc_reap -> proc_verdict            always reaped
 *   procedure_worker_main (child): procedure_worker.c
 */
#define _GNU_SOURCE
#include "procedure.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* The answer carries the document inside a JSON string: at most twice as long. */
#define PROC_MAX_ANSWER (2 * PROCEDURE_MAX_DOC + 65536)

/* Fills out->error, flattened to one line; always returns -1. */
__attribute__((format(printf, 2, 3)))
int procedure_fail(struct procedure_result *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->error, sizeof out->error, fmt, ap);
    va_end(ap);
    for (char *p = out->error; *p; p++)
        if ((unsigned char)*p < 0x20)
            *p = ' ';
    if (!out->error[0])
        snprintf(out->error, sizeof out->error, "unknown error");
    return -1;
}

void procedure_result_clear(struct procedure_result *r)
{
    free(r->doc);
    r->doc = NULL;
    r->is_delete = false;
    r->error[0] = '\0';
}

char *procedure_read_file(const char *path, size_t max, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rbe");
    if (!f) {
        if (errno == ENOENT)
            snprintf(err, errlen, "%s: file not found", path);
        else
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(max + 1);
    size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
    int e = !buf ? ENOMEM : !ferror(f) ? 0 : errno ? errno : EIO;
    fclose(f);
    if (e || n > max) {
        if (e)
            snprintf(err, errlen, "%s: %s", path, strerror(e));
        else
            snprintf(err, errlen, "%s: larger than %zu bytes", path, max);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* ------------------------------------------------ the parent */

struct proc_child {
    pid_t pid;
    int to_child;    /* the child's stdin; -1 once the request is sent */
    int from_child;  /* the child's stdout */
};

struct proc_io {
    const char *req;
    size_t req_len, sent;
    char *buf;       /* the answer read so far */
    size_t len, cap;
};

static int64_t proc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The request text of the protocol (see procedure.h); NULL with out->error. */
static char *proc_request(const char *source, size_t len, const char *filename,
                          const struct procedure_input *in, size_t memory_bytes,
                          struct procedure_result *out)
{
    json_t *conf = json_array();
    for (size_t i = 0; conf && i < in->n_conflicting; i++)
        if (json_array_append_new(conf, json_string(in->conflicting[i])) < 0) {
            json_decref(conf);
            procedure_fail(out, "conflicting document %zu is not valid UTF-8 text", i + 1);
            return NULL;
        }
    json_error_t jerr;
    json_t *req = json_pack_ex(&jerr, 0, "{s:s%, s:s, s:s?, s:s?, s:s?, s:b, s:O, s:I}",
                               "source", source, len, "filename", filename,
                               "container", in->container, "incoming", in->incoming,
                               "existing", in->existing, "tombstone", (int)in->tombstone,
                               "conflicting", conf, "memory_bytes", (json_int_t)memory_bytes);
    json_decref(conf);
    char *text = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!text)
        procedure_fail(out, "cannot build the request: %s", req ? "out of memory" : jerr.text);
    return text;
}

/* pipe2 with both ends close-on-exec and above stdio, so the child's dup2
 * onto 0 and 1 never lands on the same descriptor. */
static int proc_pipe(int fds[2])
{
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -1;
    for (int i = 0; i < 2; i++)
        if (fds[i] < 3) {
            int moved = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
            close(fds[i]);
            fds[i] = moved;
        }
    if (fds[0] >= 0 && fds[1] >= 0)
        return 0;
    int e = errno;
    if (fds[0] >= 0)
        close(fds[0]);
    if (fds[1] >= 0)
        close(fds[1]);
    errno = e;
    return -1;
}

/* The child starts with no blocked signals and the usual dispositions, and
 * only stdin, stdout and stderr open. */
static int proc_posix_spawn(pid_t *pid, const char *const *argv, int in_fd, int out_fd)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    sigaddset(&defaults, SIGINT);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGHUP);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in_fd, STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&fa, out_fd, STDOUT_FILENO);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    posix_spawnattr_init(&at);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &defaults);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    int rc = posix_spawn(pid, argv[0], &fa, &at, (char *const *)argv, environ);
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    return rc;
}

static int proc_spawn(const char *const *argv, struct proc_child *c, struct procedure_result *out)
{
    int in[2], res[2];
    if (proc_pipe(in) < 0)
        return procedure_fail(out, "cannot create a pipe: %s", strerror(errno));
    if (proc_pipe(res) < 0) {
        int e = errno;
        close(in[0]);
        close(in[1]);
        return procedure_fail(out, "cannot create a pipe: %s", strerror(e));
    }
    int rc = proc_posix_spawn(&c->pid, argv, in[0], res[1]);
    close(in[0]);
    close(res[1]);
    c->to_child = in[1];
    c->from_child = res[0];
    if (rc != 0) {
        close(in[1]);
        close(res[0]);
        return procedure_fail(out, "cannot start the worker %s: %s", argv[0], strerror(rc));
    }
    fcntl(c->to_child, F_SETFL, O_NONBLOCK);
    fcntl(c->from_child, F_SETFL, O_NONBLOCK);
    return 0;
}

/* Writes what the pipe takes; closes the child's stdin when all is sent or
 * the child is gone (EPIPE: its answer will say why). */
static void proc_send(struct proc_child *c, struct proc_io *io)
{
    ssize_t n = write(c->to_child, io->req + io->sent, io->req_len - io->sent);
    if (n > 0)
        io->sent += (size_t)n;
    if ((n < 0 && errno != EAGAIN && errno != EINTR) || io->sent == io->req_len) {
        close(c->to_child);
        c->to_child = -1;
    }
}

/* Reads what the pipe has. Returns 0 at EOF, 1 to go on, -1 on error. */
static int proc_recv(struct proc_child *c, struct proc_io *io, struct procedure_result *out)
{
    if (io->len == io->cap) {
        if (io->cap >= PROC_MAX_ANSWER)
            return procedure_fail(out, "worker answer larger than %u bytes", PROC_MAX_ANSWER);
        size_t cap = io->cap ? 2 * io->cap : 4096;
        cap = cap < PROC_MAX_ANSWER ? cap : PROC_MAX_ANSWER;
        char *b = realloc(io->buf, cap);
        if (!b)
            return procedure_fail(out, "out of memory");
        io->buf = b;
        io->cap = cap;
    }
    ssize_t n = read(c->from_child, io->buf + io->len, io->cap - io->len);
    if (n > 0)
        io->len += (size_t)n;
    if (n < 0 && errno != EAGAIN && errno != EINTR)
        return procedure_fail(out, "reading the worker: %s", strerror(errno));
    return n == 0 ? 0 : 1;
}

/* Sends the request and reads the answer. Returns 0 at the answer's EOF,
 * 1 when the deadline passed first, -1 on error (out->error). */
static int proc_exchange(struct proc_child *c, struct proc_io *io, int64_t deadline,
                         struct procedure_result *out)
{
    for (;;) {
        int64_t left = deadline - proc_now_ms();
        if (left <= 0)
            return 1;
        struct pollfd p[2] = { { c->from_child, POLLIN, 0 }, { c->to_child, POLLOUT, 0 } };
        int n = poll(p, c->to_child >= 0 ? 2 : 1, (int)left);
        if (n < 0 && errno != EINTR)
            return procedure_fail(out, "poll: %s", strerror(errno));
        if (n <= 0)
            continue;
        if (c->to_child >= 0 && p[1].revents)
            proc_send(c, io);
        int r = p[0].revents ? proc_recv(c, io, out) : 1;
        if (r <= 0)
            return r;
    }
}

static void proc_kill(pid_t pid)
{
    int status;
    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
}

/* Waits for a child that closed its stdout; kills it at the deadline.
 * Returns 0 with its wait status, 1 when it had to be killed, -1 when it
 * was not ours to wait for any more (ECHILD). */
static int proc_reap(pid_t pid, int64_t deadline, int *status)
{
    const struct timespec ms = { 0, 1000000 };
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return 0;
        if (r < 0 && errno != EINTR)
            return -1;
        if (r == 0 && proc_now_ms() >= deadline) {
            proc_kill(pid);
            return 1;
        }
        if (r == 0)
            nanosleep(&ms, NULL);
    }
}

/* Reads the answer into out; -1 when there is no well-formed one. */
static int proc_parse_answer(const struct proc_io *io, struct procedure_result *out)
{
    json_t *a = io->len ? json_loadb(io->buf, io->len, 0, NULL) : NULL;
    const char *error = json_string_value(json_object_get(a, "error"));
    const char *doc = json_string_value(json_object_get(a, "doc"));
    int rc = 0;
    if (error)
        procedure_fail(out, "%s", error);
    else if (json_is_true(json_object_get(a, "delete")))
        out->is_delete = true;
    else if (!doc || !(out->doc = strdup(doc)))
        rc = -1;
    json_decref(a);
    return rc;
}

/* Judges the exchange by the answer and the exit status: an answer counts
 * after a clean exit, or when it is an error (the fatal path exits 1). */
static int proc_verdict(const struct proc_io *io, int status, struct procedure_result *out)
{
    bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    bool answered = proc_parse_answer(io, out) == 0;
    if (answered && (clean || out->error[0]))
        return out->error[0] ? -1 : 0;
    procedure_result_clear(out);
    const char *how = answered ? "after answering" : "without an answer";
    if (WIFSIGNALED(status))
        return procedure_fail(out, "worker killed by signal %d %s", WTERMSIG(status), how);
    if (!clean)
        return procedure_fail(out, "worker exited %d %s", WEXITSTATUS(status), how);
    return procedure_fail(out, "worker exited 0 without an answer");
}

/* SIGPIPE is blocked in this thread while it writes to the child; one that
 * our writes raised is consumed before the old mask comes back. */
static bool proc_block_sigpipe(sigset_t *old)
{
    sigset_t pipe_set, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigpending(&pending);
    pthread_sigmask(SIG_BLOCK, &pipe_set, old);
    return sigismember(&pending, SIGPIPE) == 1;
}

static void proc_restore_sigpipe(const sigset_t *old, bool was_pending)
{
    sigset_t pipe_set, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigpending(&pending);
    if (!was_pending && sigismember(&pending, SIGPIPE) == 1) {
        const struct timespec zero = { 0, 0 };
        sigtimedwait(&pipe_set, NULL, &zero);
    }
    pthread_sigmask(SIG_SETMASK, old, NULL);
}

/* Spawns the worker, talks to it until the deadline, reaps it. */
static int proc_supervise(const char *const *argv, const char *req, int64_t deadline,
                          uint32_t timeout_ms, struct procedure_result *out)
{
    struct proc_child c;
    if (proc_spawn(argv, &c, out) < 0)
        return -1;
    struct proc_io io = { .req = req, .req_len = strlen(req) };
    sigset_t old;
    bool was_pending = proc_block_sigpipe(&old);
    int r = proc_exchange(&c, &io, deadline, out);
    if (c.to_child >= 0)
        close(c.to_child);
    close(c.from_child);
    proc_restore_sigpipe(&old, was_pending);
    int status = 0;
    if (r != 0)
        proc_kill(c.pid);
    else
        r = proc_reap(c.pid, deadline, &status);
    int rc;
    if (r == 1)
        rc = procedure_fail(out, "timed out after %u ms", (unsigned)timeout_ms);
    else if (r < 0)
        rc = out->error[0] ? -1 : procedure_fail(out, "worker was reaped by someone else");
    else
        rc = proc_verdict(&io, status, out);
    free(io.buf);
    return rc;
}

int procedure_run(const char *const *worker_argv, const char *path,
                  const struct procedure_input *in, const struct procedure_limits *lim,
                  struct procedure_result *out)
{
    memset(out, 0, sizeof *out);
    int64_t deadline = proc_now_ms() + lim->timeout_ms;
    size_t len = 0;
    char *source = procedure_read_file(path, PROCEDURE_MAX_SOURCE, &len, out->error,
                                       sizeof out->error);
    if (!source)
        return -1;
    const char *slash = strrchr(path, '/');
    char *req = proc_request(source, len, slash ? slash + 1 : path, in, lim->memory_bytes, out);
    free(source);
    if (!req)
        return -1;
    int rc = proc_supervise(worker_argv, req, deadline, lim->timeout_ms, out);
    free(req);
    return rc;
}

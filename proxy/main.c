/* main: the `meridian` command line. Parses arguments, loads the
 * configuration and runs one region's node, or runs an offline subcommand. */
#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../config/conf.h"
#include "../resolver/procedure.h"
#include "../util/log.h"
#include "node.h"

#define MERIDIAN_VERSION "0.1.0"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: meridian --config FILE --region NAME [--data-dir DIR]\n"
            "       meridian check-config FILE\n"
            "       meridian resolve --procedure FILE.js --incoming DOC.json [--existing DOC.json]\n"
            "                        [--tombstone] [--conflicting DOC.json ...] [--container NAME]\n"
            "                        [--timeout-ms N]\n"
            "       meridian --version\n"
            "\n"
            "The region may also come from the MERIDIAN_REGION environment variable.\n"
            "resolve runs a conflict-resolver procedure offline and prints the resolved\n"
            "document (or `deleted`); --tombstone without --incoming resolves a delete.\n");
}

static int cmd_check_config(const char *path)
{
    struct conf *conf = NULL;
    struct err err;
    if (conf_load(path, &conf, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    printf("%s: ok (%zu region%s, hub %s, %zu container%s, consistency %s)\n", path,
           conf->n_regions, conf->n_regions == 1 ? "" : "s", conf->regions[0].name,
           conf->n_containers, conf->n_containers == 1 ? "" : "s",
           conf_consistency_name(conf->consistency));
    conf_free(conf);
    return 0;
}

struct resolve_args {
    const char *procedure, *incoming, *existing, *container;
    bool tombstone;
    const char **conflicting;  /* paths, argc long */
    size_t n_conflicting;
    uint32_t timeout_ms;
};

/* Parses `resolve`'s options (argv[0] is "resolve"); -1 on a usage error. */
static int resolve_parse(int argc, char **argv, struct resolve_args *a)
{
    static const struct option opts[] = {
        { "procedure", required_argument, NULL, 'p' }, { "incoming", required_argument, NULL, 'i' },
        { "existing", required_argument, NULL, 'e' },  { "tombstone", no_argument, NULL, 't' },
        { "conflicting", required_argument, NULL, 'x' }, { "container", required_argument, NULL, 'n' },
        { "timeout-ms", required_argument, NULL, 'T' }, { NULL, 0, NULL, 0 },
    };
    int o;
    char *end;
    unsigned long ms;
    optind = 1;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'p': a->procedure = optarg; break;
        case 'i': a->incoming = optarg; break;
        case 'e': a->existing = optarg; break;
        case 't': a->tombstone = true; break;
        case 'x': a->conflicting[a->n_conflicting++] = optarg; break;
        case 'n': a->container = optarg; break;
        case 'T':
            ms = strtoul(optarg, &end, 10);
            if (*optarg < '0' || *optarg > '9' || *end || ms == 0 || ms > 3600000) {
                fprintf(stderr, "resolve: --timeout-ms wants 1..3600000, not `%s`\n", optarg);
                return -1;
            }
            a->timeout_ms = (uint32_t)ms;
            break;
        default: return -1;
        }
    }
    return a->procedure && (a->incoming || a->tombstone) && optind == argc ? 0 : -1;
}

/* Reads one document for `resolve`: its text as written, once checked to be
 * a JSON object; NULL after printing why. Free with free(). */
static char *resolve_load_doc(const char *path)
{
    char why[512];
    size_t len;
    char *text = procedure_read_file(path, PROCEDURE_MAX_DOC, &len, why, sizeof why);
    if (!text) {
        fprintf(stderr, "%s\n", why);
        return NULL;
    }
    json_error_t jerr;
    json_t *doc = json_loadb(text, len, JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, &jerr);
    if (!json_is_object(doc)) {
        if (doc)
            fprintf(stderr, "%s: not a JSON object\n", path);
        else
            fprintf(stderr, "%s: invalid JSON at line %d column %d: %s\n", path, jerr.line,
                    jerr.column, jerr.text);
        free(text);
        text = NULL;
    }
    json_decref(doc);
    return text;
}

/* Loads every document named in `a` into `in`; -1 after printing why. */
static int resolve_load(const struct resolve_args *a, char **texts, struct procedure_input *in)
{
    const char *paths[2] = { a->incoming, a->existing };
    for (size_t i = 0; i < 2 + a->n_conflicting; i++) {
        const char *path = i < 2 ? paths[i] : a->conflicting[i - 2];
        if (path && !(texts[i] = resolve_load_doc(path)))
            return -1;
    }
    *in = (struct procedure_input){
        .container = a->container, .incoming = texts[0], .existing = texts[1],
        .tombstone = a->tombstone, .conflicting = (const char *const *)texts + 2,
        .n_conflicting = a->n_conflicting,
    };
    return 0;
}

/* meridian resolve: runs a procedure through the same worker the hub uses.
 * Exit 0 with the resolution on stdout, 1 when the procedure failed, 2 on
 * bad arguments or unreadable documents. */
static int cmd_resolve(int argc, char **argv)
{
    static const char *const worker[] = { "/proc/self/exe", "resolve", "--worker", NULL };
    if (argc == 3 && strcmp(argv[2], "--worker") == 0)
        return procedure_worker_main();
    struct resolve_args a = { .container = "offline", .timeout_ms = 1000 };
    a.conflicting = calloc((size_t)argc, sizeof *a.conflicting);
    char **texts = calloc((size_t)argc + 2, sizeof *texts);
    struct procedure_input in;
    int rc = 2;
    if (!a.conflicting || !texts || resolve_parse(argc - 1, argv + 1, &a) < 0)
        usage(stderr);
    else if (resolve_load(&a, texts, &in) == 0) {
        struct procedure_limits lim = PROCEDURE_DEFAULT_LIMITS;
        struct procedure_result res;
        lim.timeout_ms = a.timeout_ms;
        rc = procedure_run(worker, a.procedure, &in, &lim, &res) < 0 ? 1 : 0;
        if (rc)
            fprintf(stderr, "%s\n", res.error);
        else
            puts(res.is_delete ? "deleted" : res.doc);
        procedure_result_clear(&res);
    }
    for (size_t i = 0; texts && i < (size_t)argc + 2; i++)
        free(texts[i]);
    free(texts);
    free(a.conflicting);
    return rc;
}

static int run_node(const char *config, const char *region, const char *data_dir)
{
    struct conf *conf = NULL;
    struct err err;
    if (conf_load(config, &conf, &err) < 0) {
        log_error("%s", err.msg);
        return 1;
    }
    enum log_level level = LOG_INFO;
    if (conf->log_level && log_level_parse(conf->log_level, &level) == 0)
        log_set_level(level);
    struct node node;
    int rc = 1;
    if (node_init(&node, conf, region, data_dir, &err) < 0)
        log_error("region %s: %s", region, err.msg);
    else
        rc = node_run(&node);
    node_free(&node);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "check-config") == 0) {
        if (argc != 3) {
            usage(stderr);
            return 2;
        }
        return cmd_check_config(argv[2]);
    }
    if (argc >= 2 && strcmp(argv[1], "resolve") == 0)
        return cmd_resolve(argc, argv);
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' }, { "region", required_argument, NULL, 'r' },
        { "data-dir", required_argument, NULL, 'd' }, { "version", no_argument, NULL, 'V' },
        { "help", no_argument, NULL, 'h' },         { NULL, 0, NULL, 0 },
    };
    const char *config = NULL, *region = getenv("MERIDIAN_REGION"), *data_dir = NULL;
    int o;
    while ((o = getopt_long(argc, argv, "c:r:d:Vh", opts, NULL)) != -1) {
        switch (o) {
        case 'c': config = optarg; break;
        case 'r': region = optarg; break;
        case 'd': data_dir = optarg; break;
        case 'V': printf("meridian %s\n", MERIDIAN_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!config || !region || optind != argc) {
        usage(stderr);
        return 2;
    }
    return run_node(config, region, data_dir);
}

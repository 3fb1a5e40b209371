/* main: the `meridian` command line. Parses arguments, loads the
 * configuration and runs one region's node, or runs an offline subcommand. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../config/conf.h"
#include "../util/log.h"
#include "node.h"

#define MERIDIAN_VERSION "0.1.0"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: meridian --config FILE --region NAME [--data-dir DIR]\n"
            "       meridian check-config FILE\n"
            "       meridian --version\n"
            "\n"
            "The region may also come from the MERIDIAN_REGION environment variable.\n");
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

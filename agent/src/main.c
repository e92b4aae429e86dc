/*
 * The `runnel` command: one binary, one subcommand per process or tool. Each module that offers
 * a subcommand exposes an entry point `int <prefix>_cmd_<name>(int argc, char **argv)` (argv[0] is
 * the subcommand name) declared in its public header; this file only dispatches (and ignores
 * SIGPIPE for every process).
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "agent_cmd.h"
#include "runnel/metadata/cli.h"
#include "runnel/storage/cli.h"

struct agent__command {
    const char *name;                   /* first argument selecting it */
    int (*main)(int argc, char **argv); /* entry point; argv[0] is the name */
    const char *help;                   /* one line for `runnel --help` */
};

static const struct agent__command agent__commands[] = {
    {"dev", agent_cmd_dev, "metadata + agent + local file store in one process (zero setup)"},
    {"agent", agent_cmd_agent, "run one stateless agent (Kafka listener)"},
    {"metadata", meta_cmd_metadata, "run the metadata service"},
    {"object", store_cmd_object, "inspect and verify objects in a store (object inspect URL KEY)"},
    {NULL, NULL, NULL},
};

static void agent__usage(FILE *out)
{
    fprintf(out, "usage: runnel COMMAND [ARGS...]\n\ncommands:\n");
    for (const struct agent__command *c = agent__commands; c->name != NULL; c++) {
        fprintf(out, "  %-10s %s\n", c->name, c->help);
    }
    fprintf(out, "\n`runnel COMMAND --help` describes each command.\n");
}

int main(int argc, char **argv)
{
    /* A write to a socket whose peer has gone must fail with EPIPE (libuv reports it on that
     * connection), not kill the process: libuv leaves SIGPIPE at its default. A metadata
     * service died so on SIGTERM in CI while an agent's connection was closing. */
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        agent__usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (const struct agent__command *c = agent__commands; c->name != NULL; c++) {
        if (strcmp(argv[1], c->name) == 0) {
            return c->main(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "runnel: unknown command '%s'\n\n", argv[1]);
    agent__usage(stderr);
    return 2;
}

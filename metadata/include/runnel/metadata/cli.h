/*
 * The `runnel metadata` subcommand: runs the metadata service in the foreground.
 */
#ifndef RUNNEL_METADATA_CLI_H
#define RUNNEL_METADATA_CLI_H

/*
 * `runnel metadata --data-dir DIR --listen HOST:PORT [--snapshot-bytes N] [--log-level L]`.
 * argv[0] is "metadata". Serves until SIGINT/SIGTERM; returns the process exit status (0 after a
 * clean stop, 1 when start-up failed, e.g. a corrupted journal, 2 for bad arguments).
 */
int meta_cmd_metadata(int argc, char **argv);

#endif

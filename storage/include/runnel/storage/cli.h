/*
 * `runnel object ...`: tools for objects in a store. `runnel object inspect URL KEY` prints an
 * object's footer and verifies every chunk's CRC32C and decompression.
 */
#ifndef RUNNEL_STORAGE_CLI_H
#define RUNNEL_STORAGE_CLI_H

/*
 * Entry point of `runnel object`; argv[0] is "object". Returns the process exit status: 0 when
 * the object is intact, 1 when it is damaged or cannot be read, 2 on usage errors.
 */
int store_cmd_object(int argc, char **argv);

#endif

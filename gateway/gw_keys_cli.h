/* gw_keys_cli.h: the `keys` subcommands of commons-gateway, over gw_keys.h.
 * argv[0] is "keys", argv[1] the subcommand. Returns the process exit code
 * (0 done, 1 failed, 2 usage). */
#ifndef GW_KEYS_CLI_H
#define GW_KEYS_CLI_H

int gw_keys_cli(int argc, char **argv);

#endif

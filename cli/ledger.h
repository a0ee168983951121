/* ledger.h: `commons ledger verify|export` and `commons usage` (docs/ledger.md). */
#ifndef CLI_LEDGER_H
#define CLI_LEDGER_H

#include <jansson.h>

/* Sends one request (consumed) to commonsd; NULL after printing why, with *rc the
 * exit status to use. commons.c's call(). */
typedef json_t *(*cli_call_fn)(json_t *req, int *rc);

/* argv[0] is "ledger" / "usage". json: print replies as JSON. Return an exit status
 * (0 ok, 1 refused or the ledger does not verify, 2 bad usage, 3 unreachable). */
int cli_ledger_main(int argc, char **argv, cli_call_fn call, int json);
int cli_usage_main(int argc, char **argv, cli_call_fn call, int json);

#endif

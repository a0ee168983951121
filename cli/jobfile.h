/* jobfile.h: turning what a user wrote into a job spec (docs/protocol.md).
 *
 * Three sources, applied in this order so that later ones win:
 *   1. a YAML job file (commons submit job.yaml), or #COMMONS directives at
 *      the top of a batch script (like #SBATCH);
 *   2. command-line flags.
 * Every error names the file, the line (and column for YAML), the field and
 * what was expected.
 */
#ifndef CLI_JOBFILE_H
#define CLI_JOBFILE_H

#include <jansson.h>
#include <stddef.h>

/* Applies one flag (long name without dashes, e.g. "cpus-per-task", or a
 * one-letter short name) with its value to spec. where prefixes errors
 * ("job.sh:3" or "command line"). Returns 0, or -1 with err. */
int jobfile_apply_flag(json_t *spec, const char *flag, const char *value, const char *where,
                       char *err, size_t errlen);
/* Whether a flag takes a value (0 for --hold, --requeue); -1 if unknown. */
int jobfile_flag_takes_value(const char *flag);

/* Reads #COMMONS lines at the top of script (before the first command line)
 * into spec. path is for messages. */
int jobfile_apply_directives(json_t *spec, const char *script, const char *path, char *err, size_t errlen);

/* Loads a YAML job file into spec. */
int jobfile_load_yaml(json_t *spec, const char *path, char *err, size_t errlen);

/* Usage text for the flags. */
extern const char jobfile_flags_help[];

#endif

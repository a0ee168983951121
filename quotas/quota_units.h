/* quota_units.h: the units a policy (and the CLI) writes durations and sizes in.
 *
 * Durations: one or more <number><unit> groups, units s, m, h, d, w
 *   ("30m", "12h", "7d", "1d12h", "90s"), or Slurm's clock forms "HH:MM:SS" and
 *   "D-HH:MM:SS". A bare number is rejected: Slurm reads it as minutes, most people
 *   as seconds, so the policy makes the writer say which.
 * Sizes (memory): <number><unit>, units K, M, G, T, P, all powers of 1024, with an
 *   optional "B" or "iB" ("64G", "512MiB", "1.5T"). A bare number is rejected.
 * Both accept "unlimited" (and "infinite") only where the caller allows it.
 */
#ifndef COMMONS_QUOTA_UNITS_H
#define COMMONS_QUOTA_UNITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits and durations use this value for "no limit". */
#define QUOTA_UNLIMITED ((int64_t)-1)

/* Parse a duration into seconds. Returns 0, or -1 with a reason in err (what
 * was expected). With allow_unlimited, "unlimited"/"infinite" give QUOTA_UNLIMITED. */
int quota_parse_duration(const char *text, bool allow_unlimited, int64_t *seconds,
                         char *err, size_t errlen);

/* Parse a size into bytes; same conventions as quota_parse_duration. */
int quota_parse_size(const char *text, bool allow_unlimited, int64_t *bytes,
                     char *err, size_t errlen);

/* Compact forms for display: "1d12h", "30m", "0s"; "64G", "1.5T", "512M".
 * QUOTA_UNLIMITED prints "unlimited". Return snprintf's length. */
int quota_format_duration(int64_t seconds, char *buf, size_t len);
int quota_format_size(int64_t bytes, char *buf, size_t len);

#endif

/* cm_util.h: time, parsing of durations and sizes, small file helpers. */
#ifndef CM_UTIL_H
#define CM_UTIL_H

#include <stddef.h>
#include <stdint.h>

int64_t cm_now_ms(void);      /* wall clock, Unix milliseconds */
int64_t cm_mono_ms(void);     /* monotonic milliseconds */

/* Durations: Slurm's forms "M", "M:S", "H:M:S", "D-H", "D-H:M", "D-H:M:S", and
 * suffixed "90s", "30m", "2h", "7d". Returns seconds, or -1 if malformed. */
int64_t cm_parse_duration(const char *s);
/* Sizes: "512" (MB), "512M", "4G", "1T" (binary units). Returns MB or -1. */
int64_t cm_parse_size_mb(const char *s);
/* Formats seconds as D-HH:MM:SS (or HH:MM:SS under a day). */
void cm_format_duration(int64_t secs, char *buf, size_t len);

/* Reads a whole file (NUL-terminated); caller frees. NULL with err on failure. */
char *cm_read_file(const char *path, size_t *len, char *err, size_t errlen);
/* Writes data to path atomically (temp file + fsync + rename) with mode. */
int cm_write_file_atomic(const char *path, const void *data, size_t len, int mode,
                         char *err, size_t errlen);
/* Reads the first line of a file, trimmed (keys, tokens). Caller frees. */
char *cm_read_secret(const char *path, char *err, size_t errlen);

#endif

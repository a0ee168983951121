/* cm_util.c: clocks, duration and size parsing, small file helpers. */
#include "cm_util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int64_t cm_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t cm_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Parses a run of digits; returns -1 when there is none or it overflows. */
static int64_t take_num(const char **p)
{
    if (!isdigit((unsigned char)**p)) return -1;
    int64_t v = 0;
    while (isdigit((unsigned char)**p)) {
        if (v > (INT64_MAX - 9) / 10) return -1;
        v = v * 10 + (**p - '0');
        (*p)++;
    }
    return v;
}

int64_t cm_parse_duration(const char *s)
{
    if (!s || !*s) return -1;
    const char *p = s;
    int64_t first = take_num(&p);
    if (first < 0) return -1;
    /* Suffixed form: 90s, 30m, 2h, 7d. */
    if (p[0] && !p[1] && strchr("smhd", p[0])) {
        int64_t mul = p[0] == 's' ? 1 : p[0] == 'm' ? 60 : p[0] == 'h' ? 3600 : 86400;
        return first > INT64_MAX / mul ? -1 : first * mul;
    }
    int64_t days = 0, f[3] = {0, 0, 0};
    int nf = 0;
    if (*p == '-') { /* D-H[:M[:S]] */
        days = first;
        p++;
        f[nf++] = take_num(&p);
        while (*p == ':' && nf < 3) {
            p++;
            f[nf++] = take_num(&p);
        }
        if (*p) return -1;
        for (int i = 0; i < nf; i++)
            if (f[i] < 0 || f[i] > 100000000) return -1; /* bounded, so the sum below cannot overflow */
        if (days > 100000) return -1;
        return days * 86400 + f[0] * 3600 + f[1] * 60 + f[2];
    }
    f[nf++] = first;
    while (*p == ':' && nf < 3) {
        p++;
        f[nf++] = take_num(&p);
    }
    if (*p) return -1;
    for (int i = 0; i < nf; i++)
        if (f[i] < 0 || f[i] > 100000000) return -1;
    if (nf == 1) return f[0] * 60;               /* minutes */
    if (nf == 2) return f[0] * 60 + f[1];        /* M:S */
    return f[0] * 3600 + f[1] * 60 + f[2];       /* H:M:S */
}

int64_t cm_parse_size_mb(const char *s)
{
    if (!s || !*s) return -1;
    const char *p = s;
    int64_t v = take_num(&p);
    if (v < 0) return -1;
    int64_t mul;
    switch (toupper((unsigned char)*p)) {
    case '\0': mul = 1; break;
    case 'M': mul = 1; p++; break;
    case 'G': mul = 1024; p++; break;
    case 'T': mul = 1024 * 1024; p++; break;
    default: return -1;
    }
    if (*p == 'B' || *p == 'b') p++;
    if (*p) return -1;
    return v > INT64_MAX / mul ? -1 : v * mul;
}

void cm_format_duration(int64_t secs, char *buf, size_t len)
{
    if (secs < 0) secs = 0;
    int64_t d = secs / 86400, h = secs / 3600 % 24, m = secs / 60 % 60, s = secs % 60;
    if (d)
        snprintf(buf, len, "%lld-%02lld:%02lld:%02lld", (long long)d, (long long)h,
                 (long long)m, (long long)s);
    else
        snprintf(buf, len, "%02lld:%02lld:%02lld", (long long)h, (long long)m, (long long)s);
}

char *cm_read_file(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) break;
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) { free(buf); buf = NULL; break; }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        free(buf);
        snprintf(err, errlen, "%s: read failed", path);
        return NULL;
    }
    buf[n] = '\0';
    if (len) *len = n;
    return buf;
}

int cm_write_file_atomic(const char *path, const void *data, size_t len, int mode,
                         char *err, size_t errlen)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp) {
        snprintf(err, errlen, "%s: path too long", path);
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        return -1;
    }
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            return -1;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

char *cm_read_secret(const char *path, char *err, size_t errlen)
{
    char *s = cm_read_file(path, NULL, err, errlen);
    if (!s) return NULL;
    size_t n = strcspn(s, "\r\n");
    s[n] = '\0';
    while (n > 0 && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
    if (n == 0) {
        snprintf(err, errlen, "%s: empty", path);
        free(s);
        return NULL;
    }
    return s;
}

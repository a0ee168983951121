/* quota_diag.c: the diagnostics list (see quota_diag.h). */
#include "quota_diag.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void quota_diags_init(quota_diags *d)
{
    memset(d, 0, sizeof *d);
}

void quota_diags_free(quota_diags *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->count; i++) {
        free(d->items[i].path);
        free(d->items[i].message);
    }
    free(d->items);
    free(d->source);
    memset(d, 0, sizeof *d);
}

void quota_diag_add(quota_diags *d, quota_diag_level level, int line, int column,
                    const char *path, const char *fmt, ...)
{
    /* Count first: even if storing the text fails, the error is not lost. */
    if (level == QUOTA_DIAG_ERROR)
        d->errors++;
    else
        d->warnings++;
    if (d->count == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 16;
        quota_diag *items = realloc(d->items, cap * sizeof *items);
        if (!items)
            return;
        d->items = items;
        d->cap = cap;
    }
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    quota_diag *it = &d->items[d->count];
    it->level = level;
    it->line = line;
    it->column = column;
    it->path = strdup(path ? path : "");
    it->message = strdup(msg);
    if (!it->path || !it->message) {
        free(it->path);
        free(it->message);
        return;
    }
    d->count++;
}

int quota_diag_format(const quota_diags *d, const quota_diag *it, char *buf, size_t len)
{
    const char *src = d->source ? d->source : "<policy>";
    const char *lvl = it->level == QUOTA_DIAG_ERROR ? "error" : "warning";
    char pos[48] = "";
    if (it->line > 0)
        snprintf(pos, sizeof pos, ":%d:%d", it->line, it->column);
    if (it->path[0])
        return snprintf(buf, len, "%s%s: %s: %s: %s", src, pos, lvl, it->path, it->message);
    return snprintf(buf, len, "%s%s: %s: %s", src, pos, lvl, it->message);
}

void quota_diags_print(const quota_diags *d, FILE *out)
{
    char line[2048];
    for (size_t i = 0; i < d->count; i++) {
        quota_diag_format(d, &d->items[i], line, sizeof line);
        fprintf(out, "%s\n", line);
    }
}

/* table.c: aligned text tables (see table.h). */
#include "table.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

struct table {
    int ncols, nrows, cap;
    char **cells; /* nrows * ncols, row 0 is the header */
};

struct table *table_new(int ncols, const char *const *headers)
{
    struct table *t = calloc(1, sizeof *t);
    t->ncols = ncols;
    table_add(t, headers);
    return t;
}

void table_add(struct table *t, const char *const *cells)
{
    if (t->nrows == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 16;
        t->cells = realloc(t->cells, sizeof *t->cells * (size_t)(t->cap * t->ncols));
    }
    for (int c = 0; c < t->ncols; c++) t->cells[t->nrows * t->ncols + c] = strdup(cells[c] ? cells[c] : "");
    t->nrows++;
}

void table_addf(struct table *t, const char *fmt, ...)
{
    char buf[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    const char *cells[64];
    int n = 0;
    char *p = buf;
    /* strsep keeps empty cells, which strtok would drop. */
    while (n < t->ncols && n < 64) cells[n++] = strsep(&p, "\t");
    for (int i = 0; i < n; i++)
        if (!cells[i]) cells[i] = "";
    while (n < t->ncols) cells[n++] = "";
    table_add(t, cells);
}

void table_print(struct table *t, FILE *f)
{
    int *w = calloc((size_t)t->ncols, sizeof *w);
    for (int r = 0; r < t->nrows; r++)
        for (int c = 0; c < t->ncols; c++) {
            int len = (int)strlen(t->cells[r * t->ncols + c]);
            if (len > w[c]) w[c] = len;
        }
    for (int r = 0; r < t->nrows; r++) {
        for (int c = 0; c < t->ncols; c++) {
            const char *s = t->cells[r * t->ncols + c];
            if (c == t->ncols - 1) fprintf(f, "%s", s);
            else fprintf(f, "%-*s  ", w[c], s);
        }
        fputc('\n', f);
    }
    free(w);
}

void table_free(struct table *t)
{
    for (int i = 0; i < t->nrows * t->ncols; i++) free(t->cells[i]);
    free(t->cells);
    free(t);
}

/* table.h: aligned text tables for the CLI's human output. */
#ifndef CLI_TABLE_H
#define CLI_TABLE_H

#include <stdio.h>

struct table;

struct table *table_new(int ncols, const char *const *headers);
/* Adds a row; takes ncols strings (copied). */
void table_add(struct table *t, const char *const *cells);
/* Adds a row from printf-style cells separated by '\t'. */
void table_addf(struct table *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void table_print(struct table *t, FILE *f);
void table_free(struct table *t);

#endif

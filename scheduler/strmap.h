/* strmap.h: a string -> int map (open addressing, linear probing). Keys are
 * copied. Used for users, tokens, nodes and accounts by name. */
#ifndef SCHED_STRMAP_H
#define SCHED_STRMAP_H

#include <stddef.h>

struct strmap {
    char **keys;
    int *vals;
    size_t cap, n;
};

void strmap_init(struct strmap *m);
void strmap_free(struct strmap *m);
int strmap_put(struct strmap *m, const char *key, int val); /* 0 or -1 (no memory) */
int strmap_get(const struct strmap *m, const char *key);    /* -1 when absent */

#endif

/* fixture.c: parsing of logits fixtures (fixture.h). */
#include "fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BAD(...) do { snprintf(err, errlen, __VA_ARGS__); goto fail; } while (0)

static int expect(FILE *fp, const char *word)
{
    char w[64];
    return fscanf(fp, "%63s", w) == 1 && strcmp(w, word) == 0;
}

int fixture_load(const char *path, fixture *f, char *err, size_t errlen)
{
    memset(f, 0, sizeof *f);
    FILE *fp = fopen(path, "r");
    if (!fp) {
        snprintf(err, errlen, "%s: cannot open", path);
        return -1;
    }
    int version;
    unsigned long long fnv;
    if (!expect(fp, "commons-logits-fixture") || fscanf(fp, "%d", &version) != 1 ||
        version != 1)
        BAD("%s: not a version 1 logits fixture", path);
    if (!expect(fp, "name") || fscanf(fp, "%127s", f->name) != 1 ||
        !expect(fp, "model_fnv1a64") || fscanf(fp, "%llx", &fnv) != 1 ||
        !expect(fp, "n_vocab") || fscanf(fp, "%d", &f->n_vocab) != 1 ||
        !expect(fp, "n_prompt") || fscanf(fp, "%d", &f->n_prompt) != 1)
        BAD("%s: bad header", path);
    char word[64];
    if (fscanf(fp, "%63s", word) != 1)
        BAD("%s: bad header", path);
    if (!strcmp(word, "first_pos")) {
        if (fscanf(fp, "%d", &f->first_pos) != 1 || fscanf(fp, "%63s", word) != 1)
            BAD("%s: bad first_pos line", path);
    }
    if (strcmp(word, "tokens") || fscanf(fp, "%d", &f->n_tokens) != 1)
        BAD("%s: bad tokens line", path);
    f->fnv = fnv;
    if (f->n_tokens < 1 || f->n_tokens > 100000 || f->n_prompt < 1 ||
        f->n_prompt > f->n_tokens || f->n_vocab < 2 || f->first_pos < 0 ||
        f->first_pos > f->n_prompt - 1)
        BAD("%s: bad sizes (first_pos must be at most n_prompt - 1)", path);
    f->tokens = calloc((size_t)f->n_tokens, sizeof *f->tokens);
    f->pos = calloc((size_t)(f->n_tokens - f->first_pos), sizeof *f->pos);
    if (!f->tokens || !f->pos)
        BAD("out of memory");
    for (int i = 0; i < f->n_tokens; i++)
        if (fscanf(fp, "%d", &f->tokens[i]) != 1 || f->tokens[i] < 0 ||
            f->tokens[i] >= f->n_vocab)
            BAD("%s: bad token %d", path, i);
    if (!expect(fp, "probes") || fscanf(fp, "%d", &f->n_probe) != 1 || f->n_probe < 0 ||
        f->n_probe > f->n_vocab)
        BAD("%s: bad probes line", path);
    f->probe_id = calloc((size_t)f->n_probe + 1, sizeof *f->probe_id);
    if (!f->probe_id)
        BAD("out of memory");
    for (int i = 0; i < f->n_probe; i++)
        if (fscanf(fp, "%d", &f->probe_id[i]) != 1 || f->probe_id[i] < 0 ||
            f->probe_id[i] >= f->n_vocab)
            BAD("%s: bad probe id %d", path, i);
    for (int i = f->first_pos; i < f->n_tokens; i++) {
        fix_pos *p = &f->pos[i - f->first_pos];
        int idx;
        if (!expect(fp, "pos") || fscanf(fp, "%d", &idx) != 1 || idx != i ||
            !expect(fp, "argmax") || fscanf(fp, "%d", &p->argmax) != 1 ||
            !expect(fp, "gap") || fscanf(fp, "%lf", &p->gap) != 1 ||
            !expect(fp, "maxabs") || fscanf(fp, "%lf", &p->maxabs) != 1 ||
            !expect(fp, "top") || fscanf(fp, "%d", &p->n_top) != 1 || p->n_top < 1 ||
            p->n_top > FIX_MAX_TOP)
            BAD("%s: bad record for position %d", path, i);
        for (int j = 0; j < p->n_top; j++)
            if (fscanf(fp, "%d %lf", &p->top_id[j], &p->top_val[j]) != 2 ||
                p->top_id[j] < 0 || p->top_id[j] >= f->n_vocab)
                BAD("%s: bad top entry %d of position %d", path, j, i);
        p->probe = calloc((size_t)f->n_probe + 1, sizeof *p->probe);
        if (!p->probe || !expect(fp, "probe"))
            BAD("%s: bad probe record of position %d", path, i);
        for (int j = 0; j < f->n_probe; j++)
            if (fscanf(fp, "%lf", &p->probe[j]) != 1)
                BAD("%s: bad probe value %d of position %d", path, j, i);
    }
    if (!expect(fp, "end"))
        BAD("%s: missing 'end' (truncated?)", path);
    fclose(fp);
    return 0;
fail:
    fclose(fp);
    fixture_free(f);
    return -1;
}

void fixture_free(fixture *f)
{
    for (int i = 0; f->pos && i < f->n_tokens - f->first_pos; i++)
        free(f->pos[i].probe);
    free(f->pos);
    free(f->tokens);
    free(f->probe_id);
    memset(f, 0, sizeof *f);
}

int fnv1a64_file(const char *path, uint64_t *out)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return -1;
    uint64_t h = 0xcbf29ce484222325ULL;
    unsigned char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, fp)) > 0)
        for (size_t i = 0; i < n; i++)
            h = (h ^ buf[i]) * 0x100000001b3ULL;
    int bad = ferror(fp);
    fclose(fp);
    *out = h;
    return bad ? -1 : 0;
}

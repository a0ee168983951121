/* test_run_tokenize.c: `commons-run --model V.gguf --tokenize TEXT` on every case of a
 * shared vocabulary test file (V.gguf.inp cases, V.gguf.out expected ids, separated by
 * lines "__ggml_vocab_test__"). The program is spawned without a shell, so every byte
 * of the text (tabs, newlines, emoji) reaches it unchanged; its stdout must be exactly
 * the expected ids (line i of the .out file, one line per case), space-separated.
 * usage: test_run_tokenize COMMONS_RUN VOCAB.gguf */
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap + 1);
    size_t r;
    while (b && (r = fread(b + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            char *nb = realloc(b, (cap *= 2) + 1);
            if (!nb) {
                free(b);
                b = NULL;
            }
            b = nb;
        }
    }
    fclose(f);
    if (b) {
        b[n] = 0;
        *len = n;
    }
    return b;
}

/* Split at sep (in place); returns the number of pieces each followed by sep. */
static int split_cases(char *s, const char *sep, char **cases, int max)
{
    int n = 0;
    char *p = s;
    while (n < max) {
        char *q = strstr(p, sep);
        if (!q)
            break;
        *q = 0;
        cases[n++] = p;
        p = q + strlen(sep);
    }
    return n;
}

/* Run argv, capturing stdout into out (NUL-terminated). Returns the exit status. */
static int run(char *const argv[], char *out, size_t outlen)
{
    int fd[2];
    if (pipe(fd))
        return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fd[1], 1);
    posix_spawn_file_actions_addclose(&fa, fd[0]);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fd[1]);
    if (rc) {
        close(fd[0]);
        return -1;
    }
    size_t n = 0;
    ssize_t r;
    while ((r = read(fd[0], out + n, outlen - 1 - n)) > 0 && n < outlen - 1)
        n += (size_t)r;
    out[n] = 0;
    close(fd[0]);
    int st;
    if (waitpid(pid, &st, 0) < 0)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: test_run_tokenize COMMONS_RUN VOCAB.gguf\n");
        return 2;
    }
    char path[4096];
    size_t li, lo;
    snprintf(path, sizeof path, "%s.inp", argv[2]);
    char *inp = slurp(path, &li);
    snprintf(path, sizeof path, "%s.out", argv[2]);
    char *outf = slurp(path, &lo);
    if (!inp || !outf) {
        printf("FAIL cannot read %s.inp/.out\n", argv[2]);
        return 1;
    }
    static char *cin[4096], *cout[4096];
    int ni = split_cases(inp, "\n__ggml_vocab_test__\n", cin, 4096);
    int no = split_cases(outf, "\n", cout, 4096);
    if (ni != no || ni == 0) {
        printf("FAIL %d input cases but %d expected outputs\n", ni, no);
        return 1;
    }
    int pass = 0, fail = 0;
    static char got[1 << 20];
    for (int i = 0; i < ni; i++) {
        char *args[] = { argv[1], "--model", argv[2], "--tokenize", cin[i], NULL };
        int st = run(args, got, sizeof got);
        /* Expected: the .out line without its leading space, then a newline. */
        const char *want = cout[i];
        while (*want == ' ')
            want++;
        size_t gl = strlen(got);
        bool ok = st == 0 && gl > 0 && got[gl - 1] == '\n' && gl - 1 == strlen(want) &&
                  memcmp(got, want, gl - 1) == 0;
        if (ok) {
            pass++;
        } else {
            fail++;
            printf("FAIL case %d: exit %d, got '%.*s', expected '%s'\n", i, st,
                   gl ? (int)gl - 1 : 0, got, want);
        }
    }
    printf("%s: %d passed, %d failed\n", argv[2], pass, fail);
    free(inp);
    free(outf);
    return fail ? 1 : 0;
}

/* replay.c: a main() for the harnesses without libFuzzer, so the committed
 * corpora run as ordinary regression tests (gcc build, sanitizer build).
 *
 * Usage: fuzz_NAME_replay FILE_OR_DIR...
 * Feeds every regular file (directories one level deep) to
 * LLVMFuzzerTestOneInput once. A crash or failed property aborts; exit 0
 * means every input ran. Exits 1 when no input at all was found, so an empty
 * or mistyped corpus path cannot pass silently.
 */
#include "fuzz_util.h"

#include <dirent.h>
#include <sys/stat.h>

/* Harnesses that need setup define LLVMFuzzerInitialize; the others do not. */
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    size_t r;
    while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    if (!buf) abort();
    /* Hand over an exact-size copy so reads past the input are caught. */
    uint8_t *exact = malloc(n ? n : 1);
    if (!exact) abort();
    memcpy(exact, buf, n);
    free(buf);
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
    return 0;
}

int main(int argc, char **argv)
{
    if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
    int ran = 0, failed = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            perror(argv[i]);
            failed++;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            failed += run_file(argv[i]) != 0;
            ran++;
            continue;
        }
        DIR *d = opendir(argv[i]);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
            if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
            failed += run_file(path) != 0;
            ran++;
        }
        if (d) closedir(d);
    }
    printf("%s: %d inputs ran, %d unreadable\n", argv[0], ran, failed);
    return ran == 0 || failed ? 1 : 0;
}

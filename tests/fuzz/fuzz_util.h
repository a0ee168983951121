/* fuzz_util.h: small helpers shared by the libFuzzer harnesses in tests/fuzz/.
 *
 * The harnesses take arbitrary bytes; the code under test mostly wants a
 * NUL-terminated string or a file path. Both helpers abort on out-of-memory
 * or a failing syscall: that is a harness problem, not a finding.
 */
#ifndef FUZZ_UTIL_H
#define FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* The harness entry points (libFuzzer's names; replay.c calls them too). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A malloc'd copy of data with a NUL after it (exactly size + 1 bytes, so
 * ASan catches a read past the terminator). Embedded NULs are kept. */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s) abort();
    if (size) memcpy(s, data, size);
    s[size] = 0;
    return s;
}

/* A file holding exactly data, as a path ("/proc/self/fd/N") for code that
 * opens files by name. Backed by a memfd, so nothing touches the disk; the
 * caller closes *fd when done. */
static inline void fuzz_memfile(const uint8_t *data, size_t size, int *fd, char *path, size_t pathlen)
{
    *fd = memfd_create("fuzz-input", MFD_CLOEXEC);
    if (*fd < 0) {
        perror("memfd_create");
        abort();
    }
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(*fd, data + off, size - off);
        if (w <= 0) {
            perror("write");
            abort();
        }
        off += (size_t)w;
    }
    snprintf(path, pathlen, "/proc/self/fd/%d", *fd);
}

/* An assertion that stays on in release builds: a failed property is a
 * finding, reported through abort() so libFuzzer saves the input. */
#define FUZZ_CHECK(cond, ...)                                                       \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "%s:%d: property failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                           \
            fputc('\n', stderr);                                                    \
            abort();                                                                \
        }                                                                           \
    } while (0)

#endif

/* rawsend: sends one raw message to a Commons endpoint and prints the reply.
 * For tests of malformed and oversized input: rawsend URL FILE|- [TIMEOUT_MS]
 * Exit 0 with the reply on stdout, 1 if no reply came. */
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: rawsend URL FILE|- [TIMEOUT_MS]\n");
        return 2;
    }
    FILE *f = argv[2][0] == '-' && !argv[2][1] ? stdin : fopen(argv[2], "rb");
    if (!f) {
        perror(argv[2]);
        return 2;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) buf = realloc(buf, cap *= 2);
    }
    nng_socket s;
    int timeout = argc > 3 ? atoi(argv[3]) : 3000;
    if (nng_req0_open(&s) || nng_dial(s, argv[1], NULL, 0)) {
        fprintf(stderr, "rawsend: cannot connect to %s\n", argv[1]);
        free(buf);
        return 1;
    }
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, timeout);
    nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, timeout);
    nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    int sent = nng_send(s, buf, n, 0);
    free(buf);
    if (sent != 0) {
        fprintf(stderr, "rawsend: send failed\n");
        return 1;
    }
    char *reply;
    size_t len;
    if (nng_recv(s, &reply, &len, NNG_FLAG_ALLOC) != 0) {
        fprintf(stderr, "rawsend: no reply\n");
        return 1;
    }
    fwrite(reply, 1, len, stdout);
    putchar('\n');
    nng_free(reply, len);
    nng_close(s);
    return 0;
}

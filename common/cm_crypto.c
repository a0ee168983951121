/* cm_crypto.c: SHA-256, HMAC-SHA256 and random tokens through mbedTLS. */
#include "cm_crypto.h"

#include <mbedtls/md.h>
#include <mbedtls/sha256.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

static void to_hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

void cm_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char sum[32];
    mbedtls_sha256_ret(data, len, sum, 0);
    to_hex(sum, 32, out);
}

void cm_hmac_sha256_hex(const char *key, const void *data, size_t len, char out[65])
{
    unsigned char mac[32];
    const mbedtls_md_info_t *md = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    mbedtls_md_hmac(md, (const unsigned char *)key, strlen(key), data, len, mac);
    to_hex(mac, 32, out);
}

int cm_random_hex(size_t nbytes, char *out)
{
    unsigned char buf[256];
    if (nbytes > sizeof buf) return -1;
    size_t got = 0;
    while (got < nbytes) {
        ssize_t r = getrandom(buf + got, nbytes - got, 0);
        if (r < 0) return -1;
        got += (size_t)r;
    }
    to_hex(buf, nbytes, out);
    return 0;
}

int cm_str_eq_ct(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = (unsigned char)(la != lb);
    size_t n = la < lb ? la : lb;
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

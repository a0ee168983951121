/* cm_crypto.h: hashes, MACs and random tokens (mbedTLS underneath). */
#ifndef CM_CRYPTO_H
#define CM_CRYPTO_H

#include <stddef.h>

/* out must hold 65 bytes: 64 hex digits and NUL. */
void cm_sha256_hex(const void *data, size_t len, char out[65]);
void cm_hmac_sha256_hex(const char *key, const void *data, size_t len, char out[65]);
/* Fills out with nbytes random bytes as hex (2*nbytes+1 bytes); 0 or -1. */
int cm_random_hex(size_t nbytes, char *out);
/* Constant-time equality of two NUL-terminated strings. */
int cm_str_eq_ct(const char *a, const char *b);

#endif

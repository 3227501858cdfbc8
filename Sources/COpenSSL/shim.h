#ifndef HERALD_COPENSSL_SHIM_H
#define HERALD_COPENSSL_SHIM_H
/* libcrypto (OpenSSL 3, Debian's libssl-dev): only HMAC-SHA256 for connection tokens. */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#endif

#ifndef HERALD_COPENSSL_SHIM_H
#define HERALD_COPENSSL_SHIM_H
/* libcrypto and libssl (OpenSSL 3, Debian's libssl-dev): HMAC-SHA256 for HS256 tokens; RSA, ECDSA and
 * Ed25519 signatures for tokens from an identity provider. */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

/* TLS for Herald's outbound HTTP (JWKS, connect proxy): SNI is a macro. */
static inline int herald_ssl_set_sni(SSL *ssl, const char *host) { return (int)SSL_set_tlsext_host_name(ssl, host); }

/* Macros Swift does not import as values. */
static inline int herald_pkey_rsa(void) { return EVP_PKEY_RSA; }
static inline int herald_pkey_rsa_pss(void) { return EVP_PKEY_RSA_PSS; }
static inline int herald_pkey_ec(void) { return EVP_PKEY_EC; }
static inline int herald_pkey_ed25519(void) { return EVP_PKEY_ED25519; }

/* RSASSA-PSS as JWS PS256 wants it (RFC 7518 §3.5): MGF1 with the same digest, salt = digest size. */
static inline int herald_set_pss(EVP_PKEY_CTX *ctx) {
    return EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING) > 0
        && EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, RSA_PSS_SALTLEN_DIGEST) > 0;
}
static inline int herald_set_pkcs1(EVP_PKEY_CTX *ctx) {
    return EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) > 0;
}
#endif

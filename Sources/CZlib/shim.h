#ifndef HERALD_CZLIB_SHIM_H
#define HERALD_CZLIB_SHIM_H
/* zlib (Debian's zlib1g-dev) for permessage-deflate (RFC 7692): raw deflate streams.
 * deflateInit2 and inflateInit2 are macros: wrapped here. */
#include <zlib.h>
#include <stdlib.h>

static inline z_stream *herald_z_new(void) { return (z_stream *)calloc(1, sizeof(z_stream)); }
static inline void herald_z_free(z_stream *s) { free(s); }
/* Raw deflate (no zlib header): negative window bits. */
static inline int herald_deflate_init(z_stream *s, int level, int window_bits, int mem_level) {
    return deflateInit2(s, level, Z_DEFLATED, -window_bits, mem_level, Z_DEFAULT_STRATEGY);
}
static inline int herald_inflate_init(z_stream *s, int window_bits) { return inflateInit2(s, -window_bits); }
#endif

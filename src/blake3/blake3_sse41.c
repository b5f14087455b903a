/*
 * blake3_sse41.c - BLAKE3 chunk kernel, 4 inputs at once (SSE4.1); built
 * with -msse4.1 and called only when the CPU has it (see blake3.c).
 */
#include <immintrin.h>
#include <stdint.h>

#define V __m128i
#define N 4
#define KERNEL ntt_b3_many_sse41
#define ADD(a, b) _mm_add_epi32(a, b)
#define XOR(a, b) _mm_xor_si128(a, b)
#define SET1(x) _mm_set1_epi32((int)(x))
#define LOADU(p) _mm_loadu_si128((const __m128i *)(p))
#define ROT16(x) _mm_shuffle_epi8(x, _mm_set_epi8(13, 12, 15, 14, 9, 8, 11, 10, 5, 4, 7, 6, 1, 0, 3, 2))
#define ROT8(x) _mm_shuffle_epi8(x, _mm_set_epi8(12, 15, 14, 13, 8, 11, 10, 9, 4, 7, 6, 5, 0, 3, 2, 1))
#define ROT12(x) _mm_or_si128(_mm_srli_epi32(x, 12), _mm_slli_epi32(x, 20))
#define ROT7(x) _mm_or_si128(_mm_srli_epi32(x, 7), _mm_slli_epi32(x, 25))

#define INLINE static inline __attribute__((always_inline))

/* r[4k + i]: bytes 16k..16k+15 of input i's block. */
INLINE void LOAD_ROWS(__m128i r[16], const uint8_t *const *in, size_t off)
{
    #pragma GCC unroll 16
    for (int k = 0; k < 4; k++)
        #pragma GCC unroll 16
        for (int i = 0; i < 4; i++)
            r[4 * k + i] = LOADU(in[i] + off + 16 * k);
}

INLINE void PREFETCH(const uint8_t *const *in, size_t off)
{
    #pragma GCC unroll 16
    for (int i = 0; i < 4; i++)
        _mm_prefetch((const char *)in[i] + off, _MM_HINT_T0);
}

/* A 4x4 transpose of 32-bit words, from a[0..3] to b[0..3]. */
INLINE void transpose4(__m128i *b, const __m128i *a)
{
    __m128i t0 = _mm_unpacklo_epi32(a[0], a[1]), t1 = _mm_unpacklo_epi32(a[2], a[3]);
    __m128i t2 = _mm_unpackhi_epi32(a[0], a[1]), t3 = _mm_unpackhi_epi32(a[2], a[3]);
    b[0] = _mm_unpacklo_epi64(t0, t1);
    b[1] = _mm_unpackhi_epi64(t0, t1);
    b[2] = _mm_unpacklo_epi64(t2, t3);
    b[3] = _mm_unpackhi_epi64(t2, t3);
}

INLINE void TRANSPOSE_ROWS(__m128i m[16], const __m128i r[16])
{
    #pragma GCC unroll 4
    for (int k = 0; k < 4; k++)
        transpose4(m + 4 * k, r + 4 * k);
}

INLINE void STORE_CVS(uint8_t *out, const __m128i h[8])
{
    #pragma GCC unroll 2
    for (int g = 0; g < 2; g++) {
        __m128i c[4];
        transpose4(c, h + 4 * g);
        #pragma GCC unroll 4
        for (int i = 0; i < 4; i++)
            _mm_storeu_si128((__m128i *)(out + 32 * i + 16 * g), c[i]);
    }
}

#include "blake3_simd.h"

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
#define STOREU(p, x) _mm_storeu_si128((__m128i *)(p), x)
#define ROT16(x) _mm_shuffle_epi8(x, _mm_set_epi8(13, 12, 15, 14, 9, 8, 11, 10, 5, 4, 7, 6, 1, 0, 3, 2))
#define ROT8(x) _mm_shuffle_epi8(x, _mm_set_epi8(12, 15, 14, 13, 8, 11, 10, 9, 4, 7, 6, 5, 0, 3, 2, 1))
#define ROT12(x) _mm_or_si128(_mm_srli_epi32(x, 12), _mm_slli_epi32(x, 20))
#define ROT7(x) _mm_or_si128(_mm_srli_epi32(x, 7), _mm_slli_epi32(x, 25))

static inline __attribute__((always_inline))
void TRANSPOSE_MSG(__m128i m[16], const uint8_t *const *in, size_t off)
{
    #pragma GCC unroll 16
    for (int k = 0; k < 4; k++) {
        __m128i r0 = LOADU(in[0] + off + 16 * k), r1 = LOADU(in[1] + off + 16 * k);
        __m128i r2 = LOADU(in[2] + off + 16 * k), r3 = LOADU(in[3] + off + 16 * k);
        __m128i t0 = _mm_unpacklo_epi32(r0, r1), t1 = _mm_unpacklo_epi32(r2, r3);
        __m128i t2 = _mm_unpackhi_epi32(r0, r1), t3 = _mm_unpackhi_epi32(r2, r3);
        m[4 * k + 0] = _mm_unpacklo_epi64(t0, t1);
        m[4 * k + 1] = _mm_unpackhi_epi64(t0, t1);
        m[4 * k + 2] = _mm_unpacklo_epi64(t2, t3);
        m[4 * k + 3] = _mm_unpackhi_epi64(t2, t3);
    }
}

#include "blake3_simd.h"

/*
 * blake3_avx2.c - BLAKE3 chunk kernel, 8 inputs at once (AVX2); built
 * with -mavx2 and called only when the CPU has it (see blake3.c).
 */
#include <immintrin.h>
#include <stdint.h>

#define V __m256i
#define N 8
#define KERNEL ntt_b3_many_avx2
#define ADD(a, b) _mm256_add_epi32(a, b)
#define XOR(a, b) _mm256_xor_si256(a, b)
#define SET1(x) _mm256_set1_epi32((int)(x))
#define LOADU(p) _mm256_loadu_si256((const __m256i *)(p))
#define ROT16(x) _mm256_shuffle_epi8(x, _mm256_set_epi8( \
        13, 12, 15, 14, 9, 8, 11, 10, 5, 4, 7, 6, 1, 0, 3, 2, \
        13, 12, 15, 14, 9, 8, 11, 10, 5, 4, 7, 6, 1, 0, 3, 2))
#define ROT8(x) _mm256_shuffle_epi8(x, _mm256_set_epi8( \
        12, 15, 14, 13, 8, 11, 10, 9, 4, 7, 6, 5, 0, 3, 2, 1, \
        12, 15, 14, 13, 8, 11, 10, 9, 4, 7, 6, 5, 0, 3, 2, 1))
#define ROT12(x) _mm256_or_si256(_mm256_srli_epi32(x, 12), _mm256_slli_epi32(x, 20))
#define ROT7(x) _mm256_or_si256(_mm256_srli_epi32(x, 7), _mm256_slli_epi32(x, 25))

#define INLINE static inline __attribute__((always_inline))

/* r[8k + i]: bytes 32k..32k+31 of input i's block. */
INLINE void LOAD_ROWS(__m256i r[16], const uint8_t *const *in, size_t off)
{
    #pragma GCC unroll 16
    for (int k = 0; k < 2; k++)
        #pragma GCC unroll 16
        for (int i = 0; i < 8; i++)
            r[8 * k + i] = LOADU(in[i] + off + 32 * k);
}

INLINE void PREFETCH(const uint8_t *const *in, size_t off)
{
    #pragma GCC unroll 16
    for (int i = 0; i < 8; i++)
        _mm_prefetch((const char *)in[i] + off, _MM_HINT_T0);
}

/* An 8x8 transpose of 32-bit words, from a[0..7] to b[0..7]. */
INLINE void transpose8(__m256i *b, const __m256i *a)
{
    __m256i t[8], u[8];
    #pragma GCC unroll 16
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_epi32(a[2 * i], a[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_epi32(a[2 * i], a[2 * i + 1]);
    }
    #pragma GCC unroll 16
    for (int g = 0; g < 2; g++) {
        u[4 * g + 0] = _mm256_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 1] = _mm256_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 2] = _mm256_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
        u[4 * g + 3] = _mm256_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
    }
    #pragma GCC unroll 16
    for (int j = 0; j < 4; j++) {
        b[j] = _mm256_permute2x128_si256(u[j], u[4 + j], 0x20);
        b[4 + j] = _mm256_permute2x128_si256(u[j], u[4 + j], 0x31);
    }
}

/* Two 8x8 transposes, one per half block. */
INLINE void TRANSPOSE_ROWS(__m256i m[16], const __m256i r[16])
{
    transpose8(m, r);
    transpose8(m + 8, r + 8);
}

/* 8 words by 8 inputs: the same transpose, once. */
INLINE void STORE_CVS(uint8_t *out, const __m256i h[8])
{
    __m256i c[8];
    transpose8(c, h);
    #pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
        _mm256_storeu_si256((__m256i *)(out + 32 * i), c[i]);
}

#include "blake3_simd.h"

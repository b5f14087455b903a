/*
 * blake3_avx512.c - BLAKE3 chunk kernel, 16 inputs at once (AVX-512F);
 * compiled for that target by the pragma below and called only when the
 * CPU has it (see blake3.c).
 */
#pragma GCC target("avx512f,avx512vl")
#include <immintrin.h>
#include <stdint.h>

#define V __m512i
#define N 16
#define KERNEL ntt_b3_many_avx512
#define ADD(a, b) _mm512_add_epi32(a, b)
#define XOR(a, b) _mm512_xor_si512(a, b)
#define SET1(x) _mm512_set1_epi32((int)(x))
#define LOADU(p) _mm512_loadu_si512((const void *)(p))
#define ROT16(x) _mm512_ror_epi32(x, 16)
#define ROT12(x) _mm512_ror_epi32(x, 12)
#define ROT8(x) _mm512_ror_epi32(x, 8)
#define ROT7(x) _mm512_ror_epi32(x, 7)

#define INLINE static inline __attribute__((always_inline))

INLINE void LOAD_ROWS(__m512i r[16], const uint8_t *const *in, size_t off)
{
    #pragma GCC unroll 16
    for (int i = 0; i < 16; i++)
        r[i] = LOADU(in[i] + off);
}

INLINE void PREFETCH(const uint8_t *const *in, size_t off)
{
    #pragma GCC unroll 16
    for (int i = 0; i < 16; i++)
        _mm_prefetch((const char *)in[i] + off, _MM_HINT_T0);
}

/* A 16x16 transpose of 32-bit words: rows are inputs, columns words. */
INLINE void TRANSPOSE_ROWS(__m512i m[16], const __m512i r[16])
{
    __m512i t[16], u[4][4];
    #pragma GCC unroll 16
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    /* u[k][j]: 128-bit lane L holds word 4L+j of rows 4k..4k+3. */
    #pragma GCC unroll 16
    for (int k = 0; k < 4; k++) {
        u[k][0] = _mm512_unpacklo_epi64(t[4 * k], t[4 * k + 2]);
        u[k][1] = _mm512_unpackhi_epi64(t[4 * k], t[4 * k + 2]);
        u[k][2] = _mm512_unpacklo_epi64(t[4 * k + 1], t[4 * k + 3]);
        u[k][3] = _mm512_unpackhi_epi64(t[4 * k + 1], t[4 * k + 3]);
    }
    #pragma GCC unroll 16
    for (int j = 0; j < 4; j++) {
        __m512i a = _mm512_shuffle_i32x4(u[0][j], u[1][j], 0x44);
        __m512i b = _mm512_shuffle_i32x4(u[0][j], u[1][j], 0xEE);
        __m512i c = _mm512_shuffle_i32x4(u[2][j], u[3][j], 0x44);
        __m512i d = _mm512_shuffle_i32x4(u[2][j], u[3][j], 0xEE);
        m[0 + j] = _mm512_shuffle_i32x4(a, c, 0x88);
        m[4 + j] = _mm512_shuffle_i32x4(a, c, 0xDD);
        m[8 + j] = _mm512_shuffle_i32x4(b, d, 0x88);
        m[12 + j] = _mm512_shuffle_i32x4(b, d, 0xDD);
    }
}

/*
 * The other way, 8 words by 16 inputs: two rounds of unpacking leave words
 * 0-3 (e) and 4-7 (f) of input 4L+j in 128-bit lane L; interleaving the
 * lanes of e and f gives two whole chaining values per half vector.
 */
INLINE void STORE_CVS(uint8_t *out, const __m512i h[8])
{
    const __m512i lo = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0);
    const __m512i hi = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
    __m512i t[8], e[4], f[4];
    #pragma GCC unroll 8
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(h[2 * i], h[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(h[2 * i], h[2 * i + 1]);
    }
    e[0] = _mm512_unpacklo_epi64(t[0], t[2]); e[1] = _mm512_unpackhi_epi64(t[0], t[2]);
    e[2] = _mm512_unpacklo_epi64(t[1], t[3]); e[3] = _mm512_unpackhi_epi64(t[1], t[3]);
    f[0] = _mm512_unpacklo_epi64(t[4], t[6]); f[1] = _mm512_unpackhi_epi64(t[4], t[6]);
    f[2] = _mm512_unpacklo_epi64(t[5], t[7]); f[3] = _mm512_unpackhi_epi64(t[5], t[7]);
    #pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        /* Inputs j, 4+j (a) and 8+j, 12+j (b). */
        __m512i a = _mm512_permutex2var_epi64(e[j], lo, f[j]);
        __m512i b = _mm512_permutex2var_epi64(e[j], hi, f[j]);
        _mm256_storeu_si256((__m256i *)(out + 32 * j), _mm512_castsi512_si256(a));
        _mm256_storeu_si256((__m256i *)(out + 32 * (4 + j)), _mm512_extracti64x4_epi64(a, 1));
        _mm256_storeu_si256((__m256i *)(out + 32 * (8 + j)), _mm512_castsi512_si256(b));
        _mm256_storeu_si256((__m256i *)(out + 32 * (12 + j)), _mm512_extracti64x4_epi64(b, 1));
    }
}

#include "blake3_simd.h"

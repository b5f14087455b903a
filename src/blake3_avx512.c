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
#define STOREU(p, x) _mm512_storeu_si512((void *)(p), x)
#define ROT16(x) _mm512_ror_epi32(x, 16)
#define ROT12(x) _mm512_ror_epi32(x, 12)
#define ROT8(x) _mm512_ror_epi32(x, 8)
#define ROT7(x) _mm512_ror_epi32(x, 7)

static inline __attribute__((always_inline))
void TRANSPOSE_MSG(__m512i m[16], const uint8_t *const *in, size_t off)
{
    __m512i r[16], t[16], u[4][4];
    #pragma GCC unroll 16
    for (int i = 0; i < 16; i++) {
        r[i] = LOADU(in[i] + off);
        _mm_prefetch((const char *)in[i] + off + 256, _MM_HINT_T0);
    }
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

#include "blake3_simd.h"

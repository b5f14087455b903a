/*
 * blake3_simd.h - the BLAKE3 chunk kernel shared by the SIMD files: the
 * state of N inputs is held word-wise across the N lanes of a vector, so
 * one pass of the 7 rounds compresses one block of every input.
 *
 * The including file defines V (the vector type), N (lanes), the
 * operations ADD, XOR, SET1, ROT16, ROT12, ROT8, ROT7, LOADU (N words),
 * KERNEL (the exported function's name) and these functions:
 *   LOAD_ROWS(r, inputs, off)  the N 64-byte blocks at inputs[i] + off as
 *                              16 vectors in whatever order suits the next:
 *   TRANSPOSE_ROWS(m, r)       word w of input i's block to lane i of m[w]
 *   PREFETCH(inputs, off)      ask for the N lines at inputs[i] + off
 *   STORE_CVS(out, h)          lane i of h[0..7] to out + 32 * i
 *
 * The loop is software-pipelined: the next block's rows are loaded (and
 * the next call's input prefetched) before the current block's rounds, so
 * that their latency hides behind 7 rounds of arithmetic instead of
 * stalling the next transpose, whose shuffles then overlap the rounds'
 * tail.  The rounds saturate the vector units; the rest is overhead to
 * keep off the critical path.
 */
#include <string.h>
#include "blake3.h"

#define INLINE static inline __attribute__((always_inline))

static const uint8_t SCHED[7][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8},
    {3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1},
    {10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6},
    {12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4},
    {9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7},
    {11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13},
};

INLINE void round_n(V v[16], const V m[16], int r)
{
    const uint8_t *o = SCHED[r];
    /* Columns, four G at once, then diagonals. */
    v[0] = ADD(ADD(v[0], v[4]), m[o[0]]); v[1] = ADD(ADD(v[1], v[5]), m[o[2]]);
    v[2] = ADD(ADD(v[2], v[6]), m[o[4]]); v[3] = ADD(ADD(v[3], v[7]), m[o[6]]);
    v[12] = ROT16(XOR(v[12], v[0])); v[13] = ROT16(XOR(v[13], v[1]));
    v[14] = ROT16(XOR(v[14], v[2])); v[15] = ROT16(XOR(v[15], v[3]));
    v[8] = ADD(v[8], v[12]); v[9] = ADD(v[9], v[13]);
    v[10] = ADD(v[10], v[14]); v[11] = ADD(v[11], v[15]);
    v[4] = ROT12(XOR(v[4], v[8])); v[5] = ROT12(XOR(v[5], v[9]));
    v[6] = ROT12(XOR(v[6], v[10])); v[7] = ROT12(XOR(v[7], v[11]));
    v[0] = ADD(ADD(v[0], v[4]), m[o[1]]); v[1] = ADD(ADD(v[1], v[5]), m[o[3]]);
    v[2] = ADD(ADD(v[2], v[6]), m[o[5]]); v[3] = ADD(ADD(v[3], v[7]), m[o[7]]);
    v[12] = ROT8(XOR(v[12], v[0])); v[13] = ROT8(XOR(v[13], v[1]));
    v[14] = ROT8(XOR(v[14], v[2])); v[15] = ROT8(XOR(v[15], v[3]));
    v[8] = ADD(v[8], v[12]); v[9] = ADD(v[9], v[13]);
    v[10] = ADD(v[10], v[14]); v[11] = ADD(v[11], v[15]);
    v[4] = ROT7(XOR(v[4], v[8])); v[5] = ROT7(XOR(v[5], v[9]));
    v[6] = ROT7(XOR(v[6], v[10])); v[7] = ROT7(XOR(v[7], v[11]));

    v[0] = ADD(ADD(v[0], v[5]), m[o[8]]); v[1] = ADD(ADD(v[1], v[6]), m[o[10]]);
    v[2] = ADD(ADD(v[2], v[7]), m[o[12]]); v[3] = ADD(ADD(v[3], v[4]), m[o[14]]);
    v[15] = ROT16(XOR(v[15], v[0])); v[12] = ROT16(XOR(v[12], v[1]));
    v[13] = ROT16(XOR(v[13], v[2])); v[14] = ROT16(XOR(v[14], v[3]));
    v[10] = ADD(v[10], v[15]); v[11] = ADD(v[11], v[12]);
    v[8] = ADD(v[8], v[13]); v[9] = ADD(v[9], v[14]);
    v[5] = ROT12(XOR(v[5], v[10])); v[6] = ROT12(XOR(v[6], v[11]));
    v[7] = ROT12(XOR(v[7], v[8])); v[4] = ROT12(XOR(v[4], v[9]));
    v[0] = ADD(ADD(v[0], v[5]), m[o[9]]); v[1] = ADD(ADD(v[1], v[6]), m[o[11]]);
    v[2] = ADD(ADD(v[2], v[7]), m[o[13]]); v[3] = ADD(ADD(v[3], v[4]), m[o[15]]);
    v[15] = ROT8(XOR(v[15], v[0])); v[12] = ROT8(XOR(v[12], v[1]));
    v[13] = ROT8(XOR(v[13], v[2])); v[14] = ROT8(XOR(v[14], v[3]));
    v[10] = ADD(v[10], v[15]); v[11] = ADD(v[11], v[12]);
    v[8] = ADD(v[8], v[13]); v[9] = ADD(v[9], v[14]);
    v[5] = ROT7(XOR(v[5], v[10])); v[6] = ROT7(XOR(v[6], v[11]));
    v[7] = ROT7(XOR(v[7], v[8])); v[4] = ROT7(XOR(v[4], v[9]));
}

/*
 * How far ahead the input is prefetched: the same block of the next N
 * chunks, where the next call reads when the chunks are contiguous (as
 * ntt_blake3_update passes them).  Hashing a mapped 1 GiB file from DRAM
 * this was 2-3% faster than two blocks ahead (and than 1 KiB, 4 KiB, or
 * 32 KiB ahead, or prefetching to L2 only); in L2 it makes no difference.
 */
#ifndef PREFETCH_AHEAD
#define PREFETCH_AHEAD (N * NTT_BLAKE3_CHUNK_LEN)
#endif

void KERNEL(const uint8_t *const *inputs, size_t n, size_t blocks,
            const uint32_t key[8], uint64_t counter, int increment,
            uint8_t flags, uint8_t flags_start, uint8_t flags_end,
            uint8_t *out)
{
    uint32_t lo[N], hi[N];
    V h[8], v[16], m[16], r[16], clo, chi;
    (void)n;                    /* always N */
    #pragma GCC unroll 16
    for (int i = 0; i < N; i++) {
        uint64_t c = counter + (increment ? (uint64_t)i : 0);
        lo[i] = (uint32_t)c;
        hi[i] = (uint32_t)(c >> 32);
    }
    clo = LOADU(lo);
    chi = LOADU(hi);
    #pragma GCC unroll 16
    for (int i = 0; i < 8; i++)
        h[i] = SET1(key[i]);
    LOAD_ROWS(r, inputs, 0);
    for (size_t b = 0; b < blocks; b++) {
        uint8_t f = flags;
        if (b == 0) f |= flags_start;
        if (b + 1 == blocks) f |= flags_end;
        TRANSPOSE_ROWS(m, r);
        if (b + 1 < blocks)
            LOAD_ROWS(r, inputs, 64 * (b + 1));
        if (blocks > 1)         /* not for parents */
            PREFETCH(inputs, 64 * b + PREFETCH_AHEAD);
        #pragma GCC unroll 16
        for (int i = 0; i < 8; i++)
            v[i] = h[i];
        v[8] = SET1(ntt_b3_iv[0]); v[9] = SET1(ntt_b3_iv[1]);
        v[10] = SET1(ntt_b3_iv[2]); v[11] = SET1(ntt_b3_iv[3]);
        v[12] = clo; v[13] = chi;
        v[14] = SET1(64); v[15] = SET1(f);
        round_n(v, m, 0); round_n(v, m, 1); round_n(v, m, 2);
        round_n(v, m, 3); round_n(v, m, 4); round_n(v, m, 5);
        round_n(v, m, 6);
        #pragma GCC unroll 16
        for (int i = 0; i < 8; i++)
            h[i] = XOR(v[i], v[i + 8]);
    }
    STORE_CVS(out, h);
}

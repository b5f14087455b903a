/*
 * blake3.h - BLAKE3 hashing for the C runtime of ntt (no Lua here; the
 * binding is src/blake3/hash.c).
 *
 * Written from the BLAKE3 specification: 1024-byte chunks of 64-byte blocks
 * compressed in 7 rounds, chunk chaining values merged in a binary tree
 * whose left subtrees are always complete, the root node's output extended
 * by its counter (XOF).  The three modes: plain hash, keyed hash (32-byte
 * key) and key derivation (a context string, then the key material).
 *
 * Streaming: any split of the input over ntt_blake3_update calls gives the
 * same digest.  Whole chunks are hashed several at a time with SSE4.1 (4),
 * AVX2 (8) or AVX-512 (16) when the CPU has them, chosen at run time.
 */
#ifndef NTT_BLAKE3_H
#define NTT_BLAKE3_H

#include <stddef.h>
#include <stdint.h>

#define NTT_BLAKE3_OUT_LEN 32
#define NTT_BLAKE3_KEY_LEN 32
#define NTT_BLAKE3_BLOCK_LEN 64
#define NTT_BLAKE3_CHUNK_LEN 1024
#define NTT_BLAKE3_MAX_DEPTH 54

typedef struct ntt_blake3 {
    uint32_t key[8];
    uint64_t chunk_counter;      /* index of the open chunk */
    size_t chunk_len;            /* bytes of the open chunk, kept raw */
    uint8_t flags;               /* mode flags */
    uint8_t stack_len;
    uint8_t stack[NTT_BLAKE3_MAX_DEPTH + 1][NTT_BLAKE3_OUT_LEN];
    /* While the stack holds one subtree and no chunk is open: its two
     * children, should that subtree be the whole input (the root). */
    uint8_t root_children[2 * NTT_BLAKE3_OUT_LEN];
    uint8_t chunk[NTT_BLAKE3_CHUNK_LEN];
} ntt_blake3;

void ntt_blake3_init(ntt_blake3 *h);
void ntt_blake3_init_keyed(ntt_blake3 *h, const uint8_t key[NTT_BLAKE3_KEY_LEN]);
void ntt_blake3_init_derive(ntt_blake3 *h, const char *context);
void ntt_blake3_init_derive_raw(ntt_blake3 *h, const void *context, size_t len);
/* Back to the state right after init, keeping the mode and key. */
void ntt_blake3_reset(ntt_blake3 *h);
void ntt_blake3_update(ntt_blake3 *h, const void *data, size_t len);
/* Output bytes [0, outlen); the hasher is unchanged and can keep going. */
void ntt_blake3_finalize(const ntt_blake3 *h, uint8_t *out, size_t outlen);
/* Output bytes [offset, offset + outlen) of the extendable output. */
void ntt_blake3_finalize_seek(const ntt_blake3 *h, uint64_t offset,
                              uint8_t *out, size_t outlen);
/*
 * Hashing apart (threads): the chaining value of nchunks (a power of two,
 * at most 1024) whole chunks starting at chunk index `first`, in h's mode;
 * a parent node of two such values; and pushing a subtree of nchunks
 * chunks onto a hasher that has no open chunk and whose chunk count is a
 * multiple of nchunks.  The whole input must not be one pushed subtree
 * (its root is not recomputed).
 */
void ntt_blake3_subtree_cv(const ntt_blake3 *h, const uint8_t *data, size_t nchunks,
                           uint64_t first, uint8_t cv[32]);
void ntt_blake3_parent_cv(const ntt_blake3 *h, const uint8_t left[32],
                          const uint8_t right[32], uint8_t out[32]);
void ntt_blake3_push_subtree(ntt_blake3 *h, const uint8_t cv[32], uint64_t nchunks);
/* The SIMD width in use: 16, 8, 4 or 1. */
int ntt_blake3_simd_degree(void);
/* Tests: use at most `want` lanes (0: the best the CPU has); returns it. */
int ntt_blake3_set_simd_degree(int want);

/* Internal: shared between blake3.c and its SIMD variants. */
enum {
    NTT_B3_CHUNK_START = 1, NTT_B3_CHUNK_END = 2, NTT_B3_PARENT = 4,
    NTT_B3_ROOT = 8, NTT_B3_KEYED = 16, NTT_B3_DERIVE_CONTEXT = 32,
    NTT_B3_DERIVE_MATERIAL = 64
};
extern const uint32_t ntt_b3_iv[8];
/*
 * Hash n inputs of `blocks` 64-byte blocks each; input i gets counter
 * counter + i when increment is set (chunks), else counter (parents).
 * flags go on every block, flags_start on the first, flags_end on the last.
 * Writes n 32-byte chaining values to out.
 */
typedef void ntt_b3_many_fn(const uint8_t *const *inputs, size_t n,
                            size_t blocks, const uint32_t key[8],
                            uint64_t counter, int increment, uint8_t flags,
                            uint8_t flags_start, uint8_t flags_end,
                            uint8_t *out);
ntt_b3_many_fn ntt_b3_many_sse41, ntt_b3_many_avx2, ntt_b3_many_avx512;
void ntt_b3_many_portable(const uint8_t *const *inputs, size_t n,
                          size_t blocks, const uint32_t key[8],
                          uint64_t counter, int increment, uint8_t flags,
                          uint8_t flags_start, uint8_t flags_end,
                          uint8_t *out);

#endif

/*
 * blake3.c - portable BLAKE3 (see blake3.h) and the run-time choice of
 * the SIMD chunk kernels in blake3_sse41.c, blake3_avx2.c, blake3_avx512.c.
 *
 * The tree is built lazily: whole chunks are hashed (and pushed as aligned
 * subtrees) as soon as they arrive, but before a push the stack is merged
 * down only to popcount(chunks before it) entries, so a parent is never
 * computed until it is certain not to be the root; finalize folds what is
 * left.  Long updates hash aligned subtrees of up to SUBTREE_MAX chunks at
 * once: the chunks through the widest kernel, then each level of parents.
 */
#include <string.h>
#include "blake3.h"

#define SUBTREE_MAX 1024

const uint32_t ntt_b3_iv[8] = {
    0x6A09E667u, 0xBB67AE85u, 0x3C6EF372u, 0xA54FF53Au,
    0x510E527Fu, 0x9B05688Cu, 0x1F83D9ABu, 0x5BE0CD19u,
};

/* Message word order per round: round r+1 = round r through the permutation. */
static const uint8_t SCHED[7][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8},
    {3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1},
    {10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6},
    {12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4},
    {9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7},
    {11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13},
};

static inline uint32_t load32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static inline void store32(uint8_t *p, uint32_t w)
{
    p[0] = (uint8_t)w; p[1] = (uint8_t)(w >> 8);
    p[2] = (uint8_t)(w >> 16); p[3] = (uint8_t)(w >> 24);
}

static inline uint32_t rotr(uint32_t w, int c) { return w >> c | w << (32 - c); }

#define G(a, b, c, d, x, y) do {                                   \
        s[a] += s[b] + (x); s[d] = rotr(s[d] ^ s[a], 16);          \
        s[c] += s[d];       s[b] = rotr(s[b] ^ s[c], 12);          \
        s[a] += s[b] + (y); s[d] = rotr(s[d] ^ s[a], 8);           \
        s[c] += s[d];       s[b] = rotr(s[b] ^ s[c], 7);           \
    } while (0)

/* The compression function; s receives the 16-word state after 7 rounds. */
static void compress_rounds(uint32_t s[16], const uint32_t cv[8],
                            const uint8_t block[64], uint8_t block_len,
                            uint64_t counter, uint8_t flags)
{
    uint32_t m[16];
    for (int i = 0; i < 16; i++)
        m[i] = load32(block + 4 * i);
    for (int i = 0; i < 8; i++)
        s[i] = cv[i];
    s[8] = ntt_b3_iv[0]; s[9] = ntt_b3_iv[1];
    s[10] = ntt_b3_iv[2]; s[11] = ntt_b3_iv[3];
    s[12] = (uint32_t)counter; s[13] = (uint32_t)(counter >> 32);
    s[14] = block_len; s[15] = flags;
#pragma GCC unroll 7
    for (int r = 0; r < 7; r++) {
        const uint8_t *o = SCHED[r];
        G(0, 4, 8, 12, m[o[0]], m[o[1]]);
        G(1, 5, 9, 13, m[o[2]], m[o[3]]);
        G(2, 6, 10, 14, m[o[4]], m[o[5]]);
        G(3, 7, 11, 15, m[o[6]], m[o[7]]);
        G(0, 5, 10, 15, m[o[8]], m[o[9]]);
        G(1, 6, 11, 12, m[o[10]], m[o[11]]);
        G(2, 7, 8, 13, m[o[12]], m[o[13]]);
        G(3, 4, 9, 14, m[o[14]], m[o[15]]);
    }
}

/* cv <- first half of the output (a chaining value). */
static void compress_cv(uint32_t cv[8], const uint8_t block[64],
                        uint8_t block_len, uint64_t counter, uint8_t flags)
{
    uint32_t s[16];
    compress_rounds(s, cv, block, block_len, counter, flags);
    for (int i = 0; i < 8; i++)
        cv[i] = s[i] ^ s[i + 8];
}

/* The full 64-byte output block (for the root's extendable output). */
static void compress_xof(const uint32_t cv[8], const uint8_t block[64],
                         uint8_t block_len, uint64_t counter, uint8_t flags,
                         uint8_t out[64])
{
    uint32_t s[16];
    compress_rounds(s, cv, block, block_len, counter, flags);
    for (int i = 0; i < 8; i++) {
        store32(out + 4 * i, s[i] ^ s[i + 8]);
        store32(out + 32 + 4 * i, s[i + 8] ^ cv[i]);
    }
}

void ntt_b3_many_portable(const uint8_t *const *inputs, size_t n,
                          size_t blocks, const uint32_t key[8],
                          uint64_t counter, int increment, uint8_t flags,
                          uint8_t flags_start, uint8_t flags_end,
                          uint8_t *out)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t cv[8];
        memcpy(cv, key, sizeof cv);
        for (size_t b = 0; b < blocks; b++) {
            uint8_t f = flags;
            if (b == 0) f |= flags_start;
            if (b + 1 == blocks) f |= flags_end;
            compress_cv(cv, inputs[i] + 64 * b, 64, counter, f);
        }
        for (int w = 0; w < 8; w++)
            store32(out + 32 * i + 4 * w, cv[w]);
        if (increment)
            counter++;
    }
}

/* ---- run-time kernel choice ---- */

static int simd_degree = -1;

static int detect(void)
{
    int d = 1;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.1")) d = 4;
    if (__builtin_cpu_supports("avx2")) d = 8;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl"))
        d = 16;
#endif
    return d;
}

int ntt_blake3_simd_degree(void)
{
    int d = __atomic_load_n(&simd_degree, __ATOMIC_RELAXED);
    if (d < 0) {
        d = detect();
        __atomic_store_n(&simd_degree, d, __ATOMIC_RELAXED);
    }
    return d;
}

int ntt_blake3_set_simd_degree(int want)
{
    int have = detect(), d = 1;
    while (d * 2 <= want && d * 2 <= have)
        d = d == 1 ? 4 : d * 2;
    if (want <= 0)
        d = have;
    __atomic_store_n(&simd_degree, d, __ATOMIC_RELAXED);
    return d;
}

static void hash_many(const uint8_t *const *in, size_t n, size_t blocks,
                      const uint32_t key[8], uint64_t counter, int increment,
                      uint8_t flags, uint8_t fs, uint8_t fe, uint8_t *out)
{
    int d = ntt_blake3_simd_degree();
#if defined(__x86_64__) || defined(__i386__)
    while (d >= 16 && n >= 16) {
        ntt_b3_many_avx512(in, 16, blocks, key, counter, increment, flags, fs, fe, out);
        in += 16; n -= 16; out += 16 * 32;
        if (increment) counter += 16;
    }
    while (d >= 8 && n >= 8) {
        ntt_b3_many_avx2(in, 8, blocks, key, counter, increment, flags, fs, fe, out);
        in += 8; n -= 8; out += 8 * 32;
        if (increment) counter += 8;
    }
    while (d >= 4 && n >= 4) {
        ntt_b3_many_sse41(in, 4, blocks, key, counter, increment, flags, fs, fe, out);
        in += 4; n -= 4; out += 4 * 32;
        if (increment) counter += 4;
    }
#endif
    ntt_b3_many_portable(in, n, blocks, key, counter, increment, flags, fs, fe, out);
}

/* ---- the hasher ---- */

static void init_with(ntt_blake3 *h, const uint32_t key[8], uint8_t flags)
{
    h->chunk_counter = 0;
    h->chunk_len = 0;
    h->stack_len = 0;
    memcpy(h->key, key, sizeof h->key);
    h->flags = flags;
}

void ntt_blake3_init(ntt_blake3 *h) { init_with(h, ntt_b3_iv, 0); }

void ntt_blake3_init_keyed(ntt_blake3 *h, const uint8_t key[32])
{
    uint32_t k[8];
    for (int i = 0; i < 8; i++)
        k[i] = load32(key + 4 * i);
    init_with(h, k, NTT_B3_KEYED);
}

void ntt_blake3_init_derive_raw(ntt_blake3 *h, const void *context, size_t len)
{
    ntt_blake3 c;
    uint8_t ck[32];
    uint32_t k[8];
    init_with(&c, ntt_b3_iv, NTT_B3_DERIVE_CONTEXT);
    ntt_blake3_update(&c, context, len);
    ntt_blake3_finalize(&c, ck, sizeof ck);
    for (int i = 0; i < 8; i++)
        k[i] = load32(ck + 4 * i);
    init_with(h, k, NTT_B3_DERIVE_MATERIAL);
}

void ntt_blake3_init_derive(ntt_blake3 *h, const char *context)
{
    ntt_blake3_init_derive_raw(h, context, strlen(context));
}

void ntt_blake3_reset(ntt_blake3 *h)
{
    uint32_t key[8];
    memcpy(key, h->key, sizeof key);
    init_with(h, key, h->flags);
}

static void parent_cv(const ntt_blake3 *h, const uint8_t left[32],
                      const uint8_t right[32], uint8_t out[32])
{
    uint8_t block[64];
    uint32_t cv[8];
    memcpy(block, left, 32);
    memcpy(block + 32, right, 32);
    memcpy(cv, h->key, sizeof cv);
    compress_cv(cv, block, 64, 0, h->flags | NTT_B3_PARENT);
    for (int w = 0; w < 8; w++)
        store32(out + 4 * w, cv[w]);
}

/*
 * Merge the stack down to one entry per 1 bit of `total` (the chunks it
 * covers): allowed only once input beyond those chunks is known to exist.
 */
static void merge_stack(ntt_blake3 *h, uint64_t total)
{
    int keep = __builtin_popcountll(total);
    while (h->stack_len > keep) {
        h->stack_len--;
        parent_cv(h, h->stack[h->stack_len - 1], h->stack[h->stack_len],
                  h->stack[h->stack_len - 1]);
    }
}

/* Push the chaining value of the subtree starting at chunk `first`. */
static void push_cv(ntt_blake3 *h, const uint8_t cv[32], uint64_t first)
{
    merge_stack(h, first);
    memcpy(h->stack[h->stack_len++], cv, 32);
}

/*
 * Reduce n (a power of two) sibling chaining values to their subtree's.
 * children, if given, receives the last parent's block (its two child
 * chaining values), from which the subtree's node can be recomputed as the
 * root.
 */
static void reduce(const ntt_blake3 *h, const uint8_t *cvs, size_t n,
                   uint8_t out[32], uint8_t children[64])
{
    const uint8_t *in[SUBTREE_MAX / 2];
    uint8_t a[SUBTREE_MAX / 2 * 32], b[SUBTREE_MAX / 4 * 32 + 32];
    const uint8_t *cur = cvs;
    uint8_t *next = a;
    while (n > 1) {
        if (n == 2 && children)
            memcpy(children, cur, 64);
        n /= 2;
        for (size_t i = 0; i < n; i++)
            in[i] = cur + 64 * i;
        hash_many(in, n, 1, h->key, 0, 0, h->flags | NTT_B3_PARENT, 0, 0, next);
        cur = next;
        next = next == a ? b : a;
    }
    memcpy(out, cur, 32);
}

/*
 * Hash n <= SUBTREE_MAX whole chunks starting at chunk_counter, all in one
 * wide pass, and push them as the largest aligned subtrees they form.  The
 * subtree pushed onto an empty stack may turn out to be the whole input:
 * its children are kept so that finalize can redo its node as the root.
 */
static void hash_chunks(ntt_blake3 *h, const uint8_t *const *in, size_t n)
{
    uint8_t cvs[SUBTREE_MAX * 32];
    hash_many(in, n, NTT_BLAKE3_CHUNK_LEN / 64, h->key, h->chunk_counter, 1,
              h->flags, NTT_B3_CHUNK_START, NTT_B3_CHUNK_END, cvs);
    size_t i = 0;
    while (i < n) {
        size_t s = SUBTREE_MAX;
        while (s > n - i || (h->chunk_counter & (s - 1)))
            s /= 2;
        uint8_t cv[32];
        reduce(h, cvs + 32 * i, s, cv, h->chunk_counter == 0 ? h->root_children : NULL);
        push_cv(h, cv, h->chunk_counter);
        h->chunk_counter += s;
        i += s;
    }
}

/*
 * Whole chunks are hashed as soon as they are seen, even the update's
 * last: a stream of 1 MiB updates then hashes each as one aligned subtree
 * of 1024 chunks instead of shifting every batch by the chunk held back.
 * The one exception is a single chunk at the very start, which is kept raw
 * because it alone would be the root (a chunk's root output needs its
 * last block and the chaining value before it, which the wide kernels do
 * not give).
 */
void ntt_blake3_update(ntt_blake3 *h, const void *data, size_t len)
{
    const uint8_t *p = data;
    const uint8_t *in[SUBTREE_MAX];
    while (len > 0 || (h->chunk_len == NTT_BLAKE3_CHUNK_LEN && h->chunk_counter > 0)) {
        size_t k = 0;
        if (h->chunk_len == NTT_BLAKE3_CHUNK_LEN)
            in[k++] = h->chunk;
        if (k || h->chunk_len == 0) {
            /* Batches end on multiples of SUBTREE_MAX so that they stay aligned. */
            size_t room = SUBTREE_MAX - (size_t)(h->chunk_counter % SUBTREE_MAX);
            while (k < room && len >= NTT_BLAKE3_CHUNK_LEN) {
                in[k++] = p;
                p += NTT_BLAKE3_CHUNK_LEN;
                len -= NTT_BLAKE3_CHUNK_LEN;
            }
        }
        if (k == 1 && in[0] != h->chunk && h->chunk_counter == 0 && len == 0) {
            memcpy(h->chunk, in[0], NTT_BLAKE3_CHUNK_LEN);
            h->chunk_len = NTT_BLAKE3_CHUNK_LEN;
            break;
        }
        if (k) {
            hash_chunks(h, in, k);
            h->chunk_len = 0;
            continue;
        }
        size_t take = NTT_BLAKE3_CHUNK_LEN - h->chunk_len;
        if (take > len)
            take = len;
        memcpy(h->chunk + h->chunk_len, p, take);
        h->chunk_len += take;
        p += take;
        len -= take;
    }
    /* The open chunk holds input now: the stack's subtrees are complete. */
    if (h->chunk_len > 0)
        merge_stack(h, h->chunk_counter);
}

void ntt_blake3_finalize_seek(const ntt_blake3 *h, uint64_t offset,
                              uint8_t *out, size_t outlen)
{
    /* The last node on the right edge: cv, block, block_len, counter, flags. */
    uint32_t cv[8];
    uint8_t block[64];
    uint8_t block_len = 64, flags = h->flags | NTT_B3_PARENT;
    uint64_t counter = 0;
    int i = h->stack_len - 1;
    memcpy(cv, h->key, sizeof cv);
    if (h->chunk_len > 0 || h->stack_len == 0) {
        /* The open chunk (or the empty input): all but its last block. */
        size_t nblocks = h->chunk_len ? (h->chunk_len + 63) / 64 : 1;
        for (size_t b = 0; b + 1 < nblocks; b++)
            compress_cv(cv, h->chunk + 64 * b, 64, h->chunk_counter,
                        h->flags | (b == 0 ? NTT_B3_CHUNK_START : 0));
        block_len = (uint8_t)(h->chunk_len - 64 * (nblocks - 1));
        memset(block, 0, sizeof block);
        memcpy(block, h->chunk + 64 * (nblocks - 1), block_len);
        counter = h->chunk_counter;
        flags = h->flags | NTT_B3_CHUNK_END | (nblocks == 1 ? NTT_B3_CHUNK_START : 0);
    } else if (h->stack_len == 1) {
        /* The input was exactly one subtree of two or more chunks. */
        memcpy(block, h->root_children, 64);
        i = -1;
    } else {
        /* The input ended on a chunk boundary: the top two entries are siblings. */
        memcpy(block, h->stack[i - 1], 32);
        memcpy(block + 32, h->stack[i], 32);
        i -= 2;
    }
    /* Fold the rest of the stack from the top into the root node. */
    for (; i >= 0; i--) {
        uint32_t c[8];
        memcpy(c, cv, sizeof c);
        compress_cv(c, block, block_len, counter, flags);
        memcpy(block, h->stack[i], 32);
        for (int w = 0; w < 8; w++)
            store32(block + 32 + 4 * w, c[w]);
        memcpy(cv, h->key, sizeof cv);
        block_len = 64;
        counter = 0;
        flags = h->flags | NTT_B3_PARENT;
    }
    /* The root's counter field numbers its 64-byte output blocks. */
    uint64_t t = offset / 64;
    size_t skip = offset % 64;
    while (outlen > 0) {
        uint8_t o[64];
        compress_xof(cv, block, block_len, t, flags | NTT_B3_ROOT, o);
        size_t n = 64 - skip;
        if (n > outlen)
            n = outlen;
        memcpy(out, o + skip, n);
        out += n;
        outlen -= n;
        skip = 0;
        t++;
    }
}

void ntt_blake3_finalize(const ntt_blake3 *h, uint8_t *out, size_t outlen)
{
    ntt_blake3_finalize_seek(h, 0, out, outlen);
}

/*
 * Subtrees hashed apart (on other threads) and put into place: the
 * chunk counter is part of each chunk's hash, the tree shape is the one
 * streaming would build, so the digest is the same.
 */
void ntt_blake3_subtree_cv(const ntt_blake3 *h, const uint8_t *data, size_t nchunks,
                           uint64_t first, uint8_t cv[32])
{
    const uint8_t *in[SUBTREE_MAX];
    uint8_t cvs[SUBTREE_MAX * 32];
    for (size_t i = 0; i < nchunks; i++)
        in[i] = data + i * NTT_BLAKE3_CHUNK_LEN;
    hash_many(in, nchunks, NTT_BLAKE3_CHUNK_LEN / 64, h->key, first, 1, h->flags,
              NTT_B3_CHUNK_START, NTT_B3_CHUNK_END, cvs);
    reduce(h, cvs, nchunks, cv, NULL);
}

void ntt_blake3_parent_cv(const ntt_blake3 *h, const uint8_t left[32],
                          const uint8_t right[32], uint8_t out[32])
{
    parent_cv(h, left, right, out);
}

void ntt_blake3_push_subtree(ntt_blake3 *h, const uint8_t cv[32], uint64_t nchunks)
{
    push_cv(h, cv, h->chunk_counter);
    h->chunk_counter += nchunks;
}

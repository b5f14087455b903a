/*
 * inomap.c - the inode map of a load (no Lua module; used by load.c for
 * ntt.core.load).  See inomap.h.
 */
#include <stdlib.h>
#include "inomap.h"

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

static int grow(struct ntt_inomap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 1024;
    uint64_t *k = calloc(cap, sizeof *k);
    uint32_t *v = calloc(cap, sizeof *v);
    if (!k || !v) { free(k); free(v); return -1; }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->key[i]) continue;
        size_t j = mix(m->key[i]) & (cap - 1);
        while (k[j]) j = (j + 1) & (cap - 1);
        k[j] = m->key[i];
        v[j] = m->val[i];
    }
    free(m->key);
    free(m->val);
    m->key = k; m->val = v; m->cap = cap;
    return 0;
}

uint32_t *ntt_inomap_get(struct ntt_inomap *m, uint64_t ino, uint32_t init, int *isnew)
{
    *isnew = 0;
    if (ino == 0) {
        if (!m->has_zero) { m->has_zero = 1; m->zero_val = init; *isnew = 1; }
        return &m->zero_val;
    }
    if ((m->n + 1) * 2 > m->cap && grow(m) != 0)
        return NULL;
    size_t j = mix(ino) & (m->cap - 1);
    while (m->key[j]) {
        if (m->key[j] == ino) return &m->val[j];
        j = (j + 1) & (m->cap - 1);
    }
    m->key[j] = ino;
    m->val[j] = init;
    m->n++;
    *isnew = 1;
    return &m->val[j];
}

void ntt_inomap_free(struct ntt_inomap *m)
{
    free(m->key);
    free(m->val);
    m->key = NULL; m->val = NULL; m->cap = m->n = 0;
}

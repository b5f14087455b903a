/*
 * inomap.h - inode number -> 32-bit value, for the hardlinked entries of a
 * load (load.c): an open-addressing map that grows with the number of
 * hardlinked inodes only (ordinary files and directories never enter it).
 */
#ifndef NTT_INOMAP_H
#define NTT_INOMAP_H

#include <stddef.h>
#include <stdint.h>

struct ntt_inomap {
    uint64_t *key;
    uint32_t *val;
    size_t cap, n;
    int has_zero;        /* inode 0 is kept aside (0 marks a free slot) */
    uint32_t zero_val;
};

/* The value of ino; a new ino is added with value init and *isnew set.
 * NULL when out of memory. */
uint32_t *ntt_inomap_get(struct ntt_inomap *m, uint64_t ino, uint32_t init, int *isnew);
void ntt_inomap_free(struct ntt_inomap *m);

#endif

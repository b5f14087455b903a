/*
 * archive_int.h - what the two halves of ntt.core.archive share: archive.c
 * (the module, reading back, unpacking) and pack.c (writing).
 */
#ifndef NTT_ARCHIVE_INT_H
#define NTT_ARCHIVE_INT_H

#include <stdint.h>
#include <zstd.h>
#include "ntt.h"
#include "blake3.h"

#define BUFSZ (1024 * 1024)

#define BUFSZ (1024 * 1024)

/* The archive file as libarchive reads or writes it. */
struct sink {
    int fd;
    int err;
    uint64_t size;
    uint64_t started;   /* write side: bytes whose writeback was started */
    ntt_blake3 h;
    uint8_t *buf;       /* read side: the block handed to libarchive; write side: zstd's output */
    ZSTD_CCtx *z;       /* write side */
};

/* Pushes the hex digest of h. */
void ntt_ar_push_hex(lua_State *L, const ntt_blake3 *h);
/* archive.write (pack.c) */
int ntt_ar_write(lua_State *L);

#endif

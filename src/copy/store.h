/*
 * store.h - the content-addressed store shared by src/copy/store.c (the
 * ntt.core.store binding) and src/copy/copy.c (the copy engine).
 */
#ifndef NTT_STORE_H
#define NTT_STORE_H

#include <stdint.h>
#include <sys/types.h>
#include "ntt.h"

#define NTT_STORE "ntt.Store"

struct ntt_store {
    int rootfd;        /* <root> */
    int byhashfd;      /* <root>/by-hash */
    int tmpfd;         /* <root>/tmp */
    int closed;
    int busy;          /* running copy jobs (atomic): close refuses meanwhile */
    char *root;
    mode_t umask;               /* at open: fchmod temps only when it masks 0644 */
    uint8_t dirs[65536 / 8];    /* by-hash/AA/BB known to exist */
};

/* The open Store at idx, or raises (wrong type or closed). */
struct ntt_store *ntt_store_check(lua_State *L, int idx);

/* A temp name unique across processes and machines; 0 or an errno. */
int ntt_store_tmpname(char *buf, size_t size);

/* Create <tmp>/name exclusively, mode 0644 whatever the umask; fd or -errno. */
int ntt_store_tmpcreate(struct ntt_store *st, const char *name);

/*
 * Move <tmp>/name to by-hash/AA/BB/hex without replacing.  *is_new is 1
 * when it was moved, 0 when the blob existed (the temp is removed).
 * Returns 0 or an errno (the temp is left for the caller to remove).
 * With dirsync, the blob's directory is fsynced after the move.
 */
int ntt_store_commit(struct ntt_store *st, const char *name, const char *hex,
                     int dirsync, int *is_new);

/* 1 when the blob exists, 0 when not, -errno on other errors. */
int ntt_store_exists(struct ntt_store *st, const char *hex);

static inline void ntt_hex(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = 0;
}

#endif

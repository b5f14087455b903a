/*
 * store.h - the content-addressed store shared by src/copy/store.c (the
 * ntt.core.store binding) and src/copy/copy_engine.c (the copy engine).
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

/*
 * A blob being written: a temp file in <store>/tmp.  Every blob reaches
 * by-hash through these calls, from st:put and from the copy engine alike:
 * open, write, close, then commit (or drop).  fd is -1 when not open; name
 * is "" when there is no temp on disk.
 */
struct ntt_store_tmp {
    int fd;
    char name[128];
};

/*
 * Create a temp under a name unique across processes and machines, mode
 * 0644 whatever the umask.  0, or an errno and t is left empty (fd -1,
 * name "").
 */
int ntt_store_tmp_open(struct ntt_store *st, struct ntt_store_tmp *t);

/* Write all len bytes (retrying short writes and EINTR); 0 or an errno. */
int ntt_store_tmp_write(struct ntt_store_tmp *t, const void *p, size_t len);

/* fsync (when sync) and close the temp's fd (fd becomes -1, the name stays); 0 or an errno. */
int ntt_store_tmp_close(struct ntt_store_tmp *t, int sync);

/*
 * Move the closed temp to by-hash/AA/BB/hex without replacing.  *is_new
 * is 1 when it was moved, 0 when the blob existed (the temp is removed);
 * either way t->name becomes "".  Returns 0 or an errno (the temp is left
 * for ntt_store_tmp_drop).  With dirsync, the blob's directory (and any
 * directory it created) is fsynced after the move.
 */
int ntt_store_tmp_commit(struct ntt_store *st, struct ntt_store_tmp *t, const char *hex,
                         int dirsync, int *is_new);

/* Close and remove whatever is left of the temp; t becomes empty.  Never fails. */
void ntt_store_tmp_drop(struct ntt_store *st, struct ntt_store_tmp *t);

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

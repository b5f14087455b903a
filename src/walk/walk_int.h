/*
 * walk_int.h - private to the C side of ntt.core.walk: the walk's shared
 * state and the functions its files call, in one direction only:
 *
 *     walk_engine.c  (threads, stall watch, start/next/finish)
 *       -> walk_list.c  (listing one directory)
 *       -> walk_queue.c (directory stack, batch queue, events; calls nothing)
 */
#ifndef NTT_WALK_INT_H
#define NTT_WALK_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/stat.h>
#include "walk.h"

#define DENTS_BUF (64 * 1024)

struct item {                  /* a directory still to list */
    struct item *next;
    uint64_t ino;
    int depth;                 /* 0 for the root */
    int emit_self;             /* the root: emit its own record first */
    int first;                 /* the walk's first directory (root or start): its
                                  inode is learnt when opened, only applies to it */
    struct item *parent;       /* kept alive by this item's reference */
    atomic_int refs;           /* 1 until listed, +1 per child item alive */
    size_t len;
    char path[];               /* NUL-terminated, len bytes */
};

struct batch {
    struct batch *next;
    size_t n, cap;
    struct ntt_walk_rec *recs; /* path/target hold arena offsets until sealed */
    char *arena;
    size_t used, acap;
};

struct slot { uint64_t h; uint32_t gen; uint32_t len; size_t off; };

struct worker {
    struct ntt_walk *w;
    pthread_t tid;
    int exited;                /* under w->mu */
    struct item *busy;         /* under w->mu: the directory being listed */
    double busy_since;
    pthread_mutex_t bmu;       /* guards cur (stolen by the consumer on a stall) */
    struct batch *cur;
    char *dents;
    char *pbuf; size_t pcap;   /* path of the entry being looked at */
    struct slot *set; size_t setcap, setn; uint32_t gen;  /* names of one directory */
    char *names; size_t nused, ncap;
};

struct ntt_walk {
    pthread_mutex_t mu;
    pthread_cond_t work_cv, out_cv, space_cv;
    int refs;
    int rootfd;
    dev_t rootdev;
    struct ntt_walk_opts o;
    char *root;
    struct item *stack;
    int active, running;
    atomic_int stop;           /* read by workers without the lock */
    struct batch *qhead, *qtail, *freel;
    size_t qlen, qmax, nfree;
    atomic_uint_fast64_t progress;
    atomic_uint_fast64_t dirs;
    struct ntt_walk_stats st;  /* events, counters, stalled; under mu */
    size_t evcap, evkind[4];
    struct worker *wk;
    int nwk;
    /* consumer side only */
    struct batch *consumed;
    int over;
    double t0;
};

/* ---- walk_queue.c: the bottom; used by walk_list.c and walk_engine.c ---- */

double ntt_walk_mono(void);
void *ntt_walk_xmalloc(size_t n);             /* abort()s when out of memory */
void *ntt_walk_xrealloc(void *p, size_t n);

/* An event for the result (takes w->mu); strerror(err) appended when syserr. */
void ntt_walk_event(struct ntt_walk *w, int kind, int err, const char *path,
                    size_t len, const char *what, int syserr);
#define walk_event(w, kind, err, path, len, what) \
    ntt_walk_event(w, kind, err, path, len, what, (err) != 0)
#define walk_note(w, kind, err, path, len, what) ntt_walk_event(w, kind, err, path, len, what, 0)

/* Append one record to the worker's batch (path's last nlen bytes: the name). */
void ntt_walk_emit(struct worker *k, const struct stat *st, const char *path,
                   size_t plen, size_t nlen, uint64_t parent,
                   const char *target, size_t tlen, uint32_t flags);
/* Hand the worker's batch (if not empty) to the consumer; waits for room. */
void ntt_walk_flush(struct worker *k);

/* Batches: arena offsets turned into pointers; back to the free list; freed. */
void ntt_walk_batch_seal(struct batch *b);
void ntt_walk_batch_put(struct ntt_walk *w, struct batch *b);
void ntt_walk_batch_free(struct batch *b);

/* Push a subdirectory of parent to list (it holds a reference to parent). */
void ntt_walk_push_dir(struct ntt_walk *w, struct item *parent, const char *path,
                       size_t len, uint64_t ino);
/* Drop a reference to a directory item; freeing it drops its parent's. */
void ntt_walk_item_unref(struct item *it);

/* ---- walk_list.c: used by walk_engine.c ---- */

/* List one directory: emit its entries, push its subdirectories. */
void ntt_walk_dir(struct worker *k, struct item *it);

#endif

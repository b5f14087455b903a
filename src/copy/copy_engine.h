/*
 * copy_engine.h - the copy engine behind ntt.core.copy (src/copy/copy.c
 * is the Lua binding, src/copy/copy_engine.c the engine).  A job is built
 * by the binding from Lua values, then run without Lua: worker threads,
 * per-file open/read/hash/write through the store (src/copy/store.h),
 * read-ahead, zero ranges and durability.  Results stay in the items.
 */
#ifndef NTT_COPY_ENGINE_H
#define NTT_COPY_ENGINE_H

#include <pthread.h>
#include <stddef.h>
#include "store.h"

enum { DUR_BATCH, DUR_FSYNC, DUR_NONE };
enum { ST_PENDING, ST_COPIED, ST_FAILED };

/* Where a failed item failed (copy_phase_name gives the Lua string). */
enum {
    PHASE_NONE,
    PHASE_OPEN,                 /* resolving, opening or checking the source (or never started) */
    PHASE_READ,                 /* reading the source, or its size differs from the expected one */
    PHASE_WRITE,                /* creating, writing or syncing the temp in <store>/tmp */
    PHASE_STORE,                /* moving the temp into by-hash, syncing the store; or the batch
                                   stopped on another item's store-side error */
};

struct copy_item {
    int root;                   /* index into job.rootfds */
    char *path;
    size_t pathlen, dirlen;
    long long size;
    long long *zoff, *zlen;     /* ranges stored as zeros, not read (sorted) */
    size_t nzero;
    int status, err, phase, is_new, commit, thread;
    int skip;                   /* set by copy_job_skip (atomic): the operator skipped it */
    long long offset;
    unsigned long long bytes;
    double seconds, t0, t1;
    char blob[65];
    char sha256[65];            /* with job.sha256: the content's SHA-256 ("" when not taken) */
    struct ntt_store_tmp tmp;   /* the temp, kept for a batch commit */
    char msg[200];
};

/* What one thread is doing now, read by copy_job_live while the job runs. */
struct copy_live {
    size_t item;                /* index + 1 of the item being copied, 0 when idle (under mu) */
    double t0;                  /* when it started (monotonic seconds) */
    unsigned long long bytes;   /* bytes of it read so far (atomic) */
    pthread_t tid;
};

struct copy_job {
    struct ntt_store *st;
    struct copy_item *items;
    size_t n;
    int *rootfds, *rooterrs;
    size_t nroots;
    size_t *order, *gstart, ngroups;
    size_t *gorder;             /* groups by their first item's position */
    size_t next;                /* next group (atomic) */
    int stop;                   /* store-side errno that stops the batch (atomic) */
    int durability, trace;
    int sha256;                 /* also take each file's SHA-256 on the same pass */
    size_t bufsize, threads;
    /* Set once no source is read any more (only the commit is left). */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int reads_done, done;       /* done: the commit too (under mu) */
    double base;
    struct copy_live *live;     /* one per thread (job.threads) */
    int paused;                 /* between files, threads wait while set (atomic) */
    size_t files_done;          /* items finished, any way (atomic) */
    unsigned long long bytes_read;  /* bytes read from sources so far (atomic) */
};

/*
 * A job for n items with every array allocated and zeroed (items pending),
 * or NULL when out of memory.  The caller fills each item's root (with
 * copy_job_root), path, pathlen, size and zero ranges, then calls
 * copy_job_plan.
 */
struct copy_job *copy_job_new(struct ntt_store *st, size_t n, size_t bufsize,
                              int durability, int trace);

/*
 * The index of root among the job's roots, opening it (O_PATH) the first
 * time; names[] (room for n) holds the root strings seen so far, owned by
 * the caller.  An unopenable root fails its items when they run.
 */
int copy_job_root(struct copy_job *job, const char **names, const char *root);

/* Group the items by (root, directory) and fix the thread count; 0 or ENOMEM. */
int copy_job_plan(struct copy_job *job, size_t threads);

/* Run a planned job to the end: worker threads, then the batch commit. */
void copy_job_run(struct copy_job *job);

/* Ask a running job to stop: files not yet started fail EINTR. */
void copy_job_cancel(struct copy_job *job);

/* Return once no source is read any more (only the batch commit may be left). */
void copy_job_wait_reads(struct copy_job *job);

/*
 * Wait at most timeout seconds for the reads (done = 0) or the whole job
 * (done = 1) to end; 1 when they have, 0 on timeout.
 */
int copy_job_timedwait(struct copy_job *job, int done, double timeout);

/*
 * Skip item i now: not started, it never is; being read, its thread's
 * blocking call is interrupted (SIGURG, no restart) and the item fails
 * ECANCELED "skipped by the operator" at the next block.  A read the
 * kernel does not let a signal interrupt ends at its next block.
 */
void copy_job_skip(struct copy_job *job, size_t i);

/* Threads wait between files while paused. */
void copy_job_pause(struct copy_job *job, int paused);

/* Everything a job holds, and the job itself. */
void copy_job_free(struct copy_job *job);

/* "open", "read", "write", "store" (NULL for PHASE_NONE). */
const char *copy_phase_name(int phase);

#endif

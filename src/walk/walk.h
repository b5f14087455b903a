/*
 * walk.h - the C side of ntt.core.walk: a parallel, byte-exact directory
 * walk of one filesystem, for C consumers (the COPY feeder) that must not
 * build a Lua table per record.
 *
 * Two ways in:
 *   - push: ntt_walk_run() calls a sink for every record, on the calling
 *     thread, in the order the records leave the worker threads;
 *   - pull: ntt_walk_start() / ntt_walk_next() / ntt_walk_finish(), which is
 *     what the Lua Walker uses; ntt_walk_check(L, idx) hands the walk behind
 *     a Lua Walker to C, so C code can drain a walk a policy opened.
 * Worker threads never touch a lua_State.  Records of a batch stay valid
 * until the next ntt_walk_next() or ntt_walk_finish() on that walk.
 */
#ifndef NTT_WALK_H
#define NTT_WALK_H

#include <stddef.h>
#include <stdint.h>

struct lua_State;

/* ntt_walk_rec.flags */
#define NTT_WALK_MOUNTPOINT 0x1   /* a directory on another mount: not descended */
#define NTT_WALK_NOTDESC    0x2   /* a directory not descended (loop, depth) */

struct ntt_walk_rec {
    uint64_t ino;
    uint64_t parent;        /* inode of the containing directory; the root: itself */
    uint64_t nlink;
    uint64_t rdev;          /* device number of 'b' and 'c' entries, else 0 */
    int64_t size;
    int64_t mtime_ns;       /* seconds * 1e9 + nanoseconds since the epoch */
    uint32_t mode;          /* st_mode, type bits included */
    uint32_t uid, gid;
    uint32_t flags;         /* NTT_WALK_* */
    char type;              /* 'f' 'd' 'l' 'b' 'c' 'p' 's' ('?' unknown) */
    const char *name;       /* raw bytes, not NUL-terminated; "" for the root */
    size_t name_len;
    const char *path;       /* relative to the root, '/'-separated; "" for the root */
    size_t path_len;
    const char *target;     /* symlink target bytes, NULL unless type 'l' */
    size_t target_len;
};

struct ntt_walk_opts {
    const char *root;       /* directory to walk (required) */
    int threads;            /* worker threads; <= 0: 4 */
    double stall_timeout;   /* seconds without progress before giving up; <= 0: 120 */
    int batch;              /* records per batch; <= 0: 4096 */
    size_t batch_bytes;     /* name/path/target bytes per batch; 0: 1 MiB */
    int max_depth;          /* directories deeper than this are not descended; <= 0: 4096 */
    int max_events;         /* events of each kind kept in the stats; <= 0: 1000 */
    /* Called about once a second while ntt_walk_next waits for records
     * (a slow or stuck directory), from that thread, no lock held: the
     * loader keeps its progress line and the run's console going. */
    void (*idle)(void *arg);
    void *idle_arg;
    /* Walk again one place of a walk done before (records keep paths
     * relative to root): start, a directory below root (opened beneath it,
     * no symlink, no other mount), is listed instead of root and its own
     * record is not emitted; only, when set (a name, no '/'), keeps of
     * start's listing that one entry (and, a directory, all below it). */
    const char *start;      /* NULL or "": root itself */
    const char *only;       /* NULL: every entry of start */
};

enum ntt_walk_event_kind {
    NTT_WALK_EV_ERROR = 1,      /* unreadable directory or entry: err, path, msg */
    NTT_WALK_EV_DUPLICATE,      /* a name listed twice in one directory: path */
    NTT_WALK_EV_MOUNTPOINT,     /* a mount point inside the tree: path */
};

struct ntt_walk_event {
    int kind;               /* enum ntt_walk_event_kind */
    int err;                /* errno for errors */
    char *path;             /* raw bytes (NUL-terminated for convenience) */
    size_t path_len;
    char *msg;              /* what failed, e.g. "openat: Input/output error" */
};

struct ntt_walk_stats {
    uint64_t entries;       /* records emitted (the root included) */
    uint64_t dirs;          /* directories listed */
    uint64_t errors, duplicates, mountpoints;   /* totals, even past max_events */
    struct ntt_walk_event *events;  /* the first max_events of each kind, in order */
    size_t nevents;
    int stalled;            /* no progress for stall_timeout: walk abandoned */
    char *stalled_path;     /* the directory being read when it stalled */
    size_t stalled_path_len;
    int interrupted;        /* ntt_interrupted was seen */
    double seconds;
};

typedef int (*ntt_walk_sink)(void *ctx, const struct ntt_walk_rec *rec);

/*
 * Walk opts->root.  The sink runs on the calling thread; a non-zero return
 * stops the walk and becomes the return value.  Returns 0 when the walk
 * ended (completely, or stalled or interrupted: see *out), -1 with errno
 * set when the root cannot be opened or resources are missing.  *out must
 * be released with ntt_walk_stats_free() whatever the return.
 */
int ntt_walk_run(const struct ntt_walk_opts *opts, ntt_walk_sink sink, void *ctx,
                 struct ntt_walk_stats *out);

struct ntt_walk;

/* Start a walk: NULL with errno set when the root cannot be opened. */
struct ntt_walk *ntt_walk_start(const struct ntt_walk_opts *opts);
/*
 * The next batch: *recs and the count returned, 0 when the walk is over
 * (done, stalled, interrupted or stopped).  Blocks the calling thread.
 */
size_t ntt_walk_next(struct ntt_walk *w, const struct ntt_walk_rec **recs);
/* Ask the workers to stop; a following ntt_walk_next returns 0. */
void ntt_walk_stop(struct ntt_walk *w);
/* Stats so far (final once ntt_walk_next returned 0); copy, free with below. */
void ntt_walk_stats(struct ntt_walk *w, struct ntt_walk_stats *out);
/* Stop, join the workers (detach any stuck in a syscall) and free. */
void ntt_walk_finish(struct ntt_walk *w);
void ntt_walk_stats_free(struct ntt_walk_stats *st);

/* The walk behind the ntt.Walker at idx (raises if closed or not one). */
struct ntt_walk *ntt_walk_check(struct lua_State *L, int idx);

/* ---- shared by walk.c and walk_engine.c only ---- */
void ntt_walk_defaults(struct ntt_walk_opts *o);
char ntt_walk_typechar(unsigned mode);
const char *ntt_walk_root(const struct ntt_walk *w);
int ntt_walk_interrupted(struct ntt_walk *w);

#endif

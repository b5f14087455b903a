/*
 * copy.c - ntt.core.copy: the copy engine that moves files from mounted
 * media into the content-addressed store (src/copy/store.c), hashing in the
 * same pass.
 *
 * Lua API (ntt.core.copy):
 *   batch(store, items [, opts]) -> results
 *     items: array of {root = fs_root_path, path = raw relative bytes,
 *            size = expected size, id = any value (echoed back),
 *            zero = optional sorted list of {offset=, length=}: byte
 *            ranges stored as zeros and never read (salvage of a file
 *            over unrescued areas of an image)}
 *     opts:  threads = n (default 1), durability = "batch" (default) |
 *            "fsync" | "none", buffer = bytes per thread (default 1 MiB),
 *            trace = true (adds t0, t1, thread to each result)
 *     results: one table per item, same order:
 *       {id=, ok=true, status="copied", blob=hex, bytes=n, new=bool
 *        (false: the blob existed: deduplicated), seconds=}
 *       {id=, ok=false, status="failed", err="EIO", msg=..., offset=n
 *        (bytes read before the failure), bytes=n, seconds=}
 *     Misuse (bad arguments) raises; everything per file is a result.
 *   start(store, items [, opts]) -> Job: the same batch run in the
 *     background, so the caller can talk to the database meanwhile.
 *     Job:wait() -> results (as batch; once), Job:done() -> bool (never
 *     blocks), Job:wait_reads() returns once no source is read any more
 *     (only the batch commit may be left: the next batch's reads can
 *     start), Job:close() cancels what has not started and waits
 *     (idempotent; also __close, __gc).  The store cannot be closed while
 *     one of its jobs runs.
 *
 * Engine: items are grouped by (root, source directory); directories are
 * started in the order their first item appears (so a caller that lists
 * items by inode number reads the medium mostly in disk order); one
 * thread works through one directory at a time, its files in order, and at most
 * `threads` threads run, so reads from several directories are in flight
 * while no directory is ever read by two threads at once.  Sources are
 * opened beneath their root with openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS): symlinks and ".." escapes fail (ELOOP, EXDEV).
 * Each file is read in blocks of `buffer` bytes, hashed and written to a
 * temp in <store>/tmp; its byte count must equal the expected size
 * (shorter: ENODATA, longer: EFBIG, offset = bytes read); then it is
 * renamed into by-hash without replacing (existing blob: dedup).  A file
 * that fits in the buffer and whose blob exists is never written at all.
 * Durability: "fsync" syncs each file and its directory; "batch" writes
 * all temps, syncfs once, renames all, syncfs again; "none" renames only.
 * SIGINT/SIGTERM or a store-side write error (ENOSPC...) stops the batch
 * between blocks: the remaining items fail (EINTR, or that error) and no
 * final name ever holds a partial blob.  Worker threads never touch Lua.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "store.h"
#include "blake3.h"

enum { DUR_BATCH, DUR_FSYNC, DUR_NONE };
enum { ST_PENDING, ST_COPIED, ST_FAILED };

struct item {
    int root;                   /* index into job.rootfds */
    char *path;
    size_t pathlen, dirlen;
    long long size;
    long long *zoff, *zlen;     /* ranges stored as zeros, not read (sorted) */
    size_t nzero;
    int status, err, is_new, commit, thread;
    long long offset;
    unsigned long long bytes;
    double seconds, t0, t1;
    char blob[65];
    char tmpname[128];
    char msg[200];
};

struct job {
    struct ntt_store *st;
    struct item *items;
    size_t n;
    int *rootfds, *rooterrs;
    size_t nroots;
    size_t *order, *gstart, ngroups;
    size_t *gorder;             /* groups by their first item's position */
    size_t next;                /* next group (atomic) */
    int stop;                   /* store-side errno that stops the batch (atomic) */
    int durability, trace;
    size_t bufsize, threads;
    /* Set once no source is read any more (only the commit is left). */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int reads_done;
    double base;
};

struct worker {
    struct job *job;
    int id;
    uint8_t *buf;
    pthread_t tid;
};

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fail_item(struct item *it, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail_item(struct item *it, int err, const char *fmt, ...)
{
    va_list ap;
    it->status = ST_FAILED;
    it->err = err;
    va_start(ap, fmt);
    vsnprintf(it->msg, sizeof it->msg, fmt, ap);
    va_end(ap);
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static void stop_batch(struct job *job, int err)
{
    int zero = 0;
    __atomic_compare_exchange_n(&job->stop, &zero, err, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

/* Errors of the store side, after which no further file can succeed. */
static int store_fatal(int err)
{
    return err == ENOSPC || err == EDQUOT || err == EROFS || err == EIO;
}

static void copy_one(struct job *job, struct item *it, uint8_t *buf)
{
    struct ntt_store *st = job->st;
    int fd = -1, tfd = -1, err = 0;
    unsigned long long total = 0;
    size_t fill = 0;
    ntt_blake3 b3;

    if (job->rootfds[it->root] < 0) {
        fail_item(it, job->rooterrs[it->root], "root: %s", strerror(job->rooterrs[it->root]));
        return;
    }
    if (it->pathlen == 0 || memchr(it->path, 0, it->pathlen)) {
        fail_item(it, EINVAL, "invalid path (empty or containing NUL)");
        return;
    }
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | O_NOFOLLOW;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    fd = (int)syscall(SYS_openat2, job->rootfds[it->root], it->path, &how, sizeof how);
    if (fd < 0) {
        err = errno;
        fail_item(it, err, "open: %s", strerror(err));
        return;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        err = errno;
        fail_item(it, err, "fstat: %s", strerror(err));
        close(fd);
        return;
    }
    if (!S_ISREG(sb.st_mode)) {
        fail_item(it, EINVAL, "not a regular file");
        close(fd);
        return;
    }
    if ((unsigned long long)sb.st_size > job->bufsize)
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    ntt_blake3_init(&b3);
    size_t zi = 0;              /* next zero range that may lie ahead */
    for (;;) {
        if (ntt_interrupted) {
            fail_item(it, EINTR, "interrupted");
            goto out;
        }
        if ((err = __atomic_load_n(&job->stop, __ATOMIC_RELAXED)) != 0) {
            fail_item(it, err, "batch stopped: store: %s", strerror(err));
            goto out;
        }
        ssize_t r;
        size_t want = job->bufsize - fill;
        while (zi < it->nzero && (unsigned long long)(it->zoff[zi] + it->zlen[zi]) <= total)
            zi++;
        if (zi < it->nzero && total >= (unsigned long long)it->zoff[zi]) {
            /* Salvage: a range known to be unreadable is stored as zeros;
             * the source is never asked for it (nor past its end). */
            unsigned long long left = (unsigned long long)(it->zoff[zi] + it->zlen[zi]) - total;
            unsigned long long upto = (unsigned long long)it->size > total ? (unsigned long long)it->size - total : 0;
            size_t z = (size_t)(left < want ? left : want);
            if (z > upto)
                z = (size_t)upto;
            memset(buf + fill, 0, z);
            r = (ssize_t)z;
        } else {
            if (zi < it->nzero && (unsigned long long)it->zoff[zi] - total < want)
                want = (size_t)((unsigned long long)it->zoff[zi] - total);
            r = it->nzero ? pread(fd, buf + fill, want, (off_t)total) : read(fd, buf + fill, want);
        }
        if (r < 0) {
            if (errno == EINTR)
                continue;
            err = errno;
            it->offset = (long long)total;
            fail_item(it, err, "read at byte %llu: %s", total, strerror(err));
            goto out;
        }
        if (r == 0)
            break;
        ntt_blake3_update(&b3, buf + fill, (size_t)r);
        total += (unsigned long long)r;
        fill += (size_t)r;
        if (total > (unsigned long long)it->size)
            break;              /* longer than expected: fails below */
        /* A large file: every fourth block, ask for the four blocks after
         * the next three, so the device reads ahead while this thread
         * hashes and writes (the kernel's own readahead window is a few
         * hundred KiB: each 1 MiB read then waited for the disk). */
        if ((unsigned long long)sb.st_size > 2 * job->bufsize && !it->nzero &&
            total % (4 * job->bufsize) == job->bufsize)
            posix_fadvise(fd, (off_t)(total + 3 * job->bufsize), (off_t)(4 * job->bufsize), POSIX_FADV_WILLNEED);
        if (fill == job->bufsize) {
            if (tfd < 0) {
                if ((err = ntt_store_tmpname(it->tmpname, sizeof it->tmpname)) != 0 ||
                    (tfd = ntt_store_tmpcreate(st, it->tmpname)) < 0) {
                    err = err ? err : -tfd;
                    it->tmpname[0] = 0;
                    tfd = -1;
                    goto store_err;
                }
            }
            if ((err = write_all(tfd, buf, fill)) != 0)
                goto store_err;
            /* Large files: let writeback run alongside the reading. */
            if (job->durability != DUR_NONE)
                sync_file_range(tfd, (off_t)(total - fill), (off_t)fill, SYNC_FILE_RANGE_WRITE);
            fill = 0;
        }
    }
    it->bytes = total;
    if (total != (unsigned long long)it->size) {
        it->offset = (long long)total;
        if (total < (unsigned long long)it->size)
            fail_item(it, ENODATA, "short file: %llu of %lld bytes", total, it->size);
        else
            fail_item(it, EFBIG, "file longer than its expected %lld bytes", it->size);
        goto out;
    }
    uint8_t d[32];
    ntt_blake3_finalize(&b3, d, sizeof d);
    ntt_hex(d, sizeof d, it->blob);
    if (tfd < 0) {
        int ex = ntt_store_exists(st, it->blob);
        if (ex == 1) {
            it->status = ST_COPIED;
            it->is_new = 0;
            goto out;
        }
        if ((err = ntt_store_tmpname(it->tmpname, sizeof it->tmpname)) != 0 ||
            (tfd = ntt_store_tmpcreate(st, it->tmpname)) < 0) {
            err = err ? err : -tfd;
            it->tmpname[0] = 0;
            tfd = -1;
            goto store_err;
        }
    }
    if (fill && (err = write_all(tfd, buf, fill)) != 0)
        goto store_err;
    if (job->durability == DUR_FSYNC && fsync(tfd) != 0) {
        err = errno;
        goto store_err;
    }
    /* Batch: no writeback is started per file.  sync_file_range here made
     * each thread wait on the device queue once per small file (50,000
     * files: 8.2 s instead of 6.8 s); the batch's syncfs writes them all
     * in one sweep, while the next batch is already being read. */
    err = close(tfd) == 0 ? 0 : errno;
    tfd = -1;
    if (err)
        goto store_err;
    if (job->durability == DUR_BATCH) {
        it->commit = 1;         /* renamed after the batch's syncfs */
        it->status = ST_COPIED;
        close(fd);
        return;
    }
    if ((err = ntt_store_commit(st, it->tmpname, it->blob, job->durability == DUR_FSYNC,
                                &it->is_new)) != 0)
        goto store_err;
    it->tmpname[0] = 0;
    it->status = ST_COPIED;
    close(fd);
    return;
store_err:
    it->offset = (long long)total;
    fail_item(it, err, "store: %s", strerror(err));
    if (store_fatal(err))
        stop_batch(job, err);
out:
    if (tfd >= 0)
        close(tfd);
    if (it->tmpname[0]) {
        unlinkat(st->tmpfd, it->tmpname, 0);
        it->tmpname[0] = 0;
    }
    close(fd);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct job *job = w->job;
    for (;;) {
        size_t gi = __atomic_fetch_add(&job->next, 1, __ATOMIC_RELAXED);
        if (gi >= job->ngroups)
            break;
        size_t g = job->gorder[gi];
        for (size_t k = job->gstart[g]; k < job->gstart[g + 1]; k++) {
            struct item *it = &job->items[job->order[k]];
            double t0 = mono();
            int stop = __atomic_load_n(&job->stop, __ATOMIC_RELAXED);
            if (ntt_interrupted)
                fail_item(it, EINTR, "interrupted");
            else if (stop == ECANCELED)
                fail_item(it, EINTR, "cancelled: the job was closed before it finished");
            else if (stop)
                fail_item(it, stop, "batch stopped: store: %s", strerror(stop));
            else
                copy_one(job, it, w->buf);
            double t1 = mono();
            it->seconds = t1 - t0;
            it->t0 = t0 - job->base;
            it->t1 = t1 - job->base;
            it->thread = w->id;
        }
    }
    return NULL;
}

static int group_cmp(const void *a, const void *b, void *arg)
{
    const struct item *items = arg;
    const struct item *x = &items[*(const size_t *)a], *y = &items[*(const size_t *)b];
    if (x->root != y->root)
        return x->root < y->root ? -1 : 1;
    size_t n = x->dirlen < y->dirlen ? x->dirlen : y->dirlen;
    int c = memcmp(x->path, y->path, n);
    if (c)
        return c;
    if (x->dirlen != y->dirlen)
        return x->dirlen < y->dirlen ? -1 : 1;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    return i < j ? -1 : i > j;
}

static int first_cmp(const void *a, const void *b, void *arg)
{
    const struct job *job = arg;
    size_t x = job->order[job->gstart[*(const size_t *)a]];
    size_t y = job->order[job->gstart[*(const size_t *)b]];
    return x < y ? -1 : x > y;
}

/* Everything a job holds, and the job itself. */
static void job_free(struct job *job)
{
    pthread_mutex_destroy(&job->mu);
    pthread_cond_destroy(&job->cv);
    for (size_t i = 0; job->items && i < job->n; i++) {
        free(job->items[i].path);
        free(job->items[i].zoff);
        free(job->items[i].zlen);
    }
    for (size_t r = 0; r < job->nroots; r++)
        if (job->rootfds[r] >= 0)
            close(job->rootfds[r]);
    free(job->items);
    free(job->rootfds);
    free(job->rooterrs);
    free(job->order);
    free(job->gstart);
    free(job->gorder);
    free(job);
}

/* Commit the temps of a "batch" durability run: syncfs, rename, syncfs. */
static void batch_commit(struct job *job)
{
    int any = 0, err = 0;
    for (size_t i = 0; i < job->n; i++)
        any |= job->items[i].commit;
    if (!any)
        return;
    if (syncfs(job->st->tmpfd) != 0)
        err = errno;
    for (size_t i = 0; i < job->n; i++) {
        struct item *it = &job->items[i];
        if (!it->commit)
            continue;
        int e = err;
        if (!e)
            e = ntt_store_commit(job->st, it->tmpname, it->blob, 0, &it->is_new);
        if (e) {
            unlinkat(job->st->tmpfd, it->tmpname, 0);
            fail_item(it, e, "store: %s", strerror(e));
        }
        it->tmpname[0] = 0;
        it->commit = 0;
    }
    if (syncfs(job->st->byhashfd) != 0) {
        err = errno;
        for (size_t i = 0; i < job->n; i++)
            if (job->items[i].status == ST_COPIED && job->items[i].is_new)
                fail_item(&job->items[i], err, "store: syncfs: %s", strerror(err));
    }
}

static int root_index(struct job *job, const char **names, const char *root)
{
    for (size_t r = 0; r < job->nroots; r++)
        if (strcmp(names[r], root) == 0)
            return (int)r;
    names[job->nroots] = root;
    job->rootfds[job->nroots] = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    job->rooterrs[job->nroots] = job->rootfds[job->nroots] < 0 ? errno : 0;
    return (int)job->nroots++;
}

static void push_results(lua_State *L, struct job *job, int items)
{
    lua_createtable(L, (int)job->n, 0);
    for (size_t i = 0; i < job->n; i++) {
        struct item *it = &job->items[i];
        lua_createtable(L, 0, 10);
        lua_rawgeti(L, items, (lua_Integer)i + 1);
        lua_getfield(L, -1, "id");
        lua_setfield(L, -3, "id");
        lua_pop(L, 1);
        int ok = it->status == ST_COPIED;
        lua_pushboolean(L, ok);
        lua_setfield(L, -2, "ok");
        lua_pushstring(L, ok ? "copied" : "failed");
        lua_setfield(L, -2, "status");
        lua_pushinteger(L, (lua_Integer)it->bytes);
        lua_setfield(L, -2, "bytes");
        lua_pushnumber(L, it->seconds);
        lua_setfield(L, -2, "seconds");
        if (ok) {
            lua_pushstring(L, it->blob);
            lua_setfield(L, -2, "blob");
            lua_pushboolean(L, it->is_new);
            lua_setfield(L, -2, "new");
        } else {
            lua_pushstring(L, ntt_errname(it->err));
            lua_setfield(L, -2, "err");
            lua_pushstring(L, it->msg);
            lua_setfield(L, -2, "msg");
            lua_pushinteger(L, it->offset);
            lua_setfield(L, -2, "offset");
        }
        if (job->trace) {
            lua_pushnumber(L, it->t0);
            lua_setfield(L, -2, "t0");
            lua_pushnumber(L, it->t1);
            lua_setfield(L, -2, "t1");
            lua_pushinteger(L, it->thread);
            lua_setfield(L, -2, "thread");
        }
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

/*
 * Build a job from the Lua arguments (store at 1, items at 2, opts at 3);
 * raises on misuse before holding anything.  On success *out is a heap job
 * ready to run and the thread count is returned.
 */
static size_t job_build(lua_State *L, struct job **out)
{
    struct ntt_store *st = ntt_store_check(L, 1);
    *out = NULL;
    luaL_checktype(L, 2, LUA_TTABLE);
    if (lua_isnoneornil(L, 3)) {
        lua_settop(L, 2);
        lua_newtable(L);
    }
    luaL_checktype(L, 3, LUA_TTABLE);
    size_t threads = 1, bufsize = 1u << 20;
    int durability = DUR_BATCH, trace;
    lua_getfield(L, 3, "threads");
    if (!lua_isnil(L, -1)) {
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > 1024)
            luaL_error(L, "copy: opts.threads must be an integer in 1..1024");
        threads = (size_t)lua_tointeger(L, -1);
    }
    lua_getfield(L, 3, "buffer");
    if (!lua_isnil(L, -1)) {
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 4096 || lua_tointeger(L, -1) > (1 << 30))
            luaL_error(L, "copy: opts.buffer must be an integer in 4096..2^30");
        bufsize = (size_t)lua_tointeger(L, -1);
    }
    lua_getfield(L, 3, "durability");
    if (!lua_isnil(L, -1)) {
        const char *dur = lua_tostring(L, -1);
        if (dur && strcmp(dur, "batch") == 0) durability = DUR_BATCH;
        else if (dur && strcmp(dur, "fsync") == 0) durability = DUR_FSYNC;
        else if (dur && strcmp(dur, "none") == 0) durability = DUR_NONE;
        else luaL_error(L, "copy: durability must be batch, fsync or none");
    }
    lua_getfield(L, 3, "trace");
    trace = lua_toboolean(L, -1);
    lua_pop(L, 4);
    size_t n = (size_t)lua_rawlen(L, 2);
    for (size_t i = 1; i <= n; i++) {
        if (lua_rawgeti(L, 2, (lua_Integer)i) != LUA_TTABLE)
            luaL_error(L, "copy: item %d is not a table", (int)i);
        if (lua_getfield(L, -1, "root") != LUA_TSTRING || lua_getfield(L, -2, "path") != LUA_TSTRING)
            luaL_error(L, "copy: item %d needs string root and path", (int)i);
        if (lua_getfield(L, -3, "size") != LUA_TNUMBER || !lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0)
            luaL_error(L, "copy: item %d needs an integer size >= 0", (int)i);
        int zt = lua_getfield(L, -4, "zero");
        if (zt != LUA_TNIL) {
            if (zt != LUA_TTABLE)
                luaL_error(L, "copy: item %d: zero must be a list of {offset=, length=}", (int)i);
            long long end = 0;
            for (lua_Integer k = 1; lua_rawgeti(L, -1, k) != LUA_TNIL; k++) {
                lua_getfield(L, -1, "offset");
                lua_getfield(L, -2, "length");
                if (!lua_isinteger(L, -2) || !lua_isinteger(L, -1) || lua_tointeger(L, -2) < end ||
                    lua_tointeger(L, -1) < 1 || lua_tointeger(L, -2) > (1LL << 60) ||
                    lua_tointeger(L, -1) > (1LL << 60))
                    luaL_error(L, "copy: item %d: zero[%d] must have integer offset >= the previous "
                               "range's end and length >= 1 (both below 2^60)", (int)i, (int)k);
                end = lua_tointeger(L, -2) + lua_tointeger(L, -1);
                lua_pop(L, 3);
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 5);
    }
    /* Nothing raises from here on but out-of-memory, after freeing. */
    struct job *job = calloc(1, sizeof *job);
    if (!job)
        luaL_error(L, "copy: out of memory");
    job->st = st;
    pthread_mutex_init(&job->mu, NULL);
    pthread_cond_init(&job->cv, NULL);
    job->bufsize = bufsize;
    job->durability = durability;
    job->trace = trace;
    job->n = n;
    job->items = calloc(n ? n : 1, sizeof *job->items);
    job->rootfds = calloc(n ? n : 1, sizeof *job->rootfds);
    job->rooterrs = calloc(n ? n : 1, sizeof *job->rooterrs);
    job->order = calloc(n ? n : 1, sizeof *job->order);
    job->gstart = calloc(n + 1, sizeof *job->gstart);
    const char **names = calloc(n ? n : 1, sizeof *names);
    int oom = !job->items || !job->rootfds || !job->rooterrs || !job->order || !job->gstart || !names;
    for (size_t i = 0; i < n && !oom; i++) {
        struct item *it = &job->items[i];
        lua_rawgeti(L, 2, (lua_Integer)i + 1);
        lua_getfield(L, -1, "root");
        lua_getfield(L, -2, "path");
        lua_getfield(L, -3, "size");
        it->root = root_index(job, names, lua_tostring(L, -3));
        const char *p = lua_tolstring(L, -2, &it->pathlen);
        it->path = malloc(it->pathlen + 1);
        if (!it->path)
            oom = 1;
        else
            memcpy(it->path, p, it->pathlen + 1);
        const char *slash = it->path ? memrchr(it->path, '/', it->pathlen) : NULL;
        it->dirlen = slash ? (size_t)(slash - it->path) : 0;
        it->size = (long long)lua_tointeger(L, -1);
        job->order[i] = i;
        if (lua_getfield(L, -4, "zero") == LUA_TTABLE && (it->nzero = lua_rawlen(L, -1)) > 0) {
            it->zoff = calloc(it->nzero, sizeof *it->zoff);
            it->zlen = calloc(it->nzero, sizeof *it->zlen);
            if (!it->zoff || !it->zlen)
                oom = 1;
            for (size_t k = 0; k < it->nzero && !oom; k++) {
                lua_rawgeti(L, -1, (lua_Integer)k + 1);
                lua_getfield(L, -1, "offset");
                lua_getfield(L, -2, "length");
                it->zoff[k] = (long long)lua_tointeger(L, -2);
                it->zlen[k] = (long long)lua_tointeger(L, -1);
                lua_pop(L, 3);
            }
        } else {
            it->nzero = 0;
        }
        lua_pop(L, 5);          /* names[] point into item strings still held by items */
    }
    free(names);
    if (!oom) {
        qsort_r(job->order, n, sizeof *job->order, group_cmp, job->items);
        for (size_t k = 0; k < n; k++) {
            if (k == 0) {
                job->gstart[job->ngroups++] = 0;
                continue;
            }
            struct item *a = &job->items[job->order[k - 1]], *b = &job->items[job->order[k]];
            if (a->root != b->root || a->dirlen != b->dirlen || memcmp(a->path, b->path, a->dirlen))
                job->gstart[job->ngroups++] = k;
        }
        job->gstart[job->ngroups] = n;
        /* Directories start in the order the caller listed them. */
        job->gorder = calloc(job->ngroups ? job->ngroups : 1, sizeof *job->gorder);
        oom = !job->gorder;
    }
    if (oom) {
        job_free(job);
        luaL_error(L, "copy: out of memory");
        return 0;
    }
    for (size_t g = 0; g < job->ngroups; g++)
        job->gorder[g] = g;
    qsort_r(job->gorder, job->ngroups, sizeof *job->gorder, first_cmp, job);
    if (threads > job->ngroups)
        threads = job->ngroups ? job->ngroups : 1;
    job->threads = threads;
    *out = job;
    return threads;
}

/* Run a built job to the end: worker threads, then the batch commit. */
static void job_run(struct job *job)
{
    size_t threads = job->threads, started = 0;
    struct worker *ws = calloc(threads, sizeof *ws);
    job->base = mono();
    if (ws) {
        for (size_t t = 0; t < threads; t++) {
            ws[t].job = job;
            ws[t].id = (int)t + 1;
            if (posix_memalign((void **)&ws[t].buf, 4096, job->bufsize) != 0) {
                ws[t].buf = NULL;
                break;
            }
            if (pthread_create(&ws[t].tid, NULL, worker_main, &ws[t]) != 0) {
                free(ws[t].buf);
                ws[t].buf = NULL;
                break;
            }
            started++;
        }
        for (size_t t = 0; t < started; t++) {
            pthread_join(ws[t].tid, NULL);
            free(ws[t].buf);
        }
        free(ws);
    }
    for (size_t i = 0; i < job->n; i++)
        if (job->items[i].status == ST_PENDING)
            fail_item(&job->items[i], started ? EINTR : ENOMEM, started ? "not started" : "no worker");
    pthread_mutex_lock(&job->mu);
    job->reads_done = 1;
    pthread_cond_broadcast(&job->cv);
    pthread_mutex_unlock(&job->mu);
    if (job->durability == DUR_BATCH)
        batch_commit(job);
}

static int copy_batch(lua_State *L)
{
    struct job *job;
    job_build(L, &job);
    job_run(job);
    push_results(L, job, 2);
    job_free(job);
    return 1;
}

/* ---- background jobs ---- */

#define COPY_JOB "ntt.CopyJob"

struct cjob {
    struct job *job;            /* NULL once collected or closed */
    pthread_t tid;
    int finished;               /* set by the job's thread (atomic) */
};

static void *job_thread(void *arg)
{
    struct cjob *cj = arg;
    job_run(cj->job);
    __atomic_store_n(&cj->finished, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void cjob_end(struct cjob *cj)
{
    pthread_join(cj->tid, NULL);
    __atomic_fetch_sub(&cj->job->st->busy, 1, __ATOMIC_SEQ_CST);
}

static int copy_start(lua_State *L)
{
    struct job *job;
    if (lua_isnoneornil(L, 3)) {
        lua_settop(L, 2);
        lua_newtable(L);
    }
    lua_settop(L, 3);
    /* The userdata first: job_build may raise, an allocation after it must not. */
    struct cjob *cj = lua_newuserdatauv(L, sizeof *cj, 2);
    memset(cj, 0, sizeof *cj);
    luaL_setmetatable(L, COPY_JOB);
    job_build(L, &job);
    /* The items (for their ids) and the store stay alive with the job. */
    lua_pushvalue(L, 2);
    lua_setiuservalue(L, -2, 1);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 2);
    cj->job = job;
    __atomic_fetch_add(&job->st->busy, 1, __ATOMIC_SEQ_CST);
    int e = pthread_create(&cj->tid, NULL, job_thread, cj);
    if (e != 0) {
        __atomic_fetch_sub(&job->st->busy, 1, __ATOMIC_SEQ_CST);
        cj->job = NULL;
        job_free(job);
        return ntt_fail(L, e, "copy.start: thread");
    }
    return 1;
}

static struct cjob *cjob_check(lua_State *L)
{
    return luaL_checkudata(L, 1, COPY_JOB);
}

static int cjob_wait(lua_State *L)
{
    struct cjob *cj = cjob_check(L);
    if (!cj->job)
        return luaL_error(L, "copy job: already collected or closed");
    cjob_end(cj);
    lua_settop(L, 1);
    lua_getiuservalue(L, 1, 1);
    push_results(L, cj->job, 2);
    job_free(cj->job);
    cj->job = NULL;
    return 1;
}

static int cjob_wait_reads(lua_State *L)
{
    struct cjob *cj = cjob_check(L);
    if (cj->job) {
        struct job *job = cj->job;
        pthread_mutex_lock(&job->mu);
        while (!job->reads_done)
            pthread_cond_wait(&job->cv, &job->mu);
        pthread_mutex_unlock(&job->mu);
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int cjob_done(lua_State *L)
{
    struct cjob *cj = cjob_check(L);
    lua_pushboolean(L, !cj->job || __atomic_load_n(&cj->finished, __ATOMIC_ACQUIRE));
    return 1;
}

static int cjob_close(lua_State *L)
{
    struct cjob *cj = cjob_check(L);
    if (cj->job) {
        stop_batch(cj->job, ECANCELED);
        cjob_end(cj);
        job_free(cj->job);
        cj->job = NULL;
    }
    return 0;
}

static int cjob_tostring(lua_State *L)
{
    struct cjob *cj = cjob_check(L);
    if (!cj->job)
        lua_pushstring(L, "ntt.CopyJob (closed)");
    else
        lua_pushfstring(L, "ntt.CopyJob (%d files, %s)", (int)cj->job->n,
                        __atomic_load_n(&cj->finished, __ATOMIC_ACQUIRE) ? "finished" : "running");
    return 1;
}

static const luaL_Reg cjob_methods[] = {
    {"wait", cjob_wait},
    {"wait_reads", cjob_wait_reads},
    {"done", cjob_done},
    {"close", cjob_close},
    {NULL, NULL},
};

static const luaL_Reg cjob_meta[] = {
    {"__gc", cjob_close},
    {"__close", cjob_close},
    {"__tostring", cjob_tostring},
    {NULL, NULL},
};

static const luaL_Reg copy_funcs[] = {
    {"batch", copy_batch},
    {"start", copy_start},
    {NULL, NULL},
};

int luaopen_ntt_core_copy(lua_State *L)
{
    ntt_newclass(L, COPY_JOB, cjob_methods, cjob_meta);
    luaL_newlib(L, copy_funcs);
    return 1;
}

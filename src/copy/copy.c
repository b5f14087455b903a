/*
 * copy.c - ntt.core.copy: the Lua binding of the copy engine
 * (src/copy/copy_engine.c), which moves files from mounted media into the
 * content-addressed store (src/copy/store.c), hashing in the same pass.
 * Here: options, items, the Job userdata, results to Lua.
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
 *            trace = true (adds t0, t1, thread to each result),
 *            digests = {"sha256"} (each copied file's SHA-256 too, taken on
 *            the same pass: result field sha256)
 *     results: one table per item, same order:
 *       {id=, ok=true, status="copied", blob=hex, bytes=n, new=bool, sha256=hex (digests)
 *        (false: the blob existed: deduplicated), seconds=}
 *       {id=, ok=false, status="failed", err="EIO", errno=5,
 *        phase="open"|"read"|"write"|"store", side="source"|"store",
 *        msg=..., offset=n (bytes read before the failure), bytes=n,
 *        seconds=}
 *       err, errno and phase say what failed; msg is for people only.
 *       side is "store" when the store failed (phase write or store:
 *       the temp, its fsync, the rename, a directory of the store, or
 *       the batch stopped on another file's store error), never the
 *       file: the caller must not count it against the source.
 *       Every EINTR result (signal, or the job closed) says "interrupted".
 *     Misuse (bad arguments, an unknown option key) raises; everything
 *     per file is a result.
 *   start(store, items [, opts]) -> Job: the same batch run in the
 *     background, so the caller can talk to the database meanwhile.
 *     Job:wait() -> results (as batch; once), Job:done() -> bool (never
 *     blocks), Job:wait_reads([timeout]) returns once no source is read
 *     any more (only the batch commit may be left: the next batch's reads
 *     can start) -> true, or false after timeout seconds,
 *     Job:wait_done(timeout) -> bool (the whole job ended, or not yet),
 *     Job:live() -> { {thread=, index=, path=, size=, bytes=, age=} } the
 *     files being read now (index into items; read without stopping the
 *     threads), Job:progress() -> files finished, bytes read so far,
 *     Job:skip(index) skips that item now (its result: err "ECANCELED",
 *     skipped = true; copy_engine.h says how a blocked read ends),
 *     Job:pause(bool) holds the threads between files,
 *     Job:close() cancels what has not started and waits
 *     (idempotent; also __close, __gc).  The store cannot be closed while
 *     one of its jobs runs.
 *
 * How the engine groups, reads, stores and stops: src/copy/copy_engine.c.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include "copy_engine.h"

/* The options copy.batch and copy.start take. */
static const char *const copy_opts[] = {"threads", "durability", "buffer", "trace", "digests", NULL};

static void push_results(lua_State *L, struct copy_job *job, int items)
{
    lua_createtable(L, (int)job->n, 0);
    for (size_t i = 0; i < job->n; i++) {
        struct copy_item *it = &job->items[i];
        lua_createtable(L, 0, 12);
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
            if (it->sha256[0]) {
                lua_pushstring(L, it->sha256);
                lua_setfield(L, -2, "sha256");
            }
            lua_pushboolean(L, it->is_new);
            lua_setfield(L, -2, "new");
        } else {
            /* What failed travels as fields (err, errno, phase), so no
             * caller ever has to read the message to classify it. */
            lua_pushstring(L, ntt_errname(it->err));
            lua_setfield(L, -2, "err");
            lua_pushinteger(L, it->err);
            lua_setfield(L, -2, "errno");
            lua_pushstring(L, copy_phase_name(it->phase));
            lua_setfield(L, -2, "phase");
            lua_pushstring(L, it->phase == PHASE_WRITE || it->phase == PHASE_STORE ? "store" : "source");
            lua_setfield(L, -2, "side");
            lua_pushstring(L, it->msg);
            lua_setfield(L, -2, "msg");
            lua_pushinteger(L, it->offset);
            lua_setfield(L, -2, "offset");
            if (it->err == ECANCELED && it->skip) {
                lua_pushboolean(L, 1);
                lua_setfield(L, -2, "skipped");
            }
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
 * Build a job from the Lua arguments of fn (store at 1, items at 2, opts
 * at 3); raises on misuse (an unknown option key too) before holding
 * anything.  Returns a heap job, planned and ready to run.
 */
static struct copy_job *job_build(lua_State *L, const char *fn)
{
    struct ntt_store *st = ntt_store_check(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    if (lua_isnoneornil(L, 3)) {
        lua_settop(L, 2);
        lua_newtable(L);
    }
    luaL_checktype(L, 3, LUA_TTABLE);
    ntt_checkopts(L, 3, fn, copy_opts);
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
    int sha256 = 0;
    if (lua_getfield(L, 3, "digests") != LUA_TNIL) {
        if (!lua_istable(L, -1))
            luaL_error(L, "copy: opts.digests must be a list of digest names (\"sha256\")");
        for (lua_Integer k = 1; lua_rawgeti(L, -1, k) != LUA_TNIL; k++) {
            const char *d = lua_tostring(L, -1);
            if (!d || strcmp(d, "sha256") != 0)
                luaL_error(L, "copy: opts.digests[%d]: unknown digest (known: sha256)", (int)k);
            sha256 = 1;
            lua_pop(L, 1);
        }
        lua_pop(L, 1);          /* the nil that ended the list */
    }
    lua_pop(L, 5);
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
    const char **names = calloc(n ? n : 1, sizeof *names);
    struct copy_job *job = names ? copy_job_new(st, n, bufsize, durability, trace) : NULL;
    int oom = !job;
    if (job)
        job->sha256 = sha256;
    for (size_t i = 0; i < n && !oom; i++) {
        struct copy_item *it = &job->items[i];
        lua_rawgeti(L, 2, (lua_Integer)i + 1);
        lua_getfield(L, -1, "root");
        lua_getfield(L, -2, "path");
        lua_getfield(L, -3, "size");
        it->root = copy_job_root(job, names, lua_tostring(L, -3));
        const char *p = lua_tolstring(L, -2, &it->pathlen);
        it->path = malloc(it->pathlen + 1);
        if (!it->path)
            oom = 1;
        else
            memcpy(it->path, p, it->pathlen + 1);
        const char *slash = it->path ? memrchr(it->path, '/', it->pathlen) : NULL;
        it->dirlen = slash ? (size_t)(slash - it->path) : 0;
        it->size = (long long)lua_tointeger(L, -1);
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
    if (!oom && copy_job_plan(job, threads) != 0)
        oom = 1;
    if (oom) {
        if (job)
            copy_job_free(job);
        luaL_error(L, "copy: out of memory");
    }
    return job;
}

static int copy_batch(lua_State *L)
{
    struct copy_job *job = job_build(L, "copy.batch");
    copy_job_run(job);
    push_results(L, job, 2);
    copy_job_free(job);
    return 1;
}

/* ---- background jobs ---- */

#define COPY_JOB "ntt.CopyJob"

struct cjob {
    struct copy_job *job;       /* NULL once collected or closed */
    pthread_t tid;
    int finished;               /* set by the job's thread (atomic) */
};

static void *job_thread(void *arg)
{
    struct cjob *cj = arg;
    copy_job_run(cj->job);
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
    if (lua_isnoneornil(L, 3)) {
        lua_settop(L, 2);
        lua_newtable(L);
    }
    lua_settop(L, 3);
    /* The userdata first: job_build may raise, an allocation after it must not. */
    struct cjob *cj = lua_newuserdatauv(L, sizeof *cj, 2);
    memset(cj, 0, sizeof *cj);
    luaL_setmetatable(L, COPY_JOB);
    struct copy_job *job = job_build(L, "copy.start");
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
        copy_job_free(job);
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
    copy_job_free(cj->job);
    cj->job = NULL;
    return 1;
}

static int cjob_wait_reads(lua_State *L)
{
    struct cjob *cj = cjob_check(L);
    int r = 1;
    if (cj->job && lua_isnoneornil(L, 2))
        copy_job_wait_reads(cj->job);
    else if (cj->job)
        r = copy_job_timedwait(cj->job, 0, luaL_checknumber(L, 2));
    lua_pushboolean(L, r);
    return 1;
}

static int cjob_wait_done(lua_State *L)
{
    struct cjob *cj = cjob_check(L);
    double t = luaL_checknumber(L, 2);
    lua_pushboolean(L, !cj->job || copy_job_timedwait(cj->job, 1, t));
    return 1;
}

static int cjob_live(lua_State *L)
{
    struct cjob *cj = cjob_check(L);
    lua_newtable(L);
    struct copy_job *job = cj->job;
    if (!job || !job->live)
        return 1;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    int n = 0;
    /* The mutex is only taken per file by the threads: never held across a read. */
    pthread_mutex_lock(&job->mu);
    for (size_t t = 0; t < job->threads; t++) {
        struct copy_live *lv = &job->live[t];
        if (!lv->item)
            continue;
        struct copy_item *it = &job->items[lv->item - 1];
        lua_createtable(L, 0, 6);
        lua_pushinteger(L, (lua_Integer)t + 1);
        lua_setfield(L, -2, "thread");
        lua_pushinteger(L, (lua_Integer)lv->item);
        lua_setfield(L, -2, "index");
        lua_pushlstring(L, it->path, it->pathlen);
        lua_setfield(L, -2, "path");
        lua_pushinteger(L, it->size);
        lua_setfield(L, -2, "size");
        lua_pushinteger(L, (lua_Integer)__atomic_load_n(&lv->bytes, __ATOMIC_RELAXED));
        lua_setfield(L, -2, "bytes");
        lua_pushnumber(L, now - lv->t0);
        lua_setfield(L, -2, "age");
        lua_rawseti(L, -2, ++n);
    }
    pthread_mutex_unlock(&job->mu);
    return 1;
}

static int cjob_progress(lua_State *L)
{
    struct cjob *cj = cjob_check(L);
    struct copy_job *job = cj->job;
    lua_pushinteger(L, job ? (lua_Integer)__atomic_load_n(&job->files_done, __ATOMIC_RELAXED) : 0);
    lua_pushinteger(L, job ? (lua_Integer)__atomic_load_n(&job->bytes_read, __ATOMIC_RELAXED) : 0);
    return 2;
}

static int cjob_skip(lua_State *L)
{
    struct cjob *cj = cjob_check(L);
    lua_Integer i = luaL_checkinteger(L, 2);
    if (!cj->job || i < 1 || (size_t)i > cj->job->n)
        return luaL_error(L, "copy job: no item %d (or the job ended)", (int)i);
    copy_job_skip(cj->job, (size_t)i - 1);
    lua_pushboolean(L, 1);
    return 1;
}

static int cjob_pause(lua_State *L)
{
    struct cjob *cj = cjob_check(L);
    if (cj->job)
        copy_job_pause(cj->job, lua_toboolean(L, 2));
    return 0;
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
        copy_job_cancel(cj->job);
        cjob_end(cj);
        copy_job_free(cj->job);
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
    {"wait_done", cjob_wait_done},
    {"live", cjob_live},
    {"progress", cjob_progress},
    {"skip", cjob_skip},
    {"pause", cjob_pause},
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

/*
 * verify.c - ntt.core.verify: many files re-hashed (BLAKE3) at once, for
 * `ntt verify` and the verify stage (lua/ntt/verify.lua).
 *
 * Small files are the common case of a store, and one file is too little
 * work to split: several files are hashed side by side, one per thread.
 * A file of 64 MiB or more is tree-hashed on every thread instead
 * (hash_threads.c), before the small ones, unless a rate is asked for (a
 * throttled pass needs no parallel tree); its segments are hashed in the
 * page cache through a mapping, no copy (a quarter of the time on a warm
 * cache here), a read error inside one is EIO like a failed read.  A rate is shared by all
 * threads: each block read is paid for against one clock.
 *
 * Lua API (ntt.core.verify).  Misuse raises; expected failures return
 * nil, msg, errname ("EINTR" on ^C).
 *   files(paths [, { threads = N, rate = bytes per second }]) -> results
 *       paths: an array of file names.  threads: how many files at once
 *       (default: the CPUs online, at most 16); rate: 0 or nil for no
 *       limit.  results[i] = { blake3 = hex, size = bytes read } or
 *       { err = errname, msg = text } for a file that could not be read
 *       (ENOENT for a missing one): a file's failure is its own, never
 *       the call's.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "ntt.h"
#include "blake3.h"
#include "hash_threads.h"

#define BLOCK ((size_t)1 << 20)
#define BIG ((uint64_t)64 << 20)
#define SEG ((uint64_t)16 << 20)

typedef struct {
    char *path;
    int big;                     /* tree-hashed on every thread */
    int err;                     /* errno, 0 when hashed */
    uint64_t size;
    uint8_t out[NTT_BLAKE3_OUT_LEN];
} Item;

typedef struct {
    Item *items;
    size_t n, next;              /* next item to take (atomic) */
    int threads;
    double rate;                 /* bytes per second, 0: none */
    double start;
    uint64_t paid;               /* bytes read so far (under lock) */
    pthread_mutex_t lock;
} Pool;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Pay for n bytes: sleep until the shared clock allows them. */
static void pay(Pool *p, size_t n)
{
    if (p->rate <= 0)
        return;
    pthread_mutex_lock(&p->lock);
    p->paid += n;
    double due = p->start + (double)p->paid / p->rate;
    pthread_mutex_unlock(&p->lock);
    double wait = due - now_s();
    while (wait > 0 && !ntt_interrupted) {
        double step = wait > 0.1 ? 0.1 : wait;
        struct timespec ts = {(time_t)step, (long)((step - (double)(time_t)step) * 1e9)};
        nanosleep(&ts, NULL);
        wait = due - now_s();
    }
}

/* Read fd from *total to its end into b3: 0 or an errno. */
static int read_rest(Pool *p, int fd, uint8_t *buf, ntt_blake3 *b3, uint64_t *total)
{
    for (;;) {
        if (ntt_interrupted)
            return EINTR;
        ssize_t r = read(fd, buf, BLOCK);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return errno;
        if (r == 0)
            return 0;
        pay(p, (size_t)r);
        ntt_blake3_update(b3, buf, (size_t)r);
        *total += (uint64_t)r;
    }
}

static void hash_one(Pool *p, Item *it, uint8_t *buf)
{
    int fd = open(it->path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        it->err = errno;
        return;
    }
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    ntt_blake3 b3;
    ntt_blake3_init(&b3);
    uint64_t total = 0;
    int err = 0;
    if (it->big) {
        uint64_t nseg = it->size / SEG;
        err = ntt_hash_threads_mapped(fd, &b3, SEG, nseg, p->threads);
        total = err ? 0 : nseg * SEG;
        if (!err && lseek(fd, (off_t)total, SEEK_SET) < 0)
            err = errno;
    }
    if (!err)
        err = read_rest(p, fd, buf, &b3, &total);
    close(fd);
    it->err = err;
    it->size = total;
    if (!err)
        ntt_blake3_finalize(&b3, it->out, NTT_BLAKE3_OUT_LEN);
}

static void *worker(void *arg)
{
    Pool *p = arg;
    uint8_t *buf = malloc(BLOCK);
    for (;;) {
        size_t i = __atomic_fetch_add(&p->next, 1, __ATOMIC_SEQ_CST);
        if (i >= p->n)
            break;
        Item *it = &p->items[i];
        if (it->big)
            continue;
        if (!buf || ntt_interrupted) {
            it->err = buf ? EINTR : ENOMEM;
            continue;
        }
        hash_one(p, it, buf);
    }
    free(buf);
    return NULL;
}

static const char *const verify_keys[] = {"threads", "rate", NULL};

static void push_hex(lua_State *L, const uint8_t *b, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    char s[2 * NTT_BLAKE3_OUT_LEN];
    for (size_t i = 0; i < n; i++) {
        s[2 * i] = digits[b[i] >> 4];
        s[2 * i + 1] = digits[b[i] & 15];
    }
    lua_pushlstring(L, s, 2 * n);
}

static void free_items(Item *items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(items[i].path);
    free(items);
}

static int v_files(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = ncpu > 0 ? (int)ncpu : 1;
    double rate = 0;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        ntt_checkopts(L, 2, "verify.files", verify_keys);
        if (lua_getfield(L, 2, "threads") != LUA_TNIL)
            threads = (int)luaL_checkinteger(L, -1);
        if (lua_getfield(L, 2, "rate") != LUA_TNIL)
            rate = luaL_checknumber(L, -1);
        lua_pop(L, 2);
    }
    luaL_argcheck(L, rate >= 0, 2, "rate must be 0 or more bytes per second");
    if (threads < 1)
        threads = 1;
    if (threads > NTT_HASH_THREADS_MAX)
        threads = NTT_HASH_THREADS_MAX;
    size_t n = (size_t)luaL_len(L, 1);
    Item *items = calloc(n ? n : 1, sizeof *items);
    if (!items)
        return ntt_fail(L, ENOMEM, "verify.files");
    for (size_t i = 0; i < n; i++) {
        lua_geti(L, 1, (lua_Integer)i + 1);
        const char *s = lua_tostring(L, -1);
        if (!s) {
            free_items(items, i);
            return luaL_error(L, "verify.files: paths[%d] must be a string", (int)i + 1);
        }
        items[i].path = strdup(s);
        lua_pop(L, 1);
        if (!items[i].path) {
            free_items(items, i);
            return ntt_fail(L, ENOMEM, "verify.files");
        }
        struct stat sb;
        items[i].big = rate <= 0 && threads >= 2 && stat(s, &sb) == 0 && S_ISREG(sb.st_mode) &&
                       (uint64_t)sb.st_size >= BIG;
        if (items[i].big)
            items[i].size = (uint64_t)sb.st_size;
    }
    Pool p = {.items = items, .n = n, .threads = threads, .rate = rate, .start = now_s()};
    pthread_mutex_init(&p.lock, NULL);
    /* The big ones first, each on every thread. */
    uint8_t *buf = malloc(BLOCK);
    for (size_t i = 0; i < n; i++) {
        if (!items[i].big)
            continue;
        if (!buf || ntt_interrupted)
            items[i].err = buf ? EINTR : ENOMEM;
        else
            hash_one(&p, &items[i], buf);
    }
    free(buf);
    pthread_t tid[NTT_HASH_THREADS_MAX];
    int started = 0;
    for (int t = 1; t < threads && (size_t)t < n; t++) {
        if (pthread_create(&tid[started], NULL, worker, &p) != 0)
            break;
        started++;
    }
    worker(&p);
    for (int t = 0; t < started; t++)
        pthread_join(tid[t], NULL);
    pthread_mutex_destroy(&p.lock);
    if (ntt_interrupted) {
        free_items(items, n);
        return ntt_fail_interrupted(L);
    }
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        Item *it = &items[i];
        lua_createtable(L, 0, 2);
        if (it->err) {
            lua_pushstring(L, ntt_errname(it->err));
            lua_setfield(L, -2, "err");
            lua_pushfstring(L, "%s: %s", it->path, strerror(it->err));
            lua_setfield(L, -2, "msg");
        } else {
            push_hex(L, it->out, NTT_BLAKE3_OUT_LEN);
            lua_setfield(L, -2, "blake3");
            lua_pushinteger(L, (lua_Integer)it->size);
            lua_setfield(L, -2, "size");
        }
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    free_items(items, n);
    return 1;
}

int luaopen_ntt_core_verify(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"files", v_files},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}

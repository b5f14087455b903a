/*
 * hash.c - ntt.core.hash: BLAKE3 for Lua (the algorithm is src/blake3/blake3.c).
 *
 * Lua API (ntt.core.hash):
 *   new()                 -> Hasher (plain BLAKE3)
 *   keyed(key)            -> Hasher (keyed mode; key is exactly 32 bytes, else error)
 *   derive_key(context)   -> Hasher (key derivation: feed the key material)
 *   sum(data [, nbytes])  -> hex digest of a string (default 32 bytes)
 *   file(path [, nbytes [, how [, seg_mib]]]) -> hex, size | nil, msg, errname
 *                            a large regular file is hashed from a shared
 *                            read-only mapping or read in 1 MiB blocks,
 *                            whichever is faster (an I/O error in the
 *                            mapping is EIO, not a crash), others read;
 *                            how "map" or "read" forces one way (tests,
 *                            benchmarks; default "auto"); a file of 64 MiB
 *                            or more is hashed on one thread per CPU (16 MiB
 *                            segments, hash_threads.c) when there are two or
 *                            more; how "threads" forces that (seg_mib, a
 *                            4th argument, sets the segment: tests);
 *                            "interrupted"/
 *                            EINTR when SIGINT/SIGTERM arrives meanwhile
 *   hex(bytes)            -> lowercase hex of a string
 *   simd([lanes])         -> lanes in use (16, 8, 4 or 1); with an argument,
 *                            use at most that many (tests; 0 = best)
 *
 * Hasher (ntt.Hasher; closing it is optional, __close/__gc do it):
 *   h:update(data)        -> h
 *   h:digest([nbytes])    -> raw bytes (default 32; any length: XOF)
 *   h:hexdigest([nbytes]) -> lowercase hex
 *   h:reset()             -> h, back to empty input (mode and key kept)
 *   h:close()             idempotent; later use raises an error
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "ntt.h"
#include "blake3.h"
#include "hash_threads.h"

#define HASHER "ntt.Hasher"
#define FILE_BLOCK (1u << 20)

typedef struct {
    ntt_blake3 b3;
    int closed;
} Hasher;

static Hasher *hasher_check(lua_State *L)
{
    Hasher *h = luaL_checkudata(L, 1, HASHER);
    if (h->closed)
        luaL_error(L, "attempt to use a closed hasher");
    return h;
}

static void push_hex(lua_State *L, const uint8_t *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    luaL_Buffer b;
    char *s = luaL_buffinitsize(L, &b, 2 * n);
    for (size_t i = 0; i < n; i++) {
        s[2 * i] = digits[p[i] >> 4];
        s[2 * i + 1] = digits[p[i] & 15];
    }
    luaL_pushresultsize(&b, 2 * n);
}

static size_t opt_len(lua_State *L, int idx)
{
    lua_Integer n = luaL_optinteger(L, idx, NTT_BLAKE3_OUT_LEN);
    luaL_argcheck(L, n >= 0 && n <= (1 << 26), idx, "output length out of range");
    return (size_t)n;
}

static Hasher *hasher_new(lua_State *L)
{
    return ntt_newudata(L, sizeof(Hasher), HASHER);
}

static int hash_new(lua_State *L)
{
    ntt_blake3_init(&hasher_new(L)->b3);
    return 1;
}

static int hash_keyed(lua_State *L)
{
    size_t len;
    const char *key = luaL_checklstring(L, 1, &len);
    luaL_argcheck(L, len == NTT_BLAKE3_KEY_LEN, 1, "key must be 32 bytes");
    ntt_blake3_init_keyed(&hasher_new(L)->b3, (const uint8_t *)key);
    return 1;
}

static int hash_derive_key(lua_State *L)
{
    size_t len;
    const char *ctx = luaL_checklstring(L, 1, &len);
    ntt_blake3_init_derive_raw(&hasher_new(L)->b3, ctx, len);
    return 1;
}

static int hash_sum(lua_State *L)
{
    size_t len, n = opt_len(L, 2);
    const char *s = luaL_checklstring(L, 1, &len);
    ntt_blake3 b3;
    ntt_blake3_init(&b3);
    ntt_blake3_update(&b3, s, len);
    uint8_t *out = lua_newuserdatauv(L, n ? n : 1, 0);
    ntt_blake3_finalize(&b3, out, n);
    push_hex(L, out, n);
    return 1;
}

static int hash_hex(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    push_hex(L, (const uint8_t *)s, len);
    return 1;
}

static int hash_simd(lua_State *L)
{
    if (!lua_isnoneornil(L, 1))
        ntt_blake3_set_simd_degree((int)luaL_checkinteger(L, 1));
    lua_pushinteger(L, ntt_blake3_simd_degree());
    return 1;
}

/*
 * hash.file gets at the bytes of a large regular file one of two ways:
 * hashing the page cache in place through a mapping, populated 8 MiB
 * ahead with MADV_POPULATE_READ so that page faults come in batches, or
 * reading it into one aligned 1 MiB buffer (an aligned subtree of 1024
 * chunks, hashed in one wide pass while it sits in L2).  The mapping saves
 * the copy (about 0.1 s per GiB), but every page-table entry costs
 * something on first touch, and on some hosts far more than the copy (a VM
 * here: a warm 1 GiB file written in 4 KiB pages hashed at 1.3 GB/s mapped
 * and 3 GB/s read; the same file in large folios 5% faster mapped).  Which
 * one wins depends on the host and on how the file got into the cache, so
 * a file of 64 MiB or more starts mapped, times a few steps each way (CPU
 * time of this thread) and reads the rest only if that is clearly faster;
 * the digest is the same either way.  Smaller files are read.
 *
 * A read error inside the mapping arrives as SIGBUS, which the handler
 * turns into a jump back here and EIO.
 */
#define MAP_MIN ((uint64_t)64 << 20)
#define MAP_WINDOW ((size_t)256 << 20)
#define STEP ((size_t)8 << 20)

__thread sigjmp_buf *ntt_bus_jump;
static struct sigaction bus_old;

static void on_sigbus(int sig, siginfo_t *si, void *ctx)
{
    if (ntt_bus_jump)
        siglongjmp(*ntt_bus_jump, 1);
    /* Not ours: behave as before. */
    sigaction(SIGBUS, &bus_old, NULL);
    if (!(bus_old.sa_flags & SA_SIGINFO) && bus_old.sa_handler != SIG_DFL &&
        bus_old.sa_handler != SIG_IGN) {
        bus_old.sa_handler(sig);
        return;
    }
    if ((bus_old.sa_flags & SA_SIGINFO) && bus_old.sa_sigaction) {
        bus_old.sa_sigaction(sig, si, ctx);
        return;
    }
    raise(sig);
}

void ntt_bus_install(void)
{
    static int done;
    if (done)
        return;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGBUS, &sa, &bus_old) == 0)
        done = 1;
}

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/*
 * Read and hash from the file position until EOF or *total reaches limit:
 * 0, EINTR or an errno.
 */
static int read_hash(int fd, uint8_t *buf, ntt_blake3 *b3, uint64_t *total,
                     uint64_t limit)
{
    while (*total < limit) {
        if (ntt_interrupted)
            return EINTR;
        size_t want = limit - *total < FILE_BLOCK ? (size_t)(limit - *total) : FILE_BLOCK;
        ssize_t r = read(fd, buf, want);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (r == 0)
            break;
        ntt_blake3_update(b3, buf, (size_t)r);
        *total += (uint64_t)r;
    }
    return 0;
}

/*
 * Prefault [from, to) of a mapping; after the first failure (EINVAL before
 * Linux 5.14, EFAULT where the hash will meet SIGBUS) *ok is 0 and the
 * faults are left to the hash.
 */
static void populate(uint8_t *m, size_t from, size_t to, int *ok)
{
    if (*ok && from < to && madvise(m + from, to - from, MADV_POPULATE_READ) != 0)
        *ok = 0;
}

/* hash_window's loop, out of reach of its siglongjmp: 0 or EINTR. */
static __attribute__((noinline)) int hash_steps(uint8_t *m, size_t from, size_t len,
                                                ntt_blake3 *b3, volatile uint64_t *done)
{
    int pop_ok = 1;
    size_t pop = from;
    for (size_t p = from; p < len; p += FILE_BLOCK) {
        if (ntt_interrupted)
            return EINTR;
        /* Keep one to two steps populated ahead of the hash. */
        if (pop < len && pop - p <= STEP) {
            size_t to = p + 2 * STEP < len ? p + 2 * STEP : len;
            populate(m, pop, to, &pop_ok);
            pop = to;
        }
        size_t n = len - p < FILE_BLOCK ? len - p : FILE_BLOCK;
        ntt_blake3_update(b3, m + p, n);
        *done += n;
    }
    return 0;
}

/* Hash [from, len) of a mapped window: 0, EINTR or EIO (SIGBUS). */
static int hash_window(uint8_t *m, size_t from, size_t len, ntt_blake3 *b3,
                       volatile uint64_t *done)
{
    sigjmp_buf jb;
    if (sigsetjmp(jb, 1)) {
        ntt_bus_jump = NULL;
        return EIO;
    }
    ntt_bus_jump = &jb;
    int err = hash_steps(m, from, len, b3, done);
    ntt_bus_jump = NULL;
    return err;
}

/*
 * Hash the first RACE_STEPS steps of the file (mapped as m): warm-up steps
 * mapped, then mapped, read, read, mapped, timed (the order cancels a
 * clock still ramping up).  0: go on mapped; -1: reading was clearly
 * faster (or the file shrank), go on reading; or an errno.
 */
#define WARM_STEPS 4
#define RACE_STEPS (WARM_STEPS + 4)

static int race(int fd, uint8_t *m, ntt_blake3 *b3, volatile uint64_t *done,
                uint8_t *buf)
{
    double mapped = 0, reading = 0;
    int err = hash_window(m, 0, WARM_STEPS * STEP, b3, done);
    for (int k = 0; k < 4 && !err; k++) {
        size_t from = (WARM_STEPS + k) * STEP, to = from + STEP;
        double t = cpu_seconds();
        if (k == 0 || k == 3) {
            err = hash_window(m, from, to, b3, done);
            mapped += cpu_seconds() - t;
            continue;
        }
        uint64_t at = *done;
        if (lseek(fd, (off_t)at, SEEK_SET) < 0)
            return errno;
        err = read_hash(fd, buf, b3, &at, to);
        *done = at;
        reading += cpu_seconds() - t;
        if (!err && at < to)
            return -1;
    }
    if (!err && reading * 1.1 < mapped)
        err = -1;
    return err;
}

/*
 * Hash a file of `size` bytes mapped, window by window, unless (race_first,
 * size >= MAP_MIN) reading proves faster: 0 (all hashed), -1 (the rest is
 * to be read from *total on), or an errno.
 */
static int hash_mapped(int fd, uint64_t size, int race_first, ntt_blake3 *b3,
                       uint64_t *total, uint8_t *buf)
{
    volatile uint64_t done = 0;
    int err = 0;
    ntt_bus_install();
    for (uint64_t off = 0; off < size && !err; off += MAP_WINDOW) {
        size_t len = size - off < MAP_WINDOW ? (size_t)(size - off) : MAP_WINDOW;
        uint8_t *m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, (off_t)off);
        if (m == MAP_FAILED) {
            err = -1;
            break;
        }
        madvise(m, len, MADV_SEQUENTIAL);
        size_t from = 0;
        if (off == 0 && race_first && len >= RACE_STEPS * STEP) {
            err = race(fd, m, b3, &done, buf);
            from = RACE_STEPS * STEP;
        }
        if (!err)
            err = hash_window(m, from, len, b3, &done);
        munmap(m, len);
    }
    *total = done;
    return err;
}

/*
 * A file of THREAD_MIN bytes or more, on a host with two CPUs or more, is
 * hashed in 16 MiB segments on one thread per CPU (hash_threads.c): the
 * leading whole segments, then the rest read here.
 */
#define THREAD_MIN ((uint64_t)64 << 20)
#define THREAD_SEG_MIB 16

static int hash_file(lua_State *L)
{
    static const char *const hows[] = {"auto", "map", "read", "threads", NULL};
    const char *path = luaL_checkstring(L, 1);
    size_t n = opt_len(L, 2);
    int how = luaL_checkoption(L, 3, "auto", hows);
    lua_Integer seg_mib = luaL_optinteger(L, 4, THREAD_SEG_MIB);
    luaL_argcheck(L, seg_mib >= 1 && seg_mib <= 1024 && !(seg_mib & (seg_mib - 1)), 4,
                  "a power of two from 1 to 1024 (MiB)");
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return ntt_fail(L, errno, path);
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    ntt_blake3 b3;
    ntt_blake3_init(&b3);
    uint64_t total = 0;
    int err = 0, threaded = 0;
    uint8_t *buf = NULL;
    if (posix_memalign((void **)&buf, 4096, FILE_BLOCK) != 0)
        err = ENOMEM;
    struct stat sb;
    int regular = !err && fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > 0;
    uint64_t seg = (uint64_t)seg_mib << 20;
    if (regular && (how == 3 || (how == 0 && ncpu >= 2 && (uint64_t)sb.st_size >= THREAD_MIN)) &&
        (uint64_t)sb.st_size / seg >= 2) {
        uint64_t nseg = (uint64_t)sb.st_size / seg;
        threaded = 1;
        err = ntt_hash_threads(fd, &b3, seg, nseg, ncpu >= 2 ? (int)ncpu : 2);
        total = err ? 0 : nseg * seg;
        if (!err)
            err = lseek(fd, (off_t)total, SEEK_SET) < 0 ? errno : 0;
    }
    if (!threaded && regular && how != 2 && how != 3 &&
        ((uint64_t)sb.st_size >= MAP_MIN || how == 1)) {
        memset(buf, 0, FILE_BLOCK);     /* its page faults are not the race's */
        err = hash_mapped(fd, (uint64_t)sb.st_size, how == 0, &b3, &total, buf);
        /* Read what was not mapped, or what the file has grown by meanwhile. */
        if (err <= 0)
            err = lseek(fd, (off_t)total, SEEK_SET) < 0 ? errno : 0;
    }
    if (!err)
        err = read_hash(fd, buf, &b3, &total, UINT64_MAX);
    free(buf);
    close(fd);
    if (err == EINTR)
        return ntt_fail_interrupted(L);
    if (err)
        return ntt_failf(L, err, "%s: at byte %llu", path, (unsigned long long)total);
    uint8_t *out = lua_newuserdatauv(L, n ? n : 1, 0);
    ntt_blake3_finalize(&b3, out, n);
    push_hex(L, out, n);
    lua_pushinteger(L, (lua_Integer)total);
    return 2;
}

static int hasher_update(lua_State *L)
{
    Hasher *h = hasher_check(L);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    ntt_blake3_update(&h->b3, s, len);
    lua_settop(L, 1);
    return 1;
}

static int hasher_digest(lua_State *L)
{
    Hasher *h = hasher_check(L);
    size_t n = opt_len(L, 2);
    luaL_Buffer b;
    uint8_t *out = (uint8_t *)luaL_buffinitsize(L, &b, n);
    ntt_blake3_finalize(&h->b3, out, n);
    luaL_pushresultsize(&b, n);
    return 1;
}

static int hasher_hexdigest(lua_State *L)
{
    Hasher *h = hasher_check(L);
    size_t n = opt_len(L, 2);
    uint8_t *out = lua_newuserdatauv(L, n ? n : 1, 0);
    ntt_blake3_finalize(&h->b3, out, n);
    push_hex(L, out, n);
    return 1;
}

static int hasher_reset(lua_State *L)
{
    Hasher *h = hasher_check(L);
    ntt_blake3_reset(&h->b3);
    lua_settop(L, 1);
    return 1;
}

static int hasher_close(lua_State *L)
{
    Hasher *h = luaL_checkudata(L, 1, HASHER);
    h->closed = 1;
    return 0;
}

static int hasher_tostring(lua_State *L)
{
    Hasher *h = luaL_checkudata(L, 1, HASHER);
    if (h->closed)
        lua_pushstring(L, "ntt.Hasher (closed)");
    else
        lua_pushfstring(L, "ntt.Hasher (%p)", (void *)h);
    return 1;
}

static const luaL_Reg hasher_methods[] = {
    {"close", hasher_close},
    {"digest", hasher_digest},
    {"hexdigest", hasher_hexdigest},
    {"reset", hasher_reset},
    {"update", hasher_update},
    {NULL, NULL},
};

static const luaL_Reg hasher_meta[] = {
    {"__close", hasher_close},
    {"__gc", hasher_close},
    {"__tostring", hasher_tostring},
    {NULL, NULL},
};

static const luaL_Reg hash_funcs[] = {
    {"derive_key", hash_derive_key},
    {"file", hash_file},
    {"hex", hash_hex},
    {"keyed", hash_keyed},
    {"new", hash_new},
    {"simd", hash_simd},
    {"sum", hash_sum},
    {NULL, NULL},
};

int luaopen_ntt_core_hash(lua_State *L)
{
    ntt_newclass(L, HASHER, hasher_methods, hasher_meta);
    luaL_newlib(L, hash_funcs);
    return 1;
}

/*
 * store.c - ntt.core.store: the content-addressed blob store.
 *
 * Layout under a root:  by-hash/AA/BB/<64-hex BLAKE3>  (files 0644, dirs
 * 0755 whatever the umask) and tmp/ (staging on the same filesystem).  A
 * blob reaches its final name only complete, by rename without replace;
 * nothing overwrites or deletes a blob.  Every blob is written through
 * the temp calls of src/copy/store.h (open, write, close, commit or drop):
 * st:put here and the copy engine (src/copy/copy_engine.c) alike.
 *
 * Lua API (ntt.core.store):
 *   open(root)            -> Store | nil, msg, errname
 *                            creates root, by-hash and tmp when missing
 *
 * Store (ntt.Store):
 *   st:root()             -> the root path
 *   st:path(blob)         -> "<root>/by-hash/AA/BB/<blob>" (raises on a
 *                            malformed blob id: 64 lowercase hex)
 *   st:has(blob)          -> size | nil (absent) | nil, msg, errname
 *   st:put(data)          -> blob, new (false: already stored) | nil, msg, errname
 *                            the string is written, fsynced and committed
 *   st:clean_tmp(age)     -> removed count | nil, msg, errname; removes
 *                            entries of <root>/tmp older than age seconds
 *                            (only there, never anything in by-hash)
 *   st:close()            idempotent; __close and __gc call it
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "store.h"
#include "blake3.h"

static int valid_hex(const char *s, size_t len)
{
    if (len != 64)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

static const char *check_blob(lua_State *L, int idx)
{
    size_t len;
    const char *s = luaL_checklstring(L, idx, &len);
    luaL_argcheck(L, valid_hex(s, len), idx, "blob id must be 64 lowercase hex digits");
    return s;
}

struct ntt_store *ntt_store_check(lua_State *L, int idx)
{
    struct ntt_store *st = luaL_checkudata(L, idx, NTT_STORE);
    if (st->closed)
        luaL_error(L, "attempt to use a closed store");
    return st;
}

/* mkdirat with mode 0755 regardless of the umask; EEXIST is success. */
static int mkdir0755(int dirfd, const char *name)
{
    if (mkdirat(dirfd, name, 0755) == 0)
        return fchmodat(dirfd, name, 0755, 0) == 0 ? 0 : errno;
    return errno == EEXIST ? 0 : errno;
}

/* A temp name unique across processes and machines; 0 or an errno. */
static int tmpname(char *buf, size_t size)
{
    static unsigned long counter;
    static char host[64];
    static int host_done;
    if (!__atomic_load_n(&host_done, __ATOMIC_ACQUIRE)) {
        char h[256] = "host";
        gethostname(h, sizeof h - 1);
        size_t j = 0;
        for (size_t i = 0; h[i] && j < sizeof host - 1; i++) {
            char c = h[i];
            int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                     (c >= '0' && c <= '9') || c == '-' || c == '_';
            host[j++] = ok ? c : '_';
        }
        host[j] = 0;
        __atomic_store_n(&host_done, 1, __ATOMIC_RELEASE);
    }
    /* Random once per process (and again after a fork: the pid changes). */
    static char rhex[17];
    static pid_t rpid;
    pid_t pid = getpid();
    if (__atomic_load_n(&rpid, __ATOMIC_ACQUIRE) != pid) {
        uint8_t rnd[8];
        char hx[17];
        if (getrandom(rnd, sizeof rnd, 0) != sizeof rnd) {
            uint64_t t = (uint64_t)time(NULL) ^ ((uint64_t)pid << 32) ^ (uint64_t)(uintptr_t)buf;
            memcpy(rnd, &t, sizeof rnd);
        }
        ntt_hex(rnd, sizeof rnd, hx);
        memcpy(rhex, hx, sizeof hx);
        __atomic_store_n(&rpid, pid, __ATOMIC_RELEASE);
    }
    unsigned long n = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
    int w = snprintf(buf, size, "%s.%ld.%lu.%s.tmp", host, (long)pid, n, rhex);
    return w > 0 && (size_t)w < size ? 0 : ENAMETOOLONG;
}

/* Create <tmp>/name exclusively, mode 0644 whatever the umask; fd or -errno. */
static int tmpcreate(struct ntt_store *st, const char *name)
{
    int fd = openat(st->tmpfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    if ((st->umask & 0644) && fchmod(fd, 0644) != 0) {
        int e = errno;
        close(fd);
        unlinkat(st->tmpfd, name, 0);
        return -e;
    }
    return fd;
}

int ntt_store_tmp_open(struct ntt_store *st, struct ntt_store_tmp *t)
{
    int err = tmpname(t->name, sizeof t->name);
    if (err == 0 && (t->fd = tmpcreate(st, t->name)) < 0)
        err = -t->fd;
    if (err) {
        t->fd = -1;
        t->name[0] = 0;
    }
    return err;
}

int ntt_store_tmp_write(struct ntt_store_tmp *t, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len > 0) {
        ssize_t w = write(t->fd, p, len);
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

int ntt_store_tmp_close(struct ntt_store_tmp *t, int sync)
{
    int err = sync && fsync(t->fd) != 0 ? errno : 0;
    if (close(t->fd) != 0 && !err)
        err = errno;
    t->fd = -1;
    return err;
}

void ntt_store_tmp_drop(struct ntt_store *st, struct ntt_store_tmp *t)
{
    if (t->fd >= 0)
        close(t->fd);
    if (t->name[0])
        unlinkat(st->tmpfd, t->name, 0);
    t->fd = -1;
    t->name[0] = 0;
}

static void blob_rel(const char *hex, char *rel)
{
    /* "AA/BB/<hex>" */
    memcpy(rel, hex, 2);
    rel[2] = '/';
    memcpy(rel + 3, hex + 2, 2);
    rel[5] = '/';
    memcpy(rel + 6, hex, 64);
    rel[70] = 0;
}

int ntt_store_exists(struct ntt_store *st, const char *hex)
{
    char rel[71];
    struct stat sb;
    blob_rel(hex, rel);
    if (fstatat(st->byhashfd, rel, &sb, AT_SYMLINK_NOFOLLOW) == 0)
        return 1;
    return errno == ENOENT || errno == ENOTDIR ? 0 : -errno;
}

static int fsync_at(int dirfd, const char *name)
{
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    int err = fsync(fd) == 0 ? 0 : errno;
    close(fd);
    return err;
}

/* mkdirat in by-hash, mode 0755 whatever the umask; 0 or an errno (EEXIST too). */
static int mkdir_at(struct ntt_store *st, const char *dir)
{
    if (mkdirat(st->byhashfd, dir, 0755) != 0)
        return errno;
    if ((st->umask & 0755) && fchmodat(st->byhashfd, dir, 0755, 0) != 0)
        return errno;
    return 0;
}

/*
 * Make by-hash/AA/BB exist (remembered per store).  *created tells which
 * levels were new: 1 = AA, 2 = BB, so fsync mode can sync their parents.
 */
static int blob_dirs(struct ntt_store *st, const char *hex, int *created)
{
    char dir[6];
    unsigned idx = (unsigned)strtoul((char[5]){hex[0], hex[1], hex[2], hex[3], 0}, NULL, 16);
    uint8_t bit = (uint8_t)(1u << (idx & 7));
    *created = 0;
    if (__atomic_load_n(&st->dirs[idx >> 3], __ATOMIC_RELAXED) & bit)
        return 0;
    memcpy(dir, hex, 2);
    dir[2] = '/';
    memcpy(dir + 3, hex + 2, 2);
    dir[5] = 0;
    /* AA/BB first: AA mostly exists already (one call instead of two). */
    int err = mkdir_at(st, dir);
    if (err == ENOENT) {
        dir[2] = 0;
        if ((err = mkdir_at(st, dir)) == 0)
            *created |= 1;
        else if (err != EEXIST)
            return err;
        dir[2] = '/';
        err = mkdir_at(st, dir);
    }
    if (err == 0)
        *created |= 2;
    else if (err != EEXIST)
        return err;
    __atomic_fetch_or(&st->dirs[idx >> 3], bit, __ATOMIC_RELAXED);
    return 0;
}

static void forget_dirs(struct ntt_store *st, const char *hex)
{
    unsigned idx = (unsigned)strtoul((char[5]){hex[0], hex[1], hex[2], hex[3], 0}, NULL, 16);
    __atomic_fetch_and(&st->dirs[idx >> 3], (uint8_t)~(1u << (idx & 7)), __ATOMIC_RELAXED);
}

/* Move <tmp>/name to by-hash (see ntt_store_tmp_commit). */
static int commit(struct ntt_store *st, const char *name, const char *hex,
                  int dirsync, int *is_new)
{
    char rel[71], dir[6];
    int err, created = 0;
    *is_new = 0;
    blob_rel(hex, rel);
    memcpy(dir, rel, 5);
    dir[5] = 0;
    for (int attempt = 0;; attempt++) {
        if ((err = blob_dirs(st, hex, &created)) != 0)
            return err;
        if (renameat2(st->tmpfd, name, st->byhashfd, rel, RENAME_NOREPLACE) == 0)
            break;
        err = errno;
        if (err == EINVAL || err == ENOSYS) {
            /* No RENAME_NOREPLACE here: link() does not replace either. */
            if (linkat(st->tmpfd, name, st->byhashfd, rel, 0) == 0) {
                unlinkat(st->tmpfd, name, 0);
                break;
            }
            err = errno;
        }
        if (err == ENOENT && attempt == 0 && faccessat(st->tmpfd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
            /* A remembered blob directory went away: make it again. */
            forget_dirs(st, hex);
            continue;
        }
        if (err != EEXIST)
            return err;
        unlinkat(st->tmpfd, name, 0);
        *is_new = 0;
        return 0;
    }
    *is_new = 1;
    if (!dirsync)
        return 0;
    if ((err = fsync_at(st->byhashfd, dir)) != 0)
        return err;
    if ((created & 2) && (err = fsync_at(st->byhashfd, (char[3]){hex[0], hex[1], 0})) != 0)
        return err;
    if ((created & 1) && (err = fsync_at(st->byhashfd, ".")) != 0)
        return err;
    return 0;
}

int ntt_store_tmp_commit(struct ntt_store *st, struct ntt_store_tmp *t, const char *hex,
                         int dirsync, int *is_new)
{
    int err = commit(st, t->name, hex, dirsync, is_new);
    /* After the move (or the dedup's removal) the temp name is gone;
     * only a failing rename leaves it behind. */
    if (err == 0 || *is_new)
        t->name[0] = 0;
    return err;
}

/* The process umask, read without changing it (threads may be creating files). */
static mode_t current_umask(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    char line[256];
    unsigned m = 0777;          /* unknown: always fchmod */
    if (f) {
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "Umask: %o", &m) == 1)
                break;
        fclose(f);
    }
    return (mode_t)m;
}

static int store_open(lua_State *L)
{
    const char *root = luaL_checkstring(L, 1);
    int err;
    if ((err = mkdir0755(AT_FDCWD, root)) != 0)
        return ntt_fail(L, err, root);
    struct ntt_store *st = ntt_newudata(L, sizeof *st, NTT_STORE);
    st->rootfd = st->byhashfd = st->tmpfd = -1;
    st->closed = 1;
    st->rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (st->rootfd < 0)
        return ntt_fail(L, errno, root);
    if ((err = mkdir0755(st->rootfd, "by-hash")) != 0 ||
        (err = mkdir0755(st->rootfd, "tmp")) != 0)
        goto fail;
    st->byhashfd = openat(st->rootfd, "by-hash", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (st->byhashfd < 0)
        goto fail_errno;
    st->tmpfd = openat(st->rootfd, "tmp", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (st->tmpfd < 0)
        goto fail_errno;
    st->umask = current_umask();
    st->root = strdup(root);
    if (!st->root) {
        err = ENOMEM;
        goto fail;
    }
    st->closed = 0;
    return 1;
fail_errno:
    err = errno;
fail:
    if (st->tmpfd >= 0) close(st->tmpfd);
    if (st->byhashfd >= 0) close(st->byhashfd);
    close(st->rootfd);
    st->rootfd = st->byhashfd = st->tmpfd = -1;
    return ntt_fail(L, err, root);
}

static int store_root(lua_State *L)
{
    lua_pushstring(L, ntt_store_check(L, 1)->root);
    return 1;
}

static int store_path(lua_State *L)
{
    struct ntt_store *st = ntt_store_check(L, 1);
    const char *hex = check_blob(L, 2);
    char rel[71];
    blob_rel(hex, rel);
    lua_pushfstring(L, "%s/by-hash/%s", st->root, rel);
    return 1;
}

static int store_has(lua_State *L)
{
    struct ntt_store *st = ntt_store_check(L, 1);
    const char *hex = check_blob(L, 2);
    char rel[71];
    struct stat sb;
    blob_rel(hex, rel);
    if (fstatat(st->byhashfd, rel, &sb, AT_SYMLINK_NOFOLLOW) == 0) {
        lua_pushinteger(L, (lua_Integer)sb.st_size);
        return 1;
    }
    if (errno == ENOENT) {
        lua_pushnil(L);
        return 1;
    }
    return ntt_fail(L, errno, rel);
}

static int store_put(lua_State *L)
{
    struct ntt_store *st = ntt_store_check(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    ntt_blake3 b3;
    uint8_t d[32];
    char hex[65];
    struct ntt_store_tmp t;
    int err, is_new = 0;
    ntt_blake3_init(&b3);
    ntt_blake3_update(&b3, data, len);
    ntt_blake3_finalize(&b3, d, sizeof d);
    ntt_hex(d, sizeof d, hex);
    if ((err = ntt_store_tmp_open(st, &t)) != 0)
        return ntt_failf(L, err, "%s/tmp", st->root);
    err = ntt_store_tmp_write(&t, data, len);
    if (!err)
        err = ntt_store_tmp_close(&t, 1);
    if (!err)
        err = ntt_store_tmp_commit(st, &t, hex, 1, &is_new);
    if (err) {
        ntt_store_tmp_drop(st, &t);
        return ntt_failf(L, err, "store %s", hex);
    }
    lua_pushstring(L, hex);
    lua_pushboolean(L, is_new);
    return 2;
}

static int store_clean_tmp(lua_State *L)
{
    struct ntt_store *st = ntt_store_check(L, 1);
    lua_Number age = luaL_checknumber(L, 2);
    int fd = openat(st->tmpfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return ntt_fail(L, errno, "tmp");
    DIR *d = fdopendir(fd);
    if (!d) {
        int e = errno;
        close(fd);
        return ntt_fail(L, e, "tmp");
    }
    time_t now = time(NULL);
    lua_Integer removed = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        struct stat sb;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (fstatat(st->tmpfd, e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0)
            continue;
        if (S_ISDIR(sb.st_mode) || (lua_Number)(now - sb.st_mtime) < age)
            continue;
        if (unlinkat(st->tmpfd, e->d_name, 0) == 0)
            removed++;
    }
    closedir(d);
    lua_pushinteger(L, removed);
    return 1;
}

static int store_close(lua_State *L)
{
    struct ntt_store *st = luaL_checkudata(L, 1, NTT_STORE);
    if (__atomic_load_n(&st->busy, __ATOMIC_SEQ_CST) > 0)
        return luaL_error(L, "store: cannot close while a copy job is running on it");
    if (!st->closed) {
        close(st->tmpfd);
        close(st->byhashfd);
        close(st->rootfd);
        free(st->root);
        st->root = NULL;
        st->closed = 1;
    }
    return 0;
}

static int store_tostring(lua_State *L)
{
    struct ntt_store *st = luaL_checkudata(L, 1, NTT_STORE);
    if (st->closed)
        lua_pushstring(L, "ntt.Store (closed)");
    else
        lua_pushfstring(L, "ntt.Store (%s)", st->root);
    return 1;
}

static const luaL_Reg store_methods[] = {
    {"clean_tmp", store_clean_tmp},
    {"close", store_close},
    {"has", store_has},
    {"path", store_path},
    {"put", store_put},
    {"root", store_root},
    {NULL, NULL},
};

static const luaL_Reg store_meta[] = {
    {"__close", store_close},
    {"__gc", store_close},
    {"__tostring", store_tostring},
    {NULL, NULL},
};

static const luaL_Reg store_funcs[] = {
    {"open", store_open},
    {NULL, NULL},
};

int luaopen_ntt_core_store(lua_State *L)
{
    ntt_newclass(L, NTT_STORE, store_methods, store_meta);
    luaL_newlib(L, store_funcs);
    return 1;
}

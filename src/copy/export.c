/*
 * export.c - ntt.core.export: a medium's files written out as real files
 * (ntt export), each blob re-hashed with BLAKE3 on the way so a blob that
 * rotted in the store is never handed out as the original.  SHA-256 comes
 * from OpenSSL's libcrypto (BagIt manifests).
 *
 * Lua API (ntt.core.export).  Misuse raises; expected failures return
 * nil, msg, errname.
 *   write(root, entries [, { sha256 = bool }]) -> results | nil, msg, errname
 *       root: an existing directory; entries: an array of
 *         { path = relative bytes ("" is root itself), type = "d"|"f"|"l",
 *           mode =, mtime_ns =,
 *           src =, blake3 =, size =   (type "f": the blob and its identity)
 *           target =                  (type "l": the symlink's bytes) }
 *       given parents before children.  Everything is made beneath root
 *       (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), never replacing
 *       anything: a directory is made 0700 (see finish), a file is written
 *       O_EXCL with mode & 0777|01000 (never setuid/setgid) and its mtime,
 *       a symlink gets its mtime.  results[i] is true, or for a file
 *       { size =, sha256 = hex (with sha256) }, or { err = ERRNAME, msg = }
 *       for an entry that failed; a file whose bytes do not hash to blake3
 *       (or to size) is removed again and fails "EBADMSG".  nil, msg,
 *       errname only when root cannot be used or on ^C ("EINTR").
 *   finish(root, dirs) -> true | nil, msg, errname
 *       dirs: { { path =, mode =, mtime_ns = } ... }, deepest first: their
 *       modes (never setuid/setgid) and mtimes, once their content is in.
 *   sha256(data) -> lowercase hex of the string's SHA-256
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "ntt.h"
#include "blake3.h"
#include "paths.h"

#define BUFSZ (1024 * 1024)
#define MODE_KEEP 01777   /* permission bits and sticky; never setuid/setgid */

static void tohex(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = 0;
}

/* A directory beneath root (rel "" is root itself), or -1 with errno. */
static int open_beneath(int rootfd, const char *rel, size_t len)
{
    if (len == 0)
        return fcntl(rootfd, F_DUPFD_CLOEXEC, 0);
    char *p = strndup(rel, len);
    if (!p)
        return -1;
    /* (any depth: past PATH_MAX a stretch at a time, src/os/paths.c) */
    int fd = paths_open_beneath(rootfd, p, len, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int err = errno;
    free(p);
    errno = err;
    return fd;
}

/* The parent fd of path, reused while consecutive entries share it. */
struct parent {
    int fd;
    char *dir;
    size_t len;
};

static int parent_of(struct parent *pc, int rootfd, const char *path, const char **base)
{
    const char *slash = strrchr(path, '/');
    size_t len = slash ? (size_t)(slash - path) : 0;
    *base = slash ? slash + 1 : path;
    if (pc->fd >= 0 && pc->len == len && (len == 0 || memcmp(pc->dir, path, len) == 0))
        return pc->fd;
    if (pc->fd >= 0)
        close(pc->fd);
    free(pc->dir);
    pc->dir = NULL;
    pc->fd = open_beneath(rootfd, path, len);
    if (pc->fd < 0)
        return -1;
    pc->dir = strndup(path, len);
    pc->len = len;
    return pc->fd;
}

static struct timespec ts_of(lua_Integer ns)
{
    struct timespec t;
    t.tv_sec = (time_t)(ns / 1000000000);
    t.tv_nsec = (long)(ns % 1000000000);
    if (t.tv_nsec < 0) {
        t.tv_nsec += 1000000000;
        t.tv_sec -= 1;
    }
    return t;
}

static lua_Integer intfield(lua_State *L, int idx, const char *k, lua_Integer dflt)
{
    lua_getfield(L, idx, k);
    lua_Integer v = lua_isnoneornil(L, -1) ? dflt : luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    return v;
}

/* A string field of the table at idx (left on the stack: pop it). */
static const char *strfield(lua_State *L, int idx, const char *k, size_t *len, int required)
{
    lua_getfield(L, idx, k);
    if (lua_isnil(L, -1) && !required)
        return NULL;
    if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "export.write: entry field '%s' must be a string", k);
    return lua_tolstring(L, -1, len);
}

/*
 * Raise on any malformed entry of the list at idx before anything is
 * opened or allocated, so the loops below never raise while they hold an
 * fd or a buffer.  finish: only path, mode and mtime_ns are used.
 */
static void check_entries(lua_State *L, int idx, const char *fn, int finish)
{
    lua_Integer n = luaL_len(L, idx);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, idx, i);
        int e = lua_gettop(L);
        if (!lua_istable(L, e))
            luaL_error(L, "%s: entry %d is not a table", fn, (int)i);
        size_t plen = 0, tlen = 0, len = 0;
        const char *path = strfield(L, e, "path", &plen, 1);
        if (memchr(path, 0, plen) || (plen > 0 && (path[0] == '/' || path[plen - 1] == '/')))
            luaL_error(L, "%s: entry %d: bad path", fn, (int)i);
        intfield(L, e, "mode", 0);
        intfield(L, e, "mtime_ns", 0);
        if (!finish) {
            const char *type = strfield(L, e, "type", &tlen, 1);
            if (tlen != 1 || !strchr("dfl", type[0]))
                luaL_error(L, "%s: entry %d: type must be d, f or l", fn, (int)i);
            if (type[0] == 'l') {
                const char *target = strfield(L, e, "target", &len, 1);
                if (plen == 0 || len == 0 || memchr(target, 0, len))
                    luaL_error(L, "%s: entry %d: bad symlink", fn, (int)i);
            } else if (type[0] == 'f') {
                strfield(L, e, "src", &len, 1);
                strfield(L, e, "blake3", &len, 1);
                if (plen == 0 || len != 64 || intfield(L, e, "size", -1) < 0)
                    luaL_error(L, "%s: entry %d: a file needs a path, blake3 and size", fn, (int)i);
            }
        }
        lua_settop(L, e - 1);
    }
}

struct copyres {
    int err;            /* errno, or EBADMSG for a mismatch */
    char msg[256];
    uint64_t size;
    char sha[65];
};

/* Copy src to base (beneath dirfd) while hashing; see write above. */
static void copy_one(int dirfd, const char *base, const char *src, const char *want, uint64_t want_size,
                     mode_t mode, struct timespec mt, int with_sha, uint8_t *buf, struct copyres *r)
{
    int in = -1, out = -1, made = 0;
    EVP_MD_CTX *sha = NULL;
    ntt_blake3 h;
    ntt_blake3_init(&h);
    r->err = 0;
    r->size = 0;
    r->sha[0] = 0;
    if ((in = open(src, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0) {
        r->err = errno;
        snprintf(r->msg, sizeof r->msg, "blob %s: %s", want, strerror(r->err));
        goto done;
    }
    if (with_sha && (!(sha = EVP_MD_CTX_new()) || EVP_DigestInit_ex(sha, EVP_sha256(), NULL) != 1)) {
        r->err = ENOMEM;
        snprintf(r->msg, sizeof r->msg, "sha256: cannot start");
        goto done;
    }
    if ((out = openat(dirfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)) < 0) {
        r->err = errno;
        snprintf(r->msg, sizeof r->msg, "create: %s", strerror(r->err));
        goto done;
    }
    made = 1;
    for (;;) {
        ssize_t n = read(in, buf, BUFSZ);
        if (n < 0 && errno == EINTR && !ntt_interrupted)
            continue;
        if (n < 0) {
            r->err = errno;
            snprintf(r->msg, sizeof r->msg, "read blob %s: %s", want, strerror(r->err));
            goto done;
        }
        if (n == 0)
            break;
        ntt_blake3_update(&h, buf, (size_t)n);
        if (sha)
            EVP_DigestUpdate(sha, buf, (size_t)n);
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                r->err = errno;
                snprintf(r->msg, sizeof r->msg, "write: %s", strerror(r->err));
                goto done;
            }
            off += w;
        }
        r->size += (uint64_t)n;
    }
    uint8_t d[NTT_BLAKE3_OUT_LEN];
    char hex[2 * NTT_BLAKE3_OUT_LEN + 1];
    ntt_blake3_finalize(&h, d, sizeof d);
    tohex(d, sizeof d, hex);
    if (strcmp(hex, want) != 0 || r->size != want_size) {
        r->err = EBADMSG;
        snprintf(r->msg, sizeof r->msg, "blob %s does not match its content (%llu bytes hash to %.16s..., want %llu)",
                 want, (unsigned long long)r->size, hex, (unsigned long long)want_size);
        goto done;
    }
    if (sha) {
        uint8_t sd[32];
        unsigned int sl = 0;
        EVP_DigestFinal_ex(sha, sd, &sl);
        tohex(sd, 32, r->sha);
    }
    struct timespec ts[2] = { mt, mt };
    if (fchmod(out, mode & MODE_KEEP) != 0 || futimens(out, ts) != 0) {
        r->err = errno;
        snprintf(r->msg, sizeof r->msg, "mode/mtime: %s", strerror(r->err));
        goto done;
    }
    if (close(out) != 0) {
        out = -1;
        r->err = errno;
        snprintf(r->msg, sizeof r->msg, "close: %s", strerror(r->err));
        goto done;
    }
    out = -1;
done:
    if (out >= 0)
        close(out);
    if (in >= 0)
        close(in);
    if (r->err && made)
        unlinkat(dirfd, base, 0);
    EVP_MD_CTX_free(sha);
}

static void push_failure(lua_State *L, int err, const char *msg)
{
    lua_createtable(L, 0, 2);
    ntt_setstr(L, "err", ntt_errname(err));
    ntt_setstr(L, "msg", msg);
}

static int ex_write(lua_State *L)
{
    const char *root = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    static const char *const known[] = { "sha256", NULL };
    ntt_checkopts(L, 3, "export.write", known);
    int with_sha = 0;
    if (lua_istable(L, 3)) {
        lua_getfield(L, 3, "sha256");
        with_sha = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    check_entries(L, 2, "export.write", 0);
    int rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0)
        return ntt_fail(L, errno, root);
    uint8_t *buf = malloc(BUFSZ);
    if (!buf) {
        close(rootfd);
        return ntt_fail(L, ENOMEM, "export.write");
    }
    struct parent pc = { -1, NULL, 0 };
    lua_Integer n = luaL_len(L, 2);
    lua_createtable(L, (int)n, 0);
    int res = lua_gettop(L);
    int interrupted = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        if (ntt_interrupted) {
            interrupted = 1;
            break;
        }
        lua_geti(L, 2, i);   /* checked by check_entries: nothing below raises */
        int e = lua_gettop(L);
        size_t plen, tlen;
        const char *path = strfield(L, e, "path", &plen, 1);
        const char *type = strfield(L, e, "type", &tlen, 1);
        mode_t mode = (mode_t)intfield(L, e, "mode", 0644);
        struct timespec mt = ts_of(intfield(L, e, "mtime_ns", 0));
        const char *base = path;
        int dfd = -1;
        if (plen > 0)
            dfd = parent_of(&pc, rootfd, path, &base);
        if (plen > 0 && dfd < 0) {
            int err = errno;
            char msg[256];
            snprintf(msg, sizeof msg, "parent directory: %s", strerror(err));
            push_failure(L, err, msg);
        } else if (type[0] == 'd') {
            if (plen > 0 && mkdirat(dfd, base, 0700) != 0) {
                int err = errno;
                struct stat sb;
                if (err == EEXIST && fstatat(dfd, base, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(sb.st_mode))
                    lua_pushboolean(L, 1);
                else
                    push_failure(L, err, strerror(err));
            } else {
                lua_pushboolean(L, 1);
            }
        } else if (type[0] == 'l') {
            size_t len;
            const char *target = strfield(L, e, "target", &len, 1);
            struct timespec ts[2] = { mt, mt };
            if (symlinkat(target, dfd, base) != 0 || utimensat(dfd, base, ts, AT_SYMLINK_NOFOLLOW) != 0) {
                int err = errno;
                lua_pop(L, 1);
                push_failure(L, err, strerror(err));
            } else {
                lua_pop(L, 1);
                lua_pushboolean(L, 1);
            }
        } else if (type[0] == 'f') {
            size_t sl, bl;
            const char *src = strfield(L, e, "src", &sl, 1);
            const char *want = strfield(L, e, "blake3", &bl, 1);
            lua_Integer size = intfield(L, e, "size", -1);
            struct copyres r;
            copy_one(dfd, base, src, want, (uint64_t)size, mode, mt, with_sha, buf, &r);
            lua_pop(L, 2);
            if (r.err) {
                push_failure(L, r.err, r.msg);
            } else {
                lua_createtable(L, 0, 2);
                ntt_setint(L, "size", (lua_Integer)r.size);
                ntt_setstr_opt(L, "sha256", r.sha);
            }
        }
        lua_seti(L, res, i);
        lua_settop(L, res);
    }
    if (pc.fd >= 0)
        close(pc.fd);
    free(pc.dir);
    free(buf);
    close(rootfd);
    if (interrupted)
        return ntt_fail_interrupted(L);
    return 1;
}

static int ex_finish(lua_State *L)
{
    const char *root = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    check_entries(L, 2, "export.finish", 1);
    int rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0)
        return ntt_fail(L, errno, root);
    lua_Integer n = luaL_len(L, 2);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 2, i);
        int e = lua_gettop(L);
        if (!lua_istable(L, e)) {
            close(rootfd);
            return luaL_error(L, "export.finish: entry %d is not a table", (int)i);
        }
        size_t plen;
        lua_getfield(L, e, "path");
        const char *path = lua_tolstring(L, -1, &plen);
        if (!path || memchr(path, 0, plen)) {
            close(rootfd);
            return luaL_error(L, "export.finish: entry %d: bad path", (int)i);
        }
        mode_t mode = (mode_t)intfield(L, e, "mode", 0755);
        struct timespec mt = ts_of(intfield(L, e, "mtime_ns", 0));
        struct timespec ts[2] = { mt, mt };
        int fd = open_beneath(rootfd, path, plen);
        if (fd < 0 || fchmod(fd, mode & MODE_KEEP) != 0 || futimens(fd, ts) != 0) {
            int err = errno;
            if (fd >= 0)
                close(fd);
            close(rootfd);
            return ntt_failf(L, err, "%s/%s", root, path);
        }
        close(fd);
        lua_settop(L, e - 1);
    }
    close(rootfd);
    lua_pushboolean(L, 1);
    return 1;
}

static int ex_sha256(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    uint8_t d[32];
    unsigned int dl = 0;
    char hex[65];
    if (EVP_Digest(s, len, d, &dl, EVP_sha256(), NULL) != 1 || dl != 32)
        return luaL_error(L, "export.sha256: libcrypto failed");
    tohex(d, 32, hex);
    lua_pushstring(L, hex);
    return 1;
}

int luaopen_ntt_core_export(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"write", ex_write},
        {"finish", ex_finish},
        {"sha256", ex_sha256},
        {NULL, NULL}
    };
    luaL_newlib(L, fns);
    return 1;
}

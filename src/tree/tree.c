/*
 * tree.c - ntt.core.tree: a medium's original names as hard links to its
 * blobs (the tree stage, lua/ntt/stage/tree.lua; docs/tree.md).
 *
 * Lua API (ntt.core.tree):
 *   build(store, root, entries [, opts]) -> stats, failures, copies
 *       | nil, msg, code   (root cannot be opened; "interrupted", EINTR)
 *     root: an existing directory (tree/<medium>); entries: array of
 *       {path = raw bytes relative to root ("p1/sub/name"),
 *        kind = "f" (hard link to blob) | "l" (symlink to target) | "d",
 *        blob = 64 hex (kind f), target = raw bytes (kind l),
 *        mtime_ns = n (kind l: set on the link itself)}
 *     Missing parent directories are made (0755).  An entry already there
 *     and right (the same blob or one of its copies, the same link target,
 *     a directory) counts as existing; anything else there is a failure.
 *     opts: threads = n (default 4), link_max = n (treat a blob with that
 *       many links as full: lets tests reach the limit quickly)
 *     stats: {links=, symlinks=, dirs=, existing=, failed=}
 *     failures: array of {index=, err=ERRNAME, msg=}
 *     copies: array of {blob=, n=, reflink=bool}: second copies made at
 *       <store>/copies/AA/BB/<blob>.<n> because a blob was at the link limit
 *   times(root, entries) -> set, failures   mtimes of entries {path=,
 *     mtime_ns=} (directories, once their contents are in)
 *   link_max(path) -> pathconf(path, _PC_LINK_MAX) | nil, msg, code
 *   copy(store, blob, n) -> reflink (bool) | false (copy n already there)
 *       | nil, msg, code   second copy n of blob made as build makes it
 *       (re-hashed before it gets its name: a blob that does not hash to
 *       its name fails "EIO")
 *
 * Directories are shared out to threads, one directory at a time, each
 * opened once from root by openat(O_NOFOLLOW) per component; every link,
 * mkdir and symlink is relative to that directory's descriptor.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include "blake3.h"
#include "ntt.h"
#include "store.h"

#define MAX_COPIES 10000

struct ent {
    const char *path;     /* NUL-terminated (a Lua string kept by the entries table) */
    size_t dirlen;        /* bytes of the parent directory (0: root) */
    const char *name;
    char kind;
    const char *blob;
    const char *target;
    int64_t mtime_ns;
    int has_mtime;
    int err;
    const char *what;
};

struct cur { char hex[65]; int n; };
struct made { char hex[65]; int n; int reflink; };

struct job {
    struct ntt_store *st;
    int rootfd;
    int copiesfd;               /* <store>/copies, opened on first need */
    struct ent *e;
    size_t n;
    size_t *order;              /* entries sorted by directory */
    size_t *groups;             /* start of each directory's run in order; ngroups + 1 */
    size_t ngroups;
    size_t next;                /* next group (atomic) */
    size_t done;                /* groups finished (atomic) */
    long link_max;
    mode_t umask;
    pthread_mutex_t mu;         /* curs, made, copiesfd */
    struct cur *curs; size_t ncurs, capcurs;
    struct made *made; size_t nmade, capmade;
    long links, symlinks, dirs, existing;   /* atomic */
};

static int cmp_dir(const struct ent *a, const struct ent *b)
{
    size_t m = a->dirlen < b->dirlen ? a->dirlen : b->dirlen;
    int c = memcmp(a->path, b->path, m);
    if (c) return c;
    return a->dirlen < b->dirlen ? -1 : a->dirlen > b->dirlen;
}

static int cmp_order(const void *x, const void *y, void *base)
{
    const struct ent *a = (struct ent *)base + *(const size_t *)x, *b = (struct ent *)base + *(const size_t *)y;
    int c = cmp_dir(a, b);
    return c ? c : (*(const size_t *)x > *(const size_t *)y) - (*(const size_t *)x < *(const size_t *)y);
}

/* Opens path[0..len) below rootfd, one component at a time, never
 * following a symlink; missing directories are made when create.  fd or -errno. */
static int open_dir(int rootfd, const char *path, size_t len, int create, mode_t um)
{
    int fd = dup(rootfd);
    if (fd < 0) return -errno;
    char comp[256];
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && path[j] != '/') j++;
        size_t cl = j - i;
        if (cl == 0 || cl >= sizeof comp) { close(fd); return cl ? -ENAMETOOLONG : -EINVAL; }
        memcpy(comp, path + i, cl);
        comp[cl] = 0;
        if (!strcmp(comp, ".") || !strcmp(comp, "..")) { close(fd); return -EINVAL; }
        int nfd = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (nfd < 0 && errno == ENOENT && create) {
            if (mkdirat(fd, comp, 0755) == 0) {
                if (um & 0755) fchmodat(fd, comp, 0755, 0);
            } else if (errno != EEXIST) {
                int e = errno; close(fd); return -e;
            }
            nfd = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        }
        int e = errno;
        close(fd);
        if (nfd < 0) return -e;
        fd = nfd;
        i = j + 1;
    }
    return fd;
}

static void blob_rel(char *out, size_t cap, const char *hex, int n)
{
    if (n == 0) snprintf(out, cap, "%.2s/%.2s/%s", hex, hex + 2, hex);
    else snprintf(out, cap, "%.2s/%.2s/%s.%d", hex, hex + 2, hex, n);
}

/* The copies directory, made when create (under the job's lock).  fd or -errno. */
static int copies_fd(struct job *j, int create)
{
    if (j->copiesfd >= 0) return j->copiesfd;
    if (create && mkdirat(j->st->rootfd, "copies", 0755) != 0 && errno != EEXIST) return -errno;
    int fd = openat(j->st->rootfd, "copies", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -errno;
    return j->copiesfd = fd;
}

/* The BLAKE3 of an open file from its start, compared with hex: 0, EIO on a mismatch, or an errno. */
static int verify_fd(int fd, const char *hex)
{
    ntt_blake3 h;
    ntt_blake3_init(&h);
    char *buf = malloc(1 << 20);
    if (!buf) return ENOMEM;
    off_t off = 0;
    for (;;) {
        ssize_t r = pread(fd, buf, 1 << 20, off);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) { int e = errno; free(buf); return e; }
        if (r == 0) break;
        ntt_blake3_update(&h, buf, (size_t)r);
        off += r;
    }
    free(buf);
    uint8_t d[32];
    char got[65];
    ntt_blake3_finalize(&h, d, 32);
    ntt_hex(d, 32, got);
    return strcmp(got, hex) ? EIO : 0;
}

/* Copy n of blob hex: reflinked where the filesystem can, else copied;
 * re-hashed before it gets its name.  0 (also when it already exists) or an errno. */
static int make_copy(struct job *j, const char *hex, int n, int *reflink)
{
    int cfd = copies_fd(j, 1);
    if (cfd < 0) return -cfd;
    char rel[100], dir[8];
    blob_rel(rel, sizeof rel, hex, n);
    struct stat sb;
    *reflink = -1;   /* there already: not made here */
    if (fstatat(cfd, rel, &sb, AT_SYMLINK_NOFOLLOW) == 0) return 0;
    snprintf(dir, sizeof dir, "%.2s", hex);
    if (mkdirat(cfd, dir, 0755) != 0 && errno != EEXIST) return errno;
    snprintf(dir, sizeof dir, "%.2s/%.2s", hex, hex + 2);
    if (mkdirat(cfd, dir, 0755) != 0 && errno != EEXIST) return errno;
    char src[100];
    blob_rel(src, sizeof src, hex, 0);
    int sfd = openat(j->st->byhashfd, src, O_RDONLY | O_CLOEXEC);
    if (sfd < 0) return errno;
    struct ntt_store_tmp t;
    int e = ntt_store_tmp_open(j->st, &t);
    if (e) { close(sfd); return e; }
    *reflink = ioctl(t.fd, FICLONE, sfd) == 0;
    if (!*reflink) {
        char *buf = malloc(1 << 20);
        if (!buf) e = ENOMEM;
        for (off_t off = 0; !e;) {
            ssize_t r = pread(sfd, buf, 1 << 20, off);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) { e = errno; break; }
            if (r == 0) break;
            e = ntt_store_tmp_write(&t, buf, (size_t)r);
            off += r;
        }
        free(buf);
    }
    close(sfd);
    if (!e) e = ntt_store_tmp_close(&t, 1);
    if (!e) {
        int vfd = openat(j->st->tmpfd, t.name, O_RDONLY | O_CLOEXEC);
        e = vfd < 0 ? errno : verify_fd(vfd, hex);
        if (vfd >= 0) close(vfd);
    }
    if (!e && renameat2(j->st->tmpfd, t.name, cfd, rel, RENAME_NOREPLACE) == 0) {
        t.name[0] = 0;
        fsync(cfd);
    } else if (!e) {
        e = errno == EEXIST ? 0 : errno;   /* EEXIST: another process made it */
        if (!e) *reflink = -1;
    }
    ntt_store_tmp_drop(j->st, &t);
    return e;
}

/* The copy to link to next once copy `tried` of hex is full (0: the blob
 * itself): the next one, made when it is not there yet.  n or -errno. */
static int next_copy(struct job *j, const char *hex, int tried)
{
    pthread_mutex_lock(&j->mu);
    struct cur *c = NULL;
    for (size_t i = 0; i < j->ncurs; i++)
        if (!memcmp(j->curs[i].hex, hex, 64)) { c = &j->curs[i]; break; }
    int n = c && c->n > tried ? c->n : tried + 1, e = 0, reflink = 0;
    if (n > MAX_COPIES) e = EMLINK;
    if (!e && !(c && c->n >= n)) e = make_copy(j, hex, n, &reflink);
    if (!e && !c) {
        if (j->ncurs == j->capcurs) {
            size_t cap = j->capcurs ? 2 * j->capcurs : 8;
            struct cur *t = realloc(j->curs, cap * sizeof *t);
            if (!t) e = ENOMEM; else { j->curs = t; j->capcurs = cap; }
        }
        if (!e) { c = &j->curs[j->ncurs++]; memcpy(c->hex, hex, 64); c->hex[64] = 0; c->n = 0; }
    }
    if (!e && c->n < n) {
        c->n = n;
        /* reported by the call that made it (a copy found there was reported before) */
        if (reflink >= 0 && j->nmade == j->capmade) {
            size_t cap = j->capmade ? 2 * j->capmade : 8;
            struct made *t = realloc(j->made, cap * sizeof *t);
            if (t) { j->made = t; j->capmade = cap; }
        }
        if (reflink >= 0 && j->nmade < j->capmade) {
            struct made *m = &j->made[j->nmade++];
            memcpy(m->hex, hex, 64); m->hex[64] = 0; m->n = n; m->reflink = reflink;
        }
    }
    pthread_mutex_unlock(&j->mu);
    return e ? -e : n;
}

/* The copy number links of hex go to now (0: the blob itself). */
static int current_copy(struct job *j, const char *hex)
{
    if (__atomic_load_n(&j->ncurs, __ATOMIC_ACQUIRE) == 0) return 0;
    int n = 0;
    pthread_mutex_lock(&j->mu);
    for (size_t i = 0; i < j->ncurs; i++)
        if (!memcmp(j->curs[i].hex, hex, 64)) { n = j->curs[i].n; break; }
    pthread_mutex_unlock(&j->mu);
    return n;
}

/* An entry already at name: the blob or one of its copies? */
static int same_blob(struct job *j, int dfd, const char *name, const char *hex)
{
    struct stat have, b;
    if (fstatat(dfd, name, &have, AT_SYMLINK_NOFOLLOW) != 0) return errno;
    if (!S_ISREG(have.st_mode)) return EEXIST;
    char rel[100];
    for (int n = 0; n <= MAX_COPIES; n++) {
        blob_rel(rel, sizeof rel, hex, n);
        int fd = n == 0 ? j->st->byhashfd : j->copiesfd;
        if (n == 1 && fd < 0) {
            pthread_mutex_lock(&j->mu);
            fd = copies_fd(j, 0);
            pthread_mutex_unlock(&j->mu);
            if (fd < 0) return EEXIST;
        }
        if (fstatat(fd, rel, &b, 0) != 0) return n == 0 ? errno : EEXIST;
        if (b.st_ino == have.st_ino && b.st_dev == have.st_dev) return 0;
    }
    return EEXIST;
}

static int link_blob(struct job *j, int dfd, struct ent *e)
{
    char rel[100];
    int n = current_copy(j, e->blob);
    for (;;) {
        blob_rel(rel, sizeof rel, e->blob, n);
        int sfd = n == 0 ? j->st->byhashfd : j->copiesfd;
        int err = 0;
        if (j->link_max > 0) {
            /* A limit below the filesystem's is counted here, so the count
             * and the link are one step (as the kernel's own EMLINK is):
             * threads would otherwise pass the count together. */
            struct stat sb;
            pthread_mutex_lock(&j->mu);
            if (fstatat(sfd, rel, &sb, 0) != 0) err = errno;
            else if ((long)sb.st_nlink >= j->link_max) err = EMLINK;
            if (!err && linkat(sfd, rel, dfd, e->name, 0) != 0) err = errno;
            pthread_mutex_unlock(&j->mu);
        } else if (linkat(sfd, rel, dfd, e->name, 0) != 0) {
            err = errno;
        }
        if (!err) { __atomic_fetch_add(&j->links, 1, __ATOMIC_RELAXED); return 0; }
        if (err == EEXIST) {
            err = same_blob(j, dfd, e->name, e->blob);
            if (!err) __atomic_fetch_add(&j->existing, 1, __ATOMIC_RELAXED);
            else e->what = err == EEXIST ? "another file is there" : "the existing entry";
            return err;
        }
        if (err != EMLINK) {
            e->what = err == ENOENT && n == 0 ? "blob" : "link";
            return err;
        }
        n = next_copy(j, e->blob, n);
        if (n < 0) { e->what = "second copy of the blob"; return -n; }
    }
}

static int do_entry(struct job *j, int dfd, struct ent *e)
{
    if (e->kind == 'f') return link_blob(j, dfd, e);
    if (e->kind == 'd') {
        if (mkdirat(dfd, e->name, 0755) == 0) {
            if (j->umask & 0755) fchmodat(dfd, e->name, 0755, 0);
            __atomic_fetch_add(&j->dirs, 1, __ATOMIC_RELAXED);
            return 0;
        }
        struct stat sb;
        if (errno == EEXIST && fstatat(dfd, e->name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(sb.st_mode)) {
            __atomic_fetch_add(&j->existing, 1, __ATOMIC_RELAXED);
            return 0;
        }
        e->what = "mkdir";
        return errno;
    }
    /* symlink: the recorded target bytes */
    if (symlinkat(e->target, dfd, e->name) == 0) {
        __atomic_fetch_add(&j->symlinks, 1, __ATOMIC_RELAXED);
    } else {
        int err = errno;
        char have[4096];
        ssize_t r = err == EEXIST ? readlinkat(dfd, e->name, have, sizeof have) : -1;
        if (r < 0 || (size_t)r != strlen(e->target) || memcmp(have, e->target, (size_t)r)) {
            e->what = err == EEXIST ? "another file is there" : "symlink";
            return err;
        }
        __atomic_fetch_add(&j->existing, 1, __ATOMIC_RELAXED);
    }
    if (e->has_mtime) {
        struct timespec ts[2] = { { 0, UTIME_OMIT },
                                  { e->mtime_ns / 1000000000, e->mtime_ns % 1000000000 } };
        if (ts[1].tv_nsec < 0) { ts[1].tv_nsec += 1000000000; ts[1].tv_sec--; }
        utimensat(dfd, e->name, ts, AT_SYMLINK_NOFOLLOW);
    }
    return 0;
}

static void *worker(void *arg)
{
    struct job *j = arg;
    for (;;) {
        if (ntt_interrupted) return NULL;
        size_t g = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
        if (g >= j->ngroups) return NULL;
        struct ent *first = &j->e[j->order[j->groups[g]]];
        int dfd = open_dir(j->rootfd, first->path, first->dirlen, 1, j->umask);
        for (size_t k = j->groups[g]; k < j->groups[g + 1]; k++) {
            struct ent *e = &j->e[j->order[k]];
            if (dfd < 0) { e->err = -dfd; e->what = "parent directory"; continue; }
            e->err = do_entry(j, dfd, e);
        }
        if (dfd >= 0) close(dfd);
        __atomic_fetch_add(&j->done, 1, __ATOMIC_RELAXED);
    }
}

/* Reads entry i of the table at idx into e (raises on misuse). */
static void read_entry(lua_State *L, int idx, lua_Integer i, struct ent *e, int need_kind)
{
    if (lua_geti(L, idx, i) != LUA_TTABLE) luaL_error(L, "tree: entry %d is not a table", (int)i);
    size_t len;
    /* strings only: a number converted here would not be kept by the table */
    lua_getfield(L, -1, "path");
    e->path = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    if (!e->path || len == 0 || e->path[0] == '/' || strlen(e->path) != len)
        luaL_error(L, "tree: entry %d: path must be relative, not empty, without NUL", (int)i);
    lua_pop(L, 1);   /* the string stays alive in the entry table */
    const char *slash = strrchr(e->path, '/');
    e->dirlen = slash ? (size_t)(slash - e->path) : 0;
    e->name = slash ? slash + 1 : e->path;
    if (!*e->name) luaL_error(L, "tree: entry %d: path ends with '/'", (int)i);
    e->kind = 'd';
    if (need_kind) {
        lua_getfield(L, -1, "kind");
        const char *k = lua_tostring(L, -1);
        if (!k || (strcmp(k, "f") && strcmp(k, "l") && strcmp(k, "d")))
            luaL_error(L, "tree: entry %d: kind must be f, l or d", (int)i);
        e->kind = k[0];
        lua_pop(L, 1);
    }
    lua_getfield(L, -1, "blob");
    e->blob = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    if (e->kind == 'f' && (!e->blob || len != 64 || strspn(e->blob, "0123456789abcdef") != 64))
        luaL_error(L, "tree: entry %d: blob must be 64 lowercase hex", (int)i);
    lua_pop(L, 1);
    lua_getfield(L, -1, "target");
    e->target = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    if (e->kind == 'l' && (!e->target || strlen(e->target) != len || len == 0))
        luaL_error(L, "tree: entry %d: a symlink needs a target without NUL", (int)i);
    lua_pop(L, 1);
    lua_getfield(L, -1, "mtime_ns");
    e->has_mtime = lua_isinteger(L, -1);
    e->mtime_ns = e->has_mtime ? (int64_t)lua_tointeger(L, -1) : 0;
    lua_pop(L, 2);
}

static void push_failures(lua_State *L, struct ent *e, size_t n)
{
    lua_newtable(L);
    lua_Integer k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!e[i].err) continue;
        lua_createtable(L, 0, 3);
        ntt_setint(L, "index", (lua_Integer)i + 1);
        ntt_setstr(L, "err", ntt_errname(e[i].err));
        lua_pushfstring(L, "%s: %s", e[i].what ? e[i].what : "entry", strerror(e[i].err));
        lua_setfield(L, -2, "msg");
        lua_rawseti(L, -2, ++k);
    }
}

static int open_root(lua_State *L, int idx, int *fd)
{
    const char *root = luaL_checkstring(L, idx);
    *fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (*fd < 0) return ntt_fail(L, errno, root);
    return 0;
}

static int tree_build(lua_State *L)
{
    static const char *const known[] = { "threads", "link_max", NULL };
    struct ntt_store *st = ntt_store_check(L, 1);
    luaL_checktype(L, 3, LUA_TTABLE);
    ntt_checkopts(L, 4, "tree.build", known);
    struct job j = { .st = st, .copiesfd = -1 };
    int threads = 4;
    if (lua_istable(L, 4)) {
        lua_getfield(L, 4, "threads");
        if (!lua_isnil(L, -1)) threads = (int)luaL_checkinteger(L, -1);
        lua_getfield(L, 4, "link_max");
        if (!lua_isnil(L, -1)) j.link_max = (long)luaL_checkinteger(L, -1);
        lua_pop(L, 2);
    }
    if (threads < 1 || threads > 256) return luaL_error(L, "tree.build: threads must be 1-256");
    j.n = (size_t)luaL_len(L, 3);
    j.e = lua_newuserdatauv(L, (j.n ? j.n : 1) * sizeof *j.e, 0);   /* freed with the stack */
    memset(j.e, 0, (j.n ? j.n : 1) * sizeof *j.e);
    for (size_t i = 0; i < j.n; i++) read_entry(L, 3, (lua_Integer)i + 1, &j.e[i], 1);
    int r = open_root(L, 2, &j.rootfd);
    if (r) return r;
    j.order = malloc((j.n + 1) * sizeof *j.order);
    j.groups = malloc((j.n + 1) * sizeof *j.groups);
    if (!j.order || !j.groups) {
        free(j.order); free(j.groups); close(j.rootfd);
        return ntt_fail(L, ENOMEM, "tree.build");
    }
    for (size_t i = 0; i < j.n; i++) j.order[i] = i;
    qsort_r(j.order, j.n, sizeof *j.order, cmp_order, j.e);
    for (size_t i = 0; i < j.n; i++)
        if (i == 0 || cmp_dir(&j.e[j.order[i - 1]], &j.e[j.order[i]]))
            j.groups[j.ngroups++] = i;
    j.groups[j.ngroups] = j.n;
    j.umask = umask(022);
    umask(j.umask);
    pthread_mutex_init(&j.mu, NULL);
    __atomic_fetch_add(&st->busy, 1, __ATOMIC_SEQ_CST);
    if ((size_t)threads > j.ngroups) threads = j.ngroups ? (int)j.ngroups : 1;
    pthread_t tid[256];
    int started = 0;
    for (; started < threads - 1; started++)
        if (pthread_create(&tid[started], NULL, worker, &j) != 0) break;
    worker(&j);
    for (int i = 0; i < started; i++) pthread_join(tid[i], NULL);
    __atomic_fetch_sub(&st->busy, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_destroy(&j.mu);
    close(j.rootfd);
    if (j.copiesfd >= 0) close(j.copiesfd);
    free(j.order); free(j.groups); free(j.curs);
    if (j.done < j.ngroups) {   /* a signal stopped the threads */
        free(j.made);
        return ntt_fail_interrupted(L);
    }
    long failed = 0;
    for (size_t i = 0; i < j.n; i++) failed += j.e[i].err != 0;
    lua_createtable(L, 0, 5);
    ntt_setint(L, "links", j.links);
    ntt_setint(L, "symlinks", j.symlinks);
    ntt_setint(L, "dirs", j.dirs);
    ntt_setint(L, "existing", j.existing);
    ntt_setint(L, "failed", failed);
    push_failures(L, j.e, j.n);
    lua_createtable(L, (int)j.nmade, 0);
    for (size_t i = 0; i < j.nmade; i++) {
        lua_createtable(L, 0, 3);
        ntt_setstr(L, "blob", j.made[i].hex);
        ntt_setint(L, "n", j.made[i].n);
        ntt_setbool(L, "reflink", j.made[i].reflink);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    free(j.made);
    return 3;
}

static int tree_times(lua_State *L)
{
    luaL_checktype(L, 2, LUA_TTABLE);
    size_t n = (size_t)luaL_len(L, 2);
    struct ent *e = lua_newuserdatauv(L, (n ? n : 1) * sizeof *e, 0);
    memset(e, 0, (n ? n : 1) * sizeof *e);
    for (size_t i = 0; i < n; i++) {
        read_entry(L, 2, (lua_Integer)i + 1, &e[i], 0);
        if (!e[i].has_mtime) luaL_error(L, "tree.times: entry %d has no mtime_ns", (int)i + 1);
    }
    int rootfd, r = open_root(L, 1, &rootfd);
    if (r) return r;
    lua_Integer set = 0;
    for (size_t i = 0; i < n; i++) {
        struct timespec ts[2] = { { 0, UTIME_OMIT },
                                  { e[i].mtime_ns / 1000000000, e[i].mtime_ns % 1000000000 } };
        if (ts[1].tv_nsec < 0) { ts[1].tv_nsec += 1000000000; ts[1].tv_sec--; }
        int dfd = open_dir(rootfd, e[i].path, e[i].dirlen, 0, 0);
        if (dfd < 0) { e[i].err = -dfd; e[i].what = "parent directory"; continue; }
        if (utimensat(dfd, e[i].name, ts, AT_SYMLINK_NOFOLLOW) == 0) set++;
        else { e[i].err = errno; e[i].what = "utimensat"; }
        close(dfd);
    }
    close(rootfd);
    lua_pushinteger(L, set);
    push_failures(L, e, n);
    return 2;
}

static int tree_link_max(lua_State *L)
{
    const char *p = luaL_checkstring(L, 1);
    errno = 0;
    long v = pathconf(p, _PC_LINK_MAX);
    if (v < 0 && errno) return ntt_fail(L, errno, p);
    lua_pushinteger(L, v < 0 ? LUA_MAXINTEGER : v);
    return 1;
}

static int tree_copy(lua_State *L)
{
    struct ntt_store *st = ntt_store_check(L, 1);
    const char *hex = luaL_checkstring(L, 2);
    lua_Integer n = luaL_checkinteger(L, 3);
    if (strlen(hex) != 64 || strspn(hex, "0123456789abcdef") != 64) return luaL_error(L, "tree.copy: not a blob id");
    if (n < 1 || n > MAX_COPIES) return luaL_error(L, "tree.copy: copy number out of range");
    struct job j = { .st = st, .copiesfd = -1 };
    int reflink = 0, e = make_copy(&j, hex, (int)n, &reflink);
    if (j.copiesfd >= 0) close(j.copiesfd);
    if (e) return ntt_failf(L, e, "copy %d of blob %s", (int)n, hex);
    lua_pushboolean(L, reflink > 0);
    return 1;
}

int luaopen_ntt_core_tree(lua_State *L)
{
    static const luaL_Reg fns[] = {
        { "build", tree_build }, { "times", tree_times }, { "link_max", tree_link_max },
        { "copy", tree_copy }, { NULL, NULL }
    };
    luaL_newlib(L, fns);
    return 1;
}

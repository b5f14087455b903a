/*
 * walk_engine.c - the threads behind ntt.core.walk (the Lua side is walk.c;
 * the C API is walk.h).
 *
 * A stack of directories still to list is shared by N worker threads.  A
 * worker opens a directory relative to the root (openat2 with
 * RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_XDEV, in chunks shorter
 * than PATH_MAX so any depth works), lists it with getdents64, lstat()s
 * every entry with statx(AT_SYMLINK_NOFOLLOW), reads symlink targets with
 * readlinkat and appends one record per entry to its own batch.  Full
 * batches go through a bounded queue to the consuming (main) thread, so
 * memory does not grow with the tree.  Names and paths are raw bytes.
 * Worker threads never touch a lua_State.
 *
 * Never crossed: symlinks (recorded with their target), other filesystems
 * (a directory whose st_dev differs from the root's, or whose opening
 * crosses a mount, is recorded with the mountpoint flag and a note, not
 * descended), directory cycles (a directory whose inode is one of its
 * ancestors' is recorded but not descended, reported as ELOOP).  A name
 * listed twice in one directory is kept once and reported as a duplicate.
 *
 * Stall: a syscall stuck in a broken filesystem cannot be cancelled.  The
 * consuming thread watches a progress counter; when nothing moved for
 * stall_timeout seconds while a directory is being read, it stops waiting,
 * hands out what the workers had gathered, reports "stalled" with the
 * directory being read, and leaves the stuck thread detached.  The walk's
 * shared state is reference-counted, so a thread that wakes up later finds
 * valid memory, sees the stop flag and exits, freeing what is left.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "ntt.h"
#include "walk.h"

#define DENTS_BUF (64 * 1024)

struct item {                  /* a directory still to list */
    struct item *next;
    uint64_t ino;
    int depth;                 /* 0 for the root */
    int emit_self;             /* the root: emit its own record first */
    uint64_t *anc;             /* inodes of the ancestors, depth of them */
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

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();   /* out of memory in a worker: nothing sane to report to */
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        abort();
    return p;
}

/* ---- events ------------------------------------------------------------ */

/* Record an event (caller holds no lock). */
static void walk_event(struct ntt_walk *w, int kind, int err, const char *path,
                       size_t len, const char *what)
{
    pthread_mutex_lock(&w->mu);
    if (kind == NTT_WALK_EV_ERROR) w->st.errors++;
    else if (kind == NTT_WALK_EV_DUPLICATE) w->st.duplicates++;
    else w->st.mountpoints++;
    if (w->evkind[kind] < (size_t)w->o.max_events) {
        w->evkind[kind]++;
        if (w->st.nevents == w->evcap) {
            w->evcap = w->evcap ? 2 * w->evcap : 16;
            w->st.events = xrealloc(w->st.events, w->evcap * sizeof *w->st.events);
        }
        struct ntt_walk_event *e = &w->st.events[w->st.nevents++];
        e->kind = kind;
        e->err = err;
        e->path = xmalloc(len + 1);
        memcpy(e->path, path, len);
        e->path[len] = 0;
        e->path_len = len;
        e->msg = NULL;
        if (what) {
            char buf[256];
            size_t n = (size_t)snprintf(buf, sizeof buf, "%s%s%s", what,
                                        err ? ": " : "", err ? strerror(err) : "");
            e->msg = xmalloc(n + 1);
            memcpy(e->msg, buf, n + 1);
        }
    }
    pthread_mutex_unlock(&w->mu);
}

/* ---- batches ----------------------------------------------------------- */

static void batch_free(struct batch *b)
{
    if (b) { free(b->recs); free(b->arena); free(b); }
}

static struct batch *batch_get(struct ntt_walk *w, size_t need)
{
    struct batch *b = NULL;
    pthread_mutex_lock(&w->mu);
    if (w->freel) { b = w->freel; w->freel = b->next; w->nfree--; }
    pthread_mutex_unlock(&w->mu);
    if (!b) {
        b = xmalloc(sizeof *b);
        b->cap = (size_t)w->o.batch;
        b->recs = xmalloc(b->cap * sizeof *b->recs);
        b->acap = w->o.batch_bytes;
        b->arena = xmalloc(b->acap);
    }
    if (need > b->acap) {
        b->acap = need;
        b->arena = xrealloc(b->arena, need);
    }
    b->n = b->used = 0;
    b->next = NULL;
    return b;
}

/* Back to the free list (kept small: a few per worker), else freed. */
static void batch_put(struct ntt_walk *w, struct batch *b)
{
    if (!b) return;
    if (b->acap > w->o.batch_bytes) {   /* an oversized arena is not kept */
        batch_free(b);
        return;
    }
    pthread_mutex_lock(&w->mu);
    if (w->nfree < (size_t)w->nwk + 2) {
        b->next = w->freel;
        w->freel = b;
        w->nfree++;
        b = NULL;
    }
    pthread_mutex_unlock(&w->mu);
    batch_free(b);
}

static void batch_seal(struct batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        struct ntt_walk_rec *r = &b->recs[i];
        r->path = b->arena + (uintptr_t)r->path;
        r->name = r->path + r->path_len - r->name_len;
        r->target = r->target_len || r->type == 'l' ? b->arena + (uintptr_t)r->target : NULL;
    }
}

/* Queue a batch for the consumer; waits while the queue is full. */
static void batch_push(struct ntt_walk *w, struct batch *b)
{
    batch_seal(b);
    pthread_mutex_lock(&w->mu);
    while (w->qlen >= w->qmax && !w->stop)
        pthread_cond_wait(&w->space_cv, &w->mu);
    if (w->stop) {
        pthread_mutex_unlock(&w->mu);
        batch_put(w, b);
        return;
    }
    if (w->qtail) w->qtail->next = b; else w->qhead = b;
    w->qtail = b;
    w->qlen++;
    atomic_fetch_add(&w->progress, 1);
    pthread_cond_signal(&w->out_cv);
    pthread_mutex_unlock(&w->mu);
}

static void worker_flush(struct worker *k)
{
    pthread_mutex_lock(&k->bmu);
    struct batch *b = k->cur;
    if (b && b->n) k->cur = NULL; else b = NULL;
    pthread_mutex_unlock(&k->bmu);
    if (b) batch_push(k->w, b);
}

/* Append one record; path is the entry's path, name its last nlen bytes. */
static void worker_emit(struct worker *k, const struct stat *st, const char *path,
                        size_t plen, size_t nlen, uint64_t parent,
                        const char *target, size_t tlen, uint32_t flags)
{
    struct ntt_walk *w = k->w;
    size_t need = plen + tlen;
    pthread_mutex_lock(&k->bmu);
    struct batch *b = k->cur;
    if (b && (b->n == b->cap || b->used + need > b->acap)) {
        k->cur = NULL;
        pthread_mutex_unlock(&k->bmu);
        batch_push(w, b);
        pthread_mutex_lock(&k->bmu);
        b = NULL;
    }
    if (!b) {
        pthread_mutex_unlock(&k->bmu);
        b = batch_get(w, need);
        pthread_mutex_lock(&k->bmu);
        k->cur = b;
    }
    struct ntt_walk_rec *r = &b->recs[b->n];
    memset(r, 0, sizeof *r);
    r->ino = st->st_ino;
    r->parent = parent;
    r->nlink = st->st_nlink;
    r->size = st->st_size;
    int64_t s = st->st_mtim.tv_sec;
    const int64_t lim = INT64_MAX / 1000000000 - 1;
    r->mtime_ns = s > lim ? INT64_MAX : s < -lim ? INT64_MIN
                : s * 1000000000 + st->st_mtim.tv_nsec;
    r->mode = st->st_mode;
    r->uid = st->st_uid;
    r->gid = st->st_gid;
    r->flags = flags;
    r->type = ntt_walk_typechar(st->st_mode);
    if (r->type == 'b' || r->type == 'c')
        r->rdev = st->st_rdev;
    memcpy(b->arena + b->used, path, plen);
    r->path = (const char *)(uintptr_t)b->used;
    r->path_len = plen;
    r->name_len = nlen;
    b->used += plen;
    memcpy(b->arena + b->used, target, tlen);
    r->target = (const char *)(uintptr_t)b->used;
    r->target_len = tlen;
    b->used += tlen;
    b->n++;
    pthread_mutex_unlock(&k->bmu);
}

char ntt_walk_typechar(unsigned mode)
{
    switch (mode & S_IFMT) {
    case S_IFREG: return 'f';
    case S_IFDIR: return 'd';
    case S_IFLNK: return 'l';
    case S_IFBLK: return 'b';
    case S_IFCHR: return 'c';
    case S_IFIFO: return 'p';
    case S_IFSOCK: return 's';
    default: return '?';
    }
}

/* ---- directory names: duplicates within one listing ------------------- */

static uint64_t name_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h ^ (h >> 29);
}

static void names_reset(struct worker *k)
{
    k->gen++;
    if (k->gen == 0) {   /* wrapped: really clear */
        memset(k->set, 0, k->setcap * sizeof *k->set);
        k->gen = 1;
    }
    k->setn = 0;
    k->nused = 0;
}

/* 1 if added, 0 if the directory already listed this name. */
static int names_add(struct worker *k, const char *s, size_t n)
{
    if (2 * (k->setn + 1) > k->setcap) {
        size_t ncap = k->setcap ? 2 * k->setcap : 1024;
        struct slot *ns = calloc(ncap, sizeof *ns);
        if (!ns) abort();
        for (size_t i = 0; i < k->setcap; i++) {
            struct slot *o = &k->set[i];
            if (o->gen != k->gen) continue;
            size_t j = o->h & (ncap - 1);
            while (ns[j].gen == k->gen) j = (j + 1) & (ncap - 1);
            ns[j] = *o;
        }
        free(k->set);
        k->set = ns;
        k->setcap = ncap;
    }
    uint64_t h = name_hash(s, n);
    size_t j = h & (k->setcap - 1);
    for (;; j = (j + 1) & (k->setcap - 1)) {
        struct slot *e = &k->set[j];
        if (e->gen != k->gen) break;
        if (e->h == h && e->len == n && memcmp(k->names + e->off, s, n) == 0)
            return 0;
    }
    if (k->nused + n > k->ncap) {
        k->ncap = (k->nused + n) * 2 + 4096;
        k->names = xrealloc(k->names, k->ncap);
    }
    memcpy(k->names + k->nused, s, n);
    k->set[j] = (struct slot){ h, k->gen, (uint32_t)n, k->nused };
    k->nused += n;
    k->setn++;
    return 1;
}

/* ---- opening directories below the root -------------------------------- */

static atomic_int have_openat2 = 1;

static int open_beneath(int dirfd, const char *rel)
{
    if (have_openat2) {
        struct open_how how = {
            .flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
            .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
                     | RESOLVE_NO_XDEV,
        };
        int fd = (int)syscall(SYS_openat2, dirfd, rel, &how, sizeof how);
        if (fd >= 0 || errno != ENOSYS)
            return fd;
        have_openat2 = 0;
    }
    return openat(dirfd, rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

/* Open path (relative to the root, any length); -1 with errno. */
static int open_rel(struct ntt_walk *w, const char *path, size_t len)
{
    if (len == 0)
        return openat(w->rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (len < PATH_MAX)
        return open_beneath(w->rootfd, path);
    int fd = w->rootfd;
    char *chunk = xmalloc(PATH_MAX);
    size_t pos = 0;
    while (pos < len) {
        size_t n = len - pos;
        if (n >= PATH_MAX) {   /* cut at the last '/' that fits */
            n = PATH_MAX - 1;
            while (n > 0 && path[pos + n] != '/') n--;
            if (n == 0) { errno = ENAMETOOLONG; break; }
        }
        memcpy(chunk, path + pos, n);
        chunk[n] = 0;
        int nfd = open_beneath(fd, chunk);
        int e = errno;
        if (fd != w->rootfd) close(fd);
        fd = nfd;
        errno = e;
        if (fd < 0) break;
        pos += n;
        while (pos < len && path[pos] == '/') pos++;
    }
    free(chunk);
    if (pos < len) {
        if (fd >= 0 && fd != w->rootfd) close(fd);
        return -1;
    }
    return fd;
}

/* ---- the worker -------------------------------------------------------- */

static void path_room(struct worker *k, size_t need)
{
    if (need > k->pcap) {
        k->pcap = need * 2;
        k->pbuf = xrealloc(k->pbuf, k->pcap);
    }
}

static void push_dir(struct ntt_walk *w, const struct item *parent, const char *path,
                     size_t len, uint64_t ino)
{
    struct item *it = xmalloc(sizeof *it + len + 1);
    memcpy(it->path, path, len);
    it->path[len] = 0;
    it->len = len;
    it->ino = ino;
    it->depth = parent->depth + 1;
    it->emit_self = 0;
    it->anc = xmalloc(sizeof(uint64_t) * (size_t)it->depth);
    if (parent->depth) memcpy(it->anc, parent->anc, sizeof(uint64_t) * (size_t)parent->depth);
    it->anc[parent->depth] = parent->ino;
    pthread_mutex_lock(&w->mu);
    it->next = w->stack;
    w->stack = it;
    pthread_cond_signal(&w->work_cv);
    pthread_mutex_unlock(&w->mu);
}

static int is_ancestor(const struct item *it, uint64_t ino)
{
    if (ino == it->ino) return 1;
    for (int i = 0; i < it->depth; i++)
        if (it->anc[i] == ino) return 1;
    return 0;
}

/* lstat() of one entry; *mountroot set for the root of a (bind) mount. */
static atomic_int have_statx = 1;

static int entry_stat(int dfd, const char *name, struct stat *st, int *mountroot)
{
    if (have_statx) {
        struct statx x;
        if (statx(dfd, name, AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT, STATX_BASIC_STATS, &x) == 0) {
            memset(st, 0, sizeof *st);
            st->st_dev = makedev(x.stx_dev_major, x.stx_dev_minor);
            st->st_ino = x.stx_ino;
            st->st_mode = x.stx_mode;
            st->st_nlink = x.stx_nlink;
            st->st_uid = x.stx_uid;
            st->st_gid = x.stx_gid;
            st->st_rdev = makedev(x.stx_rdev_major, x.stx_rdev_minor);
            st->st_size = (off_t)x.stx_size;
            st->st_mtim.tv_sec = x.stx_mtime.tv_sec;
            st->st_mtim.tv_nsec = x.stx_mtime.tv_nsec;
            *mountroot = (x.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT)
                      && (x.stx_attributes & STATX_ATTR_MOUNT_ROOT);
            return 0;
        }
        if (errno != ENOSYS) return -1;
        have_statx = 0;
    }
    return fstatat(dfd, name, st, AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT);
}

static void walk_entry(struct worker *k, int dfd, const struct item *it,
                       const char *name, size_t nlen)
{
    struct ntt_walk *w = k->w;
    size_t plen = it->len + (it->len ? 1 : 0) + nlen;
    path_room(k, plen + 1);
    char *p = k->pbuf;
    memcpy(p, it->path, it->len);
    if (it->len) p[it->len] = '/';
    memcpy(p + plen - nlen, name, nlen);
    p[plen] = 0;
    if (!names_add(k, name, nlen)) {
        walk_event(w, NTT_WALK_EV_DUPLICATE, 0, p, plen, "listed twice");
        return;
    }
    struct stat st;
    int mountroot = 0;
    if (entry_stat(dfd, name, &st, &mountroot) != 0) {
        walk_event(w, NTT_WALK_EV_ERROR, errno, p, plen, "statx");
        return;
    }
    atomic_fetch_add(&w->progress, 1);
    char tbuf[512], *target = tbuf;
    size_t tlen = 0;
    uint32_t flags = 0;
    if (S_ISLNK(st.st_mode)) {
        size_t cap = sizeof tbuf;
        for (;;) {
            ssize_t n = readlinkat(dfd, name, target, cap);
            if (n < 0) {
                walk_event(w, NTT_WALK_EV_ERROR, errno, p, plen, "readlinkat");
                break;
            }
            if ((size_t)n < cap) { tlen = (size_t)n; break; }
            cap *= 2;
            target = xrealloc(target == tbuf ? NULL : target, cap);
        }
    } else if (S_ISDIR(st.st_mode)) {
        if (st.st_dev != w->rootdev || mountroot) {
            flags = NTT_WALK_MOUNTPOINT;
            walk_event(w, NTT_WALK_EV_MOUNTPOINT, 0, p, plen, "another filesystem: not descended");
        } else if (is_ancestor(it, st.st_ino)) {
            flags = NTT_WALK_NOTDESC;
            walk_event(w, NTT_WALK_EV_ERROR, ELOOP, p, plen, "directory is its own ancestor");
        } else if (it->depth + 1 > w->o.max_depth) {
            flags = NTT_WALK_NOTDESC;
            walk_event(w, NTT_WALK_EV_ERROR, ELOOP, p, plen, "deeper than max_depth");
        } else {
            push_dir(w, it, p, plen, st.st_ino);
        }
    }
    worker_emit(k, &st, p, plen, nlen, it->ino, target, tlen, flags);
    if (target != tbuf) free(target);
}

static void walk_dir(struct worker *k, struct item *it)
{
    struct ntt_walk *w = k->w;
    int fd = open_rel(w, it->path, it->len);
    if (fd < 0) {
        int e = errno;
        if (e == EXDEV)   /* a bind mount of this same filesystem */
            walk_event(w, NTT_WALK_EV_MOUNTPOINT, 0, it->path, it->len, "a mount: not descended");
        else
            walk_event(w, NTT_WALK_EV_ERROR, e, it->path, it->len, "open");
        return;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        walk_event(w, NTT_WALK_EV_ERROR, errno, it->path, it->len, "fstat");
        close(fd);
        return;
    }
    if (it->emit_self)
        worker_emit(k, &st, "", 0, 0, st.st_ino, "", 0, 0);
    else if (st.st_dev != w->rootdev || st.st_ino != it->ino) {
        walk_event(w, NTT_WALK_EV_ERROR, ESTALE, it->path, it->len,
                   "directory changed while walking");
        close(fd);
        return;
    }
    atomic_fetch_add(&w->progress, 1);
    atomic_fetch_add(&w->dirs, 1);
    names_reset(k);
    while (!w->stop) {
        ssize_t n = getdents64(fd, k->dents, DENTS_BUF);
        if (n < 0) {
            if (errno == EINTR) continue;
            walk_event(w, NTT_WALK_EV_ERROR, errno, it->path, it->len, "getdents64");
            break;
        }
        if (n == 0) break;
        atomic_fetch_add(&w->progress, 1);
        for (ssize_t off = 0; off < n && !w->stop;) {
            struct dirent64 *d = (struct dirent64 *)(k->dents + off);
            off += d->d_reclen;
            const char *nm = d->d_name;
            if (nm[0] == '.' && (nm[1] == 0 || (nm[1] == '.' && nm[2] == 0)))
                continue;
            walk_entry(k, fd, it, nm, strlen(nm));
        }
    }
    close(fd);
}

static void walk_unref(struct ntt_walk *w);

static void *worker_main(void *arg)
{
    struct worker *k = arg;
    struct ntt_walk *w = k->w;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        if (!w->stack && !w->stop && w->active > 0 && k->cur && k->cur->n) {
            pthread_mutex_unlock(&w->mu);   /* going idle: hand over what we have */
            worker_flush(k);
            continue;
        }
        while (!w->stop && !w->stack && w->active > 0)
            pthread_cond_wait(&w->work_cv, &w->mu);
        if (w->stop || !w->stack) {
            pthread_cond_broadcast(&w->work_cv);
            pthread_mutex_unlock(&w->mu);
            break;
        }
        struct item *it = w->stack;
        w->stack = it->next;
        w->active++;
        k->busy = it;
        k->busy_since = mono();
        pthread_mutex_unlock(&w->mu);

        walk_dir(k, it);

        pthread_mutex_lock(&w->mu);
        k->busy = NULL;
        w->active--;
        if (w->active == 0 && !w->stack)
            pthread_cond_broadcast(&w->work_cv);
        pthread_mutex_unlock(&w->mu);
        free(it->anc);
        free(it);
    }
    if (!w->stop)
        worker_flush(k);
    pthread_mutex_lock(&k->bmu);
    struct batch *b = k->cur;
    k->cur = NULL;
    pthread_mutex_unlock(&k->bmu);
    batch_free(b);
    free(k->dents); free(k->pbuf); free(k->set); free(k->names);
    k->dents = k->pbuf = k->names = NULL;
    k->set = NULL;
    pthread_mutex_lock(&w->mu);
    k->exited = 1;
    w->running--;
    pthread_cond_broadcast(&w->out_cv);
    pthread_mutex_unlock(&w->mu);
    walk_unref(w);
    return NULL;
}

/* ---- the walk's life --------------------------------------------------- */

static void walk_free(struct ntt_walk *w)
{
    struct batch *b, *nb;
    for (b = w->qhead; b; b = nb) { nb = b->next; batch_free(b); }
    for (b = w->freel; b; b = nb) { nb = b->next; batch_free(b); }
    batch_free(w->consumed);
    struct item *it, *ni;
    for (it = w->stack; it; it = ni) { ni = it->next; free(it->anc); free(it); }
    for (int i = 0; i < w->nwk; i++)
        pthread_mutex_destroy(&w->wk[i].bmu);
    free(w->wk);
    ntt_walk_stats_free(&w->st);
    if (w->rootfd >= 0) close(w->rootfd);
    free(w->root);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->work_cv);
    pthread_cond_destroy(&w->out_cv);
    pthread_cond_destroy(&w->space_cv);
    free(w);
}

static void walk_unref(struct ntt_walk *w)
{
    pthread_mutex_lock(&w->mu);
    int last = --w->refs == 0;
    pthread_mutex_unlock(&w->mu);
    if (last) walk_free(w);
}

void ntt_walk_defaults(struct ntt_walk_opts *o)
{
    if (o->threads <= 0) o->threads = 4;
    if (o->threads > 256) o->threads = 256;
    if (o->stall_timeout <= 0) o->stall_timeout = 120;
    if (o->batch <= 0) o->batch = 4096;
    if (o->batch_bytes == 0) o->batch_bytes = 1 << 20;
    if (o->batch_bytes < 4096) o->batch_bytes = 4096;
    if (o->max_depth <= 0) o->max_depth = 4096;
    if (o->max_events <= 0) o->max_events = 1000;
}

struct ntt_walk *ntt_walk_start(const struct ntt_walk_opts *opts)
{
    int fd = open(opts->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) { int e = errno; close(fd); errno = e; return NULL; }
    struct ntt_walk *w = calloc(1, sizeof *w);
    if (!w) { close(fd); errno = ENOMEM; return NULL; }
    w->o = *opts;
    ntt_walk_defaults(&w->o);
    w->root = strdup(opts->root);
    w->o.root = w->root;
    w->rootfd = fd;
    w->rootdev = st.st_dev;
    w->qmax = (size_t)w->o.threads * 2;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->work_cv, NULL);
    pthread_cond_init(&w->out_cv, NULL);
    pthread_cond_init(&w->space_cv, NULL);
    struct item *it = xmalloc(sizeof *it + 1);
    memset(it, 0, sizeof *it + 1);
    it->ino = st.st_ino;
    it->emit_self = 1;
    w->stack = it;
    w->t0 = mono();
    w->wk = calloc((size_t)w->o.threads, sizeof *w->wk);
    w->refs = 1;
    for (int i = 0; i < w->o.threads; i++) {
        struct worker *k = &w->wk[i];
        k->w = w;
        pthread_mutex_init(&k->bmu, NULL);
        k->dents = xmalloc(DENTS_BUF);
        w->nwk++;
        pthread_mutex_lock(&w->mu);
        w->refs++;
        w->running++;
        pthread_mutex_unlock(&w->mu);
        int rc = pthread_create(&k->tid, NULL, worker_main, k);
        if (rc != 0) {
            free(k->dents);
            k->dents = NULL;
            pthread_mutex_lock(&w->mu);
            w->refs--;
            w->running--;
            k->exited = 2;   /* never started: nothing to join */
            pthread_mutex_unlock(&w->mu);
            if (i == 0) { ntt_walk_finish(w); errno = rc; return NULL; }
            break;
        }
    }
    return w;
}

/* Under w->mu: the oldest directory being listed, handed to the stats. */
static void walk_mark_stalled(struct ntt_walk *w)
{
    struct worker *old = NULL;
    for (int i = 0; i < w->nwk; i++)
        if (w->wk[i].busy && (!old || w->wk[i].busy_since < old->busy_since))
            old = &w->wk[i];
    w->st.stalled = 1;
    if (old) {
        w->st.stalled_path = xmalloc(old->busy->len + 1);
        memcpy(w->st.stalled_path, old->busy->path, old->busy->len + 1);
        w->st.stalled_path_len = old->busy->len;
    }
    w->stop = 1;
    pthread_cond_broadcast(&w->work_cv);
    pthread_cond_broadcast(&w->space_cv);
    /* What the workers gathered (the stuck one included) is still handed out. */
    for (int i = 0; i < w->nwk; i++) {
        struct worker *k = &w->wk[i];
        pthread_mutex_lock(&k->bmu);
        struct batch *b = k->cur;
        if (b && b->n) k->cur = NULL; else b = NULL;
        pthread_mutex_unlock(&k->bmu);
        if (b) {
            batch_seal(b);
            if (w->qtail) w->qtail->next = b; else w->qhead = b;
            w->qtail = b;
            w->qlen++;
        }
    }
}

static void walk_over(struct ntt_walk *w)
{
    if (!w->over) {
        w->over = 1;
        w->st.seconds = mono() - w->t0;
    }
}

size_t ntt_walk_next(struct ntt_walk *w, const struct ntt_walk_rec **recs)
{
    *recs = NULL;
    if (w->consumed) { batch_put(w, w->consumed); w->consumed = NULL; }
    if (w->over) return 0;
    pthread_mutex_lock(&w->mu);
    uint64_t lastp = atomic_load(&w->progress);
    double lastt = mono();
    for (;;) {
        if (ntt_interrupted && !w->st.interrupted) {
            w->st.interrupted = 1;
            w->stop = 1;
            pthread_cond_broadcast(&w->work_cv);
            pthread_cond_broadcast(&w->space_cv);
        }
        if (w->qhead && !w->st.interrupted) {
            struct batch *b = w->qhead;
            w->qhead = b->next;
            if (!w->qhead) w->qtail = NULL;
            w->qlen--;
            pthread_cond_signal(&w->space_cv);
            pthread_mutex_unlock(&w->mu);
            b->next = NULL;
            w->consumed = b;
            w->st.entries += b->n;
            *recs = b->recs;
            return b->n;
        }
        if (w->running == 0 || w->stop)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000000;
        if (ts.tv_nsec >= 1000000000) { ts.tv_sec++; ts.tv_nsec -= 1000000000; }
        pthread_cond_timedwait(&w->out_cv, &w->mu, &ts);
        uint64_t p = atomic_load(&w->progress);
        double now = mono();
        if (p != lastp) {
            lastp = p;
            lastt = now;
        } else if (now - lastt >= w->o.stall_timeout && w->active > 0) {
            walk_mark_stalled(w);
        }
    }
    pthread_mutex_unlock(&w->mu);
    walk_over(w);
    return 0;
}

void ntt_walk_stop(struct ntt_walk *w)
{
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_broadcast(&w->work_cv);
    pthread_cond_broadcast(&w->space_cv);
    pthread_mutex_unlock(&w->mu);
}

void ntt_walk_stats(struct ntt_walk *w, struct ntt_walk_stats *out)
{
    pthread_mutex_lock(&w->mu);
    *out = w->st;
    out->dirs = atomic_load(&w->dirs);
    out->seconds = w->over ? w->st.seconds : mono() - w->t0;
    out->events = calloc(w->st.nevents ? w->st.nevents : 1, sizeof *out->events);
    if (!out->events) abort();
    for (size_t i = 0; i < w->st.nevents; i++) {
        const struct ntt_walk_event *e = &w->st.events[i];
        out->events[i] = *e;
        out->events[i].path = xmalloc(e->path_len + 1);
        memcpy(out->events[i].path, e->path, e->path_len + 1);
        out->events[i].msg = e->msg ? strdup(e->msg) : NULL;
    }
    if (w->st.stalled_path) {
        out->stalled_path = xmalloc(w->st.stalled_path_len + 1);
        memcpy(out->stalled_path, w->st.stalled_path, w->st.stalled_path_len + 1);
    }
    pthread_mutex_unlock(&w->mu);
}

void ntt_walk_stats_free(struct ntt_walk_stats *st)
{
    for (size_t i = 0; i < st->nevents; i++) {
        free(st->events[i].path);
        free(st->events[i].msg);
    }
    free(st->events);
    free(st->stalled_path);
    st->events = NULL;
    st->stalled_path = NULL;
    st->nevents = 0;
}

void ntt_walk_finish(struct ntt_walk *w)
{
    if (!w) return;
    walk_over(w);
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_broadcast(&w->work_cv);
    pthread_cond_broadcast(&w->space_cv);
    /* Workers not stuck in a syscall leave at once; give slow ones a moment. */
    double until = mono() + (w->st.stalled ? 0.5 : 5.0);
    while (w->running > 0 && mono() < until) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000;
        if (ts.tv_nsec >= 1000000000) { ts.tv_sec++; ts.tv_nsec -= 1000000000; }
        pthread_cond_timedwait(&w->out_cv, &w->mu, &ts);
    }
    struct batch *q = w->qhead;
    w->qhead = w->qtail = NULL;
    w->qlen = 0;
    int n = w->nwk, exited[256];
    for (int i = 0; i < n; i++)
        exited[i] = w->wk[i].exited;
    pthread_mutex_unlock(&w->mu);
    for (int i = 0; i < n; i++) {
        if (exited[i] == 1) pthread_join(w->wk[i].tid, NULL);
        else if (exited[i] == 0) pthread_detach(w->wk[i].tid);   /* stuck: left behind */
    }
    for (struct batch *nb; q; q = nb) { nb = q->next; batch_free(q); }
    batch_free(w->consumed);
    w->consumed = NULL;
    walk_unref(w);
}

int ntt_walk_run(const struct ntt_walk_opts *opts, ntt_walk_sink sink, void *ctx,
                 struct ntt_walk_stats *out)
{
    memset(out, 0, sizeof *out);
    struct ntt_walk *w = ntt_walk_start(opts);
    if (!w) return -1;
    int rc = 0;
    const struct ntt_walk_rec *recs;
    size_t n;
    while (rc == 0 && (n = ntt_walk_next(w, &recs)) > 0)
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = sink(ctx, &recs[i]);
    if (rc) ntt_walk_stop(w);
    walk_over(w);
    ntt_walk_stats(w, out);
    ntt_walk_finish(w);
    return rc;
}

const char *ntt_walk_root(const struct ntt_walk *w)
{
    return w->root;
}

int ntt_walk_interrupted(struct ntt_walk *w)
{
    pthread_mutex_lock(&w->mu);
    int r = w->st.interrupted;
    pthread_mutex_unlock(&w->mu);
    return r;
}

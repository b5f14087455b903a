/*
 * walk_list.c - listing one directory for ntt.core.walk (the threads are
 * in walk_engine.c, which calls ntt_walk_dir; the queues in walk_queue.c,
 * which this file calls): open it below the root without crossing
 * symlinks or mounts, read it with getdents64, lstat every entry with
 * statx, drop names listed twice, queue subdirectories, emit records.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include "walk_int.h"

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
        k->names = ntt_walk_xrealloc(k->names, k->ncap);
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
    char *chunk = ntt_walk_xmalloc(PATH_MAX);
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
        k->pbuf = ntt_walk_xrealloc(k->pbuf, k->pcap);
    }
}

static int is_ancestor(const struct item *it, uint64_t ino)
{
    for (; it; it = it->parent)
        if (it->ino == ino) return 1;
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

static void walk_entry(struct worker *k, int dfd, struct item *it,
                       const char *name, size_t nlen, uint64_t d_ino)
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
            target = ntt_walk_xrealloc(target == tbuf ? NULL : target, cap);
        }
    } else if (S_ISDIR(st.st_mode)) {
        if (st.st_dev != w->rootdev || mountroot) {
            /* statx saw the mounted root; the listing has the covered directory */
            flags = NTT_WALK_MOUNTPOINT;
            if (d_ino) st.st_ino = d_ino;
            walk_event(w, NTT_WALK_EV_MOUNTPOINT, 0, p, plen, "another filesystem: not descended");
        } else if (is_ancestor(it, st.st_ino)) {
            flags = NTT_WALK_NOTDESC;
            walk_note(w, NTT_WALK_EV_ERROR, ELOOP, p, plen, "directory is its own ancestor: not descended");
        } else if (it->depth + 1 > w->o.max_depth) {
            flags = NTT_WALK_NOTDESC;
            walk_note(w, NTT_WALK_EV_ERROR, ELOOP, p, plen, "deeper than max_depth: not descended");
        } else {
            ntt_walk_push_dir(w, it, p, plen, st.st_ino);
        }
    }
    ntt_walk_emit(k, &st, p, plen, nlen, it->ino, target, tlen, flags);
    if (target != tbuf) free(target);
}

void ntt_walk_dir(struct worker *k, struct item *it)
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
    if (it->first)
        it->ino = st.st_ino;   /* a start below the root: known once opened */
    if (it->emit_self)
        ntt_walk_emit(k, &st, "", 0, 0, st.st_ino, "", 0, 0);
    else if (st.st_dev != w->rootdev || st.st_ino != it->ino) {
        walk_note(w, NTT_WALK_EV_ERROR, ESTALE, it->path, it->len,
                  "directory changed while walking");
        close(fd);
        return;
    }
    atomic_fetch_add(&w->progress, 1);
    atomic_fetch_add(&w->dirs, 1);
    names_reset(k);
    const char *only = it->first ? w->o.only : NULL;
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
            if (only && strcmp(nm, only) != 0)
                continue;
            walk_entry(k, fd, it, nm, strlen(nm), d->d_ino);
        }
    }
    close(fd);
}

/*
 * index.c - ntt-browse: the snapshot ntt writes (lua/ntt/browse.lua) read
 * into one node per path, found through a hash table keyed by the path
 * FUSE hands over, so a lookup on a medium of millions of names costs one
 * hash, never a query.
 *
 * The snapshot: "NTTBRW1\n", then records until the end of the file, each
 * little-endian: kind (1 byte), mode (u32), mtime_ns (i64), size (u64),
 * path length (u32) and path (relative, components joined by "/"), data
 * length (u32) and data.  Parents that no record describes are made as
 * directories; a record whose path was seen before is ignored.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "browse.h"

static uint64_t le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static size_t hash_of(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;          /* FNV-1a */
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 1099511628211ULL; }
    return (size_t)h;
}

static struct node *find(const struct index *x, const char *path, size_t n)
{
    for (struct node *k = x->slots[hash_of(path, n) & (x->nslots - 1)]; k; k = k->next)
        if (!strncmp(k->path, path, n) && k->path[n] == 0) return k;
    return NULL;
}

struct node *index_lookup(const struct index *x, const char *path)
{
    return find(x, path, strlen(path));
}

static int add_kid(struct node *dir, struct node *k)
{
    if (dir->nkids == dir->cap) {
        uint32_t cap = dir->cap ? dir->cap * 2 : 8;
        struct node **kids = realloc(dir->kids, cap * sizeof *kids);
        if (!kids) return -1;
        dir->kids = kids;
        dir->cap = cap;
    }
    dir->kids[dir->nkids++] = k;
    if (k->kind == 'd') dir->nsubdirs++;
    return 0;
}

/* A new node at path (n bytes), in the table; its parent is set by the caller. */
static struct node *insert(struct index *x, const char *path, size_t n)
{
    struct node *k = calloc(1, sizeof *k);
    if (!k || !(k->path = malloc(n + 1))) { free(k); return NULL; }
    memcpy(k->path, path, n);
    k->path[n] = 0;
    const char *slash = strrchr(k->path, '/');
    k->name = n == 1 ? k->path : slash + 1;
    size_t h = hash_of(path, n) & (x->nslots - 1);
    k->next = x->slots[h];
    x->slots[h] = k;
    x->nnodes++;
    return k;
}

/* The directory at path (n bytes), made (with its parents) when missing;
 * NULL when something else is there or memory ran out. */
static struct node *dir_at(struct index *x, const char *path, size_t n)
{
    if (n == 0) n = 1;                                     /* "" is the root, "/" */
    struct node *d = find(x, path, n);
    if (d) return d->kind == 'd' ? d : NULL;
    if (n == 1) return NULL;                               /* the root is made first */
    size_t pn = n;
    while (pn > 0 && path[pn - 1] != '/') pn--;
    struct node *parent = dir_at(x, path, pn - 1);
    if (!parent || !(d = insert(x, path, n))) return NULL;
    d->kind = 'd';
    d->mode = 0555;
    d->mtime_ns = x->now_ns;
    if (add_kid(parent, d) < 0) return NULL;
    return d;
}

/* A relative path ntt could have written: components neither empty, "." nor "..". */
static int valid(const unsigned char *p, size_t n)
{
    if (n == 0) return 0;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && p[i] == 0) return 0;
        if (i == n || p[i] == '/') {
            size_t len = i - start;
            if (len == 0 || (len == 1 && p[start] == '.') || (len == 2 && p[start] == '.' && p[start + 1] == '.'))
                return 0;
            start = i + 1;
        }
    }
    return 1;
}

static int by_name(const void *a, const void *b)
{
    return strcmp((*(struct node *const *)a)->name, (*(struct node *const *)b)->name);
}

static unsigned char *slurp(const char *file, size_t *len, char *err, size_t errlen)
{
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        snprintf(err, errlen, "%s: %s", file, strerror(errno));
        if (fd >= 0) close(fd);
        return NULL;
    }
    unsigned char *buf = malloc((size_t)st.st_size + 1);
    size_t done = 0;
    while (buf && done < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + done, (size_t)st.st_size - done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) { snprintf(err, errlen, "%s: %s", file, r < 0 ? strerror(errno) : "shorter than its size"); free(buf); buf = NULL; }
        else done += (size_t)r;
    }
    if (!buf && !*err) snprintf(err, errlen, "%s: out of memory", file);
    close(fd);
    *len = done;
    return buf;
}

#define HEAD 21                 /* kind 1, mode 4, mtime 8, size 8 */

int index_load(struct index *x, const char *file, char *err, size_t errlen)
{
    memset(x, 0, sizeof *x);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    x->now_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    *err = 0;
    size_t len;
    unsigned char *buf = slurp(file, &len, err, errlen);
    if (!buf) return -1;
    size_t nrec = len / (HEAD + 8) + 16;                  /* at most this many records */
    x->nslots = 64;
    while (x->nslots < nrec * 2 && x->nslots < ((size_t)1 << 40)) x->nslots *= 2;
    x->slots = calloc(x->nslots, sizeof *x->slots);
    int rc = -1;
    if (!x->slots) { snprintf(err, errlen, "out of memory"); goto out; }
    if (len < 8 || memcmp(buf, SNAP_MAGIC, 8)) { snprintf(err, errlen, "%s: not a snapshot", file); goto out; }
    struct node *root = insert(x, "/", 1);
    if (!root) { snprintf(err, errlen, "out of memory"); goto out; }
    root->kind = 'd';
    root->mode = 0555;
    root->mtime_ns = x->now_ns;
    size_t at = 8;
    char *path = NULL;
    while (at < len) {
        if (len - at < HEAD + 4) goto bad;
        const unsigned char *r = buf + at;
        uint64_t plen = le(r + HEAD, 4);
        if (len - at - HEAD - 4 < plen + 4) goto bad;
        const unsigned char *p = r + HEAD + 4;
        uint64_t dlen = le(p + plen, 4);
        if (len - at - HEAD - 8 - plen < dlen) goto bad;
        const unsigned char *d = p + plen + 4;
        at += HEAD + 8 + plen + dlen;
        char kind = (char)r[0];
        if (!strchr("dflt", kind) || !kind || !valid(p, plen)) goto bad;
        free(path);
        if (!(path = malloc(plen + 2))) goto oom;
        path[0] = '/';
        memcpy(path + 1, p, plen);
        path[plen + 1] = 0;
        struct node *k = find(x, path, plen + 1);
        if (k) {                                       /* a directory made for its children, now described */
            if (k->kind == 'd' && kind == 'd') { k->mode = ((uint32_t)le(r + 1, 4) & 0555) | 0500; k->mtime_ns = (int64_t)le(r + 5, 8); }
            else x->skipped++;
            continue;
        }
        size_t pn = plen + 1;
        while (path[pn - 1] != '/') pn--;
        struct node *parent = dir_at(x, path, pn - 1);
        if (!parent) { x->skipped++; continue; }
        if (!(k = insert(x, path, plen + 1)) || add_kid(parent, k) < 0) goto oom;
        k->kind = kind;
        k->mode = (uint32_t)le(r + 1, 4) & 0555;        /* read-only; never setuid, setgid or sticky */
        k->mode |= kind == 'd' ? 0500 : 0400;           /* the mounting user can always read */
        k->mtime_ns = (int64_t)le(r + 5, 8);
        k->size = le(r + 13, 8);
        if (!(k->data = malloc(dlen + 1))) goto oom;
        memcpy(k->data, d, dlen);
        k->data[dlen] = 0;
        k->datalen = (uint32_t)dlen;
        if (kind == 'l' || kind == 't') k->size = dlen;
        if (kind == 'l' && (dlen == 0 || memchr(d, 0, dlen))) goto bad;
    }
    for (size_t i = 0; i < x->nslots; i++)
        for (struct node *k = x->slots[i]; k; k = k->next)
            if (k->nkids > 1) qsort(k->kids, k->nkids, sizeof *k->kids, by_name);
    rc = 0;
    goto done;
bad:
    snprintf(err, errlen, "%s: damaged snapshot at byte %zu", file, at);
    goto done;
oom:
    snprintf(err, errlen, "out of memory");
done:
    free(path);
out:
    free(buf);
    if (rc < 0) index_free(x);
    return rc;
}

void index_free(struct index *x)
{
    for (size_t i = 0; x->slots && i < x->nslots; i++) {
        struct node *k = x->slots[i];
        while (k) {
            struct node *n = k->next;
            free(k->path);
            free(k->data);
            free(k->kids);
            free(k);
            k = n;
        }
    }
    free(x->slots);
    memset(x, 0, sizeof *x);
}

/*
 * walk_queue.c - the shared state of ntt.core.walk between its threads:
 * the stack of directories still to list, the bounded queue of record
 * batches handed to the consumer, and the events of the result.
 *
 * The bottom of the walk: walk_list.c (listing one directory) and
 * walk_engine.c (threads, stall watch, the walk's life) call in here, and
 * nothing here calls them.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include "walk.h"
#include "walk_int.h"

double ntt_walk_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

void *ntt_walk_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();   /* out of memory in a worker: nothing sane to report to */
    return p;
}

void *ntt_walk_xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        abort();
    return p;
}

/* ---- events ------------------------------------------------------------ */

void ntt_walk_event(struct ntt_walk *w, int kind, int err, const char *path,
                    size_t len, const char *what, int syserr)
{
    pthread_mutex_lock(&w->mu);
    if (kind == NTT_WALK_EV_ERROR) w->st.errors++;
    else if (kind == NTT_WALK_EV_DUPLICATE) w->st.duplicates++;
    else w->st.mountpoints++;
    if (w->evkind[kind] < (size_t)w->o.max_events) {
        w->evkind[kind]++;
        if (w->st.nevents == w->evcap) {
            w->evcap = w->evcap ? 2 * w->evcap : 16;
            w->st.events = ntt_walk_xrealloc(w->st.events, w->evcap * sizeof *w->st.events);
        }
        struct ntt_walk_event *e = &w->st.events[w->st.nevents++];
        e->kind = kind;
        e->err = err;
        e->path = ntt_walk_xmalloc(len + 1);
        memcpy(e->path, path, len);
        e->path[len] = 0;
        e->path_len = len;
        e->msg = NULL;
        if (what) {
            char buf[256];
            size_t n = (size_t)snprintf(buf, sizeof buf, "%s%s%s", what,
                                        syserr ? ": " : "", syserr ? strerror(err) : "");
            e->msg = ntt_walk_xmalloc(n + 1);
            memcpy(e->msg, buf, n + 1);
        }
    }
    pthread_mutex_unlock(&w->mu);
}


/* ---- batches ----------------------------------------------------------- */

void ntt_walk_batch_free(struct batch *b)
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
        b = ntt_walk_xmalloc(sizeof *b);
        b->cap = (size_t)w->o.batch;
        b->recs = ntt_walk_xmalloc(b->cap * sizeof *b->recs);
        b->acap = w->o.batch_bytes;
        b->arena = ntt_walk_xmalloc(b->acap);
    }
    if (need > b->acap) {
        b->acap = need;
        b->arena = ntt_walk_xrealloc(b->arena, need);
    }
    b->n = b->used = 0;
    b->next = NULL;
    return b;
}

/* Back to the free list (as many as can be in flight), else freed. */
void ntt_walk_batch_put(struct ntt_walk *w, struct batch *b)
{
    if (!b) return;
    if (b->acap > w->o.batch_bytes) {   /* an oversized arena is not kept */
        ntt_walk_batch_free(b);
        return;
    }
    pthread_mutex_lock(&w->mu);
    if (w->nfree < w->qmax + (size_t)w->nwk + 2) {
        b->next = w->freel;
        w->freel = b;
        w->nfree++;
        b = NULL;
    }
    pthread_mutex_unlock(&w->mu);
    ntt_walk_batch_free(b);
}

void ntt_walk_batch_seal(struct batch *b)
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
    ntt_walk_batch_seal(b);
    pthread_mutex_lock(&w->mu);
    while (w->qlen >= w->qmax && !w->stop)
        pthread_cond_wait(&w->space_cv, &w->mu);
    if (w->stop) {
        pthread_mutex_unlock(&w->mu);
        ntt_walk_batch_put(w, b);
        return;
    }
    if (w->qtail) w->qtail->next = b; else w->qhead = b;
    w->qtail = b;
    w->qlen++;
    atomic_fetch_add(&w->progress, 1);
    pthread_cond_signal(&w->out_cv);
    pthread_mutex_unlock(&w->mu);
}

void ntt_walk_flush(struct worker *k)
{
    pthread_mutex_lock(&k->bmu);
    struct batch *b = k->cur;
    if (b && b->n) k->cur = NULL; else b = NULL;
    pthread_mutex_unlock(&k->bmu);
    if (b) batch_push(k->w, b);
}

/* Append one record; path is the entry's path, name its last nlen bytes. */
void ntt_walk_emit(struct worker *k, const struct stat *st, const char *path,
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

/* Drop a reference; an item freed drops its parent's in turn. */
void ntt_walk_item_unref(struct item *it)
{
    while (it && atomic_fetch_sub(&it->refs, 1) == 1) {
        struct item *up = it->parent;
        free(it);
        it = up;
    }
}

void ntt_walk_push_dir(struct ntt_walk *w, struct item *parent, const char *path,
                       size_t len, uint64_t ino)
{
    struct item *it = ntt_walk_xmalloc(sizeof *it + len + 1);
    memcpy(it->path, path, len);
    it->path[len] = 0;
    it->len = len;
    it->ino = ino;
    it->depth = parent->depth + 1;
    it->emit_self = 0;
    it->first = 0;
    atomic_init(&it->refs, 1);
    atomic_fetch_add(&parent->refs, 1);
    it->parent = parent;
    pthread_mutex_lock(&w->mu);
    it->next = w->stack;
    w->stack = it;
    pthread_cond_signal(&w->work_cv);
    pthread_mutex_unlock(&w->mu);
}

/*
 * walk_engine.c - the threads behind ntt.core.walk (the Lua side is walk.c,
 * the listing of one directory walk_list.c, the directory stack and batch
 * queue walk_queue.c, the C API walk.h).
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
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "ntt.h"
#include "walk.h"
#include "walk_int.h"

static void walk_unref(struct ntt_walk *w);

static void *worker_main(void *arg)
{
    struct worker *k = arg;
    struct ntt_walk *w = k->w;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        if (!w->stack && !w->stop && w->active > 0 && k->cur && k->cur->n) {
            pthread_mutex_unlock(&w->mu);   /* going idle: hand over what we have */
            ntt_walk_flush(k);
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
        k->busy_since = ntt_walk_mono();
        pthread_mutex_unlock(&w->mu);

        ntt_walk_dir(k, it);

        pthread_mutex_lock(&w->mu);
        k->busy = NULL;
        w->active--;
        if (w->active == 0 && !w->stack)
            pthread_cond_broadcast(&w->work_cv);
        pthread_mutex_unlock(&w->mu);
        ntt_walk_item_unref(it);
    }
    if (!w->stop)
        ntt_walk_flush(k);
    pthread_mutex_lock(&k->bmu);
    struct batch *b = k->cur;
    k->cur = NULL;
    pthread_mutex_unlock(&k->bmu);
    ntt_walk_batch_free(b);
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
    for (b = w->qhead; b; b = nb) { nb = b->next; ntt_walk_batch_free(b); }
    for (b = w->freel; b; b = nb) { nb = b->next; ntt_walk_batch_free(b); }
    ntt_walk_batch_free(w->consumed);
    struct item *it, *ni;
    for (it = w->stack; it; it = ni) { ni = it->next; ntt_walk_item_unref(it); }
    for (int i = 0; i < w->nwk; i++)
        pthread_mutex_destroy(&w->wk[i].bmu);
    free(w->wk);
    ntt_walk_stats_free(&w->st);
    if (w->rootfd >= 0) close(w->rootfd);
    free(w->root);
    free((char *)w->o.only);
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
    if (o->batch > 1 << 20) o->batch = 1 << 20;
    if (o->batch_bytes == 0) o->batch_bytes = 1 << 20;
    if (o->batch_bytes < 4096) o->batch_bytes = 4096;
    if (o->batch_bytes > 1 << 28) o->batch_bytes = 1 << 28;
    if (o->max_depth <= 0) o->max_depth = 4096;
    if (o->max_events <= 0) o->max_events = 1000;
    if (o->max_events > 1000000) o->max_events = 1000000;
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
    size_t rl = strlen(opts->root);
    w->root = ntt_walk_xmalloc(rl + 1);
    memcpy(w->root, opts->root, rl + 1);
    w->o.root = w->root;
    w->rootfd = fd;
    w->rootdev = st.st_dev;
    w->qmax = (size_t)w->o.threads * 2;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->work_cv, NULL);
    pthread_cond_init(&w->out_cv, NULL);
    pthread_cond_init(&w->space_cv, NULL);
    /* the strings are the caller's: kept for the walk's whole life */
    const char *start = opts->start ? opts->start : "";
    size_t sl = strlen(start);
    w->o.start = w->o.only = NULL;
    if (opts->only) {
        size_t ol = strlen(opts->only);
        char *only = ntt_walk_xmalloc(ol + 1);
        memcpy(only, opts->only, ol + 1);
        w->o.only = only;
    }
    struct item *it = ntt_walk_xmalloc(sizeof *it + sl + 1);
    memset(it, 0, sizeof *it + sl + 1);
    atomic_init(&it->refs, 1);
    it->ino = st.st_ino;
    it->emit_self = sl == 0;
    it->first = 1;
    memcpy(it->path, start, sl);
    it->len = sl;
    for (size_t i = 0; i < sl; i++)
        if (start[i] == '/' && i + 1 < sl && start[i + 1] != '/') it->depth++;
    if (sl) it->depth++;
    w->stack = it;
    w->t0 = ntt_walk_mono();
    w->wk = ntt_walk_xmalloc((size_t)w->o.threads * sizeof *w->wk);
    memset(w->wk, 0, (size_t)w->o.threads * sizeof *w->wk);
    w->refs = 1;
    /* Signals are for the main thread (it polls ntt_interrupted). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (int i = 0; i < w->o.threads; i++) {
        struct worker *k = &w->wk[i];
        k->w = w;
        pthread_mutex_init(&k->bmu, NULL);
        k->dents = ntt_walk_xmalloc(DENTS_BUF);
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
            if (i == 0) {
                pthread_sigmask(SIG_SETMASK, &old, NULL);
                ntt_walk_finish(w);
                errno = rc;
                return NULL;
            }
            break;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
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
        w->st.stalled_path = ntt_walk_xmalloc(old->busy->len + 1);
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
            ntt_walk_batch_seal(b);
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
        w->st.seconds = ntt_walk_mono() - w->t0;
    }
}

size_t ntt_walk_next(struct ntt_walk *w, const struct ntt_walk_rec **recs)
{
    *recs = NULL;
    if (w->consumed) { ntt_walk_batch_put(w, w->consumed); w->consumed = NULL; }
    if (w->over) return 0;
    pthread_mutex_lock(&w->mu);
    uint64_t lastp = atomic_load(&w->progress);
    double lastt = ntt_walk_mono(), lastidle = lastt;
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
        double now = ntt_walk_mono();
        if (p != lastp) {
            lastp = p;
            lastt = now;
        } else if (now - lastt >= w->o.stall_timeout && w->active > 0) {
            walk_mark_stalled(w);
        }
        if (w->o.idle && now - lastidle >= 1.0) {
            lastidle = now;
            pthread_mutex_unlock(&w->mu);
            w->o.idle(w->o.idle_arg);
            pthread_mutex_lock(&w->mu);
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
    out->seconds = w->over ? w->st.seconds : ntt_walk_mono() - w->t0;
    out->events = calloc(w->st.nevents ? w->st.nevents : 1, sizeof *out->events);
    if (!out->events) abort();
    for (size_t i = 0; i < w->st.nevents; i++) {
        const struct ntt_walk_event *e = &w->st.events[i];
        out->events[i] = *e;
        out->events[i].path = ntt_walk_xmalloc(e->path_len + 1);
        memcpy(out->events[i].path, e->path, e->path_len + 1);
        out->events[i].msg = e->msg ? strdup(e->msg) : NULL;
    }
    if (w->st.stalled_path) {
        out->stalled_path = ntt_walk_xmalloc(w->st.stalled_path_len + 1);
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
    double until = ntt_walk_mono() + (w->st.stalled ? 0.5 : 5.0);
    while (w->running > 0 && ntt_walk_mono() < until) {
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
    for (struct batch *nb; q; q = nb) { nb = q->next; ntt_walk_batch_free(q); }
    ntt_walk_batch_free(w->consumed);
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

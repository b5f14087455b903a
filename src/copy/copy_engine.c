/*
 * copy_engine.c - the engine of ntt.core.copy (the binding is
 * src/copy/copy.c; the interface src/copy/copy_engine.h): moves files from
 * mounted media into the content-addressed store, hashing in the same pass.
 *
 * Items are grouped by (root, source directory); directories are started
 * in the order their first item appears (so a caller that lists items by
 * inode number reads the medium mostly in disk order); one thread works
 * through one directory at a time, its files in order, and at most
 * `threads` threads run, so reads from several directories are in flight
 * while no directory is ever read by two threads at once.  Sources are
 * opened beneath their root (paths_open_beneath: openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS), a stretch at a time past PATH_MAX): symlinks and
 * ".." escapes fail (ELOOP, EXDEV).
 * Each file is read in blocks of `buffer` bytes, hashed and written to a
 * temp in <store>/tmp through the store's temp calls (store.h); its byte
 * count must equal the expected size (shorter: ENODATA, longer: EFBIG,
 * offset = bytes read); then it is renamed into by-hash without replacing
 * (existing blob: dedup).  A whole buffer of zeros is not written but left
 * a hole (the blob is sparse where the source was zeros).  A file that
 * fits in the buffer and whose blob exists is never written at all.
 * Durability: "fsync" syncs each file and its directory; "batch" writes
 * all temps, syncfs once, renames all, syncfs again; "none" renames only.
 * SIGINT/SIGTERM or a store-side write error (ENOSPC...) stops the batch
 * between blocks: the remaining items fail (EINTR, or that error) and no
 * final name ever holds a partial blob.  Each failure records its phase
 * (open, read, write, store), errno and message; write and store are the
 * store's side (the binding's `side`).  Worker threads never touch Lua.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "copy_engine.h"
#include "paths.h"
#include "blake3.h"

struct worker {
    struct copy_job *job;
    int id;
    struct copy_live *live;
    uint8_t *buf;
    pthread_t tid;
};

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fail_item(struct copy_item *it, int phase, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void fail_item(struct copy_item *it, int phase, int err, const char *fmt, ...)
{
    va_list ap;
    it->status = ST_FAILED;
    it->phase = phase;
    it->err = err;
    va_start(ap, fmt);
    vsnprintf(it->msg, sizeof it->msg, fmt, ap);
    va_end(ap);
}

static void stop_batch(struct copy_job *job, int err)
{
    int zero = 0;
    __atomic_compare_exchange_n(&job->stop, &zero, err, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

/* Errors of the store side, after which no further file can succeed. */
static int store_fatal(int err)
{
    return err == ENOSPC || err == EDQUOT || err == EROFS || err == EIO;
}

static int skipped(struct copy_item *it)
{
    if (!__atomic_load_n(&it->skip, __ATOMIC_RELAXED))
        return 0;
    fail_item(it, PHASE_READ, ECANCELED, "skipped by the operator");
    return 1;
}

static int all_zero(const uint8_t *p, size_t n)   /* (n > 0) */
{
    return p[0] == 0 && memcmp(p, p + 1, n - 1) == 0;
}

static void copy_one_with(struct copy_job *job, struct copy_item *it, uint8_t *buf, struct copy_live *lv,
                          EVP_MD_CTX *sha)
{
    struct ntt_store *st = job->st;
    struct ntt_store_tmp *t = &it->tmp;
    int fd = -1, err = 0, phase = PHASE_WRITE, holes = 0;
    unsigned long long total = 0;
    size_t fill = 0;
    ntt_blake3 b3;

    if (job->rootfds[it->root] < 0) {
        fail_item(it, PHASE_OPEN, job->rooterrs[it->root], "root: %s", strerror(job->rooterrs[it->root]));
        return;
    }
    if (it->pathlen == 0 || memchr(it->path, 0, it->pathlen)) {
        fail_item(it, PHASE_OPEN, EINVAL, "invalid path (empty or containing NUL)");
        return;
    }
    fd = paths_open_beneath(job->rootfds[it->root], it->path, it->pathlen,
                          O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | O_NOFOLLOW);
    if (fd < 0) {
        err = errno;
        fail_item(it, PHASE_OPEN, err, "open: %s", strerror(err));
        return;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        err = errno;
        fail_item(it, PHASE_OPEN, err, "fstat: %s", strerror(err));
        close(fd);
        return;
    }
    if (!S_ISREG(sb.st_mode)) {
        fail_item(it, PHASE_OPEN, EINVAL, "not a regular file");
        close(fd);
        return;
    }
    if ((unsigned long long)sb.st_size > job->bufsize)
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    ntt_blake3_init(&b3);
    size_t zi = 0;              /* next zero range that may lie ahead */
    for (;;) {
        err = __atomic_load_n(&job->stop, __ATOMIC_RELAXED);
        if (ntt_interrupted || err == ECANCELED) {   /* or the job was closed */
            fail_item(it, PHASE_READ, EINTR, "interrupted");
            goto out;
        }
        if (err != 0) {
            fail_item(it, PHASE_STORE, err, "batch stopped: store: %s", strerror(err));
            goto out;
        }
        if (skipped(it)) {
            it->offset = (long long)total;
            goto out;
        }
        ssize_t r;
        size_t want = job->bufsize - fill;
        while (zi < it->nzero && (unsigned long long)(it->zoff[zi] + it->zlen[zi]) <= total)
            zi++;
        if (zi < it->nzero && total >= (unsigned long long)it->zoff[zi]) {
            /* Salvage: a range known to be unreadable is stored as zeros;
             * the source is never asked for it (nor past its end). */
            unsigned long long left = (unsigned long long)(it->zoff[zi] + it->zlen[zi]) - total;
            unsigned long long upto = (unsigned long long)it->size > total ? (unsigned long long)it->size - total : 0;
            size_t z = (size_t)(left < want ? left : want);
            if (z > upto)
                z = (size_t)upto;
            memset(buf + fill, 0, z);
            r = (ssize_t)z;
        } else {
            if (zi < it->nzero && (unsigned long long)it->zoff[zi] - total < want)
                want = (size_t)((unsigned long long)it->zoff[zi] - total);
            r = it->nzero ? pread(fd, buf + fill, want, (off_t)total) : read(fd, buf + fill, want);
        }
        if (r < 0) {
            if (errno == EINTR)
                continue;       /* the loop's top sees a skip or a stop */
            err = errno;
            it->offset = (long long)total;
            fail_item(it, PHASE_READ, err, "read at byte %llu: %s", total, strerror(err));
            goto out;
        }
        if (r == 0)
            break;
        ntt_blake3_update(&b3, buf + fill, (size_t)r);
        if (sha)
            EVP_DigestUpdate(sha, buf + fill, (size_t)r);
        total += (unsigned long long)r;
        __atomic_store_n(&lv->bytes, total, __ATOMIC_RELAXED);
        __atomic_fetch_add(&job->bytes_read, (unsigned long long)r, __ATOMIC_RELAXED);
        fill += (size_t)r;
        if (total > (unsigned long long)it->size)
            break;              /* longer than expected: fails below */
        /* A large file: every fourth block, ask for the four blocks after
         * the next three, so the device reads ahead while this thread
         * hashes and writes (the kernel's own readahead window is a few
         * hundred KiB: each 1 MiB read then waited for the disk). */
        if ((unsigned long long)sb.st_size > 2 * job->bufsize && !it->nzero &&
            total % (4 * job->bufsize) == job->bufsize)
            posix_fadvise(fd, (off_t)(total + 3 * job->bufsize), (off_t)(4 * job->bufsize), POSIX_FADV_WILLNEED);
        if (fill == job->bufsize) {
            if (t->fd < 0 && (err = ntt_store_tmp_open(st, t)) != 0)
                goto store_err;
            if (all_zero(buf, fill)) {
                /* zeros stay a hole: a 1 TB sparse file does not take 1 TB
                 * of the store (the length is set at the end) */
                if (lseek(t->fd, (off_t)fill, SEEK_CUR) < 0 && (err = errno) != 0)
                    goto store_err;
                holes = 1;
            } else {
                if ((err = ntt_store_tmp_write(t, buf, fill)) != 0)
                    goto store_err;
                /* Large files: let writeback run alongside the reading. */
                if (job->durability != DUR_NONE)
                    sync_file_range(t->fd, (off_t)(total - fill), (off_t)fill, SYNC_FILE_RANGE_WRITE);
            }
            fill = 0;
        }
    }
    it->bytes = total;
    if (total != (unsigned long long)it->size) {
        it->offset = (long long)total;
        if (total < (unsigned long long)it->size)
            fail_item(it, PHASE_READ, ENODATA, "short file: %llu of %lld bytes", total, it->size);
        else
            fail_item(it, PHASE_READ, EFBIG, "file longer than its expected %lld bytes", it->size);
        goto out;
    }
    uint8_t d[32];
    ntt_blake3_finalize(&b3, d, sizeof d);
    ntt_hex(d, sizeof d, it->blob);
    if (sha) {
        unsigned char sd[EVP_MAX_MD_SIZE];
        unsigned int sl = 0;
        if (EVP_DigestFinal_ex(sha, sd, &sl) == 1 && sl == 32)
            ntt_hex(sd, 32, it->sha256);
    }
    if (t->fd < 0) {
        int ex = ntt_store_exists(st, it->blob);
        if (ex == 1) {
            it->status = ST_COPIED;
            it->is_new = 0;
            goto out;
        }
        if ((err = ntt_store_tmp_open(st, t)) != 0)
            goto store_err;
    }
    if (fill && (err = ntt_store_tmp_write(t, buf, fill)) != 0)
        goto store_err;
    if (holes && ftruncate(t->fd, (off_t)total) != 0 && (err = errno) != 0)   /* (it may end in a hole) */
        goto store_err;
    /* Batch: no writeback is started per file.  sync_file_range here made
     * each thread wait on the device queue once per small file (50,000
     * files: 8.2 s instead of 6.8 s); the batch's syncfs writes them all
     * in one sweep, while the next batch is already being read. */
    if ((err = ntt_store_tmp_close(t, job->durability == DUR_FSYNC)) != 0)
        goto store_err;
    if (job->durability == DUR_BATCH) {
        it->commit = 1;         /* renamed after the batch's syncfs */
        it->status = ST_COPIED;
        close(fd);
        return;
    }
    phase = PHASE_STORE;
    if ((err = ntt_store_tmp_commit(st, t, it->blob, job->durability == DUR_FSYNC,
                                    &it->is_new)) != 0)
        goto store_err;
    it->status = ST_COPIED;
    close(fd);
    return;
store_err:
    it->offset = (long long)total;
    fail_item(it, phase, err, "store: %s", strerror(err));
    if (store_fatal(err))
        stop_batch(job, err);
out:
    ntt_store_tmp_drop(st, t);
    close(fd);
}

/* One file, its SHA-256 taken on the same pass when the job asks for it
 * (copy.digests: the digest archives exchange, e.g. in DFXML and BagIt). */
static void copy_one(struct copy_job *job, struct copy_item *it, uint8_t *buf, struct copy_live *lv)
{
    EVP_MD_CTX *sha = NULL;
    if (job->sha256 && (sha = EVP_MD_CTX_new()) != NULL && EVP_DigestInit_ex(sha, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(sha);
        sha = NULL;
    }
    copy_one_with(job, it, buf, lv, sha);
    EVP_MD_CTX_free(sha);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct copy_job *job = w->job;
    for (;;) {
        size_t gi = __atomic_fetch_add(&job->next, 1, __ATOMIC_RELAXED);
        if (gi >= job->ngroups)
            break;
        size_t g = job->gorder[gi];
        for (size_t k = job->gstart[g]; k < job->gstart[g + 1]; k++) {
            struct copy_item *it = &job->items[job->order[k]];
            while (__atomic_load_n(&job->paused, __ATOMIC_RELAXED) && !ntt_interrupted &&
                   !__atomic_load_n(&job->stop, __ATOMIC_RELAXED) &&
                   !__atomic_load_n(&it->skip, __ATOMIC_RELAXED))
                usleep(50000);
            double t0 = mono();
            pthread_mutex_lock(&job->mu);
            w->live->t0 = t0;
            __atomic_store_n(&w->live->bytes, 0, __ATOMIC_RELAXED);
            w->live->item = job->order[k] + 1;
            pthread_mutex_unlock(&job->mu);
            int stop = __atomic_load_n(&job->stop, __ATOMIC_RELAXED);
            if (ntt_interrupted || stop == ECANCELED)   /* or the job was closed */
                fail_item(it, PHASE_OPEN, EINTR, "interrupted");
            else if (stop)
                fail_item(it, PHASE_STORE, stop, "batch stopped: store: %s", strerror(stop));
            else if (!skipped(it))
                copy_one(job, it, w->buf, w->live);
            /* A skip's signal is only sent to a thread on the item (under mu). */
            pthread_mutex_lock(&job->mu);
            w->live->item = 0;
            pthread_mutex_unlock(&job->mu);
            __atomic_fetch_add(&job->files_done, 1, __ATOMIC_RELAXED);
            double t1 = mono();
            it->seconds = t1 - t0;
            it->t0 = t0 - job->base;
            it->t1 = t1 - job->base;
            it->thread = w->id;
        }
    }
    return NULL;
}

static int group_cmp(const void *a, const void *b, void *arg)
{
    const struct copy_item *items = arg;
    const struct copy_item *x = &items[*(const size_t *)a], *y = &items[*(const size_t *)b];
    if (x->root != y->root)
        return x->root < y->root ? -1 : 1;
    size_t n = x->dirlen < y->dirlen ? x->dirlen : y->dirlen;
    int c = memcmp(x->path, y->path, n);
    if (c)
        return c;
    if (x->dirlen != y->dirlen)
        return x->dirlen < y->dirlen ? -1 : 1;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    return i < j ? -1 : i > j;
}

static int first_cmp(const void *a, const void *b, void *arg)
{
    const struct copy_job *job = arg;
    size_t x = job->order[job->gstart[*(const size_t *)a]];
    size_t y = job->order[job->gstart[*(const size_t *)b]];
    return x < y ? -1 : x > y;
}

void copy_job_free(struct copy_job *job)
{
    pthread_mutex_destroy(&job->mu);
    pthread_cond_destroy(&job->cv);
    free(job->live);
    for (size_t i = 0; job->items && i < job->n; i++) {
        free(job->items[i].path);
        free(job->items[i].zoff);
        free(job->items[i].zlen);
    }
    for (size_t r = 0; r < job->nroots; r++)
        if (job->rootfds[r] >= 0)
            close(job->rootfds[r]);
    free(job->items);
    free(job->rootfds);
    free(job->rooterrs);
    free(job->order);
    free(job->gstart);
    free(job->gorder);
    free(job);
}

/* Commit the temps of a "batch" durability run: syncfs, rename, syncfs. */
static void batch_commit(struct copy_job *job)
{
    int any = 0, err = 0;
    for (size_t i = 0; i < job->n; i++)
        any |= job->items[i].commit;
    if (!any)
        return;
    if (syncfs(job->st->tmpfd) != 0)
        err = errno;
    for (size_t i = 0; i < job->n; i++) {
        struct copy_item *it = &job->items[i];
        if (!it->commit)
            continue;
        int e = err;
        if (!e)
            e = ntt_store_tmp_commit(job->st, &it->tmp, it->blob, 0, &it->is_new);
        if (e) {
            ntt_store_tmp_drop(job->st, &it->tmp);
            fail_item(it, PHASE_STORE, e, "store: %s", strerror(e));
        }
        it->commit = 0;
    }
    if (syncfs(job->st->byhashfd) != 0) {
        err = errno;
        for (size_t i = 0; i < job->n; i++)
            if (job->items[i].status == ST_COPIED && job->items[i].is_new)
                fail_item(&job->items[i], PHASE_STORE, err, "store: syncfs: %s", strerror(err));
    }
}

int copy_job_root(struct copy_job *job, const char **names, const char *root)
{
    for (size_t r = 0; r < job->nroots; r++)
        if (strcmp(names[r], root) == 0)
            return (int)r;
    names[job->nroots] = root;
    job->rootfds[job->nroots] = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    job->rooterrs[job->nroots] = job->rootfds[job->nroots] < 0 ? errno : 0;
    return (int)job->nroots++;
}

struct copy_job *copy_job_new(struct ntt_store *st, size_t n, size_t bufsize,
                              int durability, int trace)
{
    struct copy_job *job = calloc(1, sizeof *job);
    if (!job)
        return NULL;
    job->st = st;
    pthread_mutex_init(&job->mu, NULL);
    pthread_cond_init(&job->cv, NULL);
    job->bufsize = bufsize;
    job->durability = durability;
    job->trace = trace;
    job->n = n;
    job->items = calloc(n ? n : 1, sizeof *job->items);
    job->rootfds = calloc(n ? n : 1, sizeof *job->rootfds);
    job->rooterrs = calloc(n ? n : 1, sizeof *job->rooterrs);
    job->order = calloc(n ? n : 1, sizeof *job->order);
    job->gstart = calloc(n + 1, sizeof *job->gstart);
    if (!job->items || !job->rootfds || !job->rooterrs || !job->order || !job->gstart) {
        copy_job_free(job);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        job->items[i].tmp.fd = -1;
        job->order[i] = i;
    }
    return job;
}

int copy_job_plan(struct copy_job *job, size_t threads)
{
    size_t n = job->n;
    qsort_r(job->order, n, sizeof *job->order, group_cmp, job->items);
    for (size_t k = 0; k < n; k++) {
        if (k == 0) {
            job->gstart[job->ngroups++] = 0;
            continue;
        }
        struct copy_item *a = &job->items[job->order[k - 1]], *b = &job->items[job->order[k]];
        if (a->root != b->root || a->dirlen != b->dirlen || memcmp(a->path, b->path, a->dirlen))
            job->gstart[job->ngroups++] = k;
    }
    job->gstart[job->ngroups] = n;
    /* Directories start in the order the caller listed them. */
    job->gorder = calloc(job->ngroups ? job->ngroups : 1, sizeof *job->gorder);
    if (!job->gorder)
        return ENOMEM;
    for (size_t g = 0; g < job->ngroups; g++)
        job->gorder[g] = g;
    qsort_r(job->gorder, job->ngroups, sizeof *job->gorder, first_cmp, job);
    if (threads > job->ngroups)
        threads = job->ngroups ? job->ngroups : 1;
    job->threads = threads;
    job->live = calloc(threads, sizeof *job->live);
    return job->live ? 0 : ENOMEM;
}

void copy_job_cancel(struct copy_job *job)
{
    stop_batch(job, ECANCELED);
}

void copy_job_wait_reads(struct copy_job *job)
{
    pthread_mutex_lock(&job->mu);
    while (!job->reads_done)
        pthread_cond_wait(&job->cv, &job->mu);
    pthread_mutex_unlock(&job->mu);
}

int copy_job_timedwait(struct copy_job *job, int done, double timeout)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long ns = ts.tv_nsec + (long long)(timeout * 1e9);
    ts.tv_sec += (time_t)(ns / 1000000000LL);
    ts.tv_nsec = (long)(ns % 1000000000LL);
    pthread_mutex_lock(&job->mu);
    int rc = 0;
    while (!(done ? job->done : job->reads_done) && rc == 0)
        rc = pthread_cond_timedwait(&job->cv, &job->mu, &ts);
    int r = done ? job->done : job->reads_done;
    pthread_mutex_unlock(&job->mu);
    return r;
}

/* SIGURG only interrupts: its handler does nothing, without SA_RESTART. */
static void urg_noop(int sig)
{
    (void)sig;
}

static void urg_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = urg_noop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGURG, &sa, NULL);
}

void copy_job_skip(struct copy_job *job, size_t i)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    if (i >= job->n)
        return;
    pthread_once(&once, urg_install);
    __atomic_store_n(&job->items[i].skip, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_lock(&job->mu);
    for (size_t t = 0; job->live && t < job->threads; t++)
        if (job->live[t].item == i + 1)
            pthread_kill(job->live[t].tid, SIGURG);
    pthread_mutex_unlock(&job->mu);
}

void copy_job_pause(struct copy_job *job, int paused)
{
    __atomic_store_n(&job->paused, paused, __ATOMIC_SEQ_CST);
}

const char *copy_phase_name(int phase)
{
    static const char *const names[] = {NULL, "open", "read", "write", "store"};
    return phase > PHASE_NONE && phase <= PHASE_STORE ? names[phase] : NULL;
}

void copy_job_run(struct copy_job *job)
{
    size_t threads = job->threads, started = 0;
    struct worker *ws = calloc(threads, sizeof *ws);
    job->base = mono();
    if (ws) {
        for (size_t t = 0; t < threads; t++) {
            ws[t].job = job;
            ws[t].id = (int)t + 1;
            ws[t].live = &job->live[t];
            if (posix_memalign((void **)&ws[t].buf, 4096, job->bufsize) != 0) {
                ws[t].buf = NULL;
                break;
            }
            pthread_mutex_lock(&job->mu);   /* tid is read under mu by copy_job_skip */
            int e = pthread_create(&ws[t].tid, NULL, worker_main, &ws[t]);
            if (e == 0)
                job->live[t].tid = ws[t].tid;
            pthread_mutex_unlock(&job->mu);
            if (e != 0) {
                free(ws[t].buf);
                ws[t].buf = NULL;
                break;
            }
            started++;
        }
        for (size_t t = 0; t < started; t++) {
            pthread_join(ws[t].tid, NULL);
            free(ws[t].buf);
        }
        free(ws);
    }
    for (size_t i = 0; i < job->n; i++)
        if (job->items[i].status == ST_PENDING)
            fail_item(&job->items[i], PHASE_OPEN, started ? EINTR : ENOMEM,
                      started ? "interrupted" : "no worker");
    pthread_mutex_lock(&job->mu);
    job->reads_done = 1;
    pthread_cond_broadcast(&job->cv);
    pthread_mutex_unlock(&job->mu);
    if (job->durability == DUR_BATCH)
        batch_commit(job);
    pthread_mutex_lock(&job->mu);
    job->done = 1;
    pthread_cond_broadcast(&job->cv);
    pthread_mutex_unlock(&job->mu);
}

/*
 * pack.c - ntt.core.archive's write (archive.c has the module and its
 * API): the members read in order, libarchive writes the pax-restricted
 * tar unblocked (every write of it straight to libzstd), libzstd's own
 * worker threads compress it, a checksum in every frame; the file fsynced.
 * The main thread reads, frames and hands the bytes to the workers and
 * nothing else, so packing keeps pace with `tar | zstd -T0`.
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>
#include "archive_int.h"

#define RING 16   /* blocks read ahead: about two zstd jobs at level 3 */
#define BEHIND ((uint64_t)8 << 20)   /* writeback started every 8 MiB written */

/* Compressed bytes to the file: 0 or an errno. */
static int put_out(struct sink *s, const uint8_t *c, size_t len)
{
    s->size += len;
    for (size_t off = 0; off < len;) {
        ssize_t w = write(s->fd, c + off, len - off);
        if (w < 0 && errno == EINTR && !ntt_interrupted)
            continue;
        if (w < 0)
            return errno;
        off += (size_t)w;
    }
    /* The disk writes while zstd compresses, so the closing fsync finds
     * little left to do (a hint: an error here shows again at fsync). */
    if (s->size - s->started >= BEHIND) {
        sync_file_range(s->fd, (off_t)s->started, (off_t)(s->size - s->started), SYNC_FILE_RANGE_WRITE);
        s->started = s->size;
    }
    return 0;
}

/*
 * Feed tar bytes to zstd (end: finish the frame).  libarchive writes the
 * tar; the compression is libzstd's own streaming API with its worker
 * threads, which keeps every core busy (libarchive's zstd filter of this
 * era compressed about as fast with 2 workers as with none).
 */
static int compress(struct sink *s, const void *p, size_t len, int end)
{
    ZSTD_inBuffer in = { p, len, 0 };
    for (;;) {
        ZSTD_outBuffer out = { s->buf, BUFSZ, 0 };
        size_t left = ZSTD_compressStream2(s->z, &out, &in, end ? ZSTD_e_end : ZSTD_e_continue);
        if (ZSTD_isError(left))
            return EIO;
        int err = put_out(s, s->buf, out.pos);
        if (err)
            return err;
        if (end ? left == 0 : in.pos == in.size)
            return 0;
    }
}

static la_ssize_t sink_write(struct archive *a, void *ud, const void *p, size_t len)
{
    struct sink *s = ud;
    int err = compress(s, p, len, 0);
    if (err) {
        s->err = err;
        archive_set_error(a, err, "write: %s", err == EIO ? "zstd failed" : strerror(err));
        return -1;
    }
    return (la_ssize_t)len;
}

/*
 * A member's bytes are read (and hashed) by a reader thread into a ring of
 * blocks ahead of this thread, which frames them and feeds libzstd: when a
 * zstd worker frees, the next job's input is already read (`tar | zstd`
 * gets the same from its two processes).
 */
struct ring {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint8_t *mem;               /* RING blocks of BUFSZ */
    size_t len[RING];
    uint64_t filled, taken;     /* blocks published by the reader, consumed by the writer */
    int fd, eof, err, stop;
    uint64_t want, size;        /* the size at open; bytes published */
    ntt_blake3 *h;
};

static void *reader(void *arg)
{
    struct ring *r = arg;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        while (r->filled - r->taken == RING && !r->stop)
            pthread_cond_wait(&r->cv, &r->mu);
        int stop = r->stop;
        pthread_mutex_unlock(&r->mu);
        if (stop)
            return NULL;
        uint8_t *b = r->mem + (r->filled % RING) * BUFSZ;
        ssize_t n = ntt_interrupted ? (errno = EINTR, -1) : read(r->fd, b, BUFSZ);
        if (n < 0 && errno == EINTR && !ntt_interrupted)
            continue;
        int err = n < 0 ? errno : 0, eof = n == 0 || r->size + (uint64_t)n > r->want;   /* grew: size check */
        if (!err && !eof)
            ntt_blake3_update(r->h, b, (size_t)n);
        pthread_mutex_lock(&r->mu);
        if (err || eof) {
            r->err = err;
            r->eof = 1;
        } else {
            r->len[r->filled % RING] = (size_t)n;
            r->size += (uint64_t)n;
            r->filled++;
        }
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        if (err || eof)
            return NULL;
    }
}

/* The member's bytes from the reader into a: 0, or an errno (why set). */
static int feed(struct archive *a, struct ring *r, const char *src, const char *name, char *why, size_t whylen)
{
    for (;;) {
        pthread_mutex_lock(&r->mu);
        while (r->filled == r->taken && !r->eof)
            pthread_cond_wait(&r->cv, &r->mu);
        int more = r->filled != r->taken, err = r->err;
        size_t len = more ? r->len[r->taken % RING] : 0;
        pthread_mutex_unlock(&r->mu);
        if (!more) {
            if (err)
                snprintf(why, whylen, "%s: %s", src, err == EINTR ? "interrupted" : strerror(err));
            return err;
        }
        if (archive_write_data(a, r->mem + (r->taken % RING) * BUFSZ, len) != (la_ssize_t)len) {
            err = archive_errno(a) > 0 ? archive_errno(a) : EIO;
            snprintf(why, whylen, "%s: %s", name, archive_error_string(a));
            return err;
        }
        pthread_mutex_lock(&r->mu);
        r->taken++;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
    }
}

/*
 * One member: header, then its bytes, hashed into h on their way in
 * (ring: RING blocks of BUFSZ); out: the source's stat when opened.
 */
static int put_member(struct archive *a, const char *src, const char *name, uint8_t *ring,
                      uint64_t *size, ntt_blake3 *h, struct stat *out, char *why, size_t whylen)
{
    int fd = open(src, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat sb;
    int err = 0;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        err = errno;
        snprintf(why, whylen, "%s: %s", src, strerror(err));
        if (fd >= 0)
            close(fd);
        return err;
    }
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);   /* a larger readahead window */
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        snprintf(why, whylen, "%s: not a regular file", src);
        return EINVAL;
    }
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, name);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, sb.st_mode & 0777);
    archive_entry_set_size(e, sb.st_size);
    archive_entry_set_mtime(e, sb.st_mtim.tv_sec, sb.st_mtim.tv_nsec);
    if (archive_write_header(a, e) != ARCHIVE_OK) {
        err = archive_errno(a) > 0 ? archive_errno(a) : EIO;
        snprintf(why, whylen, "%s: %s", name, archive_error_string(a));
        goto out;
    }
    struct ring r = { .mem = ring, .fd = fd, .want = (uint64_t)sb.st_size, .h = h };
    pthread_t tid;
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    if ((err = pthread_create(&tid, NULL, reader, &r)) != 0) {
        snprintf(why, whylen, "%s: no reader thread: %s", src, strerror(err));
    } else {
        err = feed(a, &r, src, name, why, whylen);
        pthread_mutex_lock(&r.mu);
        r.stop = 1;
        pthread_cond_broadcast(&r.cv);
        pthread_mutex_unlock(&r.mu);
        pthread_join(tid, NULL);
    }
    pthread_cond_destroy(&r.cv);
    pthread_mutex_destroy(&r.mu);
    *size = r.size;
    if (err)
        goto out;
    *out = sb;
    if (*size != (uint64_t)sb.st_size) {
        err = EAGAIN;
        snprintf(why, whylen, "%s: changed size while it was archived", src);
    }
out:
    archive_entry_free(e);
    close(fd);
    return err;
}

int ntt_ar_write(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    static const char *const known[] = { "threads", "level", NULL };
    ntt_checkopts(L, 3, "archive.write", known);
    lua_Integer threads = 0, level = 3;
    if (lua_istable(L, 3)) {
        lua_getfield(L, 3, "threads");
        threads = luaL_optinteger(L, -1, 0);
        lua_getfield(L, 3, "level");
        level = luaL_optinteger(L, -1, 3);
        lua_pop(L, 2);
    }
    lua_Integer n = luaL_len(L, 2);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 2, i);
        if (!lua_istable(L, -1))
            return luaL_error(L, "archive.write: member %d is not a table", (int)i);
        lua_getfield(L, -1, "src");
        lua_getfield(L, -2, "name");
        if (!lua_isstring(L, -1) || !lua_isstring(L, -2))
            return luaL_error(L, "archive.write: member %d needs src and name", (int)i);
        lua_pop(L, 3);
    }
    struct sink s = { .fd = -1 };
    ntt_blake3_init(&s.h);
    s.fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (s.fd < 0)
        return ntt_fail(L, errno, path);
    uint8_t *buf = malloc((size_t)RING * BUFSZ);
    s.buf = malloc(BUFSZ);
    s.z = ZSTD_createCCtx();
    struct archive *a = archive_write_new();
    char why[512] = "";
    int err = 0;
    if (!buf || !s.buf || !s.z || !a) {
        err = ENOMEM;
        snprintf(why, sizeof why, "out of memory");
        goto fail;
    }
    if (ZSTD_isError(ZSTD_CCtx_setParameter(s.z, ZSTD_c_compressionLevel, (int)level)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(s.z, ZSTD_c_checksumFlag, 1)) ||
        (threads > 0 && ZSTD_isError(ZSTD_CCtx_setParameter(s.z, ZSTD_c_nbWorkers, (int)threads)))) {
        err = EINVAL;
        snprintf(why, sizeof why, "zstd: level %d or %d threads refused", (int)level, (int)threads);
        goto fail;
    }
    /* hdrcharset=BINARY: a name is written as the bytes it is (an image's
     * name may be Latin-1 from an old disk), never converted through the
     * locale, which fails on bytes that are not UTF-8. */
    if (archive_write_set_format_pax_restricted(a) != ARCHIVE_OK ||
        archive_write_set_format_option(a, "pax", "hdrcharset", "BINARY") != ARCHIVE_OK ||
        archive_write_set_bytes_per_block(a, 0) != ARCHIVE_OK ||   /* unblocked: our buffer straight to zstd */
        archive_write_set_bytes_in_last_block(a, 1) != ARCHIVE_OK ||
        archive_write_open(a, &s, NULL, sink_write, NULL) != ARCHIVE_OK) {
        err = s.err ? s.err : (archive_errno(a) > 0 ? archive_errno(a) : EINVAL);
        snprintf(why, sizeof why, "%s", archive_error_string(a) ? archive_error_string(a) : strerror(err));
        goto fail;
    }
    struct timespec t0;
    clock_gettime(CLOCK_REALTIME, &t0);
    lua_createtable(L, 0, 3);
    lua_createtable(L, (int)n, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 2, i);
        lua_getfield(L, -1, "src");
        lua_getfield(L, -2, "name");
        const char *src = lua_tostring(L, -2), *name = lua_tostring(L, -1);
        uint64_t size = 0;
        ntt_blake3 h;
        struct stat sb = { 0 };
        ntt_blake3_init(&h);
        if ((err = put_member(a, src, name, buf, &size, &h, &sb, why, sizeof why)) != 0) {
            if (s.err)
                err = s.err;
            goto fail;
        }
        lua_createtable(L, 0, 7);
        ntt_setstr(L, "name", name);
        ntt_setint(L, "size", (lua_Integer)size);
        ntt_ar_push_hex(L, &h);
        lua_setfield(L, -2, "blake3");
        ntt_setint(L, "mtime_ns", (lua_Integer)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec);
        ntt_setint(L, "ctime_ns", (lua_Integer)sb.st_ctim.tv_sec * 1000000000 + sb.st_ctim.tv_nsec);
        ntt_setint(L, "ino", (lua_Integer)sb.st_ino);
        ntt_setint(L, "dev", (lua_Integer)sb.st_dev);
        lua_seti(L, -5, i);
        lua_pop(L, 3);
    }
    if (archive_write_close(a) != ARCHIVE_OK) {
        err = s.err ? s.err : (archive_errno(a) > 0 ? archive_errno(a) : EIO);
        snprintf(why, sizeof why, "%s", archive_error_string(a) ? archive_error_string(a) : strerror(err));
        goto fail;
    }
    archive_write_free(a);
    a = NULL;
    if ((err = compress(&s, NULL, 0, 1)) != 0) {
        snprintf(why, sizeof why, "%s", err == EIO ? "zstd failed" : strerror(err));
        goto fail;
    }
    if (fsync(s.fd) != 0 || close(s.fd) != 0) {
        s.fd = -1;
        err = errno;
        snprintf(why, sizeof why, "fsync: %s", strerror(err));
        goto fail;
    }
    s.fd = -1;
    free(buf);
    free(s.buf);
    ZSTD_freeCCtx(s.z);
    lua_setfield(L, -2, "members");
    ntt_setint(L, "size", (lua_Integer)s.size);
    ntt_setint(L, "started_ns", (lua_Integer)t0.tv_sec * 1000000000 + t0.tv_nsec);
    return 1;
fail:
    if (a)
        archive_write_free(a);
    if (s.fd >= 0)
        close(s.fd);
    unlink(path);
    free(buf);
    free(s.buf);
    ZSTD_freeCCtx(s.z);
    if (err == EINTR)
        return ntt_fail_interrupted(L);
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, why);
    lua_pushstring(L, ntt_errname(err));
    return 3;
}

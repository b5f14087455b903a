/*
 * archive.c - ntt.core.archive: a medium's image set packed into one
 * tar.zst (libarchive writes the pax-restricted tar, libzstd compresses it
 * with its own worker threads, a checksum in every frame), and read back
 * member by member (libarchive, tar and zstd); the writing is pack.c.
 * The read-back BLAKE3-hashes the archive
 * file and every member, which the archive stage compares with what its
 * sources hold.
 *
 * Lua API (ntt.core.archive).  Misuse raises; expected failures return
 * nil, msg, errname ("EINTR" on ^C).
 *   write(path, members [, { threads = N, level = L }]) -> result
 *       path: the archive to create (O_EXCL; removed again on failure);
 *       members: { { src = path, name = member name }, ... } in order.
 *       Each source must be a regular file (symlinks are not followed);
 *       its mode and mtime go into the member.  A source whose size
 *       changes while it is read fails "EAGAIN".  threads: zstd workers
 *       (0: compress on this thread; default 0); level: zstd level
 *       (default 3).  The file is fsynced before write returns.
 *       -> { size = (of the archive), started_ns = (the clock when the
 *            write began, ns since the epoch), members = { { name =, size =,
 *            blake3 = (of the bytes written), mtime_ns =, ctime_ns =, ino =,
 *            dev = (the source's when it was opened) }, ... } }
 *   read(path) -> { size =, blake3 = (the archive file's),
 *                   members = { { name =, size =, blake3 = }, ... } }
 *       reading every member back; an archive whose compressed frames
 *       (each with its zstd checksum) or tar headers do not check fails
 *       "EBADMSG"
 *   extract(path, dir) -> the same table as read
 *       every member written as dir/<name> (created, never overwritten:
 *       "EEXIST"), hashed from the bytes read; runs of zero bytes become
 *       holes.  A member that is not a regular file under a plain name (one
 *       path component) fails "EBADMSG".  On failure what was written
 *       stays: the caller removes dir.
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "archive_int.h"

void ntt_ar_push_hex(lua_State *L, const ntt_blake3 *h)
{
    static const char digits[] = "0123456789abcdef";
    uint8_t d[NTT_BLAKE3_OUT_LEN];
    char hex[2 * NTT_BLAKE3_OUT_LEN + 1];
    ntt_blake3_finalize(h, d, sizeof d);
    for (size_t i = 0; i < sizeof d; i++) {
        hex[2 * i] = digits[d[i] >> 4];
        hex[2 * i + 1] = digits[d[i] & 15];
    }
    hex[sizeof hex - 1] = 0;
    lua_pushstring(L, hex);
}

static la_ssize_t src_read(struct archive *a, void *ud, const void **out)
{
    struct sink *s = ud;
    for (;;) {
        if (ntt_interrupted) {
            s->err = EINTR;
            archive_set_error(a, EINTR, "interrupted");
            return -1;
        }
        ssize_t n = read(s->fd, s->buf, BUFSZ);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            s->err = errno;
            archive_set_error(a, s->err, "read: %s", strerror(s->err));
            return -1;
        }
        ntt_blake3_update(&s->h, s->buf, (size_t)n);
        s->size += (uint64_t)n;
        *out = s->buf;
        return n;
    }
}

/*
 * The failure of a libarchive read on a, or of our own callback (own).
 * What libarchive itself rejects (a zstd frame or tar header that does not
 * check) is data that is not what was written: EBADMSG.
 */
static int fail_archive(lua_State *L, struct archive *a, int own, const char *path)
{
    int err = own ? own : archive_errno(a);
    if (err <= 0 || err == EINVAL || err == EILSEQ)
        err = EBADMSG;
    if (err == EINTR)
        return ntt_fail_interrupted(L);
    const char *why = archive_error_string(a);
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, why ? why : strerror(err));
    lua_pushstring(L, ntt_errname(err));
    return 3;
}

/*
 * Whatever follows the end of the tar still belongs to the file's hash:
 * 0, or the failure pushed (3).
 */
static int finish_hash(lua_State *L, struct sink *s, const char *path)
{
    for (;;) {
        ssize_t k = read(s->fd, s->buf, BUFSZ);
        if (k < 0 && errno == EINTR && !ntt_interrupted)
            continue;
        if (k < 0)
            return ntt_fail(L, errno, path);
        if (k == 0)
            return 0;
        ntt_blake3_update(&s->h, s->buf, (size_t)k);
        s->size += (uint64_t)k;
    }
}

/* members[idx] = { name, size, blake3 } (the members table on top). */
static void push_member(lua_State *L, const char *name, uint64_t size, const ntt_blake3 *h, lua_Integer idx)
{
    lua_createtable(L, 0, 3);
    ntt_setstr(L, "name", name);
    ntt_setint(L, "size", (lua_Integer)size);
    ntt_ar_push_hex(L, h);
    lua_setfield(L, -2, "blake3");
    lua_seti(L, -2, idx);
}

/*
 * The members read to the end (r: the last next_header): the result table
 * (under the members table) gets members, the file's size and BLAKE3.
 * 1, or the failure pushed (3).
 */
static int finish_listing(lua_State *L, struct archive *a, int r, struct sink *s, const char *path)
{
    if (r != ARCHIVE_EOF)
        return fail_archive(L, a, s->err, path);
    int ret = finish_hash(L, s, path);
    if (ret)
        return ret;
    lua_setfield(L, -2, "members");
    ntt_setint(L, "size", (lua_Integer)s->size);
    ntt_ar_push_hex(L, &s->h);
    lua_setfield(L, -2, "blake3");
    return 1;
}

static int ar_read(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct sink s = { .fd = -1 };
    ntt_blake3_init(&s.h);
    s.fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (s.fd < 0)
        return ntt_fail(L, errno, path);
    uint8_t *data = malloc(BUFSZ);
    s.buf = malloc(BUFSZ);
    struct archive *a = archive_read_new();
    int ret;
    if (!data || !s.buf || !a) {
        ret = ntt_fail(L, ENOMEM, path);
        goto out;
    }
    archive_read_support_filter_zstd(a);
    archive_read_support_format_tar(a);
    if (archive_read_open(a, &s, NULL, src_read, NULL) != ARCHIVE_OK) {
        ret = fail_archive(L, a, s.err, path);
        goto out;
    }
    lua_createtable(L, 0, 3);
    lua_newtable(L);
    int idx = 0;
    struct archive_entry *e;
    int r;
    while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
        ntt_blake3 h;
        ntt_blake3_init(&h);
        uint64_t size = 0;
        la_ssize_t n;
        while ((n = archive_read_data(a, data, BUFSZ)) > 0) {
            ntt_blake3_update(&h, data, (size_t)n);
            size += (uint64_t)n;
        }
        if (n < 0) {
            ret = fail_archive(L, a, s.err, path);
            goto out;
        }
        push_member(L, archive_entry_pathname(e), size, &h, ++idx);
    }
    ret = finish_listing(L, a, r, &s, path);
out:
    if (a)
        archive_read_free(a);
    close(s.fd);
    free(s.buf);
    free(data);
    return ret;
}

/* Is the block all zero bytes?  (Such blocks of an image become holes.) */
static int all_zero(const uint8_t *p, size_t n)
{
    static const uint8_t zero[4096];
    for (size_t off = 0; off < n; off += sizeof zero) {
        size_t k = n - off < sizeof zero ? n - off : sizeof zero;
        if (memcmp(p + off, zero, k) != 0)
            return 0;
    }
    return 1;
}

/* A member name extract may create: one path component, not "." or "..". */
static int plain_name(const char *name)
{
    return name && *name && !strchr(name, '/') && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

/* One member's bytes into dirfd/name, hashed as they go; 0 or an errno (why set). */
static int out_member(struct archive *a, int dirfd, const char *name, uint8_t *data, ntt_blake3 *h,
                      uint64_t *size, char *why, size_t whylen)
{
    int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        int err = errno;
        snprintf(why, whylen, "%s: %s", name, strerror(err));
        return err;
    }
    int err = 0;
    la_ssize_t n;
    *size = 0;
    while ((n = archive_read_data(a, data, BUFSZ)) > 0) {
        ntt_blake3_update(h, data, (size_t)n);
        if (all_zero(data, (size_t)n)) {
            *size += (uint64_t)n;
            continue;   /* a hole: the ftruncate below gives the file its length */
        }
        for (la_ssize_t off = 0; off < n;) {
            ssize_t w = pwrite(fd, data + off, (size_t)(n - off), (off_t)(*size + (uint64_t)off));
            if (w < 0 && errno == EINTR && !ntt_interrupted)
                continue;
            if (w < 0) {
                err = errno;
                snprintf(why, whylen, "%s: %s", name, strerror(err));
                goto out;
            }
            off += w;
        }
        *size += (uint64_t)n;
    }
    if (n < 0) {
        err = -1;   /* libarchive's: the caller reads it from a */
        goto out;
    }
    if (ftruncate(fd, (off_t)*size) != 0) {
        err = errno;
        snprintf(why, whylen, "%s: %s", name, strerror(err));
    }
out:
    if (close(fd) != 0 && !err) {
        err = errno;
        snprintf(why, whylen, "%s: %s", name, strerror(err));
    }
    return err;
}

static int ar_extract(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    const char *dir = luaL_checkstring(L, 2);
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return ntt_fail(L, errno, dir);
    struct sink s = { .fd = -1 };
    ntt_blake3_init(&s.h);
    s.fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (s.fd < 0) {
        int err = errno;
        close(dirfd);
        return ntt_fail(L, err, path);
    }
    posix_fadvise(s.fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    uint8_t *data = malloc(BUFSZ);
    s.buf = malloc(BUFSZ);
    struct archive *a = archive_read_new();
    int ret;
    char why[512] = "";
    if (!data || !s.buf || !a) {
        ret = ntt_fail(L, ENOMEM, path);
        goto out;
    }
    archive_read_support_filter_zstd(a);
    archive_read_support_format_tar(a);
    if (archive_read_open(a, &s, NULL, src_read, NULL) != ARCHIVE_OK) {
        ret = fail_archive(L, a, s.err, path);
        goto out;
    }
    lua_createtable(L, 0, 3);
    lua_newtable(L);
    int idx = 0, r;
    struct archive_entry *e;
    while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
        const char *name = archive_entry_pathname(e);
        if (!plain_name(name) || archive_entry_filetype(e) != AE_IFREG) {
            lua_pushnil(L);
            lua_pushfstring(L, "%s: member '%s' is not a plain file name", path, name ? name : "");
            lua_pushstring(L, "EBADMSG");
            ret = 3;
            goto out;
        }
        ntt_blake3 h;
        ntt_blake3_init(&h);
        uint64_t size = 0;
        int err = out_member(a, dirfd, name, data, &h, &size, why, sizeof why);
        if (err) {
            if (err < 0) {
                ret = fail_archive(L, a, s.err, path);
            } else if (err == EINTR) {
                ret = ntt_fail_interrupted(L);
            } else {
                lua_pushnil(L);
                lua_pushfstring(L, "%s/%s", dir, why);
                lua_pushstring(L, ntt_errname(err));
                ret = 3;
            }
            goto out;
        }
        push_member(L, name, size, &h, ++idx);
    }
    ret = finish_listing(L, a, r, &s, path);
out:
    if (a)
        archive_read_free(a);
    close(s.fd);
    close(dirfd);
    free(s.buf);
    free(data);
    return ret;
}

int luaopen_ntt_core_archive(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"write", ntt_ar_write},
        {"read", ar_read},
        {"extract", ar_extract},
        {NULL, NULL}
    };
    luaL_newlib(L, fns);
    return 1;
}


/*
 * runs.c - ntt-tskfs: where a file's bytes lie on the device, as The Sleuth
 * Kit's block walk says, so reads are plain preads of the device that run
 * in parallel and fail exactly where the device fails.  Content TSK has to
 * decode (NTFS resident or compressed data, HFS+ compression, exFAT's and
 * NTFS's valid-data length) is read through TSK instead.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "tskfs.h"

static TSK_WALK_RET_ENUM add_block(TSK_FS_FILE *f, TSK_OFF_T off, TSK_DADDR_T addr, char *buf, size_t len,
                                   TSK_FS_BLOCK_FLAG_ENUM flags, void *ptr)
{
    struct fmap *m = ptr;
    if (flags & (TSK_FS_BLOCK_FLAG_COMP | TSK_FS_BLOCK_FLAG_RES)) { m->use_tsk = 1; return TSK_WALK_STOP; }
    int zero = (flags & TSK_FS_BLOCK_FLAG_SPARSE) != 0;
    uint64_t doff = (uint64_t)addr * f->fs_info->block_size;
    struct extent *last = m->n ? &m->e[m->n - 1] : NULL;
    if ((uint64_t)off != m->covered) { m->use_tsk = 1; return TSK_WALK_STOP; }   /* not in file order */
    if (last && last->zero == zero && (zero || last->doff + last->len == doff)) {
        last->len += len;
    } else {
        if (m->n == m->cap) {
            size_t cap = m->cap ? m->cap * 2 : 8;
            struct extent *e = realloc(m->e, cap * sizeof *e);
            if (!e) { m->use_tsk = 1; return TSK_WALK_STOP; }
            m->e = e;
            m->cap = cap;
        }
        m->e[m->n++] = (struct extent){ .foff = (uint64_t)off, .doff = doff, .len = len, .zero = zero };
    }
    m->covered += len;
    return TSK_WALK_CONT;
}

/* Fills m for f: extents covering its size, or use_tsk.  -1 when TSK could not walk it. */
int fmap_build(TSK_FS_FILE *f, struct fmap *m)
{
    memset(m, 0, sizeof *m);
    TSK_FS_INFO *fs = f->fs_info;
    m->size = (uint64_t)f->meta->size;
    if (TSK_FS_TYPE_ISNTFS(fs->ftype) || fs->ftype == TSK_FS_TYPE_EXFAT) { m->use_tsk = 1; return 0; }
    if (m->size == 0) return 0;
    if (tsk_fs_file_walk(f, TSK_FS_FILE_WALK_FLAG_AONLY, add_block, m)) {
        tsk_error_reset();
        fmap_free(m);
        return -1;
    }
    if (!m->use_tsk && m->covered < m->size) m->use_tsk = 1;
    if (m->use_tsk) { free(m->e); m->e = NULL; m->n = m->cap = 0; }
    return 0;
}

void fmap_free(struct fmap *m)
{
    free(m->e);
    memset(m, 0, sizeof *m);
}

/*
 * How far to read ahead of a file's bytes on the device (0: never).  The
 * helper turns a device's readahead off when it is backed by the honest
 * view, where reading across a hole would fail good bytes next to it;
 * elsewhere the files of a directory usually follow each other on the
 * device, and one request's readahead serves the next files.
 */
static size_t ahead = (size_t)-1;

static void read_ahead(int fd, uint64_t doff)
{
    if (ahead == (size_t)-1) {
        long ra = 0;
        ahead = ioctl(fd, BLKRAGET, &ra) == 0 && ra > 0 ? 512 * 1024 : 0;
    }
    if (ahead) posix_fadvise(fd, (off_t)(doff & ~(uint64_t)4095), (off_t)ahead, POSIX_FADV_WILLNEED);
}

/* len bytes at off of the file into buf from device fd: len, or -EIO (never a short guess). */
int fmap_read(const struct fmap *m, int fd, char *buf, size_t len, uint64_t off)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {                    /* the first extent ending after off */
        size_t mid = (lo + hi) / 2;
        if (m->e[mid].foff + m->e[mid].len <= off) lo = mid + 1; else hi = mid;
    }
    size_t done = 0;
    for (size_t i = lo; done < len && i < m->n; i++) {
        const struct extent *x = &m->e[i];
        uint64_t at = off + done;
        if (at < x->foff) return -EIO;
        uint64_t in = at - x->foff;
        size_t n = x->len - in < len - done ? (size_t)(x->len - in) : len - done;
        if (x->zero) {
            memset(buf + done, 0, n);
        } else {
            if (in == 0) read_ahead(fd, x->doff);
            size_t got = 0;
            while (got < n) {
                ssize_t r = pread(fd, buf + done + got, n - got, (off_t)(x->doff + in + got));
                if (r < 0 && errno == EINTR) continue;
                if (r <= 0) return -EIO;
                got += (size_t)r;
            }
        }
        done += n;
    }
    return done == len ? (int)len : -EIO;
}

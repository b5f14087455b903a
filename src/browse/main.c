/*
 * ntt-browse - `ntt browse`: a read-only FUSE view of the media's original
 * trees (docs/tree.md, "Browse").
 *
 *   ntt-browse [-f] SNAPSHOT MOUNTPOINT
 *
 * ntt writes SNAPSHOT from the database (lua/ntt/browse.lua): every name,
 * mode, mtime and size, each copied file's blob path, each symlink's
 * target, the listings of what is not shown.  It is read whole before the
 * mount (ntt removes it once we are up), so the daemon never queries the
 * database: a lookup is one hash of the path (index.c), a read one pread
 * of the blob, opened read-only when the file is opened.  Without -f the
 * program returns once the filesystem is mounted and goes on in the
 * background; unmounting the view (fusermount3 -u, `ntt browse --stop`)
 * ends it, as do SIGINT and SIGTERM.
 */
#define FUSE_USE_VERSION 31
#include <errno.h>
#include <fcntl.h>
#include <fuse3/fuse.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include "browse.h"

static struct index X;
static int no_open;             /* the kernel sends no open/release (FUSE no_open) */

static void stat_of(const struct node *n, struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_mode = n->mode | (n->kind == 'd' ? S_IFDIR : n->kind == 'l' ? S_IFLNK : S_IFREG);
    if (n->kind == 'l') st->st_mode = S_IFLNK | 0777;
    st->st_nlink = n->kind == 'd' ? 2 + n->nsubdirs : 1;
    st->st_uid = getuid();                       /* the mounting user's: the view is theirs */
    st->st_gid = getgid();
    st->st_size = (off_t)n->size;
    st->st_blocks = (blkcnt_t)((n->size + 511) / 512);
    st->st_blksize = 65536;
    int64_t s = n->mtime_ns / 1000000000, ns = n->mtime_ns % 1000000000;
    if (ns < 0) { s--; ns += 1000000000; }       /* before 1970 */
    st->st_mtim.tv_sec = st->st_atim.tv_sec = st->st_ctim.tv_sec = (time_t)s;
    st->st_mtim.tv_nsec = st->st_atim.tv_nsec = st->st_ctim.tv_nsec = (long)ns;
}

static int b_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    struct node *n = index_lookup(&X, path);
    if (!n) return -ENOENT;
    stat_of(n, st);
    return 0;
}

static int b_readlink(const char *path, char *buf, size_t len)
{
    struct node *n = index_lookup(&X, path);
    if (!n) return -ENOENT;
    if (n->kind != 'l') return -EINVAL;
    snprintf(buf, len, "%s", n->data);
    return 0;
}

static int b_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
                     struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    struct node *n = index_lookup(&X, path);
    if (!n) return -ENOENT;
    if (n->kind != 'd') return -ENOTDIR;
    fill(buf, ".", NULL, 0, 0);
    fill(buf, "..", NULL, 0, 0);
    struct stat st;
    for (uint32_t i = 0; i < n->nkids; i++) {
        stat_of(n->kids[i], &st);
        if (fill(buf, n->kids[i]->name, &st, 0, FUSE_FILL_DIR_PLUS)) break;
    }
    return 0;
}

/*
 * fh: the blob's descriptor + 1, or 0 for a text file (served from memory)
 * and for every file once the kernel sends no opens: then each read opens
 * the blob itself, which costs less than the two requests an open and its
 * release add to every file (find | xargs cat over many small files).
 */
static int b_open(const char *path, struct fuse_file_info *fi)
{
    if ((fi->flags & O_ACCMODE) != O_RDONLY) return -EROFS;
    if (no_open) return -ENOSYS;                 /* never again: reads come by path */
    struct node *n = index_lookup(&X, path);
    if (!n) return -ENOENT;
    if (n->kind == 'd') return -EISDIR;
    fi->keep_cache = 1;                          /* a blob never changes */
    fi->fh = 0;
    if (n->kind != 'f') return 0;
    int fd = open(n->data, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? -EIO : -errno;   /* the blob is missing from the store */
    fi->fh = (uint64_t)fd + 1;
    return 0;
}

static int read_blob(int fd, char *buf, size_t len, off_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(fd, buf + done, len - done, off + (off_t)done);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return done ? (int)done : -errno;
        if (r == 0) break;
        done += (size_t)r;
    }
    return (int)done;
}

static int b_read(const char *path, char *buf, size_t len, off_t off, struct fuse_file_info *fi)
{
    if (fi->fh) return read_blob((int)(fi->fh - 1), buf, len, off);
    struct node *n = index_lookup(&X, path);
    if (!n) return -ENOENT;
    if (n->kind == 'd') return -EISDIR;
    if (n->kind == 'f') {
        int fd = open(n->data, O_RDONLY | O_CLOEXEC);
        if (fd < 0) return errno == ENOENT ? -EIO : -errno;
        int rc = read_blob(fd, buf, len, off);
        close(fd);
        return rc;
    }
    if ((uint64_t)off >= n->datalen) return 0;
    if (len > n->datalen - (size_t)off) len = n->datalen - (size_t)off;
    memcpy(buf, n->data + off, len);
    return (int)len;
}

static int b_release(const char *path, struct fuse_file_info *fi)
{
    if (fi->fh) close((int)(fi->fh - 1));
    return 0;
}

static int b_statfs(const char *path, struct statvfs *sv)
{
    memset(sv, 0, sizeof *sv);
    sv->f_bsize = sv->f_frsize = 4096;
    sv->f_files = X.nnodes;
    sv->f_namemax = 255;
    sv->f_flag = ST_RDONLY;
    return 0;
}

static void *b_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    if (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT) {
        conn->want |= FUSE_CAP_NO_OPEN_SUPPORT;
        no_open = 1;
    }
    cfg->kernel_cache = 1;                       /* the view never changes while mounted */
    cfg->attr_timeout = 3600;
    cfg->entry_timeout = 3600;
    cfg->negative_timeout = 3600;
    return NULL;
}

static const struct fuse_operations ops = {
    .getattr = b_getattr,
    .readlink = b_readlink,
    .readdir = b_readdir,
    .open = b_open,
    .read = b_read,
    .release = b_release,
    .statfs = b_statfs,
    .init = b_init,
};

int main(int argc, char **argv)
{
    int fg = argc == 4 && !strcmp(argv[1], "-f");
    if (argc != 3 + fg) {
        fputs("usage: ntt-browse [-f] SNAPSHOT MOUNTPOINT\n", stderr);
        return 2;
    }
    char err[512];
    if (index_load(&X, argv[1 + fg], err, sizeof err) < 0) {
        fprintf(stderr, "ntt-browse: %s\n", err);
        return 3;
    }
    char *fargv[] = { "ntt-browse", "-o", "ro,nosuid,nodev,noatime,default_permissions,fsname=ntt-browse,subtype=ntt-browse", NULL };
    struct fuse_args args = FUSE_ARGS_INIT(3, fargv);
    int rc = 4;
    struct fuse *f = fuse_new(&args, &ops, sizeof ops, NULL);
    if (!f) { fputs("ntt-browse: fuse_new failed\n", stderr); goto out; }
    if (fuse_mount(f, argv[2 + fg]) != 0) {
        fprintf(stderr, "ntt-browse: cannot mount at %s\n", argv[2 + fg]);
        fuse_destroy(f);
        goto out;
    }
    struct fuse_session *se = fuse_get_session(f);
    if (fuse_set_signal_handlers(se) != 0 || fuse_daemonize(fg) != 0) {
        fuse_unmount(f);
        fuse_destroy(f);
        goto out;
    }
    rc = fuse_loop_mt(f, 0) ? 1 : 0;
    fuse_remove_signal_handlers(se);
    fuse_unmount(f);
    fuse_destroy(f);
out:
    fuse_opt_free_args(&args);
    index_free(&X);
    return rc;
}

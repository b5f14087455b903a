/*
 * view.c - the honest view: a read-only FUSE filesystem with one file,
 * "image", that has the medium's full size and fails with EIO on every byte
 * the mapfile does not mark rescued and on everything past the end of the
 * image file.  The loop device is attached to that file, so the kernel logs
 * real "I/O error, dev loopN" lines and readers get EIO instead of the zeros
 * ddrescue left in unread areas; a truncated filesystem keeps its geometry.
 *
 * The daemon is a forked child of the helper (no exec, no options from the
 * caller): it owns only the image fd and serves reads until unmounted.
 * A read is served whole or refused whole: a short read would make the loop
 * driver zero-fill the rest, which is exactly the lie this view prevents.
 */
#define FUSE_USE_VERSION 31
#include <errno.h>
#include <fcntl.h>
#include <fuse3/fuse.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "helper.h"

static struct {
    int fd;
    const struct map *map;
    uint64_t file_size, size;
} V;

static int view_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    memset(st, 0, sizeof *st);
    if (!strcmp(path, "/")) {
        st->st_mode = S_IFDIR | 0500;
        st->st_nlink = 2;
    } else if (!strcmp(path, "/image")) {
        st->st_mode = S_IFREG | 0400;
        st->st_nlink = 1;
        st->st_size = (off_t)V.size;
        st->st_blocks = (blkcnt_t)((V.size + 511) / 512);
    } else {
        return -ENOENT;
    }
    return 0;
}

static int view_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
                        struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    if (strcmp(path, "/")) return -ENOENT;
    fill(buf, ".", NULL, 0, 0);
    fill(buf, "..", NULL, 0, 0);
    fill(buf, "image", NULL, 0, 0);
    return 0;
}

static int view_open(const char *path, struct fuse_file_info *fi)
{
    if (strcmp(path, "/image")) return -ENOENT;
    if ((fi->flags & O_ACCMODE) != O_RDONLY) return -EROFS;
    fi->direct_io = 1;          /* every read reaches view_read: no cached guesses */
    fi->keep_cache = 0;
    return 0;
}

static int view_read(const char *path, char *buf, size_t len, off_t off,
                     struct fuse_file_info *fi)
{
    uint64_t o = (uint64_t)off;
    if (o >= V.size) return 0;
    if (len > V.size - o) len = (size_t)(V.size - o);
    if (o + len > V.file_size || !map_readable(V.map, o, len)) return -EIO;
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(V.fd, buf + done, len - done, off + (off_t)done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -EIO;
        done += (size_t)r;
    }
    return (int)len;
}

static void *view_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    cfg->direct_io = 1;
    cfg->kernel_cache = 0;
    cfg->attr_timeout = 3600;
    cfg->entry_timeout = 3600;
    return NULL;
}

static const struct fuse_operations view_ops = {
    .getattr = view_getattr,
    .init = view_init,
    .open = view_open,
    .read = view_read,
    .readdir = view_readdir,
};

/* Child side: mount, report "ok" or the error on wfd, serve until unmounted. */
static void view_child(int wfd, const char *mountpoint)
{
    char *argv[] = { "ntt-view", "-o", "ro,nosuid,nodev,noexec,fsname=ntt-view,subtype=ntt-view", NULL };
    struct fuse_args args = FUSE_ARGS_INIT(3, argv);
    struct fuse *f = fuse_new(&args, &view_ops, sizeof view_ops, NULL);
    if (!f) { dprintf(wfd, "fuse_new failed"); _exit(1); }
    if (fuse_mount(f, mountpoint) != 0) {
        dprintf(wfd, "cannot mount the view at %s", mountpoint);
        fuse_destroy(f);
        _exit(1);
    }
    if (write(wfd, "ok", 2) != 2) { fuse_unmount(f); _exit(1); }
    close(wfd);
    int rc = fuse_loop_mt(f, 0);     /* reads are independent preads: serve them in parallel */
    fuse_unmount(f);
    fuse_destroy(f);
    fuse_opt_free_args(&args);
    _exit(rc ? 1 : 0);
}

/*
 * Starts the view daemon serving image_fd (file_size bytes really present)
 * as a file of `size` bytes at mountpoint/image.  0 with *pid, or -1 + err.
 */
int view_start(int image_fd, const struct map *m, uint64_t file_size, uint64_t size,
               const char *mountpoint, int *pid, char *err, size_t errlen)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) { snprintf(err, errlen, "pipe: %s", strerror(errno)); return -1; }
    pid_t c = fork();
    if (c < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        close(p[0]); close(p[1]);
        return -1;
    }
    if (c == 0) {
        close(p[0]);
        if (mh_lock_fd >= 0) close(mh_lock_fd);   /* the medium lock is not the daemon's */
        setsid();
        signal(SIGPIPE, SIG_IGN);
        int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (nul >= 0) { dup2(nul, 0); dup2(nul, 1); dup2(nul, 2); }
        for (int fd = 3; fd < 1024; fd++)
            if (fd != p[1] && fd != image_fd) close(fd);
        V.fd = image_fd;
        V.map = m;
        V.file_size = file_size;
        V.size = size;
        view_child(p[1], mountpoint);
    }
    close(p[1]);
    char msg[256] = "";
    size_t got = 0;
    for (;;) {                       /* the child writes "ok" or an error, then closes */
        struct pollfd pf = { .fd = p[0], .events = POLLIN };
        int n = poll(&pf, 1, mh_timeout * 1000);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        ssize_t r = read(p[0], msg + got, sizeof msg - 1 - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
        if (got >= 2 && !strncmp(msg, "ok", 2)) break;
        if (got >= sizeof msg - 1) break;
    }
    close(p[0]);
    msg[got] = 0;
    if (strncmp(msg, "ok", 2)) {
        kill(c, SIGKILL);
        waitpid(c, NULL, 0);
        snprintf(err, errlen, "honest view: %s", got ? msg : "daemon died before mounting");
        return -1;
    }
    *pid = (int)c;
    return 0;
}

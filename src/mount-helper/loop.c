/*
 * loop.c - read-only loop devices through the loop ioctls.
 *
 * Every device is attached with LOOP_CONFIGURE (atomic: no window in which
 * a half-configured device is visible), LO_FLAGS_READ_ONLY and
 * LO_FLAGS_AUTOCLEAR (the kernel detaches it when its last user - the mount
 * or the FUSE driver - goes away), its byte offset and size limit, and
 * lo_file_name "ntt:<hash>" so that cleanup recognises its own devices.
 * Attached devices are found again through /sys/block/loopN/loop/backing_file.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include "helper.h"

/* Attaches backing_fd[offset, offset+size) read-only; 0 with dev/devfd or -1 + err. */
int loop_attach(int backing_fd, uint64_t offset, uint64_t size, const char *tag,
                char *dev, size_t devlen, int *devfd, char *err, size_t errlen)
{
    *err = 0;
    int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (ctl < 0) { snprintf(err, errlen, "/dev/loop-control: %s", strerror(errno)); return -1; }
    for (int attempt = 0; attempt < 64; attempt++) {
        int nr = ioctl(ctl, LOOP_CTL_GET_FREE);
        if (nr < 0) { snprintf(err, errlen, "LOOP_CTL_GET_FREE: %s", strerror(errno)); break; }
        snprintf(dev, devlen, "/dev/loop%d", nr);
        int fd = open(dev, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOENT) { struct timespec ts = { 0, 20000000 }; nanosleep(&ts, NULL); continue; }
            snprintf(err, errlen, "%s: %s", dev, strerror(errno));
            break;
        }
        struct loop_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.fd = (uint32_t)backing_fd;
        cfg.info.lo_offset = offset;
        cfg.info.lo_sizelimit = size;
        cfg.info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
        snprintf((char *)cfg.info.lo_file_name, LO_NAME_SIZE, "%s", tag);
        if (ioctl(fd, LOOP_CONFIGURE, &cfg) == 0) {
            close(ctl);
            *devfd = fd;
            return 0;
        }
        int e = errno;
        close(fd);
        if (e == EBUSY) continue;       /* another process took it first */
        snprintf(err, errlen, "LOOP_CONFIGURE %s: %s", dev, strerror(e));
        break;
    }
    if (!*err) snprintf(err, errlen, "no free loop device");
    close(ctl);
    return -1;
}

static int loop_read_sys(int nr, const char *leaf, char *buf, size_t len)
{
    char path[128];
    snprintf(path, sizeof path, "/sys/block/loop%d/loop/%s", nr, leaf);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t r = read(fd, buf, len - 1);
    close(fd);
    if (r < 0) return -1;
    buf[r] = 0;
    while (r > 0 && buf[r - 1] == '\n') buf[--r] = 0;
    return 0;
}

int loop_exists(int nr)
{
    char b[8];
    return loop_read_sys(nr, "offset", b, sizeof b) == 0;
}

/* loopN's lo_file_name ("ntt:<hash>" on the helper's own) into tag: 0, or -1. */
int loop_tag(int nr, char *tag, size_t len)
{
    char dev[32];
    snprintf(dev, sizeof dev, "/dev/loop%d", nr);
    int fd = open(dev, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    struct loop_info64 info;
    int rc = ioctl(fd, LOOP_GET_STATUS64, &info);
    close(fd);
    if (rc < 0) return -1;
    snprintf(tag, len, "%s", (char *)info.lo_file_name);
    return 0;
}

/* Calls fn for every attached loop device with its backing file and lo_file_name. */
void loop_each(loop_visit fn, void *ctx)
{
    DIR *d = opendir("/sys/block");
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        int nr;
        char extra;
        if (sscanf(de->d_name, "loop%d%c", &nr, &extra) != 1) continue;
        char backing[PATH_MAX + 16];
        if (loop_read_sys(nr, "backing_file", backing, sizeof backing) < 0) continue;
        char tag[LO_NAME_SIZE + 1] = "";
        loop_tag(nr, tag, sizeof tag);
        fn(nr, backing, tag, ctx);
    }
    closedir(d);
}

/* Detaches loopN (lazily when still in use: autoclear). 0 or -1 with errno. */
int loop_detach(int nr)
{
    char dev[32];
    snprintf(dev, sizeof dev, "/dev/loop%d", nr);
    int fd = open(dev, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = ioctl(fd, LOOP_CLR_FD, 0);
    int e = errno;
    close(fd);
    if (rc < 0 && e == ENXIO) return 0;     /* already detached */
    errno = e;
    return rc;
}

/* ---- the loops of one medium (see struct loopq) ---- */

void loopq_push(struct loopq *q, int nr)
{
    if (q->n == q->cap) {
        int cap = q->cap ? q->cap * 2 : 64;
        int *n = realloc(q->nr, (size_t)cap * sizeof *n);
        if (!n) mh_die(MH_INTERNAL, "out of memory");
        q->nr = n;
        q->cap = cap;
    }
    q->nr[q->n++] = nr;
}

void loopq_free(struct loopq *q)
{
    free(q->nr);
    q->nr = NULL;
    q->n = q->cap = 0;
}

static int backing_is(const char *backing, const char *path)
{
    if (!path || !*path) return 0;
    size_t n = strlen(path);
    return !strncmp(backing, path, n) && (!backing[n] || !strcmp(backing + n, " (deleted)"));
}

void loop_match(int nr, const char *backing, const char *tag, void *ctx)
{
    struct loopq *q = ctx;
    int ours = q->tag && !strcmp(tag, q->tag);
    if (q->deleted_only) {
        size_t n = strlen(backing);
        if (!(ours && n > 10 && !strcmp(backing + n - 10, " (deleted)"))) return;
    } else if (!ours && (!strncmp(tag, "ntt:", 4) ||         /* another medium's: not ours to take */
                         (!backing_is(backing, q->image) && !backing_is(backing, q->viewfile)))) {
        return;
    }
    loopq_push(q, nr);
}

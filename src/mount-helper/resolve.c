/*
 * resolve.c - how ntt-mount-helper opens the files a caller names (image,
 * mapfile), the directories it mounts under and the honest view's file, so
 * that a name changed between the check and the use cannot reach anything
 * the check did not see.  See docs/mount-helper.md, "Paths".
 *
 * A named file is resolved once, below an fd of its allowed root, with
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) and O_PATH (or, on a kernel
 * without openat2, one O_NOFOLLOW openat per component): a symbolic link
 * swapped in anywhere on the way fails the walk instead of being followed,
 * and O_PATH opens nothing, so a FIFO or a device is refused by fstat
 * before its driver ever sees an open.  The regular file is then opened
 * for reading through /proc/self/fd/N, which names that inode and no path.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "helper.h"

/* Index of the root real lies below, -1 if none ("/" holds everything). */
static int root_of(const struct mh_conf *c, const char *real)
{
    for (int i = 0; i < c->nroots; i++) {
        size_t n = strlen(c->roots[i]);
        if (!strcmp(c->roots[i], "/") || (!strncmp(real, c->roots[i], n) && real[n] == '/')) return i;
    }
    return -1;
}

int mh_under_roots(const struct mh_conf *c, const char *real)
{
    return !c->restricted || root_of(c, real) >= 0;
}

/* openat2 unless the kernel lacks it; root may turn it off to test the
 * fallback (sudo's env_reset drops the variable for everyone else). */
static int openat2_usable = -1;

static int use_openat2(void)
{
    if (openat2_usable < 0) {
        const char *e = getenv("NTT_MOUNT_HELPER_NO_OPENAT2");
        openat2_usable = !(e && !strcmp(e, "1") && getuid() == 0);
    }
    return openat2_usable;
}

/* One component at a time, never following a link: the fallback walk. */
static int walk_nofollow(int dirfd, const char *rel, int want_dir)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", rel) >= (int)sizeof buf) { errno = ENAMETOOLONG; return -1; }
    int cur = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
    char *save = NULL;
    for (char *comp = strtok_r(buf, "/", &save); cur >= 0 && comp; ) {
        char *next = strtok_r(NULL, "/", &save);
        if (!strcmp(comp, "..")) { close(cur); errno = EXDEV; return -1; }   /* realpath leaves none */
        if (strcmp(comp, ".")) {
            int fd = openat(cur, comp, O_PATH | O_NOFOLLOW | O_CLOEXEC);
            int e = errno;
            close(cur);
            cur = fd;
            struct stat st;
            if (fd < 0) { errno = e; return -1; }
            if (fstat(fd, &st) < 0) e = errno;
            else if (S_ISLNK(st.st_mode)) e = ELOOP;             /* swapped in since realpath */
            else if ((next || want_dir) && !S_ISDIR(st.st_mode)) e = ENOTDIR;
            else e = 0;
            if (e) { close(fd); errno = e; return -1; }
        }
        comp = next;
    }
    return cur;
}

/* rel below dirfd, no symbolic link anywhere, nothing above dirfd: an
 * O_PATH fd, or -1 with errno (ELOOP: a link on the way; EXDEV: escaping). */
static int resolve_beneath(int dirfd, const char *rel, int want_dir)
{
    if (!*rel) return fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
    if (use_openat2()) {
        struct open_how how = {
            .flags = O_PATH | O_CLOEXEC | (want_dir ? O_DIRECTORY : 0),
            .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        for (int tries = 0; tries < 16; tries++) {
            int fd = (int)syscall(SYS_openat2, dirfd, rel, &how, sizeof how);
            if (fd >= 0) return fd;
            if (errno == EAGAIN) continue;         /* a rename raced the walk: walk again */
            if (errno != ENOSYS && errno != EPERM) return -1;
            break;                                 /* no openat2 here (EPERM: a seccomp filter) */
        }
        if (errno == EAGAIN) return -1;
        openat2_usable = 0;
    }
    return walk_nofollow(dirfd, rel, want_dir);
}

int mh_open_input(const struct mh_conf *c, const char *what, const char *arg, char *real,
                  int *fdp, char *err, size_t errlen)
{
    *fdp = -1;
    if (!realpath(arg, real)) { snprintf(err, errlen, "%s %s: %s", what, arg, strerror(errno)); return MH_USAGE; }
    if (strlen(real) >= MH_PATH - 16) { snprintf(err, errlen, "%s %s: path too long", what, arg); return MH_USAGE; }
    const char *root = "/";
    if (c->restricted) {
        int i = root_of(c, real);
        if (i < 0) { snprintf(err, errlen, "%s %s is not under a configured root", what, real); return MH_DENIED; }
        root = c->roots[i];
    }
    const char *rel = real + strlen(root);
    while (*rel == '/') rel++;
    int rc = 0, slash = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    int rootfd = slash < 0 ? -1 : resolve_beneath(slash, root + 1, 1);
    int pfd = rootfd < 0 ? -1 : resolve_beneath(rootfd, rel, 0);
    int e = errno;
    if (slash >= 0) close(slash);
    if (rootfd >= 0) close(rootfd);
    if (pfd < 0) {
        if (e == ELOOP || e == EXDEV || e == ENOTDIR)
            snprintf(err, errlen, "%s %s changed while it was opened (a symbolic link or a non-directory on the "
                     "way under %s): refused", what, real, root);
        else
            snprintf(err, errlen, "%s %s: %s", what, real, strerror(e));
        return e == ELOOP || e == EXDEV || e == ENOTDIR || e == EACCES || e == EPERM ? MH_DENIED : MH_USAGE;
    }
    struct stat pst, st;
    if (fstat(pfd, &pst) < 0) {
        snprintf(err, errlen, "%s %s: %s", what, real, strerror(errno));
        rc = MH_INTERNAL;
    } else if (!S_ISREG(pst.st_mode)) {                 /* never opened: no FIFO wait, no device open */
        snprintf(err, errlen, "%s %s is not a regular file", what, real);
        rc = MH_USAGE;
    } else {
        char self[64];
        snprintf(self, sizeof self, "/proc/self/fd/%d", pfd);
        int fd = open(self, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0) {
            int oe = errno;
            snprintf(err, errlen, "%s %s: %s", what, real, strerror(oe));
            rc = oe == EACCES ? MH_DENIED : MH_INTERNAL;
        } else if (fstat(fd, &st) < 0 || st.st_dev != pst.st_dev || st.st_ino != pst.st_ino
                   || !S_ISREG(st.st_mode) || fcntl(fd, F_SETFL, 0) < 0) {
            snprintf(err, errlen, "%s %s: reopened file is not the one checked", what, real);
            close(fd);
            rc = MH_INTERNAL;
        } else {
            *fdp = fd;
        }
    }
    close(pfd);
    return rc;
}

/*
 * mkdir -p of path, walked from "/" one component at a time.  The last
 * directory must be a real directory owned by the helper's user.  In
 * restricted mode every directory above it must be a real directory (no
 * link) owned by root and not group/world-writable unless sticky: then no
 * one but root can rename anything on the way, and the mount points, the
 * state and lock files built from path later stay where they were checked.
 */
int mh_mkdirs(const struct mh_conf *c, const char *path, mode_t mode, char *err, size_t errlen)
{
    char buf[MH_PATH], sofar[MH_PATH];
    if (path[0] != '/' || snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        snprintf(err, errlen, "mkdir %s: not an absolute path of fewer than %d bytes", path, MH_PATH);
        return MH_INTERNAL;
    }
    int cur = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (cur < 0) { snprintf(err, errlen, "open /: %s", strerror(errno)); return MH_INTERNAL; }
    struct stat st;
    int rc = 0;
    char *save = NULL;
    for (char *comp = strtok_r(buf, "/", &save); comp; ) {
        char *next = strtok_r(NULL, "/", &save);
        snprintf(sofar, sizeof sofar, "%.*s", (int)(comp - buf + strlen(comp)), path);
        int flags = O_PATH | O_CLOEXEC | (next && !c->restricted ? 0 : O_NOFOLLOW);
        if (mkdirat(cur, comp, next ? 0755 : mode) < 0 && errno != EEXIST) {
            snprintf(err, errlen, "mkdir %s: %s", sofar, strerror(errno));
            rc = MH_INTERNAL;
            break;
        }
        int fd = openat(cur, comp, flags);
        close(cur);
        cur = fd;
        if (fd < 0 || fstat(fd, &st) < 0) {
            snprintf(err, errlen, "%s: %s", sofar, strerror(errno));
            rc = MH_INTERNAL;
            break;
        }
        if (!next && (!S_ISDIR(st.st_mode) || st.st_uid != geteuid())) {
            snprintf(err, errlen, "%s is not a directory owned by the helper's user", sofar);
            rc = MH_INTERNAL;
            break;
        }
        if (next && c->restricted && S_ISLNK(st.st_mode)) {
            snprintf(err, errlen, "%s (above the mount root %s) is a symbolic link: not followed", sofar, path);
            rc = MH_DENIED;
            break;
        }
        if (next && !S_ISDIR(st.st_mode)) {
            snprintf(err, errlen, "mkdir %s: %s", sofar, strerror(ENOTDIR));
            rc = MH_INTERNAL;
            break;
        }
        if (next && c->restricted && (st.st_uid != 0 || ((st.st_mode & 022) && !(st.st_mode & S_ISVTX)))) {
            snprintf(err, errlen, "%s (above the mount root %s) must be a directory owned by root and not "
                     "group/world-writable unless sticky", sofar, path);
            rc = MH_DENIED;
            break;
        }
        comp = next;
    }
    if (cur >= 0) close(cur);
    return rc;
}

/* The honest view's file, opened through its mount point: it must be the
 * regular file of the FUSE mount there (not the directory beneath it), of
 * the presented size.  -1 with err otherwise. */
int mh_open_view(const char *mount, uint64_t size, char *err, size_t errlen)
{
    int dfd = open(mount, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) { snprintf(err, errlen, "honest view: open %s: %s", mount, strerror(errno)); return -1; }
    struct stat dst, pst, st;
    int bad = fstat(dfd, &dst) < 0 || fstatat(dfd, "..", &pst, 0) < 0 || dst.st_dev == pst.st_dev;
    int fd = bad ? -1 : openat(dfd, "image", O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
    int e = errno;
    close(dfd);
    if (bad) { snprintf(err, errlen, "honest view: %s is not a mount", mount); return -1; }
    if (fd < 0) { snprintf(err, errlen, "honest view: open %s/image: %s", mount, strerror(e)); return -1; }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_dev != dst.st_dev || (uint64_t)st.st_size != size) {
        snprintf(err, errlen, "honest view: %s/image is not the view's file", mount);
        close(fd);
        return -1;
    }
    return fd;
}

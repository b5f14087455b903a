/*
 * paths.c - mkdir -p, rm -r, access-as-another-account and paths of any
 * length (see paths.h) for ntt.core.fs and the copy engine; plain C, no Lua.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include "paths.h"

static int open2(int dirfd, const char *path, int flags, int beneath)
{
    if (!beneath)
        return openat(dirfd, path, flags);
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = (unsigned long long)flags;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

int paths_long_dir(int dirfd, const char *path, size_t len, int beneath, size_t *rest)
{
    char part[PATH_MAX];
    int dir = dirfd;
    size_t at = 0;
    while (len - at >= PATH_MAX) {
        size_t cut = PATH_MAX - 1;      /* the longest stretch of whole names that fits */
        while (cut > 0 && path[at + cut] != '/')
            cut--;
        int fd = -1, e = ENAMETOOLONG;  /* (cut 0: a single name longer than any path) */
        if (cut > 0) {
            memcpy(part, path + at, cut);
            part[cut] = 0;
            fd = open2(dir, part, O_PATH | O_DIRECTORY | O_CLOEXEC, beneath);
            e = errno;
        }
        if (dir != dirfd)
            close(dir);
        if (fd < 0) {
            errno = e;
            return -1;
        }
        dir = fd;
        at += cut + 1;                  /* past the '/' */
    }
    *rest = at;
    return dir;
}

int paths_open_beneath(int rootfd, const char *path, size_t len, int flags)
{
    size_t at;
    int dir = paths_long_dir(rootfd, path, len, 1, &at);
    if (dir == -1)
        return -1;
    int fd = open2(dir, path + at, flags, 1), e = errno;
    if (dir != rootfd)
        close(dir);
    errno = e;
    return fd;
}

int paths_stat(const char *path, struct stat *st, int nofollow)
{
    if ((nofollow ? lstat(path, st) : stat(path, st)) == 0)
        return 0;
    if (errno != ENAMETOOLONG)
        return errno;
    size_t at;
    int dir = paths_long_dir(AT_FDCWD, path, strlen(path), 0, &at);
    if (dir == -1)                      /* (AT_FDCWD is negative too) */
        return errno;
    int e = fstatat(dir, path + at, st, nofollow ? AT_SYMLINK_NOFOLLOW : 0) == 0 ? 0 : errno;
    if (dir != AT_FDCWD)
        close(dir);
    return e;
}

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

int paths_mkdirs(const char *path, mode_t mode)
{
    char buf[PATH_MAX];
    size_t len = strlen(path);
    if (len == 0)
        return ENOENT;
    if (len >= sizeof buf)
        return ENAMETOOLONG;
    memcpy(buf, path, len + 1);
    /* Each prefix ending before a '/', then the whole path. */
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != 0)
            continue;
        char c = *p;
        *p = 0;
        if (mkdir(buf, mode) != 0) {
            int err = errno;
            if (err != EEXIST)
                return err;
            if (!is_dir(buf))
                return c ? ENOTDIR : EEXIST;   /* a non-directory in the way */
        }
        *p = c;
        if (!c)
            break;
        while (p[1] == '/')
            p++;
        if (!p[1])
            break;   /* trailing slashes */
    }
    return 0;
}

#define REMOVE_DEPTH 256

static int remove_at(int at, const char *name, dev_t dev, int depth)
{
    struct stat st;
    if (fstatat(at, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return errno == ENOENT ? 0 : errno;
    if (!S_ISDIR(st.st_mode))
        return unlinkat(at, name, 0) == 0 || errno == ENOENT ? 0 : errno;
    if (st.st_dev != dev)
        return EXDEV;
    if (depth >= REMOVE_DEPTH)
        return ENAMETOOLONG;
    int fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int err = errno;
        close(fd);
        return err;
    }
    int err = 0;
    struct dirent *e;
    while (!err) {
        errno = 0;
        if (!(e = readdir(d))) {
            err = errno;
            break;
        }
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            err = remove_at(dirfd(d), e->d_name, dev, depth + 1);
    }
    closedir(d);
    if (!err && unlinkat(at, name, AT_REMOVEDIR) != 0 && errno != ENOENT)
        err = errno;
    return err;
}

int paths_remove_tree(const char *path, dev_t dev)
{
    return remove_at(AT_FDCWD, path, dev, 0);
}

/* A child's exit status meaning "could not take the account's identity". */
#define NO_IDENTITY 255

int paths_access_as(const char *path, int amode, const char *name, uid_t uid, gid_t gid)
{
    gid_t groups[256];
    int ngroups = (int)(sizeof groups / sizeof groups[0]);
    if (getgrouplist(name, gid, groups, &ngroups) < 0)
        ngroups = (int)(sizeof groups / sizeof groups[0]);   /* the first 256 */
    pid_t pid = fork();
    if (pid < 0)
        return errno;
    if (pid == 0) {
        /* Only system calls from here to _exit: the parent may have threads. */
        if (setgroups((size_t)ngroups, groups) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
            _exit(NO_IDENTITY);
        _exit(access(path, amode) == 0 ? 0 : errno);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return errno;
    if (!WIFEXITED(status))
        return EIO;
    return WEXITSTATUS(status) == NO_IDENTITY ? -1 : WEXITSTATUS(status);
}

/*
 * paths.c - mkdir -p, rm -r and access-as-another-account for
 * ntt.core.fs (see paths.h); plain C, no Lua.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "paths.h"

int paths_stat(const char *path, struct stat *st, int nofollow)
{
    if ((nofollow ? lstat(path, st) : stat(path, st)) == 0)
        return 0;
    if (errno != ENAMETOOLONG)
        return errno;
    size_t len = strlen(path), at = 0;
    int dir = AT_FDCWD;
    char part[PATH_MAX];
    for (;;) {
        size_t cut = len - at;
        if (cut >= PATH_MAX) {          /* the longest stretch of whole names that fits */
            cut = PATH_MAX - 1;
            while (cut > 0 && path[at + cut] != '/')
                cut--;
        }
        int last = at + cut >= len, e = 0;
        if (cut == 0 && !last) {
            e = ENAMETOOLONG;           /* a single name longer than any path */
        } else {
            memcpy(part, path + at, cut);
            part[cut] = 0;
            if (last) {
                if (fstatat(dir, part, st, nofollow ? AT_SYMLINK_NOFOLLOW : 0) != 0)
                    e = errno;
            } else {
                int fd = openat(dir, part, O_PATH | O_DIRECTORY | O_CLOEXEC);
                if (fd < 0)
                    e = errno;
                if (dir != AT_FDCWD)
                    close(dir);
                if (!e) {
                    dir = fd;
                    at += cut + 1;
                    continue;
                }
                return e;
            }
        }
        if (dir != AT_FDCWD)
            close(dir);
        return e;
    }
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

/*
 * beneath.c - opening a path beneath a directory, however long the path.
 *
 * The kernel refuses a path of PATH_MAX bytes or more (ENAMETOOLONG), yet
 * a walk that goes directory by directory finds files far deeper than that
 * (a backup nested in a backup ...).  ntt_open_beneath opens such a path a
 * stretch at a time: each stretch of whole names shorter than PATH_MAX is
 * resolved with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) from the
 * directory the stretch before it opened, so the whole path stays beneath
 * the root and follows no link, as one openat2 of a short path does.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "copy_engine.h"

static int open2(int dirfd, const char *path, int flags)
{
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = (unsigned long long)flags;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

int ntt_open_beneath(int rootfd, const char *path, size_t len, int flags)
{
    if (len < PATH_MAX)
        return open2(rootfd, path, flags);
    char part[PATH_MAX];
    int dir = rootfd;
    size_t at = 0;
    for (;;) {
        size_t left = len - at, cut = left;
        if (left >= PATH_MAX) {
            /* the longest stretch of whole names that fits */
            cut = PATH_MAX - 1;
            while (cut > 0 && path[at + cut] != '/')
                cut--;
            if (cut == 0) {     /* one name longer than any path: none can be */
                if (dir != rootfd)
                    close(dir);
                errno = ENAMETOOLONG;
                return -1;
            }
        }
        memcpy(part, path + at, cut);
        part[cut] = 0;
        int last = at + cut >= len;
        int fd = open2(dir, part, last ? flags : O_PATH | O_DIRECTORY | O_CLOEXEC);
        int e = errno;
        if (dir != rootfd)
            close(dir);
        if (fd < 0 || last) {
            errno = e;
            return fd;
        }
        dir = fd;
        at += cut + 1;          /* past the '/' */
    }
}

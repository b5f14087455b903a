/*
 * paths.h - path operations of ntt.core.fs that need no Lua state (so they
 * can hold fds, a child process or a path buffer without any risk of a Lua
 * error leaking them).  Each returns 0 or an errno value.
 */
#ifndef NTT_PATHS_H
#define NTT_PATHS_H

#include <sys/stat.h>
#include <sys/types.h>

/*
 * Paths of PATH_MAX bytes or more, which the kernel refuses in one call (a
 * file deep in a backup nested in a backup), reached a stretch of whole
 * names at a time, each from the directory the stretch before opened.
 * paths_long_dir: the directory holding the last stretch (path + *rest,
 * shorter than PATH_MAX): dirfd itself for a short path, else an fd the
 * caller closes; -1 with errno.  With beneath, every stretch is opened
 * with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS): the whole path
 * stays beneath dirfd and follows no link, as one such openat2 would.
 * paths_open_beneath: path (NUL-terminated at len) opened beneath rootfd
 * that way with flags; an fd, or -1 with errno.
 * paths_stat: stat, or lstat with nofollow; 0 or an errno.
 */
int paths_long_dir(int dirfd, const char *path, size_t len, int beneath, size_t *rest);
int paths_open_beneath(int rootfd, const char *path, size_t len, int flags);
int paths_stat(const char *path, struct stat *st, int nofollow);

/* mkdir -p: every missing directory of path with mode. */
int paths_mkdirs(const char *path, mode_t mode);

/*
 * rm -r of path (lstat'ed by the caller, its st_dev given): symbolic links
 * are removed, never followed; a directory on another device is EXDEV; a
 * missing entry is fine; deeper than 256 levels is ENAMETOOLONG.
 */
int paths_remove_tree(const char *path, dev_t dev);

/*
 * access(2) for the account (name, uid, gid) in a short-lived child that
 * takes its supplementary groups, gid and uid.  -1 when the child could not
 * take that identity (we are not root).
 */
int paths_access_as(const char *path, int amode, const char *name, uid_t uid, gid_t gid);

#endif

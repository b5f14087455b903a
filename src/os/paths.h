/*
 * paths.h - path operations of ntt.core.fs that need no Lua state (so they
 * can hold fds, a child process or a path buffer without any risk of a Lua
 * error leaking them).  Each returns 0 or an errno value.
 */
#ifndef NTT_PATHS_H
#define NTT_PATHS_H

#include <sys/stat.h>
#include <sys/types.h>

/* stat, or lstat with nofollow, of a path of any length: one past
 * PATH_MAX (a file deep in a tree, a link of the tree stage to it) is
 * reached a stretch of whole names at a time. */
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

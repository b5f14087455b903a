/*
 * openers.c - ntt.core.openers: which processes hold a file open for
 * writing.
 *
 * An image that ddrescue (or anything else) is still writing must not be
 * identified, mounted or copied: its bytes and its map are about to change.
 * ddrescue takes no lock, so the one sure sign is an open file description:
 * every /proc/PID/fd/N is looked at, and one that is the same file (device
 * and inode, so another name or a bind mount of it counts too) and whose
 * /proc/PID/fdinfo/N flags say O_WRONLY or O_RDWR is a writer.  Processes we
 * may not look into (another account's, when not root) are skipped: the scan
 * finds what it can see, never fails because of them.
 *
 * Lua API (ntt.core.openers):
 *   writers(path) -> { {pid=, fd=, comm=}, ... }   (empty: none seen)
 *                  | nil, "path: strerror", errname   (path cannot be stat'ed)
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "ntt.h"

/* The open flags of /proc/PID/fdinfo/FD ("flags:\t0100002", octal), or -1. */
static long fd_flags(const char *pid, const char *fd)
{
    char p[640];
    snprintf(p, sizeof p, "/proc/%s/fdinfo/%s", pid, fd);
    FILE *f = fopen(p, "re");
    if (!f)
        return -1;
    char line[256];
    long flags = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "flags:", 6) == 0) {
            flags = strtol(line + 6, NULL, 8);
            break;
        }
    }
    fclose(f);
    return flags;
}

static void comm_of(const char *pid, char *out, size_t n)
{
    char p[640];
    snprintf(p, sizeof p, "/proc/%s/comm", pid);
    out[0] = 0;
    FILE *f = fopen(p, "re");
    if (!f)
        return;
    if (fgets(out, (int)n, f))
        out[strcspn(out, "\n")] = 0;
    fclose(f);
}

static int all_digits(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return 0;
    return 1;
}

static int openers_writers(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct stat want;
    if (stat(path, &want) != 0)
        return ntt_fail(L, errno, path);
    lua_newtable(L);
    int n = 0;
    DIR *proc = opendir("/proc");
    if (!proc)
        return 1;
    struct dirent *pe;
    while ((pe = readdir(proc))) {
        if (!all_digits(pe->d_name))
            continue;
        char fddir[320];
        snprintf(fddir, sizeof fddir, "/proc/%s/fd", pe->d_name);
        DIR *fds = opendir(fddir);
        if (!fds)
            continue;           /* gone, or not ours to see */
        struct dirent *fe;
        while ((fe = readdir(fds))) {
            if (!all_digits(fe->d_name))
                continue;
            char fp[640];
            struct stat st;
            snprintf(fp, sizeof fp, "%s/%s", fddir, fe->d_name);
            if (stat(fp, &st) != 0 || st.st_dev != want.st_dev || st.st_ino != want.st_ino)
                continue;
            long flags = fd_flags(pe->d_name, fe->d_name);
            if (flags < 0 || (flags & O_ACCMODE) == O_RDONLY)
                continue;
            char comm[64];
            comm_of(pe->d_name, comm, sizeof comm);
            lua_createtable(L, 0, 3);
            lua_pushinteger(L, atol(pe->d_name));
            lua_setfield(L, -2, "pid");
            lua_pushinteger(L, atol(fe->d_name));
            lua_setfield(L, -2, "fd");
            lua_pushstring(L, comm);
            lua_setfield(L, -2, "comm");
            lua_rawseti(L, -2, ++n);
        }
        closedir(fds);
    }
    closedir(proc);
    return 1;
}

static const luaL_Reg openers_funcs[] = {
    { "writers", openers_writers },
    { NULL, NULL }
};

int luaopen_ntt_core_openers(lua_State *L)
{
    luaL_newlib(L, openers_funcs);
    return 1;
}

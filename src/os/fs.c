/*
 * fs.c - ntt.core.fs: the one home of filesystem primitives (nothing in
 * ntt's Lua spawns a process for these), and facts about the filesystem
 * under a path for the copy engine's concurrency policy.
 *
 * Lua API (ntt.core.fs).  Expected failures return nil, "path: strerror",
 * "ENAME"; misuse (a wrong argument type, an unknown option) raises.
 *   stat(path [, nofollow])
 *       -> { type="file"|"directory"|"block"|"char"|"link"|"fifo"|"socket",
 *            size=, mode= (permission bits), uid=, gid=, dev=, ino=,
 *            mtime_ns=, ctime_ns= (nanoseconds since the epoch),
 *            major=, minor= (block and char devices only) }
 *          follows a symbolic link unless nofollow is true
 *   realpath(path) -> canonical absolute path
 *   exchange(a, b) -> true   swaps the two names atomically
 *          (renameat2 RENAME_EXCHANGE): both must exist, any types
 *   link(target, name) -> true   a new hard link name to target (a
 *          symbolic link target is linked itself, not followed)
 *   readdir(path) -> { name, ... } every entry but "." and "..", names as
 *          raw bytes, sorted bytewise
 *   mkdirp(path [, mode]) -> true   like mkdir -p: creates each missing
 *          directory with mode (default 0777, less the umask); an existing
 *          directory (or a symbolic link to one) is fine; an existing
 *          non-directory fails "EEXIST" or "ENOTDIR"
 *   owner(path) -> name, uid   the account owning path (links followed);
 *          name is the decimal uid when no account has that uid
 *   access(path, mode [, user]) -> true
 *        | false, "path: strerror", "EACCES"|"EROFS"|"EPERM"|"ETXTBSY"
 *        | nil, msg, errname   (path missing, unknown user "ENOENT", ...)
 *          mode is a string of "r", "w", "x".  Without user: for this
 *          process's effective ids.  With a user name: for that account,
 *          answered by the kernel itself in a short-lived child that takes
 *          the account's uid, gid and supplementary groups and calls
 *          access(2) -- so ACLs, read-only mounts and every parent
 *          directory's search permission count exactly as they will for a
 *          process of that account (for any other user than our own this
 *          needs root: otherwise nil, msg, "EPERM")
 *   chmod(path, mode) -> true   (every mode here is an integer 0..07777)
 *   chown(path, user) -> true   owner user, group the account's primary group
 *   rmtree(path) -> true   removes path and everything below it; symbolic
 *          links are removed, never followed; a missing path is fine; a
 *          directory on another filesystem below path fails "EXDEV"
 *   mountinfo() -> { { id=, parent=, major=, minor=, root=, target=,
 *                      options=, optional={ "shared:1", ... }, fstype=,
 *                      source=, super_options= }, ... }
 *          /proc/self/mountinfo in order, every field fully unescaped
 *          (\ooo: space, tab, newline, backslash)
 *   probe(path [, { network_fuse = { "fuse.sshfs", ... } }])
 *       -> { kind = "ext4"|"xfs"|"btrfs"|"9p"|"nfs"|"cifs"|"smb2"|
 *                   "fuse"|"tmpfs"|"overlay"|"squashfs"|...|"unknown",
 *            magic = statfs f_type, network = bool,
 *            fstype = mount table type (e.g. "fuse.sshfs"), when found }
 *          ext2/3/4 share one magic: kind is "ext4" unless the mount table
 *          names the path's filesystem ext2 or ext3.  network is true for
 *          the kernel's network filesystems (9p, NFS, CIFS/SMB, cluster
 *          filesystems) and for a FUSE filesystem whose mount type is in
 *          network_fuse (the policy's copy.network_fuse: the list is data,
 *          not compiled in; without it no FUSE filesystem counts as network)
 *   space(path) -> { size=, free=, avail= }   bytes of the filesystem
 *          holding path (statvfs): its size, free, and free to an
 *          unprivileged writer (what a store can count on)
 *   wsl() -> true when the kernel is Microsoft's (WSL), else false
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include "mountinfo.h"
#include "paths.h"
#include "ntt.h"

/*
 * What a binding holds while it may raise (building its Lua result): closed
 * by __close when the call returns or raises, so nothing leaks.
 */
#define BOX_MT "ntt.fs.box"
typedef struct {
    DIR *dir;
    FILE *file;
    char *line;
    size_t cap;
} Box;

static int box_close(lua_State *L)
{
    Box *b = luaL_checkudata(L, 1, BOX_MT);
    if (b->dir)
        closedir(b->dir);
    if (b->file)
        fclose(b->file);
    free(b->line);
    b->dir = NULL;
    b->file = NULL;
    b->line = NULL;
    return 0;
}

static Box *box_new(lua_State *L)
{
    Box *b = ntt_newudata(L, sizeof *b, BOX_MT);
    lua_toclose(L, -1);
    return b;
}

/* ------------------------------------------------------------ paths */

static int fs_stat(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int nofollow = lua_toboolean(L, 2);
    struct stat st;
    int err = paths_stat(path, &st, nofollow);   /* (any length) */
    if (err)
        return ntt_fail(L, err, path);
    mode_t m = st.st_mode;
    const char *type = S_ISREG(m) ? "file" : S_ISDIR(m) ? "directory" : S_ISBLK(m) ? "block"
                     : S_ISCHR(m) ? "char" : S_ISLNK(m) ? "link" : S_ISFIFO(m) ? "fifo"
                     : "socket";
    lua_createtable(L, 0, 12);
    ntt_setstr(L, "type", type);
    ntt_setint(L, "size", st.st_size);
    ntt_setint(L, "mode", m & 07777);
    ntt_setint(L, "uid", st.st_uid);
    ntt_setint(L, "gid", st.st_gid);
    /* What a cache of a file's content hash is keyed by (ctime: a write
     * that resets mtime afterwards still moves it). */
    ntt_setint(L, "dev", (lua_Integer)st.st_dev);
    ntt_setint(L, "ino", (lua_Integer)st.st_ino);
    ntt_setint(L, "mtime_ns", (lua_Integer)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
    ntt_setint(L, "ctime_ns", (lua_Integer)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec);
    if (S_ISBLK(m) || S_ISCHR(m)) {
        ntt_setint(L, "major", major(st.st_rdev));
        ntt_setint(L, "minor", minor(st.st_rdev));
    }
    return 1;
}

static int fs_realpath(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    char *rp = realpath(path, NULL);
    if (!rp)
        return ntt_fail(L, errno, path);
    lua_pushstring(L, rp);
    free(rp);
    return 1;
}

/* Atomic: at no moment does either name point nowhere (a rename pair
 * would leave a gap), which is what races against path checks need. */
static int fs_exchange(lua_State *L)
{
    const char *a = luaL_checkstring(L, 1);
    const char *b = luaL_checkstring(L, 2);
    if (renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) != 0)
        return ntt_failf(L, errno, "exchange %s %s", a, b);
    lua_pushboolean(L, 1);
    return 1;
}

static int fs_link(lua_State *L)
{
    const char *target = luaL_checkstring(L, 1);
    const char *name = luaL_checkstring(L, 2);
    if (linkat(AT_FDCWD, target, AT_FDCWD, name, 0) != 0)
        return ntt_failf(L, errno, "link %s %s", target, name);
    lua_pushboolean(L, 1);
    return 1;
}

static int bytewise(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int fs_readdir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    Box *b = box_new(L);
    if (!(b->dir = opendir(path)))
        return ntt_fail(L, errno, path);
    lua_newtable(L);   /* names in directory order; they anchor the strings */
    int t = lua_gettop(L);
    lua_Integer n = 0;
    struct dirent *e;
    for (;;) {
        errno = 0;
        if (!(e = readdir(b->dir)))
            break;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        lua_pushstring(L, e->d_name);
        lua_rawseti(L, t, ++n);
    }
    if (errno)
        return ntt_fail(L, errno, path);
    const char **names = lua_newuserdatauv(L, sizeof *names * (size_t)(n ? n : 1), 0);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, t, i);
        names[i - 1] = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    qsort(names, (size_t)n, sizeof *names, bytewise);
    lua_createtable(L, (int)n, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_pushstring(L, names[i - 1]);
        lua_rawseti(L, -2, i);
    }
    return 1;
}

/*
 * mode argument at idx: an integer 0..07777 (a string such as "755" raises:
 * Lua would read it as decimal).
 */
static mode_t check_mode(lua_State *L, int idx, lua_Integer dflt)
{
    if (lua_isnoneornil(L, idx))
        return (mode_t)dflt;
    luaL_argexpected(L, lua_isinteger(L, idx), idx, "integer mode (e.g. tonumber(\"755\", 8))");
    lua_Integer m = lua_tointeger(L, idx);
    luaL_argcheck(L, m >= 0 && m <= 07777, idx, "mode must be 0..07777");
    return (mode_t)m;
}

static int fs_mkdirp(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int err = paths_mkdirs(path, check_mode(L, 2, 0777));
    if (err)
        return ntt_fail(L, err, path);
    lua_pushboolean(L, 1);
    return 1;
}

/* ------------------------------------------------------------ accounts */

struct account {
    uid_t uid;
    gid_t gid;
    char name[256];
};

/* Look up the account named at idx; 0, or pushes the failure and returns 3. */
static int account(lua_State *L, int idx, struct account *a)
{
    const char *name = luaL_checkstring(L, idx);
    struct passwd pw, *res = NULL;
    char buf[16384];
    int err = getpwnam_r(name, &pw, buf, sizeof buf, &res);
    if (!res) {
        if (err)
            return ntt_failf(L, err, "user '%s'", name);
        lua_pushnil(L);
        lua_pushfstring(L, "user '%s': no such account", name);
        lua_pushstring(L, "ENOENT");
        return 3;
    }
    a->uid = pw.pw_uid;
    a->gid = pw.pw_gid;
    snprintf(a->name, sizeof a->name, "%s", pw.pw_name);
    return 0;
}

static int fs_owner(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if (stat(path, &st) < 0)
        return ntt_fail(L, errno, path);
    struct passwd pw, *res = NULL;
    char buf[16384];
    if (getpwuid_r(st.st_uid, &pw, buf, sizeof buf, &res) == 0 && res)
        lua_pushstring(L, pw.pw_name);
    else
        lua_pushfstring(L, "%d", (int)st.st_uid);
    lua_pushinteger(L, st.st_uid);
    return 2;
}

static int fs_access(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    const char *ms = luaL_checkstring(L, 2);
    int amode = 0;
    for (const char *c = ms; *c; c++)
        amode |= *c == 'r' ? R_OK : *c == 'w' ? W_OK : *c == 'x' ? X_OK
               : luaL_argerror(L, 2, "mode is a string of r, w, x (e.g. \"rw\")");
    luaL_argcheck(L, amode != 0, 2, "mode is a string of r, w, x (e.g. \"rw\")");
    int err = 0;
    if (lua_isnoneornil(L, 3)) {
        if (faccessat(AT_FDCWD, path, amode, AT_EACCESS) != 0)
            err = errno;
    } else {
        struct account a;
        if (account(L, 3, &a))
            return 3;
        if (a.uid == geteuid() && a.gid == getegid())
            err = faccessat(AT_FDCWD, path, amode, AT_EACCESS) != 0 ? errno : 0;
        else
            err = paths_access_as(path, amode, a.name, a.uid, a.gid);
        if (err < 0)
            return ntt_failf(L, EPERM, "%s: cannot check access as user '%s'", path, a.name);
    }
    if (!err) {
        lua_pushboolean(L, 1);
        return 1;
    }
    if (err == EACCES || err == EROFS || err == EPERM || err == ETXTBSY) {
        ntt_fail(L, err, path);
        lua_pushboolean(L, 0);
        lua_replace(L, -4);
        return 3;
    }
    return ntt_fail(L, err, path);
}

static int fs_chmod(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    luaL_checkany(L, 2);
    if (chmod(path, check_mode(L, 2, 0)) != 0)
        return ntt_fail(L, errno, path);
    lua_pushboolean(L, 1);
    return 1;
}

static int fs_chown(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct account a;
    if (account(L, 2, &a))
        return 3;
    if (chown(path, a.uid, a.gid) != 0)
        return ntt_fail(L, errno, path);
    lua_pushboolean(L, 1);
    return 1;
}

/* ------------------------------------------------------------ rmtree */

static int fs_rmtree(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT) {
            lua_pushboolean(L, 1);
            return 1;
        }
        return ntt_fail(L, errno, path);
    }
    int err = paths_remove_tree(path, st.st_dev);
    if (err)
        return ntt_fail(L, err, path);
    lua_pushboolean(L, 1);
    return 1;
}

/* ------------------------------------------------------------ mounts */

static int fs_mountinfo(lua_State *L)
{
    Box *b = box_new(L);
    if (!(b->file = fopen("/proc/self/mountinfo", "re")))
        return ntt_fail(L, errno, "/proc/self/mountinfo");
    lua_newtable(L);
    lua_Integer n = 0;
    struct mountinfo m;
    while (mountinfo_next(b->file, &b->line, &b->cap, &m)) {
        lua_createtable(L, 0, 11);
        ntt_setint(L, "id", m.id);
        ntt_setint(L, "parent", m.parent);
        ntt_setint(L, "major", m.major);
        ntt_setint(L, "minor", m.minor);
        ntt_setstr(L, "root", m.root);
        ntt_setstr(L, "target", m.target);
        ntt_setstr(L, "options", m.options);
        ntt_setstr(L, "fstype", m.fstype);
        ntt_setstr(L, "source", m.source);
        ntt_setstr(L, "super_options", m.super_options);
        lua_createtable(L, m.noptional, 0);
        for (int i = 0; i < m.noptional; i++) {
            lua_pushstring(L, m.optional[i]);
            lua_rawseti(L, -2, i + 1);
        }
        lua_setfield(L, -2, "optional");
        lua_rawseti(L, -2, ++n);
    }
    return 1;
}

static const struct {
    unsigned long magic;
    const char *kind;
    int network;
} kinds[] = {
    {0xEF53, "ext4", 0},        {0x58465342, "xfs", 0},
    {0x9123683E, "btrfs", 0},   {0x01021997, "9p", 1},
    {0x6969, "nfs", 1},         {0xFF534D42, "cifs", 1},
    {0xFE534D42, "smb2", 1},    {0x517B, "smb", 1},
    {0x65735546, "fuse", 0},    {0x01021994, "tmpfs", 0},
    {0x794C7630, "overlay", 0}, {0x73717368, "squashfs", 0},
    {0x4d44, "vfat", 0},        {0x9660, "iso9660", 0},
    {0x15013346, "udf", 0},     {0x5346544E, "ntfs", 0},
    {0x7366746E, "ntfs3", 0},   {0x2011BAB0, "exfat", 0},
    {0xF2F52010, "f2fs", 0},    {0x4244, "hfs", 0},
    {0x482b, "hfsplus", 0},     {0x28cd3d45, "cramfs", 0},
    {0x858458f6, "ramfs", 0},   {0x9fa0, "proc", 0},
    {0x62656572, "sysfs", 0},   {0x1373, "devfs", 0},
    {0x6165676C, "pstorefs", 0},
    {0x5a3c69f0, "aafs", 0},    {0x0BD00BD0, "lustre", 1},
    {0x47504653, "gpfs", 1},    {0x00C36400, "ceph", 1},
    {0x564c, "ncp", 1},         {0x6B414653, "afs", 1},
    {0x5346414F, "afs", 1},     {0x19830326, "fhgfs", 1},
    {0x013111A8, "ibrix", 1},
    {0xde5e81e4, "efivarfs", 0}, {0x27e0eb, "cgroup", 0},
    {0x63677270, "cgroup2", 0}, {0x5dca2df5, "vboxsf", 1},
    {0x786f4256, "vboxsf", 1},
};

/*
 * The mount table type of the filesystem holding path: the mountinfo
 * entry with the path's device number and the longest mount point that
 * prefixes the path.  Writes "" when not found.
 */
static void mount_type(const char *path, dev_t dev, char *out, size_t outsz)
{
    out[0] = 0;
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return;
    char *real = realpath(path, NULL);
    char *line = NULL;
    size_t cap = 0, best = 0;
    struct mountinfo m;
    while (mountinfo_next(f, &line, &cap, &m)) {
        if (makedev(m.major, m.minor) != dev)
            continue;
        const char *mnt = m.target;
        size_t ml = strlen(mnt);
        int prefix = real && (strcmp(mnt, "/") == 0 ||
                              (strncmp(real, mnt, ml) == 0 && (real[ml] == '/' || real[ml] == 0)));
        if ((!real || prefix) && (ml >= best || !out[0])) {
            best = ml;
            snprintf(out, outsz, "%s", m.fstype);
        }
    }
    free(line);
    fclose(f);
    free(real);
}

/* Is type one of the strings of the list at idx (nil: none)? */
static int listed(lua_State *L, int idx, const char *type)
{
    if (lua_isnil(L, idx))
        return 0;
    int found = 0;
    for (lua_Integer i = 1;; i++) {
        int t = lua_rawgeti(L, idx, i);
        if (t == LUA_TNIL) {
            lua_pop(L, 1);
            break;
        }
        if (t != LUA_TSTRING)
            luaL_error(L, "fs.probe: network_fuse[%d] must be a string", (int)i);
        found = found || strcmp(lua_tostring(L, -1), type) == 0;
        lua_pop(L, 1);
    }
    return found;
}

static int fs_probe(lua_State *L)
{
    static const char *const known[] = { "network_fuse", NULL };
    const char *path = luaL_checkstring(L, 1);
    ntt_checkopts(L, 2, "fs.probe", known);
    int nf = 0;
    if (lua_istable(L, 2)) {
        lua_getfield(L, 2, "network_fuse");
        nf = lua_gettop(L);
        luaL_argexpected(L, lua_isnil(L, nf) || lua_istable(L, nf), 2, "network_fuse: a list of strings");
    }
    struct statfs sf;
    struct stat sb;
    if (statfs(path, &sf) != 0 || stat(path, &sb) != 0)
        return ntt_fail(L, errno, path);
    unsigned long magic = (unsigned long)(unsigned int)sf.f_type;
    const char *kind = "unknown";
    int network = 0;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (kinds[i].magic == magic) {
            kind = kinds[i].kind;
            network = kinds[i].network;
            break;
        }
    char type[256];
    mount_type(path, sb.st_dev, type, sizeof type);
    if (magic == 0xEF53 && (strcmp(type, "ext2") == 0 || strcmp(type, "ext3") == 0))
        kind = type;
    if (magic == 0x65735546 && nf && listed(L, nf, type))
        network = 1;
    lua_createtable(L, 0, 4);
    ntt_setstr(L, "kind", kind);
    ntt_setint(L, "magic", (lua_Integer)magic);
    lua_pushboolean(L, network);
    lua_setfield(L, -2, "network");
    if (type[0])
        ntt_setstr(L, "fstype", type);
    return 1;
}

static int fs_space(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct statvfs sv;
    if (statvfs(path, &sv) != 0)
        return ntt_fail(L, errno, path);
    lua_createtable(L, 0, 3);
    ntt_setint(L, "size", (lua_Integer)((unsigned long long)sv.f_blocks * sv.f_frsize));
    ntt_setint(L, "free", (lua_Integer)((unsigned long long)sv.f_bfree * sv.f_frsize));
    ntt_setint(L, "avail", (lua_Integer)((unsigned long long)sv.f_bavail * sv.f_frsize));
    return 1;
}

static int mentions_microsoft(const char *file)
{
    char buf[512];
    FILE *f = fopen(file, "re");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    for (char *p = buf; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return strstr(buf, "microsoft") != NULL || strstr(buf, "wsl") != NULL;
}

static int fs_wsl(lua_State *L)
{
    lua_pushboolean(L, mentions_microsoft("/proc/sys/kernel/osrelease") ||
                           mentions_microsoft("/proc/version"));
    return 1;
}

static const luaL_Reg fs_funcs[] = {
    { "access", fs_access },
    { "chmod", fs_chmod },
    { "chown", fs_chown },
    { "exchange", fs_exchange },
    { "link", fs_link },
    { "mkdirp", fs_mkdirp },
    { "mountinfo", fs_mountinfo },
    { "owner", fs_owner },
    { "probe", fs_probe },
    { "readdir", fs_readdir },
    { "realpath", fs_realpath },
    { "rmtree", fs_rmtree },
    { "space", fs_space },
    { "stat", fs_stat },
    { "wsl", fs_wsl },
    { NULL, NULL },
};

static const luaL_Reg box_meta[] = {
    { "__close", box_close },
    { "__gc", box_close },
    { NULL, NULL },
};

static const luaL_Reg no_methods[] = { { NULL, NULL } };

int luaopen_ntt_core_fs(lua_State *L)
{
    ntt_newclass(L, BOX_MT, no_methods, box_meta);
    luaL_newlib(L, fs_funcs);
    return 1;
}

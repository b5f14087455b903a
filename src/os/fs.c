/*
 * fs.c - ntt.core.fs: facts about the filesystem under a path, for the
 * copy engine's concurrency policy.
 *
 * Lua API (ntt.core.fs):
 *   probe(path) -> {kind = "ext4"|"xfs"|"btrfs"|"9p"|"nfs"|"cifs"|"smb2"|
 *                   "fuse"|"tmpfs"|"overlay"|"squashfs"|...|"unknown",
 *                   magic = statfs f_type, network = bool,
 *                   fstype = mount table type (e.g. "fuse.sshfs"), when found}
 *               | nil, msg, errname
 *                 ext2/3/4 share one magic: kind is "ext4" unless the mount
 *                 table names the path's filesystem ext2 or ext3.  A FUSE
 *                 filesystem counts as network when its type names a network
 *                 driver (sshfs, s3fs, rclone, gcsfuse, davfs, ...).
 *   wsl()       -> true when the kernel is Microsoft's (WSL), else false
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include "ntt.h"

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

static const char *fuse_network[] = {
    "sshfs", "s3fs", "rclone", "gcsfuse", "davfs", "curlftpfs", "goofys",
    "glusterfs", "cephfs", "ceph", "smbnetfs", "blobfuse", "juicefs", "9p",
    "lizardfs", "moosefs", "mfs", "beegfs", "nfs", NULL,
};

/* Decode the \ooo escapes of /proc/self/mountinfo in place. */
static void unescape(char *s)
{
    char *o = s;
    while (*s) {
        if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] && s[3]) {
            *o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
            s += 4;
        } else {
            *o++ = *s++;
        }
    }
    *o = 0;
}

/*
 * The mount table type of the filesystem holding path: the mountinfo
 * entry with the path's device number and the longest mount point that
 * prefixes the path.  Writes "" when not found.
 */
static void mount_type(const char *path, dev_t dev, char *out, size_t outsz)
{
    out[0] = 0;
    char *real = realpath(path, NULL);
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f) {
        free(real);
        return;
    }
    char *line = NULL;
    size_t cap = 0, best = 0;
    while (getline(&line, &cap, f) > 0) {
        unsigned maj, min;
        char mnt[4096], type[256];
        /* id parent maj:min root mountpoint options... - type source super */
        if (sscanf(line, "%*d %*d %u:%u %*s %4095s", &maj, &min, mnt) != 3)
            continue;
        char *dash = strstr(line, " - ");
        if (!dash || sscanf(dash + 3, "%255s", type) != 1)
            continue;
        if (makedev(maj, min) != dev)
            continue;
        unescape(mnt);
        size_t ml = strlen(mnt);
        int prefix = real && (strcmp(mnt, "/") == 0 ||
                              (strncmp(real, mnt, ml) == 0 && (real[ml] == '/' || real[ml] == 0)));
        if (!real || prefix) {
            if (ml >= best || !out[0]) {
                best = ml;
                snprintf(out, outsz, "%s", type);
            }
        }
    }
    free(line);
    fclose(f);
    free(real);
}

static int fs_probe(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
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
    if (magic == 0x65735546 && strncmp(type, "fuse", 4) == 0) {
        const char *sub = strchr(type, '.');
        sub = sub ? sub + 1 : type;
        for (int i = 0; fuse_network[i]; i++)
            if (strcmp(sub, fuse_network[i]) == 0)
                network = 1;
    }
    lua_createtable(L, 0, 4);
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    lua_pushinteger(L, (lua_Integer)magic);
    lua_setfield(L, -2, "magic");
    lua_pushboolean(L, network);
    lua_setfield(L, -2, "network");
    if (type[0]) {
        lua_pushstring(L, type);
        lua_setfield(L, -2, "fstype");
    }
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
    {"probe", fs_probe},
    {"wsl", fs_wsl},
    {NULL, NULL},
};

int luaopen_ntt_core_fs(lua_State *L)
{
    luaL_newlib(L, fs_funcs);
    return 1;
}

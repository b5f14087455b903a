/*
 * kmsg.c - ntt.core.kmsg: kernel log lines since a point in time.
 *
 * Diagnosis needs the kernel's word on *this* medium's devices since the
 * copy began, not the last 50 lines of dmesg: a reader opened on /dev/kmsg
 * and moved to its end keeps a sequence cursor, and each read returns only
 * the records logged since.  Records are "pri,seq,usec,flags;text".
 *
 * Lua API (ntt.core.kmsg):
 *   open() -> Kmsg | nil, "/dev/kmsg: strerror", ERRNAME
 *   Kmsg:read([max]) -> array of { seq=, usec=, level=, text= } (possibly
 *                       empty); records overwritten before they were read
 *                       are skipped (counted in Kmsg:lost())
 *   Kmsg:lost() -> integer
 *   Kmsg:close()  idempotent (also __close, __gc)
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "ntt.h"

#define KMSG_MT "ntt.Kmsg"

typedef struct {
    int fd;
    long long lost;
} Kmsg;

static Kmsg *checkkmsg(lua_State *L)
{
    Kmsg *k = luaL_checkudata(L, 1, KMSG_MT);
    if (k->fd < 0)
        luaL_error(L, "attempt to use a closed kmsg reader");
    return k;
}

static int kmsg_open(lua_State *L)
{
    Kmsg *k = ntt_newudata(L, sizeof *k, KMSG_MT);
    k->fd = -1;
    int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return ntt_fail(L, errno, "/dev/kmsg");
    if (lseek(fd, 0, SEEK_END) < 0) {
        int e = errno;
        close(fd);
        return ntt_fail(L, e, "/dev/kmsg");
    }
    k->fd = fd;
    return 1;
}

static int kmsg_read(lua_State *L)
{
    Kmsg *k = checkkmsg(L);
    lua_Integer max = luaL_optinteger(L, 2, 100000);
    lua_newtable(L);
    lua_Integer n = 0;
    char buf[8192];
    while (n < max) {
        ssize_t r = read(k->fd, buf, sizeof buf - 1);
        if (r < 0) {
            if (errno == EPIPE) { k->lost++; continue; }   /* overwritten: skip on */
            if (errno == EINTR) continue;
            break;                                         /* EAGAIN: nothing more */
        }
        if (r == 0)
            break;
        buf[r] = 0;
        char *semi = strchr(buf, ';');
        if (!semi)
            continue;
        *semi = 0;
        long long pri = 0, seq = 0, usec = 0;
        sscanf(buf, "%lld,%lld,%lld", &pri, &seq, &usec);
        char *text = semi + 1;
        char *nl = strchr(text, '\n');   /* continuation lines follow the newline */
        size_t len = nl ? (size_t)(nl - text) : strlen(text);
        lua_createtable(L, 0, 4);
        lua_pushinteger(L, seq); lua_setfield(L, -2, "seq");
        lua_pushinteger(L, usec); lua_setfield(L, -2, "usec");
        lua_pushinteger(L, pri & 7); lua_setfield(L, -2, "level");
        lua_pushlstring(L, text, len); lua_setfield(L, -2, "text");
        lua_rawseti(L, -2, ++n);
    }
    return 1;
}

static int kmsg_lost(lua_State *L)
{
    lua_pushinteger(L, checkkmsg(L)->lost);
    return 1;
}

static int kmsg_close(lua_State *L)
{
    Kmsg *k = luaL_checkudata(L, 1, KMSG_MT);
    if (k->fd >= 0) {
        close(k->fd);
        k->fd = -1;
    }
    return 0;
}

static int kmsg_tostring(lua_State *L)
{
    Kmsg *k = luaL_checkudata(L, 1, KMSG_MT);
    lua_pushstring(L, k->fd >= 0 ? "ntt.Kmsg (open)" : "ntt.Kmsg (closed)");
    return 1;
}

static const luaL_Reg kmsg_methods[] = {
    { "close", kmsg_close },
    { "lost", kmsg_lost },
    { "read", kmsg_read },
    { NULL, NULL }
};

static const luaL_Reg kmsg_meta[] = {
    { "__close", kmsg_close },
    { "__gc", kmsg_close },
    { "__tostring", kmsg_tostring },
    { NULL, NULL }
};

static const luaL_Reg kmsg_funcs[] = {
    { "open", kmsg_open },
    { NULL, NULL }
};

int luaopen_ntt_core_kmsg(lua_State *L)
{
    ntt_newclass(L, KMSG_MT, kmsg_methods, kmsg_meta);
    luaL_newlib(L, kmsg_funcs);
    return 1;
}

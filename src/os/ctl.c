/*
 * ctl.c - ntt.core.ctl: the unix socket of a run's console (`ntt attach`).
 * A line protocol: a client writes one request per line; the server reads
 * without ever blocking (it is serviced from the run's own waits) and a
 * reply is whatever the server sends back.  Lua frames the requests and
 * replies (lua/ntt/live.lua); here only sockets, lines and bytes.
 *
 * Lua API (ntt.core.ctl):
 *   listen(path) -> Server | nil, msg, code   (mode 0600; EADDRINUSE when
 *                                              a file is already there)
 *   Server:poll([timeout]) -> { {client=n, line=s}... }  waits at most
 *       timeout seconds (default 0) for something to read; accepts new
 *       clients, returns the complete lines received (without "\n")
 *   Server:send(client, bytes) -> true | nil, msg, code  (a client that
 *       cannot take the reply within a second is dropped: never the run)
 *   Server:clients() -> n        Server:close() unlinks the path (also __gc)
 *   connect(path) -> Conn | nil, msg, code  (ECONNREFUSED: nobody listens)
 *   Conn:send(bytes) -> true | nil, msg, code
 *   Conn:recv(timeout) -> bytes ("" on timeout) | nil, "closed", "EPIPE"
 *   Conn:close()
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include "ntt.h"

#define CTL_SERVER "ntt.CtlServer"
#define CTL_CONN "ntt.CtlConn"
#define MAXCLIENTS 8
#define MAXLINE (1 << 20)

struct client {
    int fd;
    char *buf;
    size_t len;
};

struct server {
    int fd;
    char path[108];
    struct client c[MAXCLIENTS];
};

struct conn {
    int fd;
};

static int fill_addr(lua_State *L, struct sockaddr_un *a, const char *path)
{
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof a->sun_path)
        return ntt_fail(L, ENAMETOOLONG, path);
    strcpy(a->sun_path, path);
    return 0;
}

static void drop(struct client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->buf);
    c->fd = -1;
    c->buf = NULL;
    c->len = 0;
}

static int ctl_listen(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct sockaddr_un a;
    if (fill_addr(L, &a, path))
        return 3;
    struct server *s = lua_newuserdatauv(L, sizeof *s, 0);
    s->fd = -1;
    for (int i = 0; i < MAXCLIENTS; i++)
        s->c[i].fd = -1, s->c[i].buf = NULL, s->c[i].len = 0;
    luaL_setmetatable(L, CTL_SERVER);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return ntt_fail(L, errno, "socket");
    /* Created 0600 (not chmod'ed after: nobody else can connect meanwhile). */
    mode_t old = umask(0177);
    int r = bind(fd, (struct sockaddr *)&a, sizeof a);
    int e = errno;
    umask(old);
    if (r != 0 || listen(fd, 4) != 0) {
        e = r != 0 ? e : errno;
        close(fd);
        return ntt_fail(L, e, path);
    }
    s->fd = fd;
    strcpy(s->path, path);
    return 1;
}

static struct server *server_check(lua_State *L)
{
    struct server *s = luaL_checkudata(L, 1, CTL_SERVER);
    if (s->fd < 0)
        luaL_error(L, "control socket: closed");
    return s;
}

/* Reads what a client sent; its complete lines go into the table at -1. */
static void take_lines(lua_State *L, struct server *s, int i, int *n)
{
    struct client *c = &s->c[i];
    char tmp[65536];
    for (;;) {
        ssize_t r = read(c->fd, tmp, sizeof tmp);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (r <= 0 || c->len + (size_t)r > MAXLINE) {
            drop(c);
            return;
        }
        char *nb = realloc(c->buf, c->len + (size_t)r);
        if (!nb) {
            drop(c);
            return;
        }
        c->buf = nb;
        memcpy(c->buf + c->len, tmp, (size_t)r);
        c->len += (size_t)r;
    }
    size_t start = 0;
    for (size_t k = 0; k < c->len; k++) {
        if (c->buf[k] != '\n')
            continue;
        lua_createtable(L, 0, 2);
        lua_pushinteger(L, i + 1);
        lua_setfield(L, -2, "client");
        lua_pushlstring(L, c->buf + start, k - start);
        lua_setfield(L, -2, "line");
        lua_rawseti(L, -2, ++*n);
        start = k + 1;
    }
    memmove(c->buf, c->buf + start, c->len - start);
    c->len -= start;
}

static int server_poll(lua_State *L)
{
    struct server *s = server_check(L);
    double timeout = luaL_optnumber(L, 2, 0);
    struct pollfd p[MAXCLIENTS + 1];
    int idx[MAXCLIENTS + 1], np = 0;
    p[np].fd = s->fd, p[np].events = POLLIN, idx[np++] = -1;
    for (int i = 0; i < MAXCLIENTS; i++)
        if (s->c[i].fd >= 0)
            p[np].fd = s->c[i].fd, p[np].events = POLLIN, idx[np++] = i;
    int r = poll(p, (nfds_t)np, timeout > 0 ? (int)(timeout * 1000) : 0);
    lua_newtable(L);
    if (r <= 0)
        return 1;
    int n = 0;
    for (int k = 1; k < np; k++)
        if (p[k].revents)
            take_lines(L, s, idx[k], &n);
    if (p[0].revents & POLLIN) {
        for (;;) {
            int fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0)
                break;
            int slot = -1;
            for (int i = 0; i < MAXCLIENTS && slot < 0; i++)
                if (s->c[i].fd < 0)
                    slot = i;
            if (slot < 0) {
                close(fd);      /* too many consoles: this one is refused */
                continue;
            }
            s->c[slot].fd = fd;
        }
    }
    return 1;
}

static int server_send(lua_State *L)
{
    struct server *s = server_check(L);
    lua_Integer i = luaL_checkinteger(L, 2);
    size_t len;
    const char *b = luaL_checklstring(L, 3, &len);
    if (i < 1 || i > MAXCLIENTS || s->c[i - 1].fd < 0)
        return ntt_fail(L, ENOTCONN, "control socket: no such client");
    struct client *c = &s->c[i - 1];
    size_t off = 0;
    int waited = 0;
    while (off < len) {
        ssize_t w = send(c->fd, b + off, len - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && waited < 1000) {
            struct pollfd p = {.fd = c->fd, .events = POLLOUT};
            poll(&p, 1, 10);
            waited += 10;
            continue;
        }
        int e = w < 0 ? errno : EPIPE;
        drop(c);
        return ntt_fail(L, e == EAGAIN ? ETIMEDOUT : e, "control socket: client");
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int server_clients(lua_State *L)
{
    struct server *s = luaL_checkudata(L, 1, CTL_SERVER);
    int n = 0;
    for (int i = 0; i < MAXCLIENTS; i++)
        n += s->c[i].fd >= 0;
    lua_pushinteger(L, n);
    return 1;
}

static int server_close(lua_State *L)
{
    struct server *s = luaL_checkudata(L, 1, CTL_SERVER);
    for (int i = 0; i < MAXCLIENTS; i++)
        drop(&s->c[i]);
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
        unlink(s->path);
    }
    return 0;
}

static int ctl_connect(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct sockaddr_un a;
    if (fill_addr(L, &a, path))
        return 3;
    struct conn *c = lua_newuserdatauv(L, sizeof *c, 0);
    c->fd = -1;
    luaL_setmetatable(L, CTL_CONN);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return ntt_fail(L, errno, "socket");
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        int e = errno;
        close(fd);
        return ntt_fail(L, e, path);
    }
    c->fd = fd;
    return 1;
}

static struct conn *conn_check(lua_State *L)
{
    struct conn *c = luaL_checkudata(L, 1, CTL_CONN);
    if (c->fd < 0)
        luaL_error(L, "control connection: closed");
    return c;
}

static int conn_send(lua_State *L)
{
    struct conn *c = conn_check(L);
    size_t len, off = 0;
    const char *b = luaL_checklstring(L, 2, &len);
    while (off < len) {
        ssize_t w = send(c->fd, b + off, len - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return ntt_fail(L, errno, "control connection");
        off += (size_t)w;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int conn_recv(lua_State *L)
{
    struct conn *c = conn_check(L);
    double timeout = luaL_checknumber(L, 2);
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    int r = poll(&p, 1, (int)(timeout * 1000));
    if (r <= 0) {
        lua_pushliteral(L, "");
        return 1;
    }
    char buf[65536];
    ssize_t n = read(c->fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) {
        lua_pushliteral(L, "");
        return 1;
    }
    if (n <= 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        lua_pushliteral(L, "EPIPE");
        return 3;
    }
    lua_pushlstring(L, buf, (size_t)n);
    return 1;
}

static int conn_close(lua_State *L)
{
    struct conn *c = luaL_checkudata(L, 1, CTL_CONN);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    return 0;
}

static const luaL_Reg server_methods[] = {
    {"poll", server_poll},
    {"send", server_send},
    {"clients", server_clients},
    {"close", server_close},
    {NULL, NULL},
};

static const luaL_Reg server_meta[] = {
    {"__gc", server_close},
    {"__close", server_close},
    {NULL, NULL},
};

static const luaL_Reg conn_methods[] = {
    {"send", conn_send},
    {"recv", conn_recv},
    {"close", conn_close},
    {NULL, NULL},
};

static const luaL_Reg conn_meta[] = {
    {"__gc", conn_close},
    {"__close", conn_close},
    {NULL, NULL},
};

static const luaL_Reg ctl_funcs[] = {
    {"listen", ctl_listen},
    {"connect", ctl_connect},
    {NULL, NULL},
};

int luaopen_ntt_core_ctl(lua_State *L)
{
    ntt_newclass(L, CTL_SERVER, server_methods, server_meta);
    ntt_newclass(L, CTL_CONN, conn_methods, conn_meta);
    luaL_newlib(L, ctl_funcs);
    return 1;
}

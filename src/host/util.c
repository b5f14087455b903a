/*
 * util.c - ntt.core.util: small process-wide facts and the shared binding
 * helpers every other C file uses (failure triples, userdata classes, the
 * protected call door, signal handling).
 *
 * Lua API (ntt.core.util):
 *   version                  string, the C runtime's version
 *   cores()                  -> integer, online CPUs
 *   now()                    -> number, wall clock seconds (float)
 *   monotonic()              -> number, monotonic seconds (float)
 *   sleep(seconds)           -> true | nil, "interrupted", "EINTR"
 *   interrupted()            -> signal number or false
 *   clear_interrupt()        resets the flag
 *   raise_on_interrupt(bool) choose hook-raising or flag-only signal mode
 *   pid(), euid(), hostname() -> facts about this process; hostname() is
 *                            $NTT_HOST when set and not empty, else the UTS
 *                            name: two hosts sharing a kernel (network
 *                            namespaces) keep their claims and leases apart
 *   isatty(fd)               -> boolean
 *   errname(errno)           -> "EIO"
 *   setenv(name, value|nil)  -> true | nil, msg, errname
 *   regex(pattern)           -> Regex | nil, "bad regular expression 'p': why", "EINVAL"
 *                            POSIX extended, compiled once (policy load) and
 *                            handed to load.walk's ignore as is
 *   Regex:match(s) -> bool; Regex:source() -> pattern; Regex:close() (idempotent)
 */
#include <errno.h>
#include <regex.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "ntt.h"

volatile sig_atomic_t ntt_interrupted = 0;
void (*ntt_signal_hook)(int sig);
static lua_State *signal_L;
static volatile sig_atomic_t signal_raise = 1;

const char *ntt_errname(int err)
{
    const char *n = strerrorname_np(err);
    return n ? n : "EUNKNOWN";
}

int ntt_fail(lua_State *L, int err, const char *what)
{
    lua_pushnil(L);
    if (what)
        lua_pushfstring(L, "%s: %s", what, strerror(err));
    else
        lua_pushstring(L, strerror(err));
    lua_pushstring(L, ntt_errname(err));
    return 3;
}

int ntt_failf(lua_State *L, int err, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return ntt_fail(L, err, buf);
}

int ntt_fail_interrupted(lua_State *L)
{
    lua_pushnil(L);
    lua_pushliteral(L, "interrupted");
    lua_pushliteral(L, "EINTR");
    return 3;
}

/* Edit distance, bounded: names are short and a suggestion needs <= 2 edits. */
static size_t opt_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), prev[33], cur[33];
    if (la > 32 || lb > 32) return 99;
    for (size_t j = 0; j <= lb; j++) prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t c = prev[j - 1] + (a[i - 1] != b[j - 1]);
            if (prev[j] + 1 < c) c = prev[j] + 1;
            if (cur[j - 1] + 1 < c) c = cur[j - 1] + 1;
            cur[j] = c;
        }
        memcpy(prev, cur, (lb + 1) * sizeof *cur);
    }
    return prev[lb];
}

void ntt_checkopts(lua_State *L, int idx, const char *fn, const char *const known[])
{
    if (lua_isnoneornil(L, idx)) return;
    idx = lua_absindex(L, idx);
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "%s: option keys are names, not %s", fn, luaL_typename(L, -1));
        const char *k = lua_tostring(L, -1);
        const char *best = NULL;
        size_t bestd = 3;
        int i;
        for (i = 0; known[i]; i++) {
            if (strcmp(known[i], k) == 0) break;
            size_t d = opt_distance(k, known[i]);
            if (d < bestd) { bestd = d; best = known[i]; }
        }
        if (!known[i]) {
            if (best)
                luaL_error(L, "%s: unknown option '%s' (did you mean '%s'?)", fn, k, best);
            luaL_error(L, "%s: unknown option '%s'", fn, k);
        }
    }
}

void ntt_newclass(lua_State *L, const char *tname, const luaL_Reg *methods,
                  const luaL_Reg *meta)
{
    luaL_newmetatable(L, tname);
    luaL_setfuncs(L, meta, 0);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}

void *ntt_newudata(lua_State *L, size_t sz, const char *tname)
{
    void *p = lua_newuserdatauv(L, sz, 1);
    memset(p, 0, sz);
    luaL_setmetatable(L, tname);
    return p;
}

static int msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int ntt_call(lua_State *L, int nargs, int nres)
{
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);
    int status = lua_pcall(L, nargs, nres, base);
    lua_remove(L, base);
    return status;
}

void ntt_report(lua_State *L, int status)
{
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        fprintf(stderr, "ntt: %s\n", msg ? msg : "(error without message)");
        fflush(stderr);
        lua_pop(L, 1);
    }
}

/* The hook raised after a signal (lua.c's lstop). */
static void stop_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "interrupted!");
}

static void on_signal(int sig)
{
    if (ntt_signal_hook)
        ntt_signal_hook(sig);
    int second = ntt_interrupted != 0;
    ntt_interrupted = sig;
    if (signal_L && (signal_raise || second))
        lua_sethook(signal_L, stop_hook,
                    LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

void ntt_signals_init(lua_State *L)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    signal_L = L;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

void ntt_signals_raise(int on)
{
    signal_raise = on;
}

static double clock_seconds(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int util_clear_interrupt(lua_State *L)
{
    (void)L;
    ntt_interrupted = 0;
    return 0;
}

static int util_cores(lua_State *L)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    lua_pushinteger(L, n > 0 ? n : 1);
    return 1;
}

static int util_errname(lua_State *L)
{
    lua_pushstring(L, ntt_errname((int)luaL_checkinteger(L, 1)));
    return 1;
}

static int util_euid(lua_State *L)
{
    lua_pushinteger(L, geteuid());
    return 1;
}

static int util_hostname(lua_State *L)
{
    const char *env = getenv("NTT_HOST");
    if (env && *env) {
        lua_pushstring(L, env);
        return 1;
    }
    char buf[256];
    if (gethostname(buf, sizeof buf - 1) != 0)
        return ntt_fail(L, errno, "gethostname");
    buf[sizeof buf - 1] = 0;
    lua_pushstring(L, buf);
    return 1;
}

static int util_interrupted(lua_State *L)
{
    if (ntt_interrupted)
        lua_pushinteger(L, ntt_interrupted);
    else
        lua_pushboolean(L, 0);
    return 1;
}

static int util_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
    return 1;
}

static int util_monotonic(lua_State *L)
{
    lua_pushnumber(L, clock_seconds(CLOCK_MONOTONIC));
    return 1;
}

static int util_now(lua_State *L)
{
    lua_pushnumber(L, clock_seconds(CLOCK_REALTIME));
    return 1;
}

static int util_pid(lua_State *L)
{
    lua_pushinteger(L, getpid());
    return 1;
}

static int util_raise_on_interrupt(lua_State *L)
{
    ntt_signals_raise(lua_toboolean(L, 1));
    return 0;
}

/* Sleeps in small steps so a signal ends it promptly. */
/* setenv(name, value|nil): children started later inherit it. */
static int util_setenv(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    int r = lua_isnoneornil(L, 2) ? unsetenv(name) : setenv(name, luaL_checkstring(L, 2), 1);
    if (r != 0)
        return ntt_fail(L, errno, name);
    lua_pushboolean(L, 1);
    return 1;
}

static int util_sleep(lua_State *L)
{
    double left = luaL_checknumber(L, 1);
    while (left > 0) {
        if (ntt_interrupted)
            return ntt_fail_interrupted(L);
        double step = left > 0.05 ? 0.05 : left;
        struct timespec ts = { (time_t)step, (long)((step - (time_t)step) * 1e9) };
        nanosleep(&ts, NULL);
        left -= step;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- Regex: an ignore pattern compiled once, when the policy loads ---- */

static int regex_new(lua_State *L)
{
    const char *pat = luaL_checkstring(L, 1);
    struct ntt_regex *rx = ntt_newudata(L, sizeof *rx, NTT_REGEX_CLASS);
    int rc = regcomp(&rx->re, pat, NTT_IGNORE_REGFLAGS);
    if (rc != 0) {
        char m[256];
        regerror(rc, &rx->re, m, sizeof m);
        lua_pushnil(L);
        lua_pushfstring(L, "bad regular expression '%s': %s", pat, m);
        lua_pushliteral(L, "EINVAL");
        return 3;
    }
    rx->src = strdup(pat);
    if (!rx->src) {
        regfree(&rx->re);
        return luaL_error(L, "regex: out of memory");
    }
    return 1;
}

const struct ntt_regex *ntt_toregex(lua_State *L, int idx)
{
    const struct ntt_regex *rx = luaL_testudata(L, idx, NTT_REGEX_CLASS);
    return rx && rx->src ? rx : NULL;
}

static struct ntt_regex *regex_check(lua_State *L)
{
    struct ntt_regex *rx = luaL_checkudata(L, 1, NTT_REGEX_CLASS);
    if (!rx->src) luaL_error(L, "regex: closed");
    return rx;
}

static int regex_match(lua_State *L)
{
    struct ntt_regex *rx = regex_check(L);
    const char *s = luaL_checkstring(L, 2);
    lua_pushboolean(L, regexec(&rx->re, s, 0, NULL, 0) == 0);
    return 1;
}

static int regex_source(lua_State *L)
{
    lua_pushstring(L, regex_check(L)->src);
    return 1;
}

static int regex_close(lua_State *L)
{
    struct ntt_regex *rx = luaL_checkudata(L, 1, NTT_REGEX_CLASS);
    if (rx->src) {
        regfree(&rx->re);
        free(rx->src);
        rx->src = NULL;
    }
    return 0;
}

static int regex_tostring(lua_State *L)
{
    struct ntt_regex *rx = luaL_checkudata(L, 1, NTT_REGEX_CLASS);
    if (rx->src) lua_pushfstring(L, "ntt.Regex (%s)", rx->src);
    else lua_pushliteral(L, "ntt.Regex (closed)");
    return 1;
}

static const luaL_Reg regex_methods[] = {
    { "match", regex_match }, { "source", regex_source }, { "close", regex_close }, { NULL, NULL }
};
static const luaL_Reg regex_meta[] = {
    { "__gc", regex_close }, { "__close", regex_close }, { "__tostring", regex_tostring }, { NULL, NULL }
};

static const luaL_Reg util_funcs[] = {
    { "clear_interrupt", util_clear_interrupt },
    { "cores", util_cores },
    { "errname", util_errname },
    { "euid", util_euid },
    { "hostname", util_hostname },
    { "regex", regex_new },
    { "interrupted", util_interrupted },
    { "isatty", util_isatty },
    { "monotonic", util_monotonic },
    { "now", util_now },
    { "pid", util_pid },
    { "raise_on_interrupt", util_raise_on_interrupt },
    { "setenv", util_setenv },
    { "sleep", util_sleep },
    { NULL, NULL }
};

int luaopen_ntt_core_util(lua_State *L)
{
    ntt_newclass(L, NTT_REGEX_CLASS, regex_methods, regex_meta);
    luaL_newlib(L, util_funcs);
    lua_pushliteral(L, NTT_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}

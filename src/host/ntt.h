/*
 * ntt.h - private header shared by the C runtime of ntt.
 *
 * Everything a binding needs to follow the project's conventions lives here
 * once: the "nil, message, ERRNAME" failure shape for expected OS errors,
 * the userdata class recipe (named metatable, idempotent close, __gc and
 * __close), the one protected door from C into Lua, and the interrupt flag
 * that long C loops poll.  No Lua module is defined here.
 */
#ifndef NTT_H
#define NTT_H

#include <regex.h>
#include <signal.h>
#include <stddef.h>
#include "lua.h"
#include "lauxlib.h"

#define NTT_VERSION "0.1.0"

/* Set by SIGINT/SIGTERM (holds the signal number); polled by long C loops. */
extern volatile sig_atomic_t ntt_interrupted;

/* Called first by the signal handler when set (the REPL's prompt uses it). */
extern void (*ntt_signal_hook)(int sig);

/* Symbolic errno name ("EIO"), never NULL. */
const char *ntt_errname(int err);

/*
 * Push the expected-failure triple nil, "<what>: <strerror(err)>", "<ENAME>"
 * and return 3.  Callers save errno before touching the Lua API and pass it.
 */
int ntt_fail(lua_State *L, int err, const char *what);
/* Same, with a formatted "what". */
int ntt_failf(lua_State *L, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * The one wording of an interrupted call: push nil, "interrupted", "EINTR"
 * and return 3.
 */
int ntt_fail_interrupted(lua_State *L);

/*
 * Reject an options table (at idx; nil is fine) holding a key that is not
 * in the NULL-terminated list known: raises "FN: unknown option 'durabilty'
 * (did you mean 'durability'?)", so a typo never silently falls back to a
 * default.  Non-string keys are rejected too.
 */
void ntt_checkopts(lua_State *L, int idx, const char *fn, const char *const known[]);

/*
 * A compiled ignore pattern (util.regex, class "ntt.Regex"): compiled once,
 * when the policy loads, and matched by load.walk without compiling again.
 * POSIX extended, no subexpressions.
 */
#define NTT_REGEX_CLASS "ntt.Regex"
#define NTT_IGNORE_REGFLAGS (REG_EXTENDED | REG_NOSUB)
struct ntt_regex {
    regex_t re;
    char *src;          /* the pattern as written; NULL once closed */
};
/* The compiled pattern at idx, or NULL when it is not an open Regex. */
const struct ntt_regex *ntt_toregex(lua_State *L, int idx);

/* Set field k of the table on top of the stack (result tables of bindings). */
static inline void ntt_setstr(lua_State *L, const char *k, const char *v)
{ lua_pushstring(L, v); lua_setfield(L, -2, k); }
/* The same, leaving the field out when v is NULL or empty. */
static inline void ntt_setstr_opt(lua_State *L, const char *k, const char *v)
{ if (v && *v) ntt_setstr(L, k, v); }
static inline void ntt_setint(lua_State *L, const char *k, lua_Integer v)
{ lua_pushinteger(L, v); lua_setfield(L, -2, k); }
static inline void ntt_setbool(lua_State *L, const char *k, int v)
{ lua_pushboolean(L, v); lua_setfield(L, -2, k); }

/*
 * Register a userdata class: metatable named tname with the given
 * metamethods, and __index set to a table of methods.  Leaves nothing on
 * the stack.
 */
void ntt_newclass(lua_State *L, const char *tname, const luaL_Reg *methods,
                  const luaL_Reg *meta);
/* A zero-filled userdata of size sz carrying class tname (left on stack). */
void *ntt_newudata(lua_State *L, size_t sz, const char *tname);

/*
 * The one door from C into Lua: call the function below nargs arguments
 * under a traceback message handler.  Returns the lua_pcall status; on
 * error the message (with traceback) is left on the stack.
 */
int ntt_call(lua_State *L, int nargs, int nres);
/* Print an error message left by ntt_call to stderr, prefixed "ntt: ". */
void ntt_report(lua_State *L, int status);

/* Install the SIGINT/SIGTERM handlers for the state. */
void ntt_signals_init(lua_State *L);
/*
 * When raising is on, a signal also arms a hook that raises "interrupted"
 * inside Lua at the next instruction (lua.c's laction); when off, only the
 * flag is set and Lua polls it.  A second signal always raises.
 */
void ntt_signals_raise(int on);

/* The embedded Lua sources (generated build/embed.c). */
struct ntt_embedded { const char *name; const unsigned char *data; size_t len; };
extern const struct ntt_embedded ntt_embedded[];
extern const size_t ntt_embedded_count;

/* Open the standard libraries, preload ntt.core.*, install the searcher. */
void ntt_openlibs(lua_State *L);

/* The interactive loop (src/host/repl.c); returns when the user ends input. */
int ntt_repl(lua_State *L);

/*
 * The C submodules: every src file that defines luaopen_ntt_core_<name> is
 * listed in the generated build/embed.c, so adding a module needs no edit
 * here or in init.c.
 */
struct ntt_module { const char *name; lua_CFunction open; };
extern const struct ntt_module ntt_modules[];

#endif

/*
 * proc.c - ntt.core.proc: child processes without a shell.
 *
 * Every external tool ntt drives (pg_ctl, initdb, psql, the mount helper,
 * mkfs in specs) goes through here: argv is a table, never a command line;
 * a child can run as another account (PostgreSQL refuses to run as root);
 * every run has a timeout that kills the child's whole process group.
 *
 * Lua API (ntt.core.proc):
 *   run{argv, env=, user=, cwd=, input=, timeout=, stderr="pipe"|"stdout"|"inherit"}
 *       -> { code=int|nil, signal=int|nil, stdout=s, stderr=s, timed_out=bool }
 *        | nil, "argv[1]: strerror", "ENOENT"      (could not start)
 *        | nil, "interrupted", "EINTR"    (SIGINT/SIGTERM: the child was killed)
 *   spawn{argv, env=, user=, cwd=, stdout="inherit"|"null"|path, stderr=...,
 *         parent_death=signo}
 *       -> Proc | nil, msg, errname
 *       parent_death: the signal the child gets when ntt dies, even by
 *       SIGKILL (PR_SET_PDEATHSIG): ddrescue is sent SIGINT, saves its map
 *       and stops, instead of reading a failing disk with nobody watching
 *   Proc:pid()           -> integer
 *   Proc:wait([timeout]) -> "exit"|"signal", code | nil, "timeout", "ETIMEDOUT"
 *   Proc:kill([signo])   -> true | nil, msg, errname
 *   Proc:close()         forgets the child (kills nothing); idempotent
 *   user_ids(name)       -> uid, gid, home | nil, msg, "ENOENT"
 * env is a table of NAME=value overrides on top of the current environment
 * (a value of false removes the name).  A key run or spawn does not know
 * raises (with a did-you-mean), so a typo never falls back to a default.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "ntt.h"

#define PROC_MT "ntt.Proc"

extern char **environ;

typedef struct {
    pid_t pid;     /* 0 once reaped or closed */
    int status;
} Proc;

struct spec {
    char **argv;
    char **envp;
    const char *cwd;
    uid_t uid; gid_t gid; const char *user; const char *home;
    int in_fd, out_fd, err_fd;   /* -1 = inherit */
    int err_to_out;
    int death_sig;               /* 0: the child outlives ntt */
    pid_t parent;
};

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* argv table -> NULL-terminated array stored in a Lua-owned userdata. */
static char **build_argv(lua_State *L, int t)
{
    lua_getfield(L, t, "argv");
    if (!lua_istable(L, -1))
        luaL_error(L, "proc: argv must be a table of strings");
    int n = (int)lua_rawlen(L, -1);
    if (n < 1)
        luaL_error(L, "proc: argv is empty");
    luaL_checkstack(L, n + 8, "proc: argv too long");
    char **argv = lua_newuserdatauv(L, sizeof(char *) * (n + 1), 0);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -2, i);
        argv[i - 1] = (char *)luaL_checkstring(L, -1);
        lua_rotate(L, -3, 1);   /* keep the string anchored below */
    }
    argv[n] = NULL;
    return argv;
}

static char **build_env(lua_State *L, int t)
{
    lua_getfield(L, t, "env");
    if (lua_isnil(L, -1))
        return environ;
    luaL_checktype(L, -1, LUA_TTABLE);
    int envt = lua_gettop(L);
    /* Collect current environment into a table, apply overrides. */
    lua_newtable(L);
    int merged = lua_gettop(L);
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq) continue;
        lua_pushlstring(L, *e, (size_t)(eq - *e));
        lua_pushstring(L, eq + 1);
        lua_settable(L, merged);
    }
    lua_pushnil(L);
    while (lua_next(L, envt)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        if (lua_toboolean(L, -1) == 0 && lua_isboolean(L, -1)) {
            lua_pop(L, 1);
            lua_pushnil(L);
        }
        lua_settable(L, merged);
    }
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, merged)) { n++; lua_pop(L, 1); }
    char **envp = lua_newuserdatauv(L, sizeof(char *) * (n + 1), 0);
    lua_createtable(L, n, 0);   /* anchors the NAME=value strings */
    int anchor = lua_gettop(L), i = 0;
    lua_pushnil(L);
    while (lua_next(L, merged)) {
        lua_pushfstring(L, "%s=%s", lua_tostring(L, -2), lua_tostring(L, -1));
        envp[i++] = (char *)lua_tostring(L, -1);
        lua_rawseti(L, anchor, i);
        lua_pop(L, 1);
    }
    envp[i] = NULL;
    return envp;
}

static void read_common(lua_State *L, int t, struct spec *s)
{
    memset(s, 0, sizeof *s);
    s->in_fd = s->out_fd = s->err_fd = -1;
    s->argv = build_argv(L, t);
    s->envp = build_env(L, t);
    lua_getfield(L, t, "cwd");
    s->cwd = lua_tostring(L, -1);
    lua_getfield(L, t, "user");
    s->user = lua_tostring(L, -1);
    if (s->user) {
        struct passwd *pw = getpwnam(s->user);
        if (!pw)
            luaL_error(L, "proc: no such user '%s'", s->user);
        s->uid = pw->pw_uid;
        s->gid = pw->pw_gid;
        lua_pushstring(L, pw->pw_dir);
        s->home = lua_tostring(L, -1);
    }
}

/* In the child: never returns. */
static void child_exec(struct spec *s, int report_fd)
{
    setsid();
    /* (a parent gone before the prctl took hold: the signal now) */
    if (s->death_sig && (prctl(PR_SET_PDEATHSIG, s->death_sig) != 0 || getppid() != s->parent))
        raise(s->death_sig);
    if (s->in_fd >= 0) dup2(s->in_fd, 0);
    if (s->out_fd >= 0) dup2(s->out_fd, 1);
    if (s->err_to_out) dup2(1, 2);
    else if (s->err_fd >= 0) dup2(s->err_fd, 2);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (s->user) {
        if (initgroups(s->user, s->gid) != 0 || setgid(s->gid) != 0 || setuid(s->uid) != 0)
            goto fail;
    }
    if (s->cwd && chdir(s->cwd) != 0)
        goto fail;
    execvpe(s->argv[0], s->argv, s->envp);
fail:;
    int err = errno;
    if (write(report_fd, &err, sizeof err) < 0) { /* nothing to do */ }
    _exit(127);
}

/* Forks and execs; returns pid or -1 with errno set (exec failure too). */
static pid_t start(struct spec *s)
{
    int rep[2];
    if (pipe2(rep, O_CLOEXEC) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(rep[0]); close(rep[1]);
        errno = e;
        return -1;
    }
    if (pid == 0) {
        close(rep[0]);
        child_exec(s, rep[1]);
    }
    close(rep[1]);
    int err = 0;
    ssize_t n;
    do n = read(rep[0], &err, sizeof err); while (n < 0 && errno == EINTR);
    close(rep[0]);
    if (n == sizeof err) {
        waitpid(pid, NULL, 0);
        errno = err;
        return -1;
    }
    return pid;
}

static void push_status(lua_State *L, int st)
{
    if (WIFEXITED(st)) {
        lua_pushinteger(L, WEXITSTATUS(st));
        lua_setfield(L, -2, "code");
    } else if (WIFSIGNALED(st)) {
        lua_pushinteger(L, WTERMSIG(st));
        lua_setfield(L, -2, "signal");
    }
}

static const char *const run_opts[] = {
    "argv", "env", "user", "cwd", "input", "timeout", "stderr", NULL
};
static const char *const spawn_opts[] = {
    "argv", "env", "user", "cwd", "stdin", "stdout", "stderr", "parent_death", NULL
};

static int proc_run(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    ntt_checkopts(L, 1, "proc.run", run_opts);
    struct spec s;
    read_common(L, 1, &s);
    lua_getfield(L, 1, "timeout");
    double timeout = luaL_optnumber(L, -1, 0);
    lua_getfield(L, 1, "input");
    size_t inlen = 0;
    const char *input = lua_tolstring(L, -1, &inlen);
    lua_getfield(L, 1, "stderr");
    const char *errmode = luaL_optstring(L, -1, "pipe");

    int pin[2], pout[2], perr[2] = { -1, -1 };
    if (pipe2(pin, O_CLOEXEC) != 0)
        return ntt_fail(L, errno, "pipe");
    if (pipe2(pout, O_CLOEXEC) != 0) {
        int e = errno; close(pin[0]); close(pin[1]);
        return ntt_fail(L, e, "pipe");
    }
    if (strcmp(errmode, "pipe") == 0 && pipe2(perr, O_CLOEXEC) != 0) {
        int e = errno; close(pin[0]); close(pin[1]); close(pout[0]); close(pout[1]);
        return ntt_fail(L, e, "pipe");
    }
    s.in_fd = pin[0];
    s.out_fd = pout[1];
    s.err_fd = perr[1];
    s.err_to_out = strcmp(errmode, "stdout") == 0;
    pid_t pid = start(&s);
    int e = errno;
    close(pin[0]); close(pout[1]);
    if (perr[1] >= 0) close(perr[1]);
    if (pid < 0) {
        close(pin[1]); close(pout[0]);
        if (perr[0] >= 0) close(perr[0]);
        return ntt_fail(L, e, s.argv[0]);
    }

    luaL_Buffer bout, berr;
    luaL_Buffer *bufs[2] = { &bout, &berr };
    lua_newtable(L);            /* result, built at the end */
    int res = lua_gettop(L);
    /* Plain C buffers: luaL_Buffer cannot interleave two on the stack. */
    char *acc[2] = { NULL, NULL };
    size_t acclen[2] = { 0, 0 }, acccap[2] = { 0, 0 };
    (void)bufs;
    size_t written = 0;
    int fds[3] = { pout[0], perr[0], input ? pin[1] : -1 };
    if (!input) close(pin[1]);
    for (int i = 0; i < 2; i++) if (fds[i] >= 0) fcntl(fds[i], F_SETFL, O_NONBLOCK);
    if (fds[2] >= 0) fcntl(fds[2], F_SETFL, O_NONBLOCK);
    double deadline = timeout > 0 ? mono() + timeout : 0;
    int status = 0, reaped = 0, timed_out = 0, stopped = 0;
    double reaped_at = 0;
    /* A pidfd wakes the poll when the child exits, so a short command costs
     * its own run time, not a poll interval; without one, 50 ms ticks. */
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    for (;;) {
        struct pollfd pf[4];
        int np = 0, map[4];
        for (int i = 0; i < 3; i++) if (fds[i] >= 0) {
            pf[np].fd = fds[i];
            pf[np].events = i == 2 ? POLLOUT : POLLIN;
            map[np++] = i;
        }
        if (np == 0 && reaped)
            break;
        if (!reaped && pidfd >= 0) {
            pf[np].fd = pidfd;
            pf[np].events = POLLIN;
            map[np++] = 3;
        }
        /* Grandchildren may keep our pipes open: stop shortly after exit. */
        if (reaped && mono() - reaped_at > 0.2)
            break;
        int r = poll(pf, np, 50);
        if (r > 0) {
            for (int k = 0; k < np; k++) {
                int i = map[k];
                if (!pf[k].revents || i == 3) continue;
                if (i == 2) {
                    ssize_t w = write(fds[2], input + written, inlen - written);
                    if (w > 0) written += (size_t)w;
                    if (w < 0 && errno != EAGAIN) written = inlen;
                    if (written >= inlen) { close(fds[2]); fds[2] = -1; }
                    continue;
                }
                char buf[65536];
                ssize_t n = read(fds[i], buf, sizeof buf);
                if (n > 0) {
                    if (acclen[i] + (size_t)n > acccap[i]) {
                        size_t cap = acccap[i] ? acccap[i] * 2 : 65536;
                        while (cap < acclen[i] + (size_t)n) cap *= 2;
                        char *p = realloc(acc[i], cap);
                        if (!p) { n = 0; } else { acc[i] = p; acccap[i] = cap; }
                    }
                    if (n > 0) { memcpy(acc[i] + acclen[i], buf, (size_t)n); acclen[i] += (size_t)n; }
                } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                    close(fds[i]); fds[i] = -1;
                }
            }
        }
        if (!reaped) {
            pid_t w = waitpid(pid, &status, WNOHANG);
            if (w == pid) { reaped = 1; reaped_at = mono(); }
            else if (w < 0 && errno == ECHILD) {
                /* reaped elsewhere: no status, and no busy poll on its pidfd */
                reaped = 1; reaped_at = mono(); status = 0xff00;
            }
            else if ((deadline && mono() > deadline) || ntt_interrupted) {
                timed_out = deadline && mono() > deadline;
                stopped = !timed_out;
                kill(-pid, SIGKILL);
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
                reaped = 1; reaped_at = mono();
            }
        }
    }
    for (int i = 0; i < 3; i++) if (fds[i] >= 0) close(fds[i]);
    if (pidfd >= 0) close(pidfd);
    if (stopped) {
        /* killed for ^C: its output is partial, not an answer */
        free(acc[0]); free(acc[1]);
        return ntt_fail_interrupted(L);
    }
    lua_pushlstring(L, acc[0] ? acc[0] : "", acclen[0]);
    lua_setfield(L, res, "stdout");
    lua_pushlstring(L, acc[1] ? acc[1] : "", acclen[1]);
    lua_setfield(L, res, "stderr");
    free(acc[0]); free(acc[1]);
    lua_pushboolean(L, timed_out);
    lua_setfield(L, res, "timed_out");
    lua_pushvalue(L, res);
    push_status(L, status);
    return 1;
}

static int open_target(const char *mode, int flags)
{
    if (!mode || strcmp(mode, "inherit") == 0)
        return -1;
    if (strcmp(mode, "null") == 0)
        return open("/dev/null", flags | O_CLOEXEC);
    return open(mode, flags | O_CLOEXEC | O_CREAT | O_APPEND, 0644);
}

static int proc_spawn(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    ntt_checkopts(L, 1, "proc.spawn", spawn_opts);
    struct spec s;
    read_common(L, 1, &s);
    lua_getfield(L, 1, "stdout");
    const char *om = lua_tostring(L, -1);
    lua_getfield(L, 1, "stderr");
    const char *em = lua_tostring(L, -1);
    lua_getfield(L, 1, "stdin");
    const char *im = lua_tostring(L, -1);
    lua_getfield(L, 1, "parent_death");
    s.death_sig = (int)luaL_optinteger(L, -1, 0);
    luaL_argcheck(L, s.death_sig >= 0 && s.death_sig < 65, 1, "parent_death must be a signal number");
    s.parent = getpid();
    s.in_fd = open_target(im, O_RDONLY);
    s.out_fd = open_target(om, O_WRONLY);
    s.err_to_out = em && strcmp(em, "stdout") == 0;
    if (!s.err_to_out)
        s.err_fd = open_target(em, O_WRONLY);
    Proc *p = ntt_newudata(L, sizeof *p, PROC_MT);
    pid_t pid = start(&s);
    int e = errno;
    if (s.in_fd >= 0) close(s.in_fd);
    if (s.out_fd >= 0) close(s.out_fd);
    if (s.err_fd >= 0) close(s.err_fd);
    if (pid < 0)
        return ntt_fail(L, e, s.argv[0]);
    p->pid = pid;
    return 1;
}

static Proc *checkproc(lua_State *L)
{
    return luaL_checkudata(L, 1, PROC_MT);
}

static int proc_pid(lua_State *L)
{
    lua_pushinteger(L, checkproc(L)->pid);
    return 1;
}

static int proc_wait(lua_State *L)
{
    Proc *p = checkproc(L);
    double timeout = luaL_optnumber(L, 2, -1);
    if (p->pid) {
        double deadline = mono() + timeout;
        for (;;) {
            pid_t w = waitpid(p->pid, &p->status, timeout < 0 ? 0 : WNOHANG);
            if (w == p->pid) { p->pid = 0; break; }
            if (w < 0 && errno == EINTR) {
                if (ntt_interrupted) return ntt_fail_interrupted(L);
                continue;
            }
            if (w < 0) return ntt_fail(L, errno, "waitpid");
            if (mono() >= deadline) {
                lua_pushnil(L);
                lua_pushliteral(L, "timeout");
                lua_pushliteral(L, "ETIMEDOUT");
                return 3;
            }
            struct timespec ts = { 0, 10 * 1000 * 1000 };
            nanosleep(&ts, NULL);
        }
    }
    if (WIFSIGNALED(p->status)) {
        lua_pushliteral(L, "signal");
        lua_pushinteger(L, WTERMSIG(p->status));
    } else {
        lua_pushliteral(L, "exit");
        lua_pushinteger(L, WEXITSTATUS(p->status));
    }
    return 2;
}

static int proc_kill(lua_State *L)
{
    Proc *p = checkproc(L);
    int sig = (int)luaL_optinteger(L, 2, SIGTERM);
    if (!p->pid)
        return ntt_fail(L, ESRCH, "kill");
    if (kill(-p->pid, sig) != 0 && kill(p->pid, sig) != 0)
        return ntt_fail(L, errno, "kill");
    lua_pushboolean(L, 1);
    return 1;
}

static int proc_close(lua_State *L)
{
    checkproc(L)->pid = 0;
    return 0;
}

static int proc_tostring(lua_State *L)
{
    Proc *p = checkproc(L);
    if (p->pid)
        lua_pushfstring(L, "ntt.Proc (pid %d)", (int)p->pid);
    else
        lua_pushliteral(L, "ntt.Proc (closed)");
    return 1;
}

static int proc_user_ids(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    struct passwd *pw = getpwnam(name);
    if (!pw)
        return ntt_fail(L, ENOENT, name);
    lua_pushinteger(L, pw->pw_uid);
    lua_pushinteger(L, pw->pw_gid);
    lua_pushstring(L, pw->pw_dir);
    return 3;
}

static const luaL_Reg proc_methods[] = {
    { "close", proc_close },
    { "kill", proc_kill },
    { "pid", proc_pid },
    { "wait", proc_wait },
    { NULL, NULL }
};

static const luaL_Reg proc_meta[] = {
    { "__close", proc_close },
    { "__gc", proc_close },
    { "__tostring", proc_tostring },
    { NULL, NULL }
};

static const luaL_Reg proc_funcs[] = {
    { "run", proc_run },
    { "spawn", proc_spawn },
    { "user_ids", proc_user_ids },
    { NULL, NULL }
};

int luaopen_ntt_core_proc(lua_State *L)
{
    ntt_newclass(L, PROC_MT, proc_methods, proc_meta);
    luaL_newlib(L, proc_funcs);
    return 1;
}

/*
 * args.c - what the caller of ntt-mount-helper controls, checked before
 * anything is done: the command line and the config file.  Nothing here
 * exits or prints: a refusal comes back as an exit code (helper.h) and a
 * message, and main.c reports it.
 */
#include <ctype.h>
#include <limits.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "helper.h"

#ifndef NTT_MH_CONF
#define NTT_MH_CONF "/etc/ntt/mount-helper.conf"
#endif

#define USAGE "usage: ntt-mount-helper mount HASH IMAGE [--map MAPFILE] [--timeout SECONDS] [--reader FS=KIND,...] " \
              "[--expect DEV:INO:SIZE:MTIME_NS:CTIME_NS] | " \
              "unmount HASH [IMAGE] [--timeout SECONDS] | status HASH [IMAGE] [--timeout SECONDS] | " \
              "cleanup [--timeout SECONDS]"

int mh_valid_hash(const char *h)
{
    size_t n = strlen(h);
    if (n < 16 || n > 64) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)h[i]) && !(h[i] >= 'a' && h[i] <= 'f')) return 0;
    return 1;
}

/* Whole seconds MH_TIMEOUT_MIN..MH_TIMEOUT_MAX, digits only: 0 on anything else. */
static int parse_timeout(const char *s)
{
    long v = 0;
    if (!*s || strlen(s) > 4) return 0;
    for (const char *p = s; *p; p++) {
        if (!isdigit((unsigned char)*p)) return 0;
        v = v * 10 + (*p - '0');
    }
    return v >= MH_TIMEOUT_MIN && v <= MH_TIMEOUT_MAX ? (int)v : 0;
}

int mh_parse_expect(const char *s, long long v[5])
{
    for (int k = 0; k < 5; k++) {
        int neg = k >= 3 && *s == '-';     /* times before 1970 */
        if (neg) s++;
        if (!isdigit((unsigned char)*s)) return -1;
        unsigned long long x = 0;
        for (; isdigit((unsigned char)*s); s++) {
            if (x > (unsigned long long)LLONG_MAX / 10) return -1;
            x = x * 10 + (unsigned long long)(*s - '0');
            if (x > (unsigned long long)LLONG_MAX) return -1;
        }
        v[k] = neg ? -(long long)x : (long long)x;
        if (*s != (k < 4 ? ':' : 0)) return -1;
        if (k < 4) s++;
    }
    return 0;
}

static int refuse(char *err, size_t errlen, const char *msg)
{
    snprintf(err, errlen, "%s", msg);
    return MH_USAGE;
}

int mh_parse_args(int argc, char **argv, struct mh_args *a, char *err, size_t errlen)
{
    memset(a, 0, sizeof *a);
    if (argc < 2) return refuse(err, errlen, USAGE);
    a->cmd = argv[1];
    int is_mount = !strcmp(a->cmd, "mount"), is_cleanup = !strcmp(a->cmd, "cleanup");
    if (!is_mount && !is_cleanup && strcmp(a->cmd, "unmount") && strcmp(a->cmd, "status"))
        return refuse(err, errlen, USAGE);
    int i = 2;
    if (!is_cleanup) {
        if (argc < 3) return refuse(err, errlen, USAGE);
        if (!mh_valid_hash(argv[2])) return refuse(err, errlen, "invalid hash (want ^[0-9a-f]{16,64}$)");
        a->hash = argv[i++];
    }
    for (; i < argc; i++) {
        const char *w = argv[i];
        if (!strcmp(w, "--timeout")) {
            if (a->timeout || i + 1 >= argc) return refuse(err, errlen, USAGE);
            a->timeout = parse_timeout(argv[++i]);
            if (!a->timeout) {
                snprintf(err, errlen, "--timeout wants whole seconds from %d to %d, not '%.40s'",
                         MH_TIMEOUT_MIN, MH_TIMEOUT_MAX, argv[i]);
                return MH_USAGE;
            }
        } else if (!strcmp(w, "--reader") && is_mount) {
            if (i + 1 >= argc) return refuse(err, errlen, USAGE);
            int rc = reader_parse(argv[++i], err, errlen);
            if (rc) return rc;
        } else if (!strcmp(w, "--expect") && is_mount) {
            long long v[5];
            if (a->expect || i + 1 >= argc) return refuse(err, errlen, USAGE);
            if (mh_parse_expect(argv[++i], v) != 0) {
                snprintf(err, errlen, "--expect wants DEV:INO:SIZE:MTIME_NS:CTIME_NS, not '%.60s'", argv[i]);
                return MH_USAGE;
            }
            a->expect = argv[i];
        } else if (!strcmp(w, "--map") && is_mount) {
            if (a->map || i + 1 >= argc) return refuse(err, errlen, USAGE);
            a->map = argv[++i];
        } else if (w[0] != '-' && !is_cleanup && !a->image) {
            a->image = w;
        } else {
            return refuse(err, errlen, USAGE);   /* no free-form options */
        }
    }
    if (is_mount && !a->image) return refuse(err, errlen, USAGE);
    return 0;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    return s;
}

/* Reads the config: root-owned, not group/world-writable, else refused. */
int mh_load_config(struct mh_conf *c, char *err, size_t errlen)
{
    const char *path = NTT_MH_CONF;
    const char *env = getenv("NTT_MOUNT_HELPER_CONF");
    if (env && *env && getuid() == 0) path = env;     /* only real root may point elsewhere */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT && !c->restricted) return 0;
        snprintf(err, errlen, "config %s: %s (required when called through sudo)", path, strerror(errno));
        return MH_DENIED;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != 0 || (st.st_mode & 022)) {
        close(fd);
        snprintf(err, errlen, "config %s must be a regular file owned by root and not group/world-writable", path);
        return MH_DENIED;
    }
    FILE *f = fdopen(fd, "r");
    if (!f) {
        snprintf(err, errlen, "config %s: %s", path, strerror(errno));
        close(fd);
        return MH_INTERNAL;
    }
    char line[PATH_MAX + 64];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        char *s = trim(line);
        if (!*s || *s == '#') continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "config %s:%d: expected 'key = value'", path, lineno);
            rc = MH_DENIED;
            break;
        }
        *eq = 0;
        char *k = trim(s), *v = trim(eq + 1);
        if (*v != '/') {
            snprintf(err, errlen, "config %s:%d: %s must be an absolute path", path, lineno, k);
            rc = MH_DENIED;
        } else if (!strcmp(k, "root")) {
            char real[PATH_MAX];
            if (c->nroots < MH_MAXROOTS && realpath(v, real)) snprintf(c->roots[c->nroots++], PATH_MAX, "%s", real);
        } else if (!strcmp(k, "mount_root")) {
            if (strlen(v) > 200) {
                snprintf(err, errlen, "config %s:%d: mount_root too long", path, lineno);
                rc = MH_DENIED;
            } else {
                snprintf(c->base, sizeof c->base, "%s", v);
            }
        } else {
            snprintf(err, errlen, "config %s:%d: unknown key '%s'", path, lineno, k);
            rc = MH_DENIED;
        }
    }
    fclose(f);
    if (rc == 0) c->have_conf = 1;
    return rc;
}

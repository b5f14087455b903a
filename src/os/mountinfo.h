/*
 * mountinfo.h - the one parser of /proc/self/mountinfo (no Lua here):
 * ntt.core.fs uses it for fs.mountinfo() and for the mount type under a
 * path in fs.probe().
 */
#ifndef NTT_MOUNTINFO_H
#define NTT_MOUNTINFO_H

#include <stdio.h>

/*
 * One mount, pointing into the line it was parsed from.  Every string field
 * is fully unescaped (the kernel writes space, tab, newline and backslash
 * as \040 \011 \012 \134; any \ooo is decoded).  The optional fields
 * ("shared:1", "master:2", ...) are the first `noptional` of `optional`
 * (the kernel writes at most four kinds; more are ignored).
 */
#define MOUNTINFO_OPTIONAL 8

struct mountinfo {
    long id, parent;
    unsigned major, minor;
    char *root, *target, *options;
    char *optional[MOUNTINFO_OPTIONAL];
    int noptional;
    char *fstype, *source, *super_options;
};

/* Parse one line in place; 0, or -1 when the line is malformed. */
int mountinfo_parse(char *line, struct mountinfo *m);

/*
 * The next well-formed entry of f (malformed lines are skipped), with the
 * line kept in *buf / *cap (getline's storage, freed by the caller).
 * Returns 1, or 0 at end of file.
 */
int mountinfo_next(FILE *f, char **buf, size_t *cap, struct mountinfo *m);

#endif

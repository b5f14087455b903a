/*
 * mountinfo.c - the /proc/self/mountinfo parser behind ntt.core.fs
 * (see mountinfo.h).  A line reads
 *   id parent major:minor root target options [optional...] - fstype source super_options
 * with fields separated by single spaces; a space inside a field is always
 * escaped, so splitting on spaces is exact.
 */
#include <stdlib.h>
#include <string.h>
#include "mountinfo.h"

static int octal(char c) { return c >= '0' && c <= '7'; }

/* Decode every \ooo escape in place; anything else is kept as it is. */
static void unescape(char *s)
{
    char *o = s;
    while (*s) {
        if (s[0] == '\\' && octal(s[1]) && octal(s[2]) && octal(s[3])) {
            *o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
            s += 4;
        } else {
            *o++ = *s++;
        }
    }
    *o = 0;
}

/* Cut the next space-separated field off *p; NULL when there is none. */
static char *field(char **p)
{
    char *s = *p;
    if (!s)
        return NULL;
    char *sp = strchr(s, ' ');
    if (sp) {
        *sp = 0;
        *p = sp + 1;
    } else {
        *p = NULL;
    }
    return s;
}

static int number(const char *s, long *out)
{
    char *end;
    if (!*s)
        return -1;
    *out = strtol(s, &end, 10);
    return *end ? -1 : 0;
}

int mountinfo_parse(char *line, struct mountinfo *m)
{
    size_t n = strlen(line);
    if (n && line[n - 1] == '\n')
        line[n - 1] = 0;
    char *p = line, *f[6];
    for (int i = 0; i < 6; i++)
        if (!(f[i] = field(&p)))
            return -1;
    char *colon = strchr(f[2], ':');
    long maj, min;
    if (number(f[0], &m->id) || number(f[1], &m->parent) || !colon)
        return -1;
    *colon = 0;
    if (number(f[2], &maj) || number(colon + 1, &min) || maj < 0 || min < 0)
        return -1;
    m->major = (unsigned)maj;
    m->minor = (unsigned)min;
    m->root = f[3];
    m->target = f[4];
    m->options = f[5];
    m->noptional = 0;
    char *x;
    while ((x = field(&p)) && strcmp(x, "-") != 0)
        if (m->noptional < MOUNTINFO_OPTIONAL)
            m->optional[m->noptional++] = x;
    if (!x || !(m->fstype = field(&p)))
        return -1;
    m->source = field(&p);
    m->super_options = p;   /* the rest: no spaces unescaped in it */
    if (!m->source)
        m->source = m->fstype + strlen(m->fstype);   /* "" */
    if (!m->super_options)
        m->super_options = m->source + strlen(m->source);
    char *fields[] = { m->root, m->target, m->options, m->fstype, m->source, m->super_options };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        unescape(fields[i]);
    for (int i = 0; i < m->noptional; i++)
        unescape(m->optional[i]);
    return 0;
}

int mountinfo_next(FILE *f, char **buf, size_t *cap, struct mountinfo *m)
{
    while (getline(buf, cap, f) > 0)
        if (mountinfo_parse(*buf, m) == 0)
            return 1;
    return 0;
}

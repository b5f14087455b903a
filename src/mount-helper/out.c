/*
 * out.c - JSON output and the per-medium state file of ntt-mount-helper.
 *
 * Labels and paths come from media and may be any bytes: strings are
 * written as valid UTF-8 JSON, invalid bytes escaped as \u00XX.
 * The state file (<base>/.state/<hash>) is the struct medium itself,
 * written by root into a root-only directory, replaced atomically.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "helper.h"
#include "out.h"

void mh_appendf(char *buf, size_t len, const char *fmt, ...)
{
    size_t n = strlen(buf);
    if (n && n + 2 < len) { buf[n++] = ';'; buf[n++] = ' '; buf[n] = 0; }
    if (n >= len) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, len - n, fmt, ap);
    va_end(ap);
}

static int utf8_len(const unsigned char *s)
{
    int n = s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 && s[0] < 0xe0 ? 2 : 0;
    if (!n) return 0;
    for (int i = 1; i < n; i++) if ((s[i] & 0xc0) != 0x80) return 0;
    return n;
}

void json_str(FILE *f, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    fputc('"', f);
    while (*p) {
        if (*p == '"' || *p == '\\') { fputc('\\', f); fputc(*p++, f); }
        else if (*p == '\n') { fputs("\\n", f); p++; }
        else if (*p < 0x20 || *p == 0x7f) { fprintf(f, "\\u%04x", *p++); }
        else if (*p < 0x80) fputc(*p++, f);
        else {
            int n = utf8_len(p);
            if (n) { fwrite(p, 1, (size_t)n, f); p += n; }
            else fprintf(f, "\\u%04x", *p++);
        }
    }
    fputc('"', f);
}

void json_kv(FILE *f, const char *k, const char *v, int comma)
{
    if (comma) fputc(',', f);
    json_str(f, k);
    fputc(':', f);
    if (v && *v) json_str(f, v); else fputs("null", f);
}

/* Writes md as a JSON object; left open (for more keys) when keep_open. */
void json_medium(FILE *f, const struct medium *md, int keep_open)
{
    fputc('{', f);
    json_kv(f, "hash", md->hash, 0);
    json_kv(f, "image", md->image, 1);
    json_kv(f, "layout", md->layout, 1);
    json_kv(f, "pttype", md->pttype, 1);
    if (md->hybrid[0]) json_kv(f, "hybrid", md->hybrid, 1);
    if (md->gpt_primary) fputs(",\"gpt_primary\":true", f);
    if (md->ebr_loop) fputs(",\"ebr_loop\":true", f);
    fputs(",\"filesystems\":[", f);
    for (int i = 0; i < md->nfs; i++) {
        const struct fsent *e = &md->fs[i];
        fprintf(f, "%s{\"fs_index\":%d", i ? "," : "", e->index);
        json_kv(f, "device", e->device, 1);
        fprintf(f, ",\"offset\":%llu,\"size\":%llu", (unsigned long long)e->offset,
                (unsigned long long)e->size);
        json_kv(f, "fstype", e->fstype, 1);
        json_kv(f, "label", e->label, 1);
        json_kv(f, "uuid", e->uuid, 1);
        json_kv(f, "mount", e->mount, 1);
        json_kv(f, "driver", e->driver, 1);
        json_kv(f, "options", e->options, 1);
        json_kv(f, "status", e->status, 1);
        json_kv(f, "reason", e->reason, 1);
        fputc('}', f);
    }
    fputs("],\"view\":", f);
    const struct viewinfo *v = &md->view;
    if (!v->active) {
        fputs("null", f);
    } else {
        fputc('{', f);
        json_kv(f, "mount", v->mount, 0);
        json_kv(f, "file", v->file, 1);
        json_kv(f, "mapfile", v->mapfile, 1);
        fprintf(f, ",\"size\":%llu,\"image_size\":%llu,\"rescued\":%llu,\"holes\":%d,\"pid\":%d}",
                (unsigned long long)v->size, (unsigned long long)v->image_size,
                (unsigned long long)v->rescued, v->holes, v->pid);
    }
    if (!keep_open) fputc('}', f);
}

int state_save(const char *path, const struct medium *md)
{
    char tmp[MH_PATH + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return -1;
    size_t flen = (size_t)md->nfs * sizeof *md->fs;
    int ok = write(fd, md, sizeof *md) == (ssize_t)sizeof *md &&
             (!flen || write(fd, md->fs, flen) == (ssize_t)flen) && fsync(fd) == 0;
    close(fd);
    if (!ok || rename(tmp, path) < 0) { unlink(tmp); return -1; }
    return 0;
}

/* 1 loaded (medium_free(md) later), 0 no state, -1 unreadable. */
int state_load(const char *path, struct medium *md)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return errno == ENOENT ? 0 : -1;
    ssize_t r = read(fd, md, sizeof *md);
    md->fs = NULL;
    md->cap = 0;
    if (r != (ssize_t)sizeof *md || md->magic != MH_STATE_MAGIC || md->nfs < 0 || md->nfs > MH_STATE_MAXFS) {
        md->nfs = 0;
        close(fd);
        return -1;
    }
    size_t flen = (size_t)md->nfs * sizeof *md->fs;
    md->fs = flen ? malloc(flen) : NULL;
    char extra;
    int ok = (!flen || (md->fs && read(fd, md->fs, flen) == (ssize_t)flen)) && read(fd, &extra, 1) == 0;
    close(fd);
    if (!ok) { medium_free(md); return -1; }
    md->cap = md->nfs;
    md->hash[sizeof md->hash - 1] = 0;
    md->image[sizeof md->image - 1] = 0;
    for (int i = 0; i < md->nfs; i++) {    /* strings stay terminated whatever the file says */
        struct fsent *e = &md->fs[i];
        e->mount[sizeof e->mount - 1] = e->status[sizeof e->status - 1] = e->reason[sizeof e->reason - 1] = 0;
        e->device[sizeof e->device - 1] = e->fstype[sizeof e->fstype - 1] = 0;
    }
    return 1;
}

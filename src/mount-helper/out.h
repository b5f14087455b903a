/* out.h - JSON output and state file (out.c). */
#ifndef NTT_MOUNT_HELPER_OUT_H
#define NTT_MOUNT_HELPER_OUT_H
#include <stdio.h>
#include "helper.h"
void json_str(FILE *f, const char *s);
void json_kv(FILE *f, const char *k, const char *v, int comma);
void json_medium(FILE *f, const struct medium *md, int keep_open);
int state_save(const char *path, const struct medium *md);
int state_load(const char *path, struct medium *md);
#endif

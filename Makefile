# ntt - build, test, bench, demo, install.
#
#   make                 build/ntt, build/ntt-mount-helper, build/ntt-tskfs and build/ntt-browse
#   make test            the whole spec suite inside build/ntt (last line: N passed, N failed, N skipped)
#   make SAN=1 test      the same under AddressSanitizer + UndefinedBehaviorSanitizer (build-san/)
#   make bench           benchmarks against peers, in the same run
#   make demo            a real run over built-in demo images
#   make install PREFIX=/usr/local

VERSION  := 0.1.0
PREFIX   ?= /usr/local
CC       ?= cc
LUA      ?= lua5.4
PKGS     := lua5.4 libpq blkid mount libzstd libarchive libcrypto
OPT      ?= -O2
CFLAGS   ?= -g
WARN     := -Wall -Wextra -Werror -Wno-unused-parameter

ifeq ($(SAN),1)
B        := build-san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT      := -O1
else
B        := build
SANFLAGS :=
endif

ALL_CFLAGS  = -std=gnu11 $(OPT) $(CFLAGS) $(WARN) $(SANFLAGS) -D_GNU_SOURCE $(addprefix -Isrc/,$(SRC_DIRS)) \
              $(shell pkg-config --cflags $(PKGS))
ALL_LDFLAGS = $(SANFLAGS) -Wl,-E $(LDFLAGS)
LIBS        = $(shell pkg-config --libs $(PKGS)) -lreadline -lpthread -lm

# The ntt host is built from one folder per subsystem (docs/layout.md):
#   host/    main, the embedded-Lua loader, the REPL, ntt.core.util, ntt.h
#   blake3/  the BLAKE3 algorithm and its SIMD kernels, ntt.core.hash
#   walk/    the parallel directory walk (ntt.core.walk)
#   pg/      libpq connections, the binary COPY encoder, the loader (ntt.core.pg, .load)
#   copy/    the content-addressed store and the copy engine (ntt.core.store, .copy)
#   media/   image identity, layout, mapfiles and kernel messages (ntt.core.media, .mapfile, .kmsg)
#   os/      filesystem and process primitives (ntt.core.fs, .proc)
#   archive/ the image set as one tar.zst, written and read back (ntt.core.archive)
# The privileged mount helper is its own program in src/mount-helper/.
SRC_DIRS  := host blake3 walk pg copy media os archive tree
NTT_SRC   := $(foreach d,$(SRC_DIRS),$(wildcard src/$(d)/*.c))
NTT_HDR   := $(foreach d,$(SRC_DIRS),$(wildcard src/$(d)/*.h))
NTT_OBJ   := $(patsubst src/%.c,$(B)/%.o,$(NTT_SRC)) $(B)/embed.o
EMBEDDED  := $(sort $(shell find lua policies -type f \( -name '*.lua' -o -name '*.sql' \) 2>/dev/null))
HELPER_SRC := $(wildcard src/mount-helper/*.c)
# The layout probe and the mapfile parser are shared with ntt.core.media and
# ntt.core.mapfile, so inspect and mount agree on partitions and on maps.
HELPER_SHARED := $(B)/media/layout.o $(B)/media/mapfile_parse.o
# The Sleuth Kit reader (docs/reader.md): its own program, started by the
# helper where the kernel has no driver; the only code linked with libtsk.
TSKFS_SRC := $(wildcard src/tskfs/*.c)
# `ntt browse`'s FUSE view of the media (docs/tree.md): its own program,
# serving a snapshot ntt writes; no database connection of its own.
BROWSE_SRC := $(wildcard src/browse/*.c)

# Debian packages ntt needs to build, test and run (make deps installs them).
DEB_PACKAGES := build-essential pkg-config lua5.4 liblua5.4-dev lua-busted libpq-dev \
                libblkid-dev libmount-dev libzstd-dev zstd libarchive-dev libssl-dev libreadline-dev libfuse3-dev fuse3 \
                postgresql openssl b3sum e2fsprogs dosfstools mtools fusefat fuseiso fuse2fs xorriso \
                libtsk-dev sleuthkit genisoimage ntfs-3g exfatprogs exfat-fuse \
                util-linux fdisk tmux sudo rsync procps chromium python3-jsonschema libxml2-utils gddrescue

.PHONY: all test bench demo install clean lint deps
all: $(B)/ntt $(if $(HELPER_SRC),$(B)/ntt-mount-helper) $(if $(TSKFS_SRC),$(B)/ntt-tskfs) $(if $(BROWSE_SRC),$(B)/ntt-browse)

$(B):
	@mkdir -p $(B) $(B)/mount-helper $(B)/tskfs $(B)/browse $(addprefix $(B)/,$(SRC_DIRS))

# SIMD variants of a file carry their instruction set in their name.
$(B)/%_sse41.o: XFLAGS = -msse4.1
$(B)/%_avx2.o:  XFLAGS = -mavx2

$(B)/%.o: src/%.c $(NTT_HDR) | $(B)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(XFLAGS) -c -o $@ $<

$(B)/embed.c: src/host/embed.lua $(EMBEDDED) $(NTT_SRC) | $(B)
	$(LUA) src/host/embed.lua $@ $(NTT_SRC) -- $(EMBEDDED)

$(B)/embed.o: $(B)/embed.c
	$(CC) $(ALL_CFLAGS) -Wno-overlength-strings -c -o $@ $<

$(B)/ntt: $(NTT_OBJ)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(B)/mount-helper/%.o: src/mount-helper/%.c $(wildcard src/mount-helper/*.h) src/media/layout.h src/media/mapfile_parse.h | $(B)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(B)/ntt-mount-helper: $(patsubst src/mount-helper/%.c,$(B)/mount-helper/%.o,$(HELPER_SRC)) $(HELPER_SHARED)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(shell pkg-config --libs blkid mount fuse3) -lpthread

$(B)/tskfs/%.o: src/tskfs/%.c $(wildcard src/tskfs/*.h) | $(B)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(shell pkg-config --cflags fuse3) -c -o $@ $<

$(B)/ntt-tskfs: $(patsubst src/tskfs/%.c,$(B)/tskfs/%.o,$(TSKFS_SRC))
	$(CC) $(ALL_LDFLAGS) -o $@ $^ -ltsk $(shell pkg-config --libs fuse3) -lpthread

$(B)/browse/%.o: src/browse/%.c $(wildcard src/browse/*.h) | $(B)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(shell pkg-config --cflags fuse3) -c -o $@ $<

$(B)/ntt-browse: $(patsubst src/browse/%.c,$(B)/browse/%.o,$(BROWSE_SRC))
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(shell pkg-config --libs fuse3) -lpthread

deps:
	apt-get update
	apt-get install -y --no-install-recommends $(DEB_PACKAGES)

test: all
	NTT_BUILD=$(B) $(B)/ntt spec/run.lua $(SPEC)

bench: all
	NTT_BUILD=$(B) $(B)/ntt spec/bench/run.lua $(BENCH)

demo: all
	$(B)/ntt examples/demo.lua

# A Lua module or policy never spawns a process for a filesystem primitive
# (ntt.core.fs has them) nor runs a shell; spec/lint_spec.lua checks the same
# across lines.
FS_PROGS := ls|find|stat|test|mkdir|rm|rmdir|cp|mv|cat|readlink|realpath|du|df|chmod|chown|touch|ln
SPAWN_RE := io\.popen|os\.execute|(argv *= *|run *\(? *|spawn *\(? *)\{ *["'"'"'](/[^"'"'"']*/)?($(FS_PROGS))["'"'"']

lint:
	@if grep -rnE --include='*.lua' '$(SPAWN_RE)' lua policies | grep -vE '^[^:]+:[0-9]+: *--'; then \
	  echo "lint: the lines above spawn a process for a filesystem primitive: use ntt.core.fs" >&2; exit 1; fi
	@command -v luacheck >/dev/null && luacheck lua policies examples spec || echo "luacheck not installed"

# make install [PREFIX=/usr/local] [DESTDIR=stage]: the binary and the mount
# helper, the policies (found by name from PREFIX/share/ntt/policies, next to
# the binary), examples, docs, the man page, bash completion, the systemd
# worker unit, and a sudoers snippet and helper config as examples (not
# enabled: docs/operations.md, "Installing").
BINDIR   = $(PREFIX)/bin
SHAREDIR = $(PREFIX)/share/ntt
UNITDIR ?= $(PREFIX)/lib/systemd/system
SUBST    = sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SHAREDIR@|$(SHAREDIR)|g'

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SHAREDIR)/policies $(DESTDIR)$(SHAREDIR)/examples \
	           $(DESTDIR)$(PREFIX)/share/doc/ntt $(DESTDIR)$(PREFIX)/share/man/man1 \
	           $(DESTDIR)$(PREFIX)/share/bash-completion/completions $(DESTDIR)$(UNITDIR)
	install -m 0755 $(B)/ntt $(DESTDIR)$(BINDIR)/ntt
	$(if $(TSKFS_SRC),install -m 0755 $(B)/ntt-tskfs $(DESTDIR)$(BINDIR)/ntt-tskfs)
	$(if $(BROWSE_SRC),install -m 0755 $(B)/ntt-browse $(DESTDIR)$(BINDIR)/ntt-browse)
	$(if $(HELPER_SRC),install -m 0755 $(B)/ntt-mount-helper $(DESTDIR)$(BINDIR)/ntt-mount-helper)
	install -m 0644 policies/*.lua $(DESTDIR)$(SHAREDIR)/policies/
	install -m 0644 examples/*.lua $(DESTDIR)$(SHAREDIR)/examples/
	install -m 0644 README.md docs/*.md docs/*.json $(DESTDIR)$(PREFIX)/share/doc/ntt/
	install -m 0644 docs/ntt.1 $(DESTDIR)$(PREFIX)/share/man/man1/ntt.1
	install -m 0644 dist/ntt.bash-completion $(DESTDIR)$(PREFIX)/share/bash-completion/completions/ntt
	$(SUBST) dist/ntt-worker@.service > $(DESTDIR)$(UNITDIR)/ntt-worker@.service
	$(SUBST) dist/sudoers.ntt > $(DESTDIR)$(SHAREDIR)/sudoers.ntt
	install -m 0644 dist/mount-helper.conf.example $(DESTDIR)$(SHAREDIR)/mount-helper.conf.example
	chmod 0644 $(DESTDIR)$(UNITDIR)/ntt-worker@.service
	chmod 0440 $(DESTDIR)$(SHAREDIR)/sudoers.ntt

clean:
	rm -rf build build-san

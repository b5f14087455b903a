-- policies/default.lua: ntt's default workflow and every threshold.
--
-- This is an ordinary policy written only against require "ntt".  A site
-- copies it, or inherits it and changes a few fields:
--   return require("ntt").policy.extend("default", { retry = { max = 5 } })
local ntt = require "ntt"

return ntt.policy {
  name = "default",
  description = "identify, inspect, mount, enumerate and copy every medium, archive its image set; record every problem",

  stages = { "identify", "inspect", "mount", "enumerate", "copy", "tree", "verify", "report", "unmount", "archive" },
  workers = 1,           -- copy processes per medium (each already copies one batch while it claims and records the next)

  targets = {
    -- A folder given as a target (ntt.targets decides by content, never by
    -- file name): "images" takes each disk image in it as a medium (with
    -- its mapfile) and leaves the rest, each reported; "tree" makes it one
    -- directory medium, every file copied as a file; "auto" is "images"
    -- when every entry not hidden is a disk image or one of its ddrescue
    -- files, else "tree" -- a ROM library is copied, never mounted.
    -- `ntt run --images DIR` / `--tree DIR` choose for one folder.
    folders = "auto",
  },

  identify = {
    -- An image whose ddrescue map was written less than this many seconds
    -- ago and does not say ddrescue finished is refused (it may still be
    -- written: ddrescue saves its map every 30 s to 5 min); an image or map
    -- that a process holds open for writing is always refused.  0: only the
    -- open files are looked at.
    map_age = 300,
  },

  inspect = {
    -- rescued % of the mapfile: 100 ok, >= incomplete, >= corrupt, else failed
    health = { incomplete = 90, corrupt = 20 },
    -- a medium holding only one of these byte values is erased or wiped
    erased_bytes = { 0xf6, 0x00, 0x55, 0xff },
  },

  mount = {
    -- seconds for each mount attempt.  Partial images (mapfile holes, or
    -- shorter than their filesystem) are always attached through the honest
    -- view, which fails reads of unrescued bytes instead of returning zeros.
    timeout = 10,
    -- where the kernel has no driver for a filesystem: "tsk" (ntt-tskfs, a
    -- reader over The Sleuth Kit: exact names, times and modes, deleted
    -- files, the label as a fact), "fuse" (fusefat, fuseiso, fuse2fs) or
    -- "none"; per filesystem type, "*" for the rest (docs/reader.md)
    reader = { ["*"] = "tsk" },
    -- times in a row (no file copied in between) a copy process may mount a
    -- medium again after its mount was lost (a FUSE driver or the honest
    -- view died, an unmount by hand)
    remounts = 3,
  },

  enumerate = {
    ignore = {},
    stall_timeout = 120,   -- seconds without progress before a walk is abandoned
    busy_wait = 3600,      -- seconds to wait for another process loading the same medium
    threads = 4,
    raw_audit = false,
  },

  copy = {
    -- digests besides BLAKE3 taken on the same pass, for DFXML and BagIt
    -- consumers (costs CPU per byte): digests = { "sha256" }
    batch = 5000,          -- ~50 directories of 100 files: several per copy thread, so the end of a batch idles few
    durability = "batch",  -- survives power loss: syncfs before rename and before commit
    buffer = 1024 * 1024,
    lease = 600,           -- seconds a claim stays ours without renewal
    stall_timeout = 300,   -- a read with no progress this long is given up: failed, tried again next run (0: wait)
    adapt = true,          -- let measured latency and errors move the thread count
    damaged = "record",    -- files over unrescued areas: record, never store as complete
    retry_failed = true,   -- files an earlier run left failed_retryable are tried again, with a fresh retry.max
    deleted = "record",    -- deleted files a reader found: a row each; "recover": their content too
    -- FUSE mount types that reach over the network: copied from with the
    -- network thread count (fs.network below).  A site adds its own with
    --   copy = { network_fuse = ntt.policy.append { "fuse.mydriver" } }
    network_fuse = {
      "fuse.sshfs", "fuse.s3fs", "fuse.rclone", "fuse.gcsfuse", "fuse.davfs", "fuse.curlftpfs",
      "fuse.goofys", "fuse.glusterfs", "fuse.cephfs", "fuse.ceph", "fuse.smbnetfs", "fuse.blobfuse",
      "fuse.juicefs", "fuse.9p", "fuse.lizardfs", "fuse.moosefs", "fuse.mfs", "fuse.beegfs", "fuse.nfs",
    },
    threads = function(fs)
      if fs.kind == "9p" then return 1 end
      if fs.network then return 2 end
      return ntt.cores() * 4
    end,
  },

  store = {
    -- Free space the store keeps: checked before each batch is claimed; below
    -- it the run stops cleanly (exit 2) instead of filling the disk.  The
    -- smaller of the two counts, so a small store is not asked for more than it has.
    min_free_bytes = 1024 * 1024 * 1024,
    min_free_fraction = 0.02,
    -- ...but never less than this when ntt's own database is on the same
    -- disk (it must still write when the store stops); a batch is cut to
    -- the files that fit above what is kept
    db_free_bytes = 64 * 1024 * 1024,
  },

  archive = {
    -- the image set (image, map, .map.bak, .map.stall, -ddrescue.log) into
    -- <data root>/archive/<hash>.tar.zst, read back and compared member by
    -- member with its sources; then, only when remove_sources is true and
    -- the medium is not mounted, the sources are removed
    remove_sources = false,
    level = 3,             -- zstd level
    -- threads = 2,        -- zstd workers; default: every core
  },

  tree = {
    -- tree/<medium>/p<N>/<path>: hard links to the blobs (docs/tree.md)
    batch = 5000,          -- paths per batch; the cursor is committed after each
    threads = 4,           -- directories linked at once
  },

  verify = {
    -- after the copy, re-hash the blobs the medium references that were not
    -- verified since (what this run copied); a mismatch is repaired from
    -- the image or recorded (ntt verify does the whole store: docs/operations.md)
    after_copy = true,
    -- threads = 2,        -- files hashed at once (default: one per CPU)
    -- rate = 100,         -- MB/s at most
  },

  retry = {
    checkpoint = 10,       -- attempts before the findings are gathered
    max = 50,              -- attempts before giving up
    history = 10,          -- errors kept per inode
    backoff = { base = 0.02, factor = 1.5, cap = 0.25 },
    -- A medium with no loop device (a directory) has no kernel to confirm an
    -- I/O error: the same errno at the same offset on `attempts` consecutive
    -- attempts within `seconds` confirms it (the finding "repeat:io_error").
    confirm = { attempts = 5, seconds = 2 },
  },

  -- At the checkpoint: first matching rule decides (each counts its hits).
  -- A lost mount comes first: through a dead FUSE driver or honest view
  -- every read fails, and the kernel's I/O errors then say nothing of the medium.
  -- Past the end of a partial image nothing will ever be read: the copy
  -- error, the kernel or the honest view (view:beyond_eof) says so.  A
  -- failing read with the kernel's FAT driver reporting an error on this
  -- medium is the seed's "FAT corruption with file errors".
  diagnose = {
    { ntt.any("mount_check:missing", "mount_check:inaccessible"), ntt.REMOUNT },
    { ntt.any("detected_beyond_eof", "dmesg:beyond_eof", "view:beyond_eof"), ntt.SKIP "DIAGNOSTIC_SKIP:BEYOND_EOF" },
    -- the honest view serves every byte of this file: an I/O error is not
    -- the medium's, whatever the kernel said of other files' reads
    { ntt.has "view:readable",                            ntt.CONTINUE },
    { ntt.all("detected_io_error", "dmesg:io_error"),     ntt.SKIP "IO_ERROR_CONFIRMED" },
    -- directory media: confirmed by repetition (retry.confirm)
    { ntt.all("detected_io_error", "repeat:io_error"),    ntt.SKIP "IO_ERROR_CONFIRMED" },
    { ntt.all("detected_io_error", "dmesg:fat_error"),    ntt.SKIP "FAT_ERROR_SKIP" },
    { ntt.always,                                         ntt.CONTINUE },
  },

  -- Kernel log lines (for this medium's loop devices) and what they mean.
  kernel_patterns = {
    { pattern = "beyond end of device",          finding = "dmesg:beyond_eof" },
    { pattern = "sector=%d+.*limit=%d+",         finding = "dmesg:beyond_eof" },
    { pattern = "request beyond EOF",            finding = "dmesg:beyond_eof" },
    { pattern = "FAT%-fs .*error",               finding = "dmesg:fat_error" },   -- "FAT-fs (loop3): error, ..."
    { pattern = "FAT%-fs %(.-%): .*bread.* failed", finding = "dmesg:fat_error" }, -- "... Directory bread(block 9) failed"
    { pattern = "I/O error, dev loop",           finding = "dmesg:io_error" },
    { pattern = "UDF%-fs: error",                finding = "dmesg:udf_error" },
    { pattern = "EXT4%-fs error",                finding = "dmesg:ext4_error" },
    { pattern = "size %d+ extends beyond EOD",   finding = "dmesg:truncated" },
  },

  problems = {
    max_events = 1000,     -- diagnostic events kept per medium; the rest are counted
    high_error_rate = { rate = 0.10, min_files = 100 },
  },

  log = { level = "info", max_bytes = 16 * 1024 * 1024, keep = 5 },
  -- condition reports (HTML page, JSON, DFXML) into <data root>/report/
  -- (dir = to put them elsewhere); the page lists this many entries of
  -- each list, the JSON every one
  report = { limit = 200 },
  progress = { interval = 5, bar = "auto" },
}

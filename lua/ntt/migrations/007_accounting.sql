-- 007_accounting.sql: how many inode rows the walks of a medium loaded, so
-- that `ntt status MEDIUM` can check the rows against what was recorded
-- (a row lost or added behind the loader's back shows as a mismatch).
--
-- enum_inodes: set by a full load (with enum_done), raised by each rerun
-- that walks the places an earlier walk could not read; NULL for a medium
-- loaded before this migration.
ALTER TABLE medium ADD COLUMN enum_inodes bigint CHECK (enum_inodes >= 0);

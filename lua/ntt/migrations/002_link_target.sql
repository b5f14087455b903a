-- 002_link_target.sql: a symlink's target, as raw bytes (recorded, never followed).
ALTER TABLE inode ADD COLUMN link_target bytea;

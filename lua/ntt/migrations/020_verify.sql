-- 020_verify.sql: `ntt verify` (lua/ntt/verify.lua).
--
-- blob.lost_at: the blob no longer hashes to its name (or is gone) and no
-- medium's image gave its content back; cleared when a later verify finds
-- it whole or repairs it.  blob.last_verified (001) is set each time the
-- blob is re-hashed and matches.
ALTER TABLE blob ADD COLUMN lost_at timestamptz;

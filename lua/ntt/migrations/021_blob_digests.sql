-- 021_blob_digests.sql: digests other than BLAKE3, taken in the copy pass
-- when the policy asks (copy.digests = { "sha256" }): what DFXML and BagIt
-- exchange.  A blob copied before, or without the policy key, has none.
ALTER TABLE blob ADD COLUMN sha256 text CHECK (sha256 ~ '^[0-9a-f]{64}$');

-- The retention sweep looks up Arrivals by creation time: an index, so that
-- a sweep does not scan every file. Same conventions as 00001_init.sql.

-- +goose Up
CREATE INDEX files_created_at ON files (created_at, object_key);

-- +goose Down
DROP INDEX files_created_at;

-- Moves into shares in progress. Same conventions as 00001_init.sql.
--
-- A move is recorded before its bytes move: one transaction deletes the
-- Arrivals files row, inserts the share_files row and a share_moves row
-- beside it; then the object moves from arrival_key to the share_files
-- object_key; then the share_moves row is deleted. A share_files row with a
-- share_moves row is a move in progress: it holds its path and counts
-- against the share's quota, but is not listed (its bytes may still be at
-- arrival_key). The daemon finishes such moves at start and at each sweep,
-- or undoes them (the files row comes back from arrival_key, owner and name
-- and the share_files row's size, sha256, created_at and upload_id) if the
-- bytes are gone. Rolling this migration back while a move is in progress
-- would show that move's file before its bytes are in place.

-- +goose Up
CREATE TABLE share_moves (
    share_name  TEXT NOT NULL,
    file_path   TEXT NOT NULL,
    arrival_key TEXT NOT NULL, -- the files row's object_key: where the bytes were
    owner       TEXT NOT NULL, -- the files row's owner and name
    name        TEXT NOT NULL,
    PRIMARY KEY (share_name, file_path),
    FOREIGN KEY (share_name, file_path) REFERENCES share_files (share_name, file_path) ON DELETE CASCADE
);

-- +goose Down
DROP TABLE share_moves;

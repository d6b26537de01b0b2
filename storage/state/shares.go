package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Projects, shares, their members and files. Every change is one
// transaction that also appends its audit record, so the change is made if
// and only if it is recorded. Who may make it is policy's decision, taken
// by the caller before.

// Project is a group of shares run by one owner (the IAO) and any number of
// administrators (IAAs).
type Project struct {
	Name      string
	Owner     string
	Admins    []string // sorted
	CreatedAt time.Time
	CreatedBy string
}

// Share is a group folder in a project. Share names are unique across
// projects.
type Share struct {
	Name      string
	Project   string
	CreatedAt time.Time
	CreatedBy string
}

// ShareMember is one member of a share.
type ShareMember struct {
	Share    string
	User     string
	Outbound bool // may stage files for egress
	AddedBy  string
	AddedAt  time.Time
}

// ShareFile is a file in a share.
type ShareFile struct {
	Share     string
	Path      string // inside the share, '/'-separated, each part clean (storage.CleanSharePath)
	Key       string // shares/<share>/<path>
	Size      int64
	SHA256    string    // hex, computed as the bytes arrived
	CreatedAt time.Time // when the bytes first arrived (in Arrivals)
	MovedAt   time.Time // when the file was moved into the share
	MovedBy   string
	UploadID  string
}

// UserShare is what a user is to one share: the facts policy decides a
// role from.
type UserShare struct {
	Share        string
	Project      string
	ProjectOwner string
	Admin        bool // the user is an administrator (IAA) of the project
	Member       bool // the user is a member of the share
	Outbound     bool // ... with the outbound right
}

// shareQuerier is the database or a transaction.
type shareQuerier interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
	QueryRowContext(context.Context, string, ...any) *sql.Row
}

// changeAudited runs fn and appends rec to the audit chain in one
// transaction. rec.Time is set to now if zero.
func (db *DB) changeAudited(ctx context.Context, rec AuditRecord, fn func(tx *sql.Tx) error) error {
	if rec.Action == "" {
		return errors.New("empty audit action")
	}
	if rec.Time.IsZero() {
		rec.Time = time.Now()
	}
	return db.inTx(ctx, func(tx *sql.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		_, err := auditTx(ctx, tx, rec)
		return err
	})
}

// --- projects ---

// CreateProject inserts p (its Admins are ignored) and rec. ErrExist if the
// name is taken. CreatedAt is set to now if zero.
func (db *DB) CreateProject(ctx context.Context, p Project, rec AuditRecord) error {
	if p.Name == "" || p.Owner == "" {
		return fmt.Errorf("state: create project %q: empty name or owner", p.Name)
	}
	if p.CreatedAt.IsZero() {
		p.CreatedAt = time.Now()
	}
	err := db.changeAudited(ctx, rec, func(tx *sql.Tx) error {
		taken, err := exists(ctx, tx, `SELECT COUNT(*) FROM projects WHERE name = $1`, p.Name)
		if err != nil {
			return err
		}
		if taken {
			return ErrExist
		}
		_, err = tx.ExecContext(ctx,
			`INSERT INTO projects (name, owner, created_at, created_by) VALUES ($1, $2, $3, $4)`,
			p.Name, p.Owner, toNanos(p.CreatedAt), p.CreatedBy)
		return err
	})
	if err != nil {
		return fmt.Errorf("state: create project %q: %w", p.Name, classify(err))
	}
	return nil
}

// GetProject returns the project with its administrators, or ErrNotFound.
func (db *DB) GetProject(ctx context.Context, name string) (Project, error) {
	var p Project
	var created int64
	err := db.sql.QueryRowContext(ctx,
		`SELECT name, owner, created_at, created_by FROM projects WHERE name = $1`, name).
		Scan(&p.Name, &p.Owner, &created, &p.CreatedBy)
	if err == nil {
		p.CreatedAt = fromNanos(created)
		p.Admins, err = textColumn(ctx, db.sql,
			`SELECT username FROM project_admins WHERE project = $1 ORDER BY username`, name)
	}
	if err != nil {
		return Project{}, fmt.Errorf("state: get project %q: %w", name, classify(err))
	}
	return p, nil
}

// Projects lists every project with its administrators, by name.
func (db *DB) Projects(ctx context.Context) ([]Project, error) {
	rows, err := db.sql.QueryContext(ctx, `SELECT name, owner, created_at, created_by FROM projects ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("state: list projects: %w", err)
	}
	defer rows.Close()
	var out []Project
	index := map[string]int{}
	for rows.Next() {
		var p Project
		var created int64
		if err := rows.Scan(&p.Name, &p.Owner, &created, &p.CreatedBy); err != nil {
			return nil, fmt.Errorf("state: list projects: %w", err)
		}
		p.CreatedAt = fromNanos(created)
		index[p.Name] = len(out)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("state: list projects: %w", err)
	}
	rows.Close()
	admins, err := db.sql.QueryContext(ctx, `SELECT project, username FROM project_admins ORDER BY project, username`)
	if err != nil {
		return nil, fmt.Errorf("state: list project admins: %w", err)
	}
	defer admins.Close()
	for admins.Next() {
		var project, user string
		if err := admins.Scan(&project, &user); err != nil {
			return nil, fmt.Errorf("state: list project admins: %w", err)
		}
		if i, ok := index[project]; ok {
			out[i].Admins = append(out[i].Admins, user)
		}
	}
	if err := admins.Err(); err != nil {
		return nil, fmt.Errorf("state: list project admins: %w", err)
	}
	return out, nil
}

// SetProjectOwner makes owner the project's IAO (the previous one keeps no
// role) and appends rec. ErrNotFound if there is no such project.
func (db *DB) SetProjectOwner(ctx context.Context, project, owner string, rec AuditRecord) error {
	if owner == "" {
		return fmt.Errorf("state: set owner of project %q: empty owner", project)
	}
	err := db.changeAudited(ctx, rec, func(tx *sql.Tx) error {
		ok, err := execOne(ctx, tx, `UPDATE projects SET owner = $1 WHERE name = $2`, owner, project)
		if err == nil && !ok {
			err = ErrNotFound
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("state: set owner of project %q: %w", project, classify(err))
	}
	return nil
}

// PutProjectAdmin makes user an administrator (IAA) of project, if they are
// not one already, and appends rec. ErrNotFound if there is no such
// project. addedAt is set to now if zero.
func (db *DB) PutProjectAdmin(ctx context.Context, project, user, addedBy string, addedAt time.Time, rec AuditRecord) error {
	if user == "" {
		return fmt.Errorf("state: add administrator to project %q: empty user", project)
	}
	if addedAt.IsZero() {
		addedAt = time.Now()
	}
	err := db.changeAudited(ctx, rec, func(tx *sql.Tx) error {
		found, err := exists(ctx, tx, `SELECT COUNT(*) FROM projects WHERE name = $1`, project)
		if err != nil {
			return err
		}
		if !found {
			return ErrNotFound
		}
		_, err = tx.ExecContext(ctx,
			`INSERT INTO project_admins (project, username, added_by, added_at) VALUES ($1, $2, $3, $4)
			 ON CONFLICT (project, username) DO NOTHING`,
			project, user, addedBy, toNanos(addedAt))
		return err
	})
	if err != nil {
		return fmt.Errorf("state: add administrator %q to project %q: %w", user, project, classify(err))
	}
	return nil
}

// DeleteProjectAdmin removes user from project's administrators and appends
// rec. ErrNotFound if they are not one.
func (db *DB) DeleteProjectAdmin(ctx context.Context, project, user string, rec AuditRecord) error {
	err := db.changeAudited(ctx, rec, func(tx *sql.Tx) error {
		ok, err := execOne(ctx, tx, `DELETE FROM project_admins WHERE project = $1 AND username = $2`, project, user)
		if err == nil && !ok {
			err = ErrNotFound
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("state: remove administrator %q from project %q: %w", user, project, classify(err))
	}
	return nil
}

// --- shares ---

// CreateShare inserts s and appends rec. ErrExist if the name is taken (in
// any project); ErrNotFound if its project does not exist. CreatedAt is set
// to now if zero.
func (db *DB) CreateShare(ctx context.Context, s Share, rec AuditRecord) error {
	if s.Name == "" || s.Project == "" {
		return fmt.Errorf("state: create share %q: empty name or project", s.Name)
	}
	if s.CreatedAt.IsZero() {
		s.CreatedAt = time.Now()
	}
	err := db.changeAudited(ctx, rec, func(tx *sql.Tx) error {
		taken, err := exists(ctx, tx, `SELECT COUNT(*) FROM shares WHERE name = $1`, s.Name)
		if err != nil {
			return err
		}
		if taken {
			return ErrExist
		}
		found, err := exists(ctx, tx, `SELECT COUNT(*) FROM projects WHERE name = $1`, s.Project)
		if err != nil {
			return err
		}
		if !found {
			return ErrNotFound
		}
		_, err = tx.ExecContext(ctx,
			`INSERT INTO shares (name, project, created_at, created_by) VALUES ($1, $2, $3, $4)`,
			s.Name, s.Project, toNanos(s.CreatedAt), s.CreatedBy)
		return err
	})
	if err != nil {
		return fmt.Errorf("state: create share %q: %w", s.Name, classify(err))
	}
	return nil
}

// GetShare returns the share or ErrNotFound.
func (db *DB) GetShare(ctx context.Context, name string) (Share, error) {
	var s Share
	var created int64
	err := db.sql.QueryRowContext(ctx,
		`SELECT name, project, created_at, created_by FROM shares WHERE name = $1`, name).
		Scan(&s.Name, &s.Project, &created, &s.CreatedBy)
	if err != nil {
		return Share{}, fmt.Errorf("state: get share %q: %w", name, classify(err))
	}
	s.CreatedAt = fromNanos(created)
	return s, nil
}

// ProjectShares lists the names of project's shares.
func (db *DB) ProjectShares(ctx context.Context, project string) ([]string, error) {
	names, err := textColumn(ctx, db.sql, `SELECT name FROM shares WHERE project = $1 ORDER BY name`, project)
	if err != nil {
		return nil, fmt.Errorf("state: list shares of project %q: %w", project, err)
	}
	return names, nil
}

// UserShares lists the shares user has any role in: those they are a
// member of, and every share of the projects they own or administer.
func (db *DB) UserShares(ctx context.Context, user string) ([]UserShare, error) {
	rows, err := db.sql.QueryContext(ctx,
		`SELECT s.name, s.project, p.owner,
		        (SELECT COUNT(*) FROM project_admins a WHERE a.project = s.project AND a.username = $1),
		        COALESCE((SELECT 1 + m.outbound FROM share_members m WHERE m.share_name = s.name AND m.username = $1), 0)
		 FROM shares s JOIN projects p ON p.name = s.project
		 WHERE p.owner = $1
		    OR EXISTS (SELECT 1 FROM project_admins a WHERE a.project = s.project AND a.username = $1)
		    OR EXISTS (SELECT 1 FROM share_members m WHERE m.share_name = s.name AND m.username = $1)
		 ORDER BY s.name`, user)
	if err != nil {
		return nil, fmt.Errorf("state: list shares of %q: %w", user, err)
	}
	defer rows.Close()
	var out []UserShare
	for rows.Next() {
		var s UserShare
		var admin, member int64 // member: 0 no, 1 yes, 2 yes with outbound
		if err := rows.Scan(&s.Share, &s.Project, &s.ProjectOwner, &admin, &member); err != nil {
			return nil, fmt.Errorf("state: list shares of %q: %w", user, err)
		}
		s.Admin, s.Member, s.Outbound = admin > 0, member > 0, member > 1
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("state: list shares of %q: %w", user, err)
	}
	return out, nil
}

// --- members ---

// ShareMembers lists share's members by user name.
func (db *DB) ShareMembers(ctx context.Context, share string) ([]ShareMember, error) {
	rows, err := db.sql.QueryContext(ctx,
		`SELECT share_name, username, outbound, added_by, added_at FROM share_members
		 WHERE share_name = $1 ORDER BY username`, share)
	if err != nil {
		return nil, fmt.Errorf("state: list members of share %q: %w", share, err)
	}
	defer rows.Close()
	var out []ShareMember
	for rows.Next() {
		var m ShareMember
		var outbound, added int64
		if err := rows.Scan(&m.Share, &m.User, &outbound, &m.AddedBy, &added); err != nil {
			return nil, fmt.Errorf("state: list members of share %q: %w", share, err)
		}
		m.Outbound, m.AddedAt = outbound != 0, fromNanos(added)
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("state: list members of share %q: %w", share, err)
	}
	return out, nil
}

// PutShareMember makes m.User a member of m.Share with m.Outbound, or sets
// the outbound right of an existing member (who keeps their AddedBy and
// AddedAt), and appends rec. ErrNotFound if there is no such share. AddedAt
// is set to now if zero.
func (db *DB) PutShareMember(ctx context.Context, m ShareMember, rec AuditRecord) error {
	if m.User == "" {
		return fmt.Errorf("state: put member of share %q: empty user", m.Share)
	}
	if m.AddedAt.IsZero() {
		m.AddedAt = time.Now()
	}
	err := db.changeAudited(ctx, rec, func(tx *sql.Tx) error {
		found, err := exists(ctx, tx, `SELECT COUNT(*) FROM shares WHERE name = $1`, m.Share)
		if err != nil {
			return err
		}
		if !found {
			return ErrNotFound
		}
		_, err = tx.ExecContext(ctx,
			`INSERT INTO share_members (share_name, username, outbound, added_by, added_at) VALUES ($1, $2, $3, $4, $5)
			 ON CONFLICT (share_name, username) DO UPDATE SET outbound = excluded.outbound`,
			m.Share, m.User, boolInt(m.Outbound), m.AddedBy, toNanos(m.AddedAt))
		return err
	})
	if err != nil {
		return fmt.Errorf("state: put member %q of share %q: %w", m.User, m.Share, classify(err))
	}
	return nil
}

// DeleteShareMember removes user from share and appends rec. ErrNotFound if
// they are not a member.
func (db *DB) DeleteShareMember(ctx context.Context, share, user string, rec AuditRecord) error {
	err := db.changeAudited(ctx, rec, func(tx *sql.Tx) error {
		ok, err := execOne(ctx, tx, `DELETE FROM share_members WHERE share_name = $1 AND username = $2`, share, user)
		if err == nil && !ok {
			err = ErrNotFound
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("state: remove member %q from share %q: %w", user, share, classify(err))
	}
	return nil
}

// --- files ---

const shareFileCols = `share_name, file_path, object_key, size, sha256, created_at, moved_at, moved_by, upload_id`

// scanShareFile scans shareFileCols, then any columns in dest.
func scanShareFile(s rowScanner, dest ...any) (ShareFile, error) {
	var f ShareFile
	var created, moved int64
	dest = append([]any{&f.Share, &f.Path, &f.Key, &f.Size, &f.SHA256, &created, &moved, &f.MovedBy, &f.UploadID}, dest...)
	if err := s.Scan(dest...); err != nil {
		return ShareFile{}, err
	}
	f.CreatedAt, f.MovedAt = fromNanos(created), fromNanos(moved)
	return f, nil
}

// ShareFiles lists share's files by path: those whose bytes are in place,
// not the moves in progress (see BeginMove).
func (db *DB) ShareFiles(ctx context.Context, share string) ([]ShareFile, error) {
	rows, err := db.sql.QueryContext(ctx,
		`SELECT `+shareFileCols+` FROM share_files f WHERE share_name = $1
		 AND NOT EXISTS (SELECT 1 FROM share_moves m WHERE m.share_name = f.share_name AND m.file_path = f.file_path)
		 ORDER BY file_path`, share)
	if err != nil {
		return nil, fmt.Errorf("state: list files of share %q: %w", share, err)
	}
	defer rows.Close()
	var out []ShareFile
	for rows.Next() {
		f, err := scanShareFile(rows)
		if err != nil {
			return nil, fmt.Errorf("state: list files of share %q: %w", share, err)
		}
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("state: list files of share %q: %w", share, err)
	}
	return out, nil
}

// ShareUsage is the number of bytes in share's files, moves in progress
// included.
func (db *DB) ShareUsage(ctx context.Context, share string) (int64, error) {
	used, err := shareUsage(ctx, db.sql, share)
	if err != nil {
		return 0, fmt.Errorf("state: usage of share %q: %w", share, err)
	}
	return used, nil
}

func shareUsage(ctx context.Context, q shareQuerier, share string) (int64, error) {
	var used int64
	// CAST: PostgreSQL's SUM of BIGINT is NUMERIC.
	err := q.QueryRowContext(ctx,
		`SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM share_files WHERE share_name = $1`, share).Scan(&used)
	return used, err
}

// SharePathTaken reports whether p cannot take a new file in share: a file
// is there, or at a folder of p ("a" for "a/b"), or below p as a folder
// ("a/b" for "a"); a move in progress holds its path too. A share never
// holds a file and a folder of one name, so every door shows it the same
// way.
func (db *DB) SharePathTaken(ctx context.Context, share, p string) (bool, error) {
	taken, err := pathTaken(ctx, db.sql, share, p)
	if err != nil {
		return false, fmt.Errorf("state: look up path in share %q: %w", share, err)
	}
	return taken, nil
}

func pathTaken(ctx context.Context, q shareQuerier, share, p string) (bool, error) {
	// p itself and each folder above it, then anything below it.
	args := []any{share, p}
	in := []string{"$2"}
	for i := len(p) - 1; i > 0; i-- {
		if p[i] == '/' {
			args = append(args, p[:i])
			in = append(in, fmt.Sprintf("$%d", len(args)))
		}
	}
	args = append(args, p+"/")
	below := fmt.Sprintf("$%d", len(args))
	return exists(ctx, q,
		`SELECT COUNT(*) FROM share_files WHERE share_name = $1 AND (file_path IN (`+strings.Join(in, ", ")+`)
		 OR SUBSTR(file_path, 1, LENGTH(`+below+`)) = `+below+`)`, args...)
}

// ArrivalByKey returns the Arrivals file at key, or ErrNotFound.
func (db *DB) ArrivalByKey(ctx context.Context, key string) (File, error) {
	var f File
	var created int64
	err := db.sql.QueryRowContext(ctx,
		`SELECT object_key, owner, name, size, sha256, created_at, upload_id FROM files WHERE object_key = $1`, key).
		Scan(&f.Key, &f.Owner, &f.Name, &f.Size, &f.SHA256, &created, &f.UploadID)
	if err != nil {
		return File{}, fmt.Errorf("state: get file %s: %w", key, classify(err))
	}
	f.CreatedAt = fromNanos(created)
	return f, nil
}

// textColumn runs a query of one TEXT column and returns its values.
func textColumn(ctx context.Context, q shareQuerier, query string, args ...any) ([]string, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return slices.Clip(out), nil
}

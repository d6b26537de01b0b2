package sftpd

import (
	"context"
	"errors"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/pkg/sftp"
	"go.uber.org/zap"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage"
	"github.com/mftd/mftd/storage/state"
	"github.com/mftd/mftd/transfer/authn"
)

// /shares/ is list-only, like /arrivals/: this is an ingress door, and what
// leaves a share leaves through egress. Reads, writes, renames, removes,
// setstat and links under it are refused (and audited) by the tree's
// general rules, which allow such operations only on /upload/ partials.
//
// Every listing and stat asks Config.Shares afresh, nothing is cached: a
// member removed by the IAO gets "no such file" at their very next request,
// in a session opened before the removal too. Who sees which share is
// decided (policy.DecideShare, which keeps emergency-code sessions out of
// shares, as over HTTPS) and its refusals audited by the shares service, so
// the tree answers them without an audit record of its own.

// resolveShare resolves rest, the part of a path after "/shares/": a share
// name (policy.CheckShareName), then optionally a path inside the share
// that storage.CleanSharePath returns unchanged.
func resolveShare(rest string) (node, bool) {
	share, name, hasName := strings.Cut(rest, "/")
	if policy.CheckShareName(share) != nil {
		return node{}, false
	}
	if !hasName {
		return node{kind: kindShare, share: share}, true
	}
	if !cleanSharePath(name) {
		return node{}, false
	}
	return node{kind: kindShareItem, share: share, name: name}, true
}

// cleanSharePath reports whether the path gate accepts p, a path inside a
// share, unchanged.
func cleanSharePath(p string) bool {
	c, err := storage.CleanSharePath(p)
	return err == nil && c == p
}

// requester is who the tree asks Shares for.
func (t *tree) requester(id authn.Identity) Requester {
	return Requester{User: id.User, Emergency: id.Emergency, RemoteAddr: t.c.remote}
}

// listShares lists /shares, a share, or a folder inside a share.
func (t *tree) listShares(ctx context.Context, id authn.Identity, n node, p string) (sftp.ListerAt, error) {
	if n.kind == kindSharesDir {
		shares, err := t.c.cfg.Shares.SharesOf(ctx, t.requester(id))
		if err != nil {
			return nil, t.sharesErr("list", p, err)
		}
		l := make(listerAt, 0, len(shares))
		for _, s := range shares {
			if policy.CheckShareName(s.Name) == nil {
				l = append(l, t.dirInfo(s.Name, 0o555))
			}
		}
		sortByName(l)
		return l, nil
	}
	files, err := t.c.cfg.Shares.Files(ctx, t.requester(id), n.share)
	if err != nil {
		return nil, t.sharesErr("list", p, err)
	}
	l, isDir := folder(files, n.name)
	if !isDir {
		if slices.ContainsFunc(files, func(f FileEntry) bool { return f.Path == n.name }) {
			return nil, failure("not a directory")
		}
		return nil, os.ErrNotExist
	}
	return l, nil
}

// statShares describes /shares, a share, or a file or folder inside one.
func (t *tree) statShares(ctx context.Context, id authn.Identity, n node, p string) (os.FileInfo, error) {
	if n.kind == kindSharesDir {
		return t.dirInfo(dirShares, 0o555), nil
	}
	files, err := t.c.cfg.Shares.Files(ctx, t.requester(id), n.share)
	if err != nil {
		return nil, t.sharesErr("stat", p, err)
	}
	if n.kind == kindShare {
		return t.dirInfo(n.share, 0o555), nil
	}
	dir, base := path.Split(n.name)
	l, _ := folder(files, strings.TrimSuffix(dir, "/"))
	for _, fi := range l {
		if fi.Name() == base {
			return fi, nil
		}
	}
	return nil, os.ErrNotExist
}

// sharesErr answers a Shares error. Refusals were audited by Shares. A
// share that does not exist or that the user is not (or no longer) in is
// "no such file", as the API's 404; a refusal the user may be told (an
// emergency-code session) is permission denied; anything else is an
// internal error, which shows no share's content either.
func (t *tree) sharesErr(op, p string, err error) error {
	switch {
	case errors.Is(err, state.ErrNotFound):
		t.log.Info("refused: no such share or not a member", zap.String("op", op), logPath(p))
		return os.ErrNotExist
	case errors.Is(err, policy.ErrDenied):
		t.log.Info("refused by the shares service", zap.String("op", op), logPath(p))
		return errDenied
	}
	return t.internal(op, p, err)
}

// folder lists the entries of dir ("" for the share itself) among a share's
// files: files directly in it, and a folder for each next component of
// deeper paths, dated by the newest file below it. isDir reports whether dir
// is a folder: the share itself, or a prefix of some file's path. A name
// that is both a file and a folder shows as the folder (storage keeps no
// such pair). Paths the path gate would refuse are left out, so every name
// listed resolves.
func folder(files []FileEntry, dir string) (l listerAt, isDir bool) {
	prefix := ""
	if dir != "" {
		prefix = dir + "/"
	}
	entries := make(map[string]*fileInfo)
	isDir = dir == ""
	for _, f := range files {
		rest, ok := strings.CutPrefix(f.Path, prefix)
		if !ok || !cleanSharePath(f.Path) {
			continue
		}
		isDir = true
		name, _, nested := strings.Cut(rest, "/")
		e := entries[name]
		switch {
		case nested && (e == nil || !e.IsDir()):
			entries[name] = &fileInfo{name: name, mode: os.ModeDir | 0o555, mtime: f.CreatedAt}
		case nested:
			if f.CreatedAt.After(e.mtime) {
				e.mtime = f.CreatedAt
			}
		case e == nil:
			entries[name] = &fileInfo{name: name, size: f.Size, mode: 0o444, mtime: f.CreatedAt}
		}
	}
	l = make(listerAt, 0, len(entries))
	for _, e := range entries {
		l = append(l, e)
	}
	sortByName(l)
	return l, isDir
}

func sortByName(l listerAt) {
	slices.SortFunc(l, func(a, b os.FileInfo) int { return strings.Compare(a.Name(), b.Name()) })
}

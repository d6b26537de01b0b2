package main

import (
	"context"

	"github.com/mftd/mftd/transfer/sftpd"
	"github.com/mftd/mftd/transfer/shares"
)

// sftpShares is the SFTP door's view of the shares service: every call is
// decided (and a refusal audited) by the service, with the login's
// emergency flag and client address.
type sftpShares struct{ svc *shares.Service }

var _ sftpd.Shares = sftpShares{}

// sftpActor is who asks, as the shares service knows them.
func sftpActor(who sftpd.Requester) shares.Actor {
	return shares.Actor{User: who.User, Emergency: who.Emergency, RemoteAddr: who.RemoteAddr}
}

func (s sftpShares) SharesOf(ctx context.Context, who sftpd.Requester) ([]sftpd.ShareEntry, error) {
	list, err := s.svc.Shares(ctx, sftpActor(who))
	if err != nil {
		return nil, err
	}
	out := make([]sftpd.ShareEntry, len(list))
	for i, sh := range list {
		out[i] = sftpd.ShareEntry{Name: sh.Name}
	}
	return out, nil
}

func (s sftpShares) Files(ctx context.Context, who sftpd.Requester, share string) ([]sftpd.FileEntry, error) {
	files, err := s.svc.ShareFiles(ctx, sftpActor(who), share)
	if err != nil {
		return nil, err
	}
	out := make([]sftpd.FileEntry, len(files))
	for i, f := range files {
		out[i] = sftpd.FileEntry{Path: f.Path, Size: f.Size, CreatedAt: f.CreatedAt}
	}
	return out, nil
}

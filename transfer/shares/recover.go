package shares

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"go.uber.org/zap"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage"
	"github.com/mftd/mftd/storage/state"
)

// The last two steps of a move into a share, after state.DB.BeginMove has
// recorded it: the bytes go from the Arrivals key to the share key, then
// the move is marked done (state.DB.FinishMove). Both are safe to repeat
// after a crash at any point, so Recover finishes what Move began.

// recoverBatch bounds the moves one Recover call finishes; the rest wait
// for the next.
const recoverBatch = 1000

// systemActor is who Recover acts as.
var systemActor = Actor{User: "system"}

// Why the bytes of a recorded move cannot be moved; the move is undone.
var (
	// errGone: the bytes are neither at the Arrivals key nor at the share
	// key (deleted, as by the retention sweep just before the move was
	// recorded).
	errGone = errors.New("the file's bytes are gone")
	// errOccupied: the bytes are still at the Arrivals key, and an object
	// that no record knows holds the share key.
	errOccupied = errors.New("an object not recorded in the share holds its key")
)

// Recover finishes the moves into shares that a crash or a storage failure
// left unfinished: it moves the bytes to the share key if they are not
// there yet and lists the file, or, if they cannot be moved, undoes the
// move, audited as "system", and the file is back in its owner's Arrivals.
// Moves under way in this process are left to them, so Recover is safe to
// call at any time; the daemon calls it at start and at every sweep. An
// error leaves the move for the next call.
func (s *Service) Recover(ctx context.Context) error {
	if s.store == nil {
		return errors.New("shares: recover moves: no storage backend")
	}
	ms, err := s.db.PendingMoves(ctx, recoverBatch)
	if err != nil {
		return fmt.Errorf("shares: recover moves: %w", err)
	}
	var errs []error
	for _, m := range ms {
		errs = append(errs, s.recoverMove(ctx, m))
		if ctx.Err() != nil {
			break
		}
	}
	return errors.Join(errs...)
}

func (s *Service) recoverMove(ctx context.Context, m state.ShareMove) error {
	release, ok := s.claim(m.File.Key)
	if !ok {
		return nil // a Move is taking it through
	}
	defer release()
	// The listing may be stale: read the move again under the claim.
	m, err := s.db.PendingMove(ctx, m.File.Share, m.File.Path)
	if errors.Is(err, state.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	err = s.complete(ctx, m, systemActor)
	var nf *NotFoundError
	var ee *ExistError
	switch {
	case err == nil:
		s.log.Info("interrupted move into a share finished", zap.String("key", storage.RedactKey(m.File.Key)),
			zap.String("user", m.File.MovedBy), zap.String("upload_id", m.File.UploadID))
	case errors.As(err, &nf), errors.As(err, &ee):
		return nil // undone, and logged
	}
	return err
}

// claim marks a move to key as under way in this process, so that Recover
// leaves it alone; false if one already is. The caller calls release.
func (s *Service) claim(key string) (release func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.moving[key] {
		return nil, false
	}
	s.moving[key] = true
	return func() {
		s.mu.Lock()
		delete(s.moving, key)
		s.mu.Unlock()
	}, true
}

// complete takes the recorded move m, claimed by the caller, through its
// last two steps. If the bytes cannot be moved, it undoes the move on
// behalf of a and returns what to tell a: NotFoundError or ExistError. Any
// other error leaves the move for Recover.
func (s *Service) complete(ctx context.Context, m state.ShareMove, a Actor) error {
	err := s.place(ctx, m)
	if errors.Is(err, errGone) || errors.Is(err, errOccupied) {
		return s.undo(ctx, m, a, err)
	}
	if err == nil {
		err = s.db.FinishMove(ctx, m.File)
	}
	if err != nil {
		s.log.Warn("move into a share recorded but not finished; retried at the next sweep",
			zap.String("key", storage.RedactKey(m.File.Key)), zap.String("upload_id", m.File.UploadID), zap.Error(err))
		return fmt.Errorf("shares: move %s: %w", storage.RedactKey(m.From.Key), err)
	}
	return nil
}

// place puts the bytes of m at the share key, or finds them there already.
// Otherwise it answers errGone, errOccupied, or another error if it cannot
// tell (the next try may).
func (s *Service) place(ctx context.Context, m state.ShareMove) error {
	// The files row went when the move was recorded; a row at the key
	// now is a later file's, which took the key after the bytes left it:
	// those bytes are not this move's.
	later, err := s.db.FileExists(ctx, m.From.Key)
	if err != nil {
		return err
	}
	if !later {
		err := s.store.Move(ctx, m.From.Key, m.File.Key)
		if !errors.Is(err, storage.ErrExist) && !errors.Is(err, storage.ErrNotFound) {
			return err
		}
	}
	return s.settle(ctx, m, !later)
}

// settle finds where the bytes of m are when they could not simply be
// moved: at the share key already (moved before a crash), or gone, or
// still at the Arrivals key behind an occupied share key. srcOurs says
// whether an object at the Arrivals key may be this move's. An interrupted
// copy (S3: copied, source not yet deleted) leaves the bytes at both keys;
// the source is deleted then.
func (s *Service) settle(ctx context.Context, m state.ShareMove, srcOurs bool) error {
	atDst, err := s.holds(ctx, m.File.Key, m.File)
	if err != nil {
		return err
	}
	if atDst {
		if !srcOurs {
			return nil
		}
		if atSrc, err := s.holds(ctx, m.From.Key, m.File); err != nil {
			return err
		} else if atSrc {
			return s.store.Delete(ctx, m.From.Key)
		}
		return nil
	}
	if !srcOurs {
		return errGone
	}
	if _, err := s.store.Stat(ctx, m.From.Key); errors.Is(err, storage.ErrNotFound) {
		return errGone
	} else if err != nil {
		return err
	}
	if _, err := s.store.Stat(ctx, m.File.Key); errors.Is(err, storage.ErrNotFound) {
		// Neither moved nor blocked: the objects changed meanwhile.
		return errors.New("the objects changed during the move")
	} else if err != nil {
		return err
	}
	return errOccupied
}

// holds reports whether the object at key holds f's bytes: f's size and
// SHA-256. Only a move interrupted or raced with asks, so reading the
// object through is worth its cost.
func (s *Service) holds(ctx context.Context, key string, f state.ShareFile) (bool, error) {
	info, err := s.store.Stat(ctx, key)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if info.Size != f.Size {
		return false, nil
	}
	r, err := s.store.Open(ctx, key, 0, -1)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer r.Close()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return false, fmt.Errorf("read %s: %w", storage.RedactKey(key), err)
	}
	return hex.EncodeToString(h.Sum(nil)) == f.SHA256, nil
}

// undo takes back the recorded move m whose bytes could not be moved (why:
// errGone or errOccupied), audited as a's, and returns the error to give a.
func (s *Service) undo(ctx context.Context, m state.ShareMove, a Actor, why error) error {
	detail := m.From.Key + " -> " + m.File.Key
	restored, err := s.db.UndoMove(ctx, m, s.record(a, string(policy.ActionArrivalMove),
		"share:"+m.File.Share, "undone "+detail+": "+why.Error()))
	if err != nil && !errors.Is(err, state.ErrNotFound) { // ErrNotFound: undone already
		return fmt.Errorf("shares: undo move %s: %w", storage.RedactKey(m.From.Key), err)
	}
	s.log.Warn("move into a share undone", zap.String("key", storage.RedactKey(m.File.Key)),
		zap.String("arrival", storage.RedactKey(m.From.Key)), zap.String("user", m.From.Owner),
		zap.String("upload_id", m.From.UploadID), zap.Bool("back_in_arrivals", restored), zap.NamedError("reason", why))
	if errors.Is(why, errOccupied) {
		return &ExistError{What: whatFile}
	}
	return &NotFoundError{What: whatArrival}
}

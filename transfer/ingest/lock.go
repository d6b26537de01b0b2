package ingest

import "sync"

// lockSet holds the per-upload locks of this process. Uploads are served
// by one node at a time while state lives in SQLite; a PostgreSQL
// deployment will replace this with row locks shared by every node.
type lockSet struct {
	mu   sync.Mutex
	held map[string]struct{}
}

func newLockSet() *lockSet { return &lockSet{held: make(map[string]struct{})} }

func (l *lockSet) tryLock(id string) (func(), bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, busy := l.held[id]; busy {
		return nil, false
	}
	l.held[id] = struct{}{}
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			delete(l.held, id)
			l.mu.Unlock()
		})
	}, true
}

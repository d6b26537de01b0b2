package storagetest

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/mftd/mftd/storage"
)

func testOpenRanges(t *testing.T, b storage.Backend) {
	k := key(t, storage.PrefixArrivals, "alice", "ranges.bin")
	p := data(200, 1000)
	put(t, b, k, p)
	for _, tc := range []struct {
		off, n     int64
		start, end int
	}{
		{0, -1, 0, 1000},
		{0, 1000, 0, 1000},
		{0, 5000, 0, 1000},
		{0, 0, 0, 0},
		{0, 1, 0, 1},
		{10, 20, 10, 30},
		{10, -1, 10, 1000},
		{999, -1, 999, 1000},
		{990, 100, 990, 1000},
		{1000, -1, 1000, 1000},
		{1000, 10, 1000, 1000},
	} {
		got := read(t, b, k, tc.off, tc.n)
		if want := p[tc.start:tc.end]; !bytes.Equal(got, want) {
			t.Errorf("Open(%q, %d, %d): %s", k, tc.off, tc.n, diffBytes(got, want))
		}
	}
	// Out of range: an error from Open or from the first Read.
	for _, off := range []int64{-1, 1001} {
		rc, err := b.Open(t.Context(), k, off, -1)
		if err == nil {
			_, err = io.ReadAll(rc)
			rc.Close()
		}
		if err == nil {
			t.Errorf("Open(%q, %d, -1) of a 1000-byte object: no error", k, off)
		}
	}
}

func testMissing(t *testing.T, b storage.Backend) {
	wantNotFound(t, b, key(t, storage.PrefixArrivals, "alice", "missing.txt"))
	// A key that is only a prefix of objects is not an object.
	put(t, b, key(t, storage.PrefixArrivals, "alice", "present.txt"), data(210, 5))
	wantNotFound(t, b, key(t, storage.PrefixArrivals, "alice"))
	wantNotFound(t, b, key(t, storage.PrefixArrivals, "alice", "present.txt", "below"))
}

// listAll returns what List(prefix) reports, in order.
func listAll(t *testing.T, b storage.Backend, prefix string) []storage.ObjectInfo {
	t.Helper()
	var got []storage.ObjectInfo
	err := b.List(t.Context(), prefix, func(info storage.ObjectInfo) error {
		got = append(got, info)
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return got
}

func testList(t *testing.T, b storage.Backend) {
	// Keys in the order List must report them. Lexical key order puts
	// "shares/s/a-b" (0x2d) before "shares/s/a/..." (0x2f), and "Z" before "a".
	parts := [][]string{
		{storage.PrefixArrivals, "alice", "Zeta"},
		{storage.PrefixArrivals, "alice", "a"},
		{storage.PrefixArrivals, "alice", "a b"},
		{storage.PrefixArrivals, "alice", "a.txt"},
		{storage.PrefixArrivals, "alice", "b"},
		{storage.PrefixArrivals, "alicia", "a"},
		{storage.PrefixArrivals, "bob", "données.csv"},
		{storage.PrefixShares, "s", "a-b"},
		{storage.PrefixShares, "s", "a", "x"},
		{storage.PrefixShares, "s", "a", "y", "z"},
		{storage.PrefixShares, "s", "a0"},
	}
	all := make([]storage.ObjectInfo, len(parts))
	// Store them out of order.
	for _, i := range []int{4, 9, 0, 7, 2, 10, 5, 1, 8, 3, 6} {
		k := key(t, parts[i][0], parts[i][1:]...)
		all[i] = storage.ObjectInfo{Key: k, Size: int64(i + 1)}
		put(t, b, k, data(uint64(300+i), i+1))
	}
	for _, tc := range []struct {
		prefix string
		want   []storage.ObjectInfo
	}{
		{"", all},
		{"arrivals/", all[:7]},
		{"arrivals/alice/", all[:5]},
		{"arrivals/ali", all[:6]},
		{"arrivals/alice/a", all[1:4]},
		{"arrivals/alice/a.txt", all[3:4]},
		{"shares/s/a", all[7:11]},
		{"shares/s/a/", all[8:10]},
		{"shares/s/a/y/z", all[9:10]},
		{"sh", all[7:]},
		{"arrivals/carol/", nil},
		{"quarantine/", nil},
		{"nothing", nil},
	} {
		got := listAll(t, b, tc.prefix)
		if diff := cmp.Diff(tc.want, got, cmpopts.IgnoreFields(storage.ObjectInfo{}, "ModTime"), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("List(%q) (-want +got):\n%s", tc.prefix, diff)
		}
		for _, info := range got {
			checkModTime(t, "List", info)
		}
	}
}

// testListStops: an error from fn stops the listing and comes back.
func testListStops(t *testing.T, b storage.Backend) {
	for _, name := range []string{"1", "2", "3", "4"} {
		put(t, b, key(t, storage.PrefixArrivals, "alice", name), data(400, 1))
	}
	stop := errors.New("stop")
	var seen []string
	err := b.List(t.Context(), "arrivals/", func(info storage.ObjectInfo) error {
		seen = append(seen, info.Key)
		if len(seen) == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Errorf("List whose fn failed: err = %v, want the fn's error", err)
	}
	if diff := cmp.Diff([]string{"arrivals/alice/1", "arrivals/alice/2"}, seen); diff != "" {
		t.Errorf("List whose fn failed on the 2nd call (-want +got):\n%s", diff)
	}
}

func testMove(t *testing.T, b storage.Backend) {
	src := key(t, storage.PrefixUploads, "moving")
	dst := key(t, storage.PrefixArrivals, "newuser", "moved.csv")
	p := data(500, 70<<10)
	put(t, b, src, p)
	if err := b.Move(t.Context(), src, dst); err != nil {
		t.Fatalf("Move(%q, %q): %v", src, dst, err)
	}
	wantNotFound(t, b, src)
	wantObject(t, b, dst, p)
	if got := listAll(t, b, ""); len(got) != 1 || got[0].Key != dst {
		t.Errorf("List after Move = %+v, want only %q", got, dst)
	}

	// And on, into a share.
	dst2 := key(t, storage.PrefixShares, "s", "dir", "moved.csv")
	if err := b.Move(t.Context(), dst, dst2); err != nil {
		t.Fatalf("Move(%q, %q): %v", dst, dst2, err)
	}
	wantNotFound(t, b, dst)
	wantObject(t, b, dst2, p)

	missing := key(t, storage.PrefixUploads, "missing")
	if err := b.Move(t.Context(), missing, key(t, storage.PrefixArrivals, "u", "x")); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Move of a missing key: err = %v, want ErrNotFound", err)
	}
	wantNotFound(t, b, key(t, storage.PrefixArrivals, "u", "x"))
}

// testMoveExisting: Move never overwrites.
func testMoveExisting(t *testing.T, b storage.Backend) {
	a := key(t, storage.PrefixUploads, "a")
	dst := key(t, storage.PrefixArrivals, "alice", "report.pdf")
	pa, pdst := data(600, 3000), data(601, 2000)
	put(t, b, a, pa)
	put(t, b, dst, pdst)
	if err := b.Move(t.Context(), a, dst); !errors.Is(err, storage.ErrExist) {
		t.Errorf("Move(%q, %q) onto an existing object: err = %v, want ErrExist", a, dst, err)
	}
	wantObject(t, b, a, pa)
	wantObject(t, b, dst, pdst)

	if err := b.Move(t.Context(), a, a); !errors.Is(err, storage.ErrExist) {
		t.Errorf("Move(%q, %q) onto itself: err = %v, want ErrExist", a, a, err)
	}
	wantObject(t, b, a, pa)
}

func testDelete(t *testing.T, b storage.Backend) {
	k := key(t, storage.PrefixArrivals, "alice", "old.txt")
	keep := key(t, storage.PrefixArrivals, "alice", "keep.txt")
	put(t, b, k, data(700, 100))
	pkeep := data(701, 50)
	put(t, b, keep, pkeep)
	if err := b.Delete(t.Context(), k); err != nil {
		t.Fatalf("Delete(%q): %v", k, err)
	}
	wantNotFound(t, b, k)
	wantObject(t, b, keep, pkeep)
	got := listAll(t, b, "arrivals/")
	if len(got) != 1 || got[0].Key != keep {
		t.Errorf("List after Delete = %+v, want only %q", got, keep)
	}
	if err := b.Delete(t.Context(), k); err != nil {
		t.Errorf("Delete(%q) again: %v, want nil", k, err)
	}
	never := key(t, storage.PrefixQuarantine, "never")
	if err := b.Delete(t.Context(), never); err != nil {
		t.Errorf("Delete(%q) of a key never created: %v, want nil", never, err)
	}
	// The key can be used again.
	p := data(702, 10)
	put(t, b, k, p)
	wantObject(t, b, k, p)
}

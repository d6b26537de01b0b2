package storage_test

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"testing"

	"go.uber.org/zap"

	"github.com/mftd/mftd/storage"
	"github.com/mftd/mftd/storage/local"
)

func putObject(t *testing.T, b storage.Backend, key string, p []byte) {
	t.Helper()
	ctx := context.Background()
	up, err := b.Create(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	if _, err := up.WriteChunk(ctx, 0, bytes.NewReader(p)); err != nil {
		t.Fatal(err)
	}
	if _, err := up.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestObjectReader(t *testing.T) {
	b, err := local.New(t.TempDir(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	data := make([]byte, 1<<20+123)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	key, err := storage.UploadKey("objreader1")
	if err != nil {
		t.Fatal(err)
	}
	putObject(t, b, key, data)

	t.Run("in order opens once", func(t *testing.T) {
		r := storage.NewObjectReader(ctx, b, key, int64(len(data)))
		defer r.Close()
		got, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatal("bytes differ")
		}
		if n := r.Opens(); n != 1 {
			t.Errorf("opened %d times for one pass in order, want 1", n)
		}
	})
	t.Run("jumps", func(t *testing.T) {
		r := storage.NewObjectReader(ctx, b, key, int64(len(data)))
		defer r.Close()
		for _, off := range []int64{1000, 5, 1 << 20, 0, int64(len(data)) - 10} {
			p := make([]byte, 10)
			n, err := r.ReadAt(p, off)
			if err != nil || n != 10 || !bytes.Equal(p, data[off:off+10]) {
				t.Fatalf("ReadAt(10, %d) = %d, %v", off, n, err)
			}
		}
		if n := r.Opens(); n != 5 {
			t.Errorf("opened %d times for five jumps, want 5", n)
		}
	})
	t.Run("end", func(t *testing.T) {
		r := storage.NewObjectReader(ctx, b, key, int64(len(data)))
		defer r.Close()
		p := make([]byte, 100)
		n, err := r.ReadAt(p, int64(len(data))-40)
		if n != 40 || err != io.EOF || !bytes.Equal(p[:40], data[len(data)-40:]) {
			t.Fatalf("read across the end = %d, %v; want 40, EOF", n, err)
		}
		if n, err := r.ReadAt(p, int64(len(data))); n != 0 || err != io.EOF {
			t.Fatalf("read at the end = %d, %v; want 0, EOF", n, err)
		}
		if _, err := r.ReadAt(p, -1); err == nil {
			t.Fatal("negative offset accepted")
		}
	})
	t.Run("shorter than recorded", func(t *testing.T) {
		r := storage.NewObjectReader(ctx, b, key, int64(len(data))+50)
		defer r.Close()
		_, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("reading an object shorter than its size: %v, want ErrUnexpectedEOF", err)
		}
	})
	t.Run("missing", func(t *testing.T) {
		k, _ := storage.UploadKey("objreader-missing")
		r := storage.NewObjectReader(ctx, b, k, 10)
		defer r.Close()
		if _, err := r.ReadAt(make([]byte, 5), 0); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("missing object: %v, want ErrNotFound", err)
		}
	})
	t.Run("zip", func(t *testing.T) {
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		for _, name := range []string{"a.txt", "b/c.csv"} {
			w, err := zw.Create(name)
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(w, "contents of "+name)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		k, _ := storage.UploadKey("objreader-zip")
		putObject(t, b, k, buf.Bytes())
		r := storage.NewObjectReader(ctx, b, k, int64(buf.Len()))
		defer r.Close()
		zr, err := zip.NewReader(r, r.Size())
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range zr.File {
			rc, err := f.Open()
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || string(got) != "contents of "+f.Name {
				t.Fatalf("%s: %q, %v", f.Name, got, err)
			}
		}
	})
}

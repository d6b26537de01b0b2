package local

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/mftd/mftd/storage"
)

// List calls fn for every regular file whose key starts with prefix (a plain
// string prefix, as in S3: "arrivals/al" matches "arrivals/alice/x"), in
// lexical key order. Symbolic links and directories are not objects and are
// skipped.
//
// Each directory is read whole and sorted, with a subdirectory sorting as
// its name plus "/": that puts "a-b" (0x2d) before every key in "a/"
// (0x2f), as lexical key order wants, where a plain walk would not.
func (b *Backend) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	start := ""
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		start = prefix[:i]
		if err := checkKey(start); err != nil {
			return wrap("list", prefix, err)
		}
		fi, err := b.root.Lstat(start)
		if isNotExist(err) || (err == nil && !fi.IsDir()) {
			return nil // nothing can be below it
		}
		if err != nil {
			return wrap("list", prefix, err)
		}
	}
	if err := b.walk(ctx, start, prefix, fn); err != nil {
		return fmt.Errorf("local: list %q: %w", prefix, err)
	}
	return nil
}

// walk lists the directory whose key is dir ("" for the root) in key order.
func (b *Backend) walk(ctx context.Context, dir, prefix string, fn func(storage.ObjectInfo) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	name := dir
	if name == "" {
		name = "."
	}
	d, err := b.root.Open(name)
	if err != nil {
		if isNotExist(err) {
			return nil // removed while we walked
		}
		return classify(err)
	}
	entries, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return classify(err)
	}
	type entry struct {
		key  string
		sort string
		dir  bool
	}
	list := make([]entry, 0, len(entries))
	for _, e := range entries {
		key := e.Name()
		if dir != "" {
			key = dir + "/" + key
		}
		switch t := e.Type(); {
		case t.IsDir():
			sub := key + "/"
			if strings.HasPrefix(sub, prefix) || strings.HasPrefix(prefix, sub) {
				list = append(list, entry{key: key, sort: sub, dir: true})
			}
		case t.IsRegular():
			if strings.HasPrefix(key, prefix) {
				list = append(list, entry{key: key, sort: key})
			}
		}
	}
	slices.SortFunc(list, func(a, b entry) int { return strings.Compare(a.sort, b.sort) })
	for _, e := range list {
		if e.dir {
			if err := b.walk(ctx, e.key, prefix, fn); err != nil {
				return err
			}
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		fi, err := b.root.Lstat(e.key)
		if isNotExist(err) {
			continue // deleted while we walked
		}
		if err != nil {
			return classify(err)
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		if err := fn(storage.ObjectInfo{Key: e.key, Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
			return err
		}
	}
	return nil
}

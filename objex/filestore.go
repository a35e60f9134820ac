package objex

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// fileStore keeps objects as files under a directory: the embedded default
// target (a local disk, a NAS mount). A Put writes a temporary file in the
// object's directory, fsyncs it, renames it over the key and fsyncs the
// directory, so an object is either wholly there or absent, also after a
// crash. Temporary files are named ".tmp-*" and never listed.
type fileStore struct {
	root string
}

func newFileStore(dir string) (*fileStore, error) {
	dir = filepath.Clean(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("objex: target directory: %w", err)
	}
	return &fileStore{root: dir}, nil
}

func (f *fileStore) String() string { return "file://" + f.root }

func (f *fileStore) path(key string) (string, error) {
	if err := validKey(key); err != nil {
		return "", err
	}
	return filepath.Join(f.root, filepath.FromSlash(key)), nil
}

func (f *fileStore) Put(ctx context.Context, key string, data []byte) error {
	p, err := f.path(key)
	if err != nil {
		return err
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(dir, ".tmp-"+hex.EncodeToString(rnd[:]))
	w, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		w.Close()
		os.Remove(tmp)
		return err
	}
	var r io.Reader = bytes.NewReader(data)
	if l := limiterFrom(ctx); l != nil {
		r = l.reader(ctx, r)
	}
	if _, err := io.Copy(w, r); err != nil {
		return fail(err)
	}
	if err := w.Sync(); err != nil {
		return fail(err)
	}
	if err := w.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (f *fileStore) Get(ctx context.Context, key string, off, n int64) ([]byte, error) {
	p, err := f.path(key)
	if err != nil {
		return nil, err
	}
	r, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", key, ErrNotExist)
	}
	if err != nil {
		return nil, err
	}
	defer r.Close()
	st, err := r.Stat()
	if err != nil {
		return nil, err
	}
	if off < 0 || off > st.Size() || n > st.Size()-off {
		// A file's size is the truth: a range past its end is a
		// truncated object, not a transient condition.
		return nil, fmt.Errorf("%s: %d bytes at %d of %d: truncated: %w", key, n, off, st.Size(), ErrCorrupt)
	}
	if n < 0 {
		n = st.Size() - off
	}
	buf := make([]byte, n)
	var src io.Reader = io.NewSectionReader(r, off, n)
	if l := limiterFrom(ctx); l != nil {
		src = l.reader(ctx, src)
	}
	if _, err := io.ReadFull(src, buf); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: %w", key, ErrShort)
		}
		return nil, err
	}
	return buf, nil
}

func (f *fileStore) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	p, err := f.path(key)
	if err != nil {
		return ObjectInfo{}, err
	}
	st, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return ObjectInfo{}, fmt.Errorf("%s: %w", key, ErrNotExist)
	}
	if err != nil {
		return ObjectInfo{}, err
	}
	if !st.Mode().IsRegular() {
		return ObjectInfo{}, fmt.Errorf("%s: not a regular file: %w", key, ErrNotExist)
	}
	return ObjectInfo{Key: key, Size: st.Size(), Modified: st.ModTime()}, nil
}

func (f *fileStore) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	// Walk the deepest directory the prefix names whole, then filter.
	base := prefix
	if i := strings.LastIndex(base, "/"); i >= 0 {
		base = base[:i]
	} else {
		base = ""
	}
	start := filepath.Join(f.root, filepath.FromSlash(base))
	var out []ObjectInfo
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() || strings.HasPrefix(d.Name(), ".tmp-") {
			return nil
		}
		rel, err := filepath.Rel(f.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		out = append(out, ObjectInfo{Key: key, Size: info.Size(), Modified: info.ModTime()})
		return nil
	})
	if err != nil {
		return err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	for _, oi := range out {
		if err := fn(oi); err != nil {
			return err
		}
	}
	return nil
}

func (f *fileStore) Delete(ctx context.Context, key string) error {
	p, err := f.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return syncDir(filepath.Dir(p))
}

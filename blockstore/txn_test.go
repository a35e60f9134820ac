package blockstore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// kvExt is a tiny Extension: payloads "k=v" set a key in memory and in its
// own bucket.
type kvExt struct {
	mu       sync.Mutex
	mem      map[string]string
	replayed int
}

var bKV = []byte("test-kv")

func (e *kvExt) Load(tx *bolt.Tx) error {
	e.mem = map[string]string{}
	if b := tx.Bucket(bKV); b != nil {
		return b.ForEach(func(k, v []byte) error {
			e.mem[string(k)] = string(v)
			return nil
		})
	}
	return nil
}

func (e *kvExt) apply(p []byte) (string, string, error) {
	k, v, ok := strings.Cut(string(p), "=")
	if !ok {
		return "", "", fmt.Errorf("bad payload %q", p)
	}
	return k, v, nil
}

func (e *kvExt) Replay(p []byte) error {
	k, v, err := e.apply(p)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.mem[k] = v
	e.replayed++
	return nil
}

func (e *kvExt) Destage(tx *bolt.Tx, p []byte) error {
	k, v, err := e.apply(p)
	if err != nil {
		return err
	}
	b, err := tx.CreateBucketIfNotExists(bKV)
	if err != nil {
		return err
	}
	return b.Put([]byte(k), []byte(v))
}

// copyDir copies a data directory as it is on disk now: what a crash at
// this instant leaves (everything synced is in the files).
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(out, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(out, b, fi.Mode())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestExtension: extension payloads commit atomically with layer operations,
// replay after a crash, and reach bbolt through destage.
func TestExtension(t *testing.T) {
	dir := t.TempDir()
	if err := Init(dir, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	ext := &kvExt{}
	s, err := Open(dir, Options{Extension: ext, DestageDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var vid VolumeID
	err = s.Update(nil, func(t *Txn) error {
		vid = t.CreateVolume()
		return t.Ext(fmt.Appendf(nil, "file=%d", vid))
	})
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.OpenVolume(vid)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.WriteAtStable([]byte("hello"), 0); err != nil {
		t.Fatal(err)
	}
	// A failing Txn logs nothing: neither its layer operations nor its
	// payloads.
	boom := errors.New("boom")
	err = s.Update(nil, func(t *Txn) error {
		if _, err := t.Freeze(vid); err != nil {
			return err
		}
		if err := t.Ext([]byte("ghost=1")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	var snap LayerID
	err = s.Update(nil, func(t *Txn) error {
		ls, err := t.Freeze(vid)
		if err != nil {
			return err
		}
		snap = ls[0]
		return t.Ext(fmt.Appendf(nil, "snap=%d", snap))
	})
	if err != nil {
		t.Fatal(err)
	}
	// Crash now.
	crash := t.TempDir()
	copyDir(t, dir, crash)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ext2 := &kvExt{}
	s2, err := Open(crash, Options{Extension: ext2})
	if err != nil {
		t.Fatal(err)
	}
	// Destage may have run for the first records (metadata records kick
	// it); what it did not reach is replayed.
	if ext2.mem["file"] != fmt.Sprint(vid) || ext2.mem["snap"] != fmt.Sprint(snap) || ext2.mem["ghost"] != "" {
		t.Fatalf("replayed %d: %v", ext2.replayed, ext2.mem)
	}
	lv, err := s2.OpenLayer(snap)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 5)
	if _, err := lv.ReadAt(got, 0); err != nil || !bytes.Equal(got, []byte("hello")) {
		t.Fatalf("snapshot after crash: %q %v", got, err)
	}
	// Destaged: the next open loads it from bbolt and replays nothing.
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	ext3 := &kvExt{}
	s3, err := Open(crash, Options{Extension: ext3})
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	if ext3.replayed != 0 || ext3.mem["file"] != fmt.Sprint(vid) || ext3.mem["snap"] != fmt.Sprint(snap) {
		t.Fatalf("after destage: replayed %d: %v", ext3.replayed, ext3.mem)
	}
	// Restore needs the volume locked; without it the Txn refuses.
	err = s3.Update(nil, func(t *Txn) error { return t.Restore(vid, snap) })
	if err == nil {
		t.Fatal("restore outside the volume's lock was accepted")
	}
	if err := s3.Update([]VolumeID{vid}, func(t *Txn) error { return t.Restore(vid, snap) }); err != nil {
		t.Fatal(err)
	}
}

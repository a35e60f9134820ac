package blockstore

import (
	"sync"
	"testing"
	"time"
)

// open4K makes a datastore of 4 KiB blocks in a new directory and opens
// it; the store is closed when the test ends (after pauseAt's release).
func open4K(t *testing.T, opts Options) (string, *Store) {
	t.Helper()
	dir := t.TempDir()
	if err := Init(dir, InitOptions{BlockSize: 4 << 10}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return dir, s
}

// pauseAt runs op in a goroutine with *hook set so that its first call
// blocks, and returns once it has. wait lets op go on and returns its
// result. When the test ends op is let go on before the store is closed,
// so a failing test does not hang.
func pauseAt[T any](t *testing.T, hook *func(), op func() (T, error)) (wait func() (T, error)) {
	t.Helper()
	paused, resume := make(chan struct{}), make(chan struct{})
	var pauseOnce, releaseOnce sync.Once
	*hook = func() { pauseOnce.Do(func() { close(paused); <-resume }) }
	release := func() { releaseOnce.Do(func() { close(resume) }) }
	t.Cleanup(func() { release(); *hook = nil })
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := op()
		done <- result{v, err}
	}()
	select {
	case <-paused:
	case r := <-done:
		t.Fatalf("ended before it paused: %+v %v", r.v, r.err)
	}
	return func() (T, error) {
		release()
		r := <-done
		return r.v, r.err
	}
}

// within fails the test if fn does not return within 30 s (what could not
// finish is said by what), or if it fails.
func within(t *testing.T, what string, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- fn() }()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not finish within 30 s", what)
	}
}

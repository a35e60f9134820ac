package objex

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dstore/dstore/blockstore"
	"github.com/dstore/dstore/snapstore"
)

// The S3 tests run against versitygw (a real S3 server, posix backend),
// started once per test binary on 127.0.0.1. `make test` installs it into
// .cache/bin; DSTORE_VERSITYGW names another binary. Without it the S3
// tests skip, except under CI=true, where they fail.

const (
	gwAccess = "dstore-test-access"
	gwSecret = "dstore-test-secret-0123456789"
)

var gw struct {
	once     sync.Once
	endpoint string // http://127.0.0.1:port
	cmd      *exec.Cmd
	dir      string
	err      error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if gw.cmd != nil && gw.cmd.Process != nil {
		gw.cmd.Process.Kill()
		gw.cmd.Wait()
	}
	if gw.dir != "" {
		os.RemoveAll(gw.dir)
	}
	os.Exit(code)
}

func versitygwPath() string {
	if p := os.Getenv("DSTORE_VERSITYGW"); p != "" {
		return p
	}
	if p, err := filepath.Abs("../.cache/bin/versitygw"); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	return ""
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// s3Endpoint starts versitygw once and returns its endpoint.
func s3Endpoint(t testing.TB) string {
	t.Helper()
	bin := versitygwPath()
	if bin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("versitygw not found (make test installs it into .cache/bin); required under CI=true")
		}
		t.Skip("versitygw not found: go install github.com/versity/versitygw/cmd/versitygw@v1.8.0 into .cache/bin, or run make test")
	}
	gw.once.Do(func() {
		gw.dir, gw.err = os.MkdirTemp("", "dstore-versitygw-")
		if gw.err != nil {
			return
		}
		port := freePort(t)
		gw.cmd = exec.Command(bin, "--access", gwAccess, "--secret", gwSecret, "--port", fmt.Sprintf("127.0.0.1:%d", port),
			"--quiet", "--health", "/health", "posix", gw.dir)
		gw.cmd.Stdout, gw.cmd.Stderr = io.Discard, io.Discard
		if gw.err = gw.cmd.Start(); gw.err != nil {
			return
		}
		gw.endpoint = fmt.Sprintf("http://127.0.0.1:%d", port)
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			resp, err := http.Get(gw.endpoint + "/health")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					return
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		gw.err = errors.New("versitygw did not become healthy in 20 s")
	})
	if gw.err != nil {
		t.Fatalf("versitygw: %v", gw.err)
	}
	return gw.endpoint
}

// backend is a kind of target the tests run against.
type backend struct {
	name string
	// url makes a fresh, empty target location; opts its store options.
	url  func(t *testing.T) string
	opts func(t *testing.T) StoreOptions
}

var bucketSeq struct {
	sync.Mutex
	n int
}

func backends() []backend {
	return []backend{
		{name: "file",
			url:  func(t *testing.T) string { return "file://" + t.TempDir() + "/target" },
			opts: func(t *testing.T) StoreOptions { return StoreOptions{} }},
		{name: "s3",
			url: func(t *testing.T) string {
				s3Endpoint(t)
				bucketSeq.Lock()
				bucketSeq.n++
				n := bucketSeq.n
				bucketSeq.Unlock()
				return fmt.Sprintf("s3://dstore-test-%d-%d/some/prefix", os.Getpid(), n)
			},
			opts: func(t *testing.T) StoreOptions {
				return StoreOptions{Endpoint: s3Endpoint(t), Region: "us-east-1", AccessKey: gwAccess, SecretKey: gwSecret}
			}},
	}
}

// node is one datastore with its OX manager, on disk (real bbolt files).
type node struct {
	t    *testing.T
	dir  string
	ds   *snapstore.Datastore
	m    *Manager
	cfg  Config
	logs *bytes.Buffer
}

func fastRetry() RetryPolicy {
	return RetryPolicy{Attempts: 4, Base: 20 * time.Millisecond, Max: 200 * time.Millisecond, Timeout: 10 * time.Second}
}

func newNode(t *testing.T, bs int) *node {
	t.Helper()
	dir := t.TempDir()
	if err := blockstore.Init(filepath.Join(dir, "data"), blockstore.InitOptions{BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, dir: dir, cfg: Config{Dir: filepath.Join(dir, "data", "ox"), Retry: fastRetry(),
		DemandRetry: RetryPolicy{Attempts: 3, Base: 10 * time.Millisecond, Max: 50 * time.Millisecond, Timeout: 5 * time.Second}}}
	n.open()
	t.Cleanup(n.close)
	return n
}

func (n *node) open() {
	n.t.Helper()
	m, err := Open(n.cfg)
	if err != nil {
		n.t.Fatal(err)
	}
	ds, err := snapstore.Open(filepath.Join(n.dir, "data"), blockstore.Options{Remote: m.Remote})
	if err != nil {
		m.Close()
		n.t.Fatal(err)
	}
	if err := m.Attach(ds); err != nil {
		n.t.Fatal(err)
	}
	n.m, n.ds = m, ds
}

func (n *node) close() {
	if n.m != nil {
		if err := n.m.Close(); err != nil {
			n.t.Errorf("manager close: %v", err)
		}
		n.m = nil
	}
	if n.ds != nil {
		if err := n.ds.Close(); err != nil {
			n.t.Errorf("datastore close: %v", err)
		}
		n.ds = nil
	}
}

func (n *node) reopen() {
	n.close()
	n.open()
}

// writeFile writes data to a new file at name (in the root directory).
func (n *node) writeFile(name string, data []byte) snapstore.Ino {
	n.t.Helper()
	a, err := n.ds.NS.LookupPath(name)
	if err != nil {
		a, _, err = n.ds.NS.Create(snapstore.RootIno, name, snapstore.Unchecked, [8]byte{}, snapstore.NewAttr{Mode: 0o644})
		if err != nil {
			n.t.Fatal(err)
		}
	}
	n.writeAt(a.Ino, data, 0)
	return a.Ino
}

func (n *node) writeAt(ino snapstore.Ino, data []byte, off int64) {
	n.t.Helper()
	for len(data) > 0 {
		k := min(len(data), 4<<20)
		if _, err := n.ds.NS.Write(ino, data[:k], off, false); err != nil {
			n.t.Fatal(err)
		}
		data, off = data[k:], off+int64(k)
	}
}

func (n *node) readFile(name string) ([]byte, error) {
	a, err := n.ds.NS.LookupPath(name)
	if err != nil {
		return nil, err
	}
	out := make([]byte, a.Size)
	for off := 0; off < len(out); {
		k, _, err := n.ds.NS.Read(a.Ino, out[off:min(len(out), off+1<<20)], int64(off))
		if err != nil {
			return nil, err
		}
		if k == 0 {
			return nil, io.ErrUnexpectedEOF
		}
		off += k
	}
	return out, nil
}

func (n *node) snapshot(group string, match ...string) *snapstore.Snapshot {
	n.t.Helper()
	if _, err := n.ds.NS.Group(group); err != nil {
		if _, err := n.ds.NS.CreateGroup(group, snapstore.GroupSpec{Match: match}); err != nil {
			n.t.Fatal(err)
		}
	}
	s, err := n.ds.NS.CreateSnapshot(group, "", false)
	if err != nil {
		n.t.Fatal(err)
	}
	return s
}

func (n *node) addTarget(name, url string, opts StoreOptions, keyFile string) {
	n.t.Helper()
	if _, err := n.m.AddTarget(context.Background(), TargetSpec{Name: name, URL: url, Store: opts, KeyFile: keyFile}); err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) export(seq uint64, target, name string) JobInfo {
	n.t.Helper()
	j, err := n.m.Export(context.Background(), seq, target, ExportOptions{Name: name})
	if err != nil {
		n.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := j.Wait(ctx); err != nil {
		n.t.Fatalf("export: %v", err)
	}
	return j.Info()
}

func keyFile(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "ox.key")
	k := make([]byte, 32)
	rand.Read(k)
	if err := os.WriteFile(p, k, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// vdisk makes a disk image of n blocks: a mix of random, compressible
// and zero blocks, some repeated.
func vdisk(seed uint64, nblocks, bs int) []byte {
	rng := mrand.New(mrand.NewPCG(seed, seed^0x9e37))
	out := make([]byte, nblocks*bs)
	for b := 0; b < nblocks; b++ {
		blk := out[b*bs : (b+1)*bs]
		switch r := rng.IntN(10); {
		case r < 5:
			for i := 0; i+8 <= bs; i += 8 {
				v := rng.Uint64()
				for k := 0; k < 8; k++ {
					blk[i+k] = byte(v >> (8 * k))
				}
			}
		case r < 8:
			word := []byte(fmt.Sprintf("block %d of a compressible file; ", b))
			for i := 0; i < bs; i += len(word) {
				copy(blk[i:], word)
			}
		case r < 9 && b > 10:
			copy(blk, out[(b-7)*bs:(b-6)*bs]) // a duplicate
		default:
			// zeros: a hole
		}
	}
	return out
}

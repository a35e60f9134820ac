package nfsload

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/dstore/dstore/blockstore"
	"github.com/dstore/dstore/nfsfs"
	"github.com/dstore/dstore/snapstore"
)

// serveDstore serves a new datastore in a temporary directory over
// loopback, NFS and MOUNT on one port as `dstore serve` does, and returns
// the address.
func serveDstore(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := blockstore.Init(dir, blockstore.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	ds, err := snapstore.Open(dir, blockstore.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	n := nfsfs.NewNFS(ds, nfsfs.Options{Logger: log})
	srv := nfsfs.NewServer(nfsfs.ServerOptions{Logger: log})
	srv.Register(n.Program())
	srv.Register(nfsfs.NewMount(n, nfsfs.Access{}).Program())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := ds.Close(); err != nil {
			t.Errorf("closing the datastore: %v", err)
		}
	})
	return l.Addr().String()
}

func quick(addr, workload string) Config {
	c := Config{
		Server: addr, Export: "/", Workload: workload, BS: 4096, QD: 8, Conns: 2,
		Size: 4 << 20, Duration: 300 * time.Millisecond, Verify: true,
	}
	if workload == SeqWrite || workload == SeqRead {
		c.BS = 64 << 10
	}
	return c
}

// dial connects an NFS client of its own and mounts the export.
func dial(t *testing.T, addr string) (*nfsfs.NFS3Client, []byte) {
	t.Helper()
	ctx := context.Background()
	c, err := nfsfs.Dial(ctx, addr, nfsfs.ClientOptions{Cred: &nfsfs.AuthUnix{Machine: "test"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	root, err := nfsfs.MountPath(ctx, c, "/")
	if err != nil {
		t.Fatal(err)
	}
	return nfsfs.NewNFS3Client(c), root
}

func TestWorkloadsAgainstDstore(t *testing.T) {
	addr := serveDstore(t)
	for _, w := range Workloads {
		for _, stable := range []uint32{nfsfs.StableUnstable, nfsfs.StableFileSync} {
			t.Run(w+"-"+StableName(stable), func(t *testing.T) {
				cfg := quick(addr, w)
				cfg.Stable = stable
				res, err := Run(context.Background(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				if res.Errors != 0 {
					t.Fatalf("%d errors, the first: %s", res.Errors, res.FirstError)
				}
				if res.Ops == 0 || res.IOPS <= 0 || res.Seconds < cfg.Duration.Seconds() {
					t.Fatalf("ops %d IOPS %.0f in %.3fs", res.Ops, res.IOPS, res.Seconds)
				}
				if !(res.P50Us > 0 && res.P50Us <= res.P99Us && res.P99Us <= res.P999Us && res.P999Us <= res.MaxUs) {
					t.Errorf("latencies out of order: p50 %.1f p99 %.1f p99.9 %.1f max %.1f", res.P50Us, res.P99Us, res.P999Us, res.MaxUs)
				}
				if w == Metadata {
					if res.Files == 0 || res.Bytes != res.Files*int64(cfg.BS) {
						t.Errorf("metadata: %d files, %d bytes", res.Files, res.Bytes)
					}
					return
				}
				if res.Bytes != res.Ops*int64(cfg.BS) || res.MBPerS <= 0 {
					t.Errorf("%d bytes in %d ops of %d, %.1f MB/s", res.Bytes, res.Ops, cfg.BS, res.MBPerS)
				}
				if res.Verified == 0 {
					t.Error("nothing was read back and verified")
				}
				if (stable == nfsfs.StableUnstable && w != SeqRead && w != RandRead) != (res.CommitUs > 0) {
					t.Errorf("commit_us %.1f for %s writes", res.CommitUs, StableName(stable))
				}
			})
		}
	}
	// Nothing is left behind: the work directory is empty.
	c, root := dial(t, addr)
	if err := c.Rmdir(context.Background(), root, WorkDir); err != nil {
		t.Errorf("removing %s after the runs: %v", WorkDir, err)
	}
}

// TestWrittenDataReadsBack writes a file with seqwrite, keeps it, reads it
// back with a client of its own and checks every unit; then spoils one
// block and checks that seqread with Verify notices.
func TestWrittenDataReadsBack(t *testing.T) {
	addr := serveDstore(t)
	cfg := quick(addr, SeqWrite)
	cfg.Size = 2 << 20
	cfg.File, cfg.Keep = "kept", true
	// The check below needs the whole file written once: allow for a slow,
	// loaded machine under the race detector (1.2 MB in 300 ms seen in CI).
	cfg.Duration = 5 * time.Second
	res, err := Run(context.Background(), cfg)
	if err != nil || res.Errors != 0 {
		t.Fatalf("seqwrite: %v %s", err, res.FirstError)
	}
	if res.Bytes < cfg.Size {
		t.Fatalf("seqwrite wrote %d bytes in %v, less than the file", res.Bytes, cfg.Duration)
	}
	ctx := context.Background()
	c, root := dial(t, addr)
	dir, _, err := c.Lookup(ctx, root, WorkDir)
	if err != nil {
		t.Fatal(err)
	}
	fh, a, err := c.Lookup(ctx, dir, "kept")
	if err != nil {
		t.Fatal(err)
	}
	if a.Size != uint64(cfg.Size) {
		t.Fatalf("kept file is %d bytes, want %d", a.Size, cfg.Size)
	}
	p := NewPattern(1)
	buf := make([]byte, 64<<10)
	for off := int64(0); off < cfg.Size; off += int64(len(buf)) {
		n, _, err := c.Read(ctx, fh, uint64(off), buf)
		if err != nil || n != len(buf) {
			t.Fatalf("READ at %d: %d bytes, %v", off, n, err)
		}
		if err := p.Check(buf, uint64(off)); err != nil {
			t.Fatal(err)
		}
	}

	// seqread with Keep reuses the kept file (its blocks all verify).
	rcfg := quick(addr, SeqRead)
	rcfg.Size = cfg.Size
	rcfg.File, rcfg.Keep = "kept", true
	res, err = Run(ctx, rcfg)
	if err != nil || res.Errors != 0 || res.FillSeconds != 0 || res.Verified == 0 {
		t.Fatalf("seqread of the kept file: %v, %d errors (%s), filled in %.2fs, verified %d",
			err, res.Errors, res.FirstError, res.FillSeconds, res.Verified)
	}

	// Spoil one unit (one the reuse check does not sample): the data of
	// offset 0 written there.
	p.Fill(buf[:Unit], 0, 99)
	if _, _, _, err := c.Write(ctx, fh, uint64(cfg.Size/4), buf[:Unit], nfsfs.StableFileSync); err != nil {
		t.Fatal(err)
	}
	rcfg.Duration = time.Second
	res, err = Run(ctx, rcfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors == 0 || !strings.Contains(res.FirstError, "holds the data written at offset 0") {
		t.Fatalf("a spoilt unit went unnoticed: %d errors, %q", res.Errors, res.FirstError)
	}
}

func TestConfigChecks(t *testing.T) {
	base := Config{Server: "127.0.0.1:1", Workload: RandRead, BS: 4096, QD: 1, Conns: 1, Size: 1 << 20, Duration: time.Second}
	for name, mod := range map[string]func(*Config){
		"workload":   func(c *Config) { c.Workload = "randomread" },
		"bs-partial": func(c *Config) { c.BS = 1000 },
		"bs-size":    func(c *Config) { c.Size = 1024 },
		"qd":         func(c *Config) { c.QD = 0 },
		"conns":      func(c *Config) { c.Conns = 0 },
		"duration":   func(c *Config) { c.Duration = 0 },
		"stable":     func(c *Config) { c.Stable = 7 },
	} {
		c := base
		mod(&c)
		if _, err := Run(context.Background(), c); err == nil || strings.Contains(err.Error(), "connect") {
			t.Errorf("%s: %v, want a configuration error", name, err)
		}
	}
	// A sound configuration gets as far as connecting.
	if _, err := Run(context.Background(), base); err == nil || !strings.Contains(err.Error(), "MOUNT") {
		t.Errorf("no server: %v", err)
	}
}

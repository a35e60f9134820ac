// Package nfsload is an NFSv3 load generator for any NFSv3 server over TCP,
// with no kernel mount: it asks MOUNT v3 for the export's root handle and
// drives NFSv3 calls itself, QD calls outstanding on each of Conns
// connections (pipelined, as ESXi and the Linux client drive a server). It
// reports throughput, operations per second and the latency distribution.
// `dstore bench nfs` is its command line.
package nfsload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dstore/dstore/nfsfs"
)

// Workloads.
const (
	SeqWrite  = "seqwrite"
	SeqRead   = "seqread"
	RandWrite = "randwrite"
	RandRead  = "randread"
	Mixed     = "mixed"
	Metadata  = "metadata"
)

// Workloads lists every workload, in the order the help names them.
var Workloads = []string{SeqWrite, SeqRead, RandWrite, RandRead, Mixed, Metadata}

// MixedReads is the share of reads in the mixed workload (the rest are
// writes), as fio's rwmixread=70.
const MixedReads = 0.7

// MetaBatch is how many files a metadata worker creates before it stats
// and removes them.
const MetaBatch = 32

// WorkDir is the directory under the export that holds the test files.
const WorkDir = "dstore-bench"

// Config is one run.
type Config struct {
	Server    string // NFS server, host:port
	MountPort int    // MOUNT port; 0: ask the portmapper on port 111, else use the NFS port
	Export    string // export path to mount, e.g. "/"
	Workload  string
	BS        int           // bytes per READ or WRITE; for metadata, bytes written to each file (0: none)
	QD        int           // calls outstanding per connection
	Conns     int           // TCP connections
	Size      int64         // the test file's size (data workloads)
	Duration  time.Duration // how long the timed phase issues new calls
	Stable    uint32        // nfsfs.StableUnstable (then a COMMIT ends the run) or nfsfs.StableFileSync

	// Verify checks every block read against the pattern written, and
	// after a write workload reads back every block written and checks it.
	Verify bool
	// File names the test file under WorkDir (default: one made up for
	// the run); Keep leaves it there afterwards. A read workload with Keep
	// and a file that already holds Size bytes of the pattern (from an
	// earlier run with Keep) does not fill it again.
	File string
	Keep bool
	Seed uint64          // data pattern seed (0: 1)
	Cred *nfsfs.AuthUnix // default: this process's uid and gid
	Log  io.Writer       // progress lines (nil: none)
}

// Result is what a run measured. MB are 10^6 bytes.
type Result struct {
	Server      string  `json:"server"`
	Workload    string  `json:"workload"`
	BS          int     `json:"bs"`
	QD          int     `json:"qd"`
	Conns       int     `json:"conns"`
	Size        int64   `json:"size"`
	Stable      string  `json:"stable"`
	Seconds     float64 `json:"seconds"` // the timed phase, with the final COMMIT
	Ops         int64   `json:"ops"`     // calls completed (every call, for metadata)
	Bytes       int64   `json:"bytes"`   // data read and written
	Errors      int64   `json:"errors"`  // calls that failed and blocks that did not verify
	MBPerS      float64 `json:"mb_per_s"`
	IOPS        float64 `json:"iops"`
	MeanUs      float64 `json:"mean_us"`
	P50Us       float64 `json:"p50_us"`
	P99Us       float64 `json:"p99_us"`
	P999Us      float64 `json:"p999_us"`
	MaxUs       float64 `json:"max_us"`
	CommitUs    float64 `json:"commit_us,omitempty"`      // the final COMMIT
	Files       int64   `json:"files,omitempty"`          // metadata: files created and removed
	Verified    int64   `json:"verified_bytes,omitempty"` // bytes checked against the pattern
	FirstError  string  `json:"first_error,omitempty"`
	FillSeconds float64 `json:"fill_seconds,omitempty"` // filling the file before a read workload (not timed)
}

// StableName names a stability for reports.
func StableName(s uint32) string {
	switch s {
	case nfsfs.StableUnstable:
		return "unstable"
	case nfsfs.StableDataSync:
		return "datasync"
	case nfsfs.StableFileSync:
		return "filesync"
	}
	return strconv.Itoa(int(s))
}

func (c *Config) check() error {
	known := false
	for _, w := range Workloads {
		known = known || w == c.Workload
	}
	switch {
	case !known:
		return fmt.Errorf("unknown workload %q", c.Workload)
	case c.QD < 1 || c.QD > 4096:
		return fmt.Errorf("qd %d: want 1 to 4096", c.QD)
	case c.Conns < 1 || c.Conns > 256:
		return fmt.Errorf("conns %d: want 1 to 256", c.Conns)
	case c.Duration <= 0:
		return errors.New("duration must be positive")
	case c.Stable != nfsfs.StableUnstable && c.Stable != nfsfs.StableDataSync && c.Stable != nfsfs.StableFileSync:
		return fmt.Errorf("stable %d: want unstable, datasync or filesync", c.Stable)
	}
	if c.Workload == Metadata {
		if c.BS < 0 || c.BS > 1<<20 {
			return fmt.Errorf("bs %d: metadata writes 0 to 1 MiB per file", c.BS)
		}
		return nil
	}
	if c.BS < Unit || c.BS%Unit != 0 || c.BS > 16<<20 {
		return fmt.Errorf("bs %d: want a multiple of %d up to 16 MiB", c.BS, Unit)
	}
	if c.Size < int64(c.BS) {
		return fmt.Errorf("size %d is smaller than bs %d", c.Size, c.BS)
	}
	return nil
}

// run is one run's shared state.
type run struct {
	cfg     Config
	pat     *Pattern
	clients []*nfsfs.NFS3Client
	dir     []byte // WorkDir's handle
	fh      []byte // the test file's
	blocks  int64  // bs-sized blocks in the file
	written []atomic.Uint64
	next    atomic.Int64 // sequential workloads: the next block
	gen     atomic.Uint64
	stop    atomic.Bool

	verified atomic.Int64 // bytes checked against the pattern

	errMu    sync.Mutex
	firstErr error
	errors   atomic.Int64
}

// fail counts an error and keeps the first.
func (r *run) fail(err error) {
	r.errors.Add(1)
	r.errMu.Lock()
	if r.firstErr == nil {
		r.firstErr = err
	}
	r.errMu.Unlock()
}

// fatal reports whether err ends the run: the connection or the RPC layer
// failed, as opposed to the server answering with an NFS error.
func fatal(err error) bool {
	var ne *nfsfs.NFS3Error
	return err != nil && !errors.As(err, &ne)
}

func (r *run) logf(format string, args ...any) {
	if r.cfg.Log != nil {
		fmt.Fprintf(r.cfg.Log, format+"\n", args...)
	}
}

// Run runs one load against the server and returns what it measured. The
// error is for a run that could not be made (no server, no export, a
// connection lost); calls the server answered with an error are counted in
// Result.Errors, the first named in Result.FirstError.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.check(); err != nil {
		return Result{}, err
	}
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	if cfg.Cred == nil {
		host, _ := os.Hostname()
		cfg.Cred = &nfsfs.AuthUnix{Machine: host, UID: uint32(os.Geteuid()), GID: uint32(os.Getegid())}
	}
	if cfg.Export == "" {
		cfg.Export = "/"
	}
	res := Result{Server: cfg.Server, Workload: cfg.Workload, BS: cfg.BS, QD: cfg.QD, Conns: cfg.Conns,
		Size: cfg.Size, Stable: StableName(cfg.Stable)}
	if cfg.Workload == Metadata {
		res.Size = 0
	}
	// The whole run, with setup and a stuck server, is bounded.
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration+10*time.Minute)
	defer cancel()

	root, err := mount(ctx, &cfg)
	if err != nil {
		return res, err
	}
	r := &run{cfg: cfg, pat: NewPattern(cfg.Seed)}
	for range cfg.Conns {
		c, err := nfsfs.Dial(ctx, cfg.Server, nfsfs.ClientOptions{Cred: cfg.Cred, MaxReply: 17 << 20})
		if err != nil {
			r.close()
			return res, fmt.Errorf("connecting to %s: %w", cfg.Server, err)
		}
		r.clients = append(r.clients, nfsfs.NewNFS3Client(c))
	}
	defer r.close()
	c0 := r.clients[0]

	if cfg.Workload != Metadata {
		fi, err := c0.FSInfo(ctx, root)
		if err != nil {
			return res, err
		}
		if fi.Wtmax != 0 && uint32(cfg.BS) > fi.Wtmax || fi.Rtmax != 0 && uint32(cfg.BS) > fi.Rtmax {
			return res, fmt.Errorf("bs %d is over the server's largest transfer (read %d, write %d bytes)", cfg.BS, fi.Rtmax, fi.Wtmax)
		}
	}
	r.dir, err = lookupOrMkdir(ctx, c0, root, WorkDir)
	if err != nil {
		return res, err
	}

	if cfg.Workload == Metadata {
		err = r.metadata(ctx, &res)
	} else {
		err = r.data(ctx, &res)
	}
	res.Errors = r.errors.Load()
	if r.firstErr != nil {
		res.FirstError = r.firstErr.Error()
	}
	res.MBPerS = Rate(float64(res.Bytes), secs(res.Seconds)) / 1e6
	res.IOPS = Rate(float64(res.Ops), secs(res.Seconds))
	return res, err
}

func secs(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func (r *run) close() {
	for _, c := range r.clients {
		c.RPC().Close()
	}
}

// mount finds the MOUNT port and returns the export's root handle.
func mount(ctx context.Context, cfg *Config) ([]byte, error) {
	host, nfsPort, err := net.SplitHostPort(cfg.Server)
	if err != nil {
		return nil, fmt.Errorf("server %q: %w", cfg.Server, err)
	}
	port := ""
	if cfg.MountPort > 0 {
		port = strconv.Itoa(cfg.MountPort)
	} else if p := portmapMount(ctx, host, nfsPort); p != 0 {
		port = strconv.Itoa(int(p))
	} else {
		port = nfsPort // dstore serves MOUNT on the NFS port
	}
	addr := net.JoinHostPort(host, port)
	mc, err := nfsfs.Dial(ctx, addr, nfsfs.ClientOptions{Cred: cfg.Cred})
	if err != nil {
		return nil, fmt.Errorf("connecting to MOUNT at %s: %w", addr, err)
	}
	defer mc.Close()
	fh, err := nfsfs.MountPath(ctx, mc, cfg.Export)
	if err != nil {
		return nil, fmt.Errorf("mounting %s from %s: %w", cfg.Export, addr, err)
	}
	return fh, nil
}

// portmapMount asks the portmapper on host:111 for MOUNT v3 over TCP; 0
// when there is no portmapper or it does not know. The answer counts only
// when the portmapper also names nfsPort for NFS v3: otherwise its MOUNT is
// another server's (one that registered while this one did not).
func portmapMount(ctx context.Context, host, nfsPort string) uint32 {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	pc, err := nfsfs.Dial(ctx, net.JoinHostPort(host, "111"), nfsfs.ClientOptions{})
	if err != nil {
		return 0
	}
	defer pc.Close()
	np, err := nfsfs.PortmapGetport(ctx, pc, nfsfs.ProgNFS, 3, nfsfs.IPProtoTCP)
	if err != nil || strconv.Itoa(int(np)) != nfsPort {
		return 0
	}
	p, err := nfsfs.PortmapGetport(ctx, pc, nfsfs.ProgMNT, 3, nfsfs.IPProtoTCP)
	if err != nil {
		return 0
	}
	return p
}

func isStatus(err error, st uint32) bool {
	var ne *nfsfs.NFS3Error
	return errors.As(err, &ne) && ne.Status == st
}

func lookupOrMkdir(ctx context.Context, c *nfsfs.NFS3Client, dir []byte, name string) ([]byte, error) {
	fh, _, err := c.Lookup(ctx, dir, name)
	if err == nil {
		return fh, nil
	}
	if !isStatus(err, nfsfs.NFS3ErrNoent) {
		return nil, fmt.Errorf("looking up %s: %w", name, err)
	}
	fh, err = c.Mkdir(ctx, dir, name, 0o777)
	if isStatus(err, nfsfs.NFS3ErrExist) { // another run made it meanwhile
		fh, _, err = c.Lookup(ctx, dir, name)
	}
	if err != nil {
		return nil, fmt.Errorf("making %s: %w", name, err)
	}
	return fh, nil
}

func uniqueName(prefix string) string {
	return fmt.Sprintf("%s-%d-%08x", prefix, os.Getpid(), rand.Uint32())
}

// workers runs fn on QD goroutines per connection, each with its worker
// index and connection, and returns the merged latencies and the first
// fatal error.
func (r *run) workers(fn func(w int, c *nfsfs.NFS3Client, h *Histogram) error) (*Histogram, error) {
	n := r.cfg.QD * r.cfg.Conns
	hists := make([]Histogram, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for w := range n {
		c := r.clients[w%len(r.clients)]
		wg.Go(func() {
			errs[w] = fn(w, c, &hists[w])
			if errs[w] != nil {
				r.stop.Store(true)
			}
		})
	}
	wg.Wait()
	var total Histogram
	for i := range hists {
		total.Merge(&hists[i])
	}
	return &total, errors.Join(errs...)
}

func (r *run) markWritten(block int64) {
	r.written[block/64].Or(1 << (block % 64))
}

func (r *run) isWritten(block int64) bool {
	return r.written[block/64].Load()&(1<<(block%64)) != 0
}

// data runs the READ and WRITE workloads on one file.
func (r *run) data(ctx context.Context, res *Result) error {
	cfg := &r.cfg
	c0 := r.clients[0]
	bs := int64(cfg.BS)
	r.blocks = cfg.Size / bs
	r.written = make([]atomic.Uint64, (r.blocks+63)/64)
	size := r.blocks * bs

	name := cfg.File
	if name == "" {
		name = uniqueName(cfg.Workload)
	}
	reads := cfg.Workload == SeqRead || cfg.Workload == RandRead || cfg.Workload == Mixed
	fill := cfg.Workload != SeqWrite
	var err error
	if cfg.Keep && reads {
		// Reuse a kept file that already holds the pattern.
		var a nfsfs.NFS3Attr
		r.fh, a, err = c0.Lookup(ctx, r.dir, name)
		if err == nil && a.Size >= uint64(size) && r.sample(ctx, size) == nil {
			r.logf("reusing %s/%s", WorkDir, name)
			fill = false
			for b := range r.blocks {
				r.markWritten(b)
			}
		} else {
			r.fh = nil
		}
	}
	if r.fh == nil {
		r.fh, err = c0.Create(ctx, r.dir, name, 0o644, false)
		if err != nil {
			return fmt.Errorf("creating %s/%s: %w", WorkDir, name, err)
		}
	}
	if !cfg.Keep {
		defer func() {
			cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := c0.Remove(cctx, r.dir, name); err != nil {
				r.logf("removing %s/%s: %v", WorkDir, name, err)
			}
		}()
	}
	if fill {
		r.logf("filling %s/%s with %d bytes", WorkDir, name, size)
		t0 := time.Now()
		if err := r.fill(ctx, size); err != nil {
			return err
		}
		res.FillSeconds = time.Since(t0).Seconds()
	}
	r.gen.Store(1)

	start := time.Now()
	deadline := start.Add(cfg.Duration)
	var ops, nbytes atomic.Int64
	wrote := atomic.Bool{}
	hist, err := r.workers(func(w int, c *nfsfs.NFS3Client, h *Histogram) error {
		buf := make([]byte, bs)
		rng := rand.New(rand.NewPCG(cfg.Seed, uint64(w)))
		for !r.stop.Load() && time.Now().Before(deadline) {
			var block int64
			switch cfg.Workload {
			case SeqWrite, SeqRead:
				block = (r.next.Add(1) - 1) % r.blocks
			default:
				block = rng.Int64N(r.blocks)
			}
			off := uint64(block * bs)
			write := cfg.Workload == SeqWrite || cfg.Workload == RandWrite ||
				cfg.Workload == Mixed && rng.Float64() >= MixedReads
			t0 := time.Now()
			if write {
				gen := r.gen.Add(1)
				r.pat.Fill(buf, off, gen)
				t0 = time.Now()
				n, _, _, err := c.Write(ctx, r.fh, off, buf, cfg.Stable)
				h.Record(time.Since(t0))
				if err != nil {
					if fatal(err) {
						return err
					}
					r.fail(err)
					continue
				}
				if int64(n) != bs {
					r.fail(fmt.Errorf("WRITE of %d bytes at %d: the server took %d", bs, off, n))
					continue
				}
				wrote.Store(true)
				r.markWritten(block)
			} else {
				n, _, err := c.Read(ctx, r.fh, off, buf)
				h.Record(time.Since(t0))
				if err != nil {
					if fatal(err) {
						return err
					}
					r.fail(err)
					continue
				}
				if int64(n) != bs {
					r.fail(fmt.Errorf("READ of %d bytes at %d: %d bytes", bs, off, n))
					continue
				}
				if cfg.Verify && r.isWritten(block) {
					if err := r.pat.Check(buf, off); err != nil {
						r.fail(err)
					} else {
						r.verified.Add(bs)
					}
				}
			}
			ops.Add(1)
			nbytes.Add(bs)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if wrote.Load() && cfg.Stable != nfsfs.StableFileSync {
		t0 := time.Now()
		if _, err := c0.Commit(ctx, r.fh, 0, 0); err != nil {
			return fmt.Errorf("final COMMIT: %w", err)
		}
		res.CommitUs = us(time.Since(t0))
	}
	res.Seconds = time.Since(start).Seconds()
	res.Ops, res.Bytes = ops.Load(), nbytes.Load()
	setLatency(res, hist)
	if cfg.Verify && wrote.Load() {
		if err := r.verifyAll(ctx); err != nil {
			return err
		}
	}
	res.Verified = r.verified.Load()
	return nil
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func setLatency(res *Result, h *Histogram) {
	res.MeanUs = us(h.Mean())
	res.P50Us = us(h.Quantile(0.5))
	res.P99Us = us(h.Quantile(0.99))
	res.P999Us = us(h.Quantile(0.999))
	res.MaxUs = us(h.Max())
}

// sample checks a few blocks of a kept file against the pattern.
func (r *run) sample(ctx context.Context, size int64) error {
	buf := make([]byte, Unit)
	for _, off := range []int64{0, size / 2 / Unit * Unit, size - Unit} {
		n, _, err := r.clients[0].Read(ctx, r.fh, uint64(off), buf)
		if err != nil {
			return err
		}
		if err := r.pat.Check(buf[:n], uint64(off)); err != nil || n != Unit {
			return fmt.Errorf("kept file does not hold the pattern at %d", off)
		}
	}
	return nil
}

// fill writes the whole file (generation 0) with 1 MiB unstable writes, 16
// outstanding per connection, then commits it.
func (r *run) fill(ctx context.Context, size int64) error {
	chunk := int64(1 << 20)
	if bs := int64(r.cfg.BS); bs > chunk {
		chunk = bs
	}
	chunk = chunk / int64(r.cfg.BS) * int64(r.cfg.BS)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, 16*len(r.clients))
	for w := range errs {
		c := r.clients[w%len(r.clients)]
		wg.Go(func() {
			buf := make([]byte, chunk)
			for {
				off := (next.Add(1) - 1) * chunk
				if off >= size {
					return
				}
				b := buf[:min(chunk, size-off)]
				r.pat.Fill(b, uint64(off), 0)
				n, _, _, err := c.Write(ctx, r.fh, uint64(off), b, nfsfs.StableUnstable)
				if err == nil && int(n) != len(b) {
					err = fmt.Errorf("WRITE of %d bytes at %d: the server took %d", len(b), off, n)
				}
				if err != nil {
					errs[w] = fmt.Errorf("filling the test file: %w", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if _, err := r.clients[0].Commit(ctx, r.fh, 0, 0); err != nil {
		return fmt.Errorf("filling the test file: %w", err)
	}
	for b := range r.blocks {
		r.markWritten(b)
	}
	return nil
}

// verifyAll reads back every block written and checks it. Blocks that do
// not verify are counted as errors.
func (r *run) verifyAll(ctx context.Context) error {
	var next atomic.Int64
	r.stop.Store(false)
	_, err := r.workers(func(_ int, c *nfsfs.NFS3Client, _ *Histogram) error {
		buf := make([]byte, r.cfg.BS)
		for {
			b := next.Add(1) - 1
			if b >= r.blocks {
				return nil
			}
			if !r.isWritten(b) {
				continue
			}
			off := uint64(b * int64(r.cfg.BS))
			n, _, err := c.Read(ctx, r.fh, off, buf)
			if err != nil {
				return fmt.Errorf("verifying: %w", err)
			}
			if err := r.pat.Check(buf[:n], off); err != nil || n != len(buf) {
				if err == nil {
					err = fmt.Errorf("verify: READ at %d returned %d of %d bytes", off, n, len(buf))
				}
				r.fail(err)
				continue
			}
			r.verified.Add(int64(n))
		}
	})
	return err
}

// metadata creates, stats and removes small files: each worker, in a
// directory of the run's own, creates MetaBatch files (writing BS bytes to
// each), then GETATTRs and LOOKUPs each, then removes them, until the time
// is up. Every call is an op.
func (r *run) metadata(ctx context.Context, res *Result) error {
	cfg := &r.cfg
	c0 := r.clients[0]
	dname := cfg.File
	if dname == "" {
		dname = uniqueName("meta")
	}
	dir, err := c0.Mkdir(ctx, r.dir, dname, 0o777)
	if err != nil {
		return fmt.Errorf("making %s/%s: %w", WorkDir, dname, err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c0.Rmdir(cctx, r.dir, dname); err != nil {
			r.logf("removing %s/%s: %v", WorkDir, dname, err)
		}
	}()
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	var ops, nbytes, files atomic.Int64
	hist, err := r.workers(func(w int, c *nfsfs.NFS3Client, h *Histogram) error {
		data := make([]byte, (cfg.BS+Unit-1)/Unit*Unit)
		fhs := make([][]byte, MetaBatch)
		names := make([]string, MetaBatch)
		// timed runs one call and sorts its error: nil when it
		// succeeded, errSkip when it was counted, or a fatal error.
		timed := func(call func() error) error {
			t0 := time.Now()
			err := call()
			h.Record(time.Since(t0))
			if err == nil {
				ops.Add(1)
				return nil
			}
			if fatal(err) {
				return err
			}
			r.fail(err)
			return errSkip
		}
		for round := 0; !r.stop.Load() && time.Now().Before(deadline); round++ {
			for i := range MetaBatch {
				names[i] = fmt.Sprintf("f%d-%d-%d", w, round, i)
				fhs[i] = nil
				err := timed(func() (err error) {
					fhs[i], err = c.Create(ctx, dir, names[i], 0o644, true)
					return err
				})
				if err == errSkip {
					continue
				} else if err != nil {
					return err
				}
				if cfg.BS > 0 {
					r.pat.Fill(data, 0, uint64(w)<<32|uint64(round))
					err := timed(func() error {
						n, _, _, err := c.Write(ctx, fhs[i], 0, data[:cfg.BS], cfg.Stable)
						if err == nil && int(n) != cfg.BS {
							err = fmt.Errorf("WRITE of %d bytes: the server took %d", cfg.BS, n)
						}
						return err
					})
					if err == nil {
						nbytes.Add(int64(cfg.BS))
					} else if err != errSkip {
						return err
					}
				}
			}
			for i := range MetaBatch {
				if fhs[i] == nil {
					continue
				}
				var a nfsfs.NFS3Attr
				err := timed(func() (err error) {
					a, err = c.Getattr(ctx, fhs[i])
					return err
				})
				if err != nil && err != errSkip {
					return err
				}
				if err == nil && (a.Type != nfsfs.NF3Reg || a.Size != uint64(cfg.BS)) {
					r.fail(fmt.Errorf("GETATTR of %s: type %d size %d, want a file of %d bytes", names[i], a.Type, a.Size, cfg.BS))
				}
				err = timed(func() error {
					_, _, err := c.Lookup(ctx, dir, names[i])
					return err
				})
				if err != nil && err != errSkip {
					return err
				}
			}
			for i := range MetaBatch {
				if fhs[i] == nil {
					continue
				}
				err := timed(func() error { return c.Remove(ctx, dir, names[i]) })
				if err == nil {
					files.Add(1)
				} else if err != errSkip {
					return err
				}
			}
		}
		return nil
	})
	res.Seconds = time.Since(start).Seconds()
	res.Ops, res.Bytes, res.Files = ops.Load(), nbytes.Load(), files.Load()
	setLatency(res, hist)
	return err
}

var errSkip = errors.New("counted")

// Command ox measures dstore's object exchange (package objex) for
// bench/run.sh, next to restic, both against the same S3 server (a
// versitygw on 127.0.0.1), each in buckets of its own:
//
//   - export full: a fresh datastore holds the image as one file, snapshot
//     of it; the time of Export of that snapshot to an s3:// target until
//     its job is done. restic: `restic backup` of the image file to a fresh
//     repository in a bucket.
//   - export incremental: 1% of the image's 4 KiB blocks (a random set)
//     rewritten with random data, a new snapshot, and its export to the
//     same target (only what the target lacks is sent). restic: the same
//     blocks rewritten in its file and a second `restic backup`.
//   - first read: a second, fresh datastore joins the same target (same
//     key) and imports the incremental snapshot as a file; the time from
//     the start of Import to the end of the file's first 64 KiB read. The
//     thickener (background copy) is held back with a bandwidth of 1 B/s, so
//     every block read is a demand fetch. restic has no instant clone: its
//     figure is `restic restore latest` (with a fresh cache, as on another
//     machine) until it returns, then the first 64 KiB of the restored file.
//   - whole read: the same, to the end of the file (dstore: readers of
//     1 MiB, 4 at a time, from the start of Import; restic: restore, then
//     reading the restored file).
//
// Every byte read back is compared with the image. Stored bytes are the
// sum of the sizes of the objects in the bucket (listed over S3), the same
// measure for both; for the incremental case, what the second export added.
//
// Output: one results.jsonl line per tool, case and run (see bench/report).
//
//	ox -image bookworm-minbase.ext4 -size 64M -endpoint http://127.0.0.1:7070 \
//	    -access K -secret S -work /scratch/ox -runs 3
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dstore/dstore/blockstore"
	"github.com/dstore/dstore/objex"
	"github.com/dstore/dstore/snapstore"
)

const (
	block     = 4096     // the unit of the 1% change
	firstRead = 64 << 10 // the first read of a clone
	readSize  = 1 << 20  // each read of the whole-clone pass
	readers   = 4        // reads of the whole-clone pass in flight
	fileName  = "disk.img"
)

// config is what one invocation measures.
type config struct {
	image    string
	size     int64 // bytes of the image to use (a prefix); 0: all of it
	endpoint string
	access   string
	secret   string
	work     string
	runs     int
	change   float64
	restic   string // "" skips restic
	// url, when set, replaces the S3 targets of dstore with directories
	// under it (file:///dir, in tests); stored bytes are then not measured.
	url string
}

func main() {
	var c config
	var size string
	flag.StringVar(&c.image, "image", "", "the image (any file)")
	flag.StringVar(&size, "size", "0", "use only this much of the image (K, M, G: powers of 1024; 0: all)")
	flag.StringVar(&c.endpoint, "endpoint", "", "the S3 server, e.g. http://127.0.0.1:7070")
	flag.StringVar(&c.access, "access", os.Getenv("AWS_ACCESS_KEY_ID"), "S3 access key")
	flag.StringVar(&c.secret, "secret", os.Getenv("AWS_SECRET_ACCESS_KEY"), "S3 secret key")
	flag.StringVar(&c.work, "work", "", "scratch directory (made, then removed)")
	flag.IntVar(&c.runs, "runs", 3, "runs")
	flag.Float64Var(&c.change, "change", 0.01, "share of the 4 KiB blocks the incremental case rewrites")
	flag.StringVar(&c.restic, "restic", "restic", "the restic binary (empty: dstore only)")
	flag.Parse()
	var err error
	if c.size, err = parseSize(size); err != nil {
		fmt.Fprintf(os.Stderr, "ox: -size: %v\n", err)
		os.Exit(2)
	}
	if err := run(context.Background(), c, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "ox: %v\n", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, "ox: "+format+"\n", args...) }

func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult = 1 << 10
	case strings.HasSuffix(s, "M"):
		mult = 1 << 20
	case strings.HasSuffix(s, "G"):
		mult = 1 << 30
	}
	if mult > 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q: want a number with K, M or G", s)
	}
	return n * mult, nil
}

// images returns the image (or its prefix, in whole 4 KiB blocks) and the
// copy with the run's share of blocks rewritten, and those blocks.
func images(path string, size int64, change float64, seed uint64) (base, changed []byte, blocks []int, err error) {
	base, err = os.ReadFile(path)
	if err != nil {
		return nil, nil, nil, err
	}
	if size > 0 && size < int64(len(base)) {
		base = base[:size]
	}
	base = base[:len(base)/block*block]
	n := len(base) / block
	if n == 0 {
		return nil, nil, nil, fmt.Errorf("%s: smaller than one block", path)
	}
	k := max(1, int(float64(n)*change))
	rng := mrand.New(mrand.NewPCG(seed, 0x0c5a11))
	blocks = rng.Perm(n)[:k]
	changed = bytes.Clone(base)
	for _, b := range blocks {
		p := changed[b*block : (b+1)*block]
		for j := 0; j < block; j += 8 {
			v := rng.Uint64()
			for i := range 8 {
				p[j+i] = byte(v >> (8 * i))
			}
		}
	}
	return base, changed, blocks, nil
}

// emitter writes results.jsonl lines.
type emitter struct {
	w   io.Writer
	run int
}

func (e *emitter) emit(tool, cas string, res map[string]any) error {
	b, err := json.Marshal(map[string]any{"section": "ox", "server": tool, "case": cas, "run": e.run, "result": res})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(e.w, "%s\n", b)
	return err
}

func run(ctx context.Context, c config, w io.Writer) error {
	if c.image == "" || c.work == "" || c.runs < 1 || c.change <= 0 || c.change > 1 {
		return errors.New("want -image, -work, -runs >= 1 and 0 < -change <= 1")
	}
	if c.url == "" {
		if c.endpoint == "" || c.access == "" || c.secret == "" {
			return errors.New("want -endpoint, -access and -secret")
		}
		if err := waitHealthy(ctx, c.endpoint); err != nil {
			return err
		}
	}
	if c.restic != "" {
		if _, err := exec.LookPath(c.restic); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(c.work); err != nil {
		return err
	}
	if err := os.MkdirAll(c.work, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(c.work)
	stamp := time.Now().Unix()
	for r := 1; r <= c.runs; r++ {
		base, changed, blocks, err := images(c.image, c.size, c.change, uint64(r))
		if err != nil {
			return err
		}
		e := &emitter{w: w, run: r}
		tools := []string{"dstore", "restic"}
		if r%2 == 0 {
			// Alternate which goes first, so neither always meets the
			// other's leftovers (page cache, the server's state).
			tools = []string{"restic", "dstore"}
		}
		for _, tool := range tools {
			dir := filepath.Join(c.work, fmt.Sprintf("%s-%d", tool, r))
			bucket := fmt.Sprintf("bench-ox-%s-%d-%d", tool, stamp, r)
			switch tool {
			case "dstore":
				logf("dstore, run %d: %s of %s, %d blocks changed", r, iec(int64(len(base))), filepath.Base(c.image), len(blocks))
				err = viaDstore(ctx, c, dir, bucket, base, changed, blocks, e)
			case "restic":
				if c.restic == "" {
					continue
				}
				logf("restic, run %d", r)
				err = viaRestic(ctx, c, dir, bucket, base, changed, blocks, e)
			}
			if err != nil {
				return fmt.Errorf("%s, run %d: %w", tool, r, err)
			}
			if err := os.RemoveAll(dir); err != nil {
				return err
			}
		}
	}
	return nil
}

func iec(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d B", n)
}

// waitHealthy waits until versitygw answers its health check.
func waitHealthy(ctx context.Context, endpoint string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(endpoint, "/")+"/health", nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the S3 server at %s is not healthy after 20 s (last: %v)", endpoint, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c config) storeOptions() objex.StoreOptions {
	return objex.StoreOptions{Endpoint: c.endpoint, Region: "us-east-1", AccessKey: c.access, SecretKey: c.secret}
}

// bucketBytes sums the sizes of the objects in a bucket.
func bucketBytes(ctx context.Context, c config, bucket string) (int64, error) {
	st, err := objex.OpenStore(ctx, "s3://"+bucket, c.storeOptions())
	if err != nil {
		return 0, err
	}
	var total int64
	err = st.List(ctx, "", func(o objex.ObjectInfo) error {
		total += o.Size
		return nil
	})
	return total, err
}

// node is a datastore with its OX manager.
type node struct {
	ds *snapstore.Datastore
	m  *objex.Manager
}

func openNode(dir string) (*node, error) {
	if err := blockstore.Init(dir, blockstore.InitOptions{}); err != nil {
		return nil, err
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	m, err := objex.Open(objex.Config{Dir: filepath.Join(dir, "ox"), Logger: logger})
	if err != nil {
		return nil, err
	}
	ds, err := snapstore.Open(dir, blockstore.Options{Logger: logger, Remote: m.Remote})
	if err != nil {
		m.Close()
		return nil, err
	}
	if err := m.Attach(ds); err != nil {
		m.Close()
		ds.Close()
		return nil, err
	}
	return &node{ds: ds, m: m}, nil
}

// close closes the manager, then the datastore.
func (n *node) close() error {
	return errors.Join(n.m.Close(), n.ds.Close())
}

func (n *node) export(ctx context.Context, seq uint64, name string) error {
	j, err := n.m.Export(ctx, seq, "bench", objex.ExportOptions{Name: name})
	if err != nil {
		return err
	}
	return j.Wait(ctx)
}

func keyFile(dir string) (string, error) {
	p := filepath.Join(dir, "ox.key")
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return "", err
	}
	return p, os.WriteFile(p, k, 0o600)
}

func viaDstore(ctx context.Context, c config, dir, bucket string, base, changed []byte, blocks []int, e *emitter) (err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	key, err := keyFile(dir)
	if err != nil {
		return err
	}
	spec := objex.TargetSpec{Name: "bench", URL: "s3://" + bucket + "/ox", Store: c.storeOptions(), KeyFile: key}
	if c.url != "" {
		spec.URL, spec.Store = c.url+"/"+bucket, objex.StoreOptions{}
	}
	stored := func() (int64, error) {
		if c.url != "" {
			return 0, nil
		}
		return bucketBytes(ctx, c, bucket)
	}
	imgBytes := float64(len(base))

	// The exporting datastore.
	a, err := openNode(filepath.Join(dir, "a"))
	if err != nil {
		return err
	}
	defer func() {
		if a != nil {
			err = errors.Join(err, a.close())
		}
	}()
	ns := a.ds.NS
	f, _, err := ns.Create(snapstore.RootIno, fileName, snapstore.Unchecked, [8]byte{}, snapstore.NewAttr{Mode: 0o644})
	if err != nil {
		return err
	}
	for off := 0; off < len(base); off += 1 << 20 {
		if _, err := ns.Write(f.Ino, base[off:min(off+1<<20, len(base))], int64(off), false); err != nil {
			return err
		}
	}
	if err := ns.Commit(f.Ino); err != nil {
		return err
	}
	if _, err := ns.CreateGroup("bench", snapstore.GroupSpec{Match: []string{fileName}}); err != nil {
		return err
	}
	snap, err := ns.CreateSnapshot("bench", "full", false)
	if err != nil {
		return err
	}
	// Destage now, so no background work overlaps the export.
	if err := a.ds.Blocks.Settle(); err != nil {
		return err
	}
	if _, err := a.m.AddTarget(ctx, spec); err != nil {
		return err
	}
	t0 := time.Now()
	if err := a.export(ctx, snap.Seq, "full"); err != nil {
		return fmt.Errorf("full export: %w", err)
	}
	secs := time.Since(t0).Seconds()
	up1 := a.m.Stats().BytesUploaded
	st1, err := stored()
	if err != nil {
		return err
	}
	logf("dstore: full export %.2f s, %s uploaded", secs, iec(up1))
	if err := e.emit("dstore", "export-full", map[string]any{"seconds": secs, "image_bytes": imgBytes,
		"uploaded_bytes": float64(up1), "stored_bytes": float64(st1)}); err != nil {
		return err
	}

	for _, b := range blocks {
		if _, err := ns.Write(f.Ino, changed[b*block:(b+1)*block], int64(b)*block, false); err != nil {
			return err
		}
	}
	if err := ns.Commit(f.Ino); err != nil {
		return err
	}
	snap, err = ns.CreateSnapshot("bench", "incremental", false)
	if err != nil {
		return err
	}
	if err := a.ds.Blocks.Settle(); err != nil {
		return err
	}
	t0 = time.Now()
	if err := a.export(ctx, snap.Seq, "incremental"); err != nil {
		return fmt.Errorf("incremental export: %w", err)
	}
	secs = time.Since(t0).Seconds()
	up2 := a.m.Stats().BytesUploaded - up1
	st2, err := stored()
	if err != nil {
		return err
	}
	logf("dstore: incremental export %.2f s, %s uploaded", secs, iec(up2))
	if err := e.emit("dstore", "export-incremental", map[string]any{"seconds": secs, "image_bytes": imgBytes,
		"changed_bytes": float64(len(blocks) * block), "uploaded_bytes": float64(up2), "stored_bytes": float64(st2 - st1)}); err != nil {
		return err
	}
	err = a.close()
	a = nil
	if err != nil {
		return err
	}

	// The importing datastore: another, fresh one.
	b, err := openNode(filepath.Join(dir, "b"))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, b.close()) }()
	if _, err := b.m.AddTarget(ctx, spec); err != nil {
		return err
	}
	// Hold the thickener back: every read below is a demand fetch.
	if err := b.m.SetBandwidth("bench", 1); err != nil {
		return err
	}
	t0 = time.Now()
	attr, _, err := b.m.Import(ctx, "bench", "incremental", "", fileName)
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	importSecs := time.Since(t0).Seconds()
	if attr.Size != uint64(len(changed)) {
		return fmt.Errorf("the imported file has %d bytes, want %d", attr.Size, len(changed))
	}
	buf := make([]byte, firstRead)
	n, _, err := b.ds.NS.Read(attr.Ino, buf, 0)
	if err != nil {
		return fmt.Errorf("first read: %w", err)
	}
	firstSecs := time.Since(t0).Seconds()
	if want := changed[:min(firstRead, len(changed))]; !bytes.Equal(buf[:n], want) {
		return errors.New("the first read of the imported file does not match the image")
	}
	fetched := b.m.Stats().RemoteBytesFetched
	logf("dstore: import %.3f s, first 64 KiB read %.3f s after the import started", importSecs, firstSecs)
	if err := e.emit("dstore", "first-read", map[string]any{"seconds": firstSecs, "import_seconds": importSecs,
		"image_bytes": imgBytes, "fetched_bytes": float64(fetched)}); err != nil {
		return err
	}
	if err := readAll(changed, func(p []byte, off int64) (int, error) {
		n, _, err := b.ds.NS.Read(attr.Ino, p, off)
		return n, err
	}); err != nil {
		return fmt.Errorf("reading the imported file: %w", err)
	}
	wholeSecs := time.Since(t0).Seconds()
	fetched = b.m.Stats().RemoteBytesFetched
	logf("dstore: whole clone read %.2f s after the import started, %s fetched", wholeSecs, iec(fetched))
	return e.emit("dstore", "whole-read", map[string]any{"seconds": wholeSecs, "image_bytes": imgBytes,
		"fetched_bytes": float64(fetched)})
}

// readAll reads a file of len(want) bytes through read, readers at a
// time, readSize bytes a read, and compares it with want.
func readAll(want []byte, read func(p []byte, off int64) (int, error)) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, readers)
	for i := range errs {
		wg.Go(func() {
			buf := make([]byte, readSize)
			for {
				off := (next.Add(1) - 1) * readSize
				if off >= int64(len(want)) {
					return
				}
				w := want[off:min(off+readSize, int64(len(want)))]
				for got := 0; got < len(w); {
					n, err := read(buf[got:len(w)], off+int64(got))
					if err != nil {
						errs[i] = err
						return
					}
					if n == 0 {
						errs[i] = fmt.Errorf("at %d: %w", off+int64(got), io.ErrUnexpectedEOF)
						return
					}
					got += n
				}
				if !bytes.Equal(buf[:len(w)], w) {
					errs[i] = fmt.Errorf("bytes %d..%d do not match the image", off, off+int64(len(w)))
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// restic runs restic with env added; it returns the wall time.
func restic(ctx context.Context, bin string, env []string, args ...string) (float64, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("restic %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return time.Since(t0).Seconds(), nil
}

func viaRestic(ctx context.Context, c config, dir, bucket string, base, changed []byte, blocks []int, e *emitter) error {
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return err
	}
	img := filepath.Join(src, fileName)
	if err := os.WriteFile(img, base, 0o644); err != nil {
		return err
	}
	repo := "s3:" + strings.TrimSuffix(c.endpoint, "/") + "/" + bucket
	env := []string{"RESTIC_REPOSITORY=" + repo, "RESTIC_PASSWORD=bench",
		"AWS_ACCESS_KEY_ID=" + c.access, "AWS_SECRET_ACCESS_KEY=" + c.secret, "AWS_DEFAULT_REGION=us-east-1",
		"RESTIC_CACHE_DIR=" + filepath.Join(dir, "cache")}
	imgBytes := float64(len(base))
	if _, err := restic(ctx, c.restic, env, "init"); err != nil {
		return err
	}
	st0, err := bucketBytes(ctx, c, bucket)
	if err != nil {
		return err
	}
	secs, err := restic(ctx, c.restic, env, "backup", "--quiet", src)
	if err != nil {
		return err
	}
	st1, err := bucketBytes(ctx, c, bucket)
	if err != nil {
		return err
	}
	logf("restic: first backup %.2f s, %s stored", secs, iec(st1-st0))
	if err := e.emit("restic", "export-full", map[string]any{"seconds": secs, "image_bytes": imgBytes,
		"stored_bytes": float64(st1 - st0)}); err != nil {
		return err
	}

	// The same blocks rewritten in place, as a VM would.
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	for _, b := range blocks {
		if _, err := f.WriteAt(changed[b*block:(b+1)*block], int64(b)*block); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	secs, err = restic(ctx, c.restic, env, "backup", "--quiet", src)
	if err != nil {
		return err
	}
	st2, err := bucketBytes(ctx, c, bucket)
	if err != nil {
		return err
	}
	logf("restic: second backup %.2f s, %s stored", secs, iec(st2-st1))
	if err := e.emit("restic", "export-incremental", map[string]any{"seconds": secs, "image_bytes": imgBytes,
		"changed_bytes": float64(len(blocks) * block), "stored_bytes": float64(st2 - st1)}); err != nil {
		return err
	}

	// Restore with a fresh cache, as on another machine.
	target := filepath.Join(dir, "restore")
	renv := append(env[:len(env):len(env)], "RESTIC_CACHE_DIR="+filepath.Join(dir, "cache2"))
	t0 := time.Now()
	restoreSecs, err := restic(ctx, c.restic, renv, "restore", "latest", "--target", target)
	if err != nil {
		return err
	}
	rf, err := os.Open(filepath.Join(target, img))
	if err != nil {
		return fmt.Errorf("the restored file: %w", err)
	}
	defer rf.Close()
	buf := make([]byte, firstRead)
	n, err := io.ReadFull(rf, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return err
	}
	firstSecs := time.Since(t0).Seconds()
	if !bytes.Equal(buf[:n], changed[:min(firstRead, len(changed))]) {
		return errors.New("the first read of the restored file does not match the image")
	}
	logf("restic: restore %.2f s", restoreSecs)
	if err := e.emit("restic", "first-read", map[string]any{"seconds": firstSecs, "restore_seconds": restoreSecs,
		"image_bytes": imgBytes}); err != nil {
		return err
	}
	if err := readAll(changed, rf.ReadAt); err != nil {
		return fmt.Errorf("reading the restored file: %w", err)
	}
	return e.emit("restic", "whole-read", map[string]any{"seconds": time.Since(t0).Seconds(),
		"restore_seconds": restoreSecs, "image_bytes": imgBytes})
}

// Command ingest measures ingest and dedupe for bench/run.sh: copies of an
// OS image, each with 5% of its 4 KiB blocks rewritten with random data (a
// different set per copy), stored by dstore (written as files over NFS to
// a fresh `dstore serve`), by `restic backup` and by `borg create` (lz4) to
// fresh local repositories. For each it reports the bytes the store takes
// on disk and the wall time.
//
// Output: one results.jsonl line per tool and run (see bench/report).
//
//	ingest -image bookworm-minbase.ext4 -copies 20 -work /scratch/ingest -runs 3 -dstore bin/dstore
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dstore/dstore/nfsfs"
)

const (
	block   = 4096
	rewrite = 0.05 // share of each copy's blocks rewritten
)

func main() {
	image := flag.String("image", "", "the OS image")
	copies := flag.Int("copies", 20, "copies to make and store")
	work := flag.String("work", "", "scratch directory (made, then removed)")
	runs := flag.Int("runs", 3, "runs per tool")
	dstore := flag.String("dstore", "dstore", "the dstore binary")
	port := flag.Int("port", 2050, "port for the dstore serve it starts on 127.0.0.1")
	flag.Parse()
	if err := run(*image, *copies, *work, *runs, *dstore, *port, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "ingest: %v\n", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, "ingest: "+format+"\n", args...) }

func run(image string, copies int, work string, runs int, dstore string, port int, w io.Writer) error {
	if image == "" || work == "" || copies < 1 || runs < 1 {
		return errors.New("want -image, -work, -copies >= 1 and -runs >= 1")
	}
	for _, t := range []string{"restic", "borg", dstore} {
		if _, err := exec.LookPath(t); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(work); err != nil {
		return err
	}
	src := filepath.Join(work, "copies")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(work)
	logf("making %d copies of %s", copies, image)
	files, logical, err := makeCopies(image, src, copies)
	if err != nil {
		return err
	}
	cas := fmt.Sprintf("%d copies", copies)
	for r := 1; r <= runs; r++ {
		for _, tool := range []string{"dstore", "restic", "borg"} {
			repo := filepath.Join(work, tool)
			if err := os.RemoveAll(repo); err != nil {
				return err
			}
			logf("%s, run %d", tool, r)
			var res map[string]any
			switch tool {
			case "dstore":
				res, err = viaDstore(dstore, port, repo, files)
			case "restic":
				res, err = viaRestic(work, repo, src)
			case "borg":
				res, err = viaBorg(work, repo, src)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", tool, err)
			}
			if res["stored_bytes"], err = diskUsage(repo); err != nil {
				return err
			}
			res["logical_bytes"] = float64(logical)
			b, err := json.Marshal(map[string]any{"section": "ingest", "server": tool, "case": cas, "run": r, "result": res})
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintf(w, "%s\n", b); err != nil {
				return err
			}
			if err := os.RemoveAll(repo); err != nil {
				return err
			}
		}
	}
	return nil
}

// makeCopies writes the copies and returns their paths and total size.
func makeCopies(image, dir string, copies int) ([]string, int64, error) {
	base, err := os.ReadFile(image)
	if err != nil {
		return nil, 0, err
	}
	n := len(base) / block
	var files []string
	for i := 1; i <= copies; i++ {
		rng := mrand.New(mrand.NewPCG(uint64(i), 0x1a9e57))
		c := make([]byte, len(base))
		copy(c, base)
		for _, b := range rng.Perm(n)[:int(float64(n)*rewrite)] {
			p := c[b*block : (b+1)*block]
			for j := 0; j < block; j += 8 {
				v := rng.Uint64()
				for k := range 8 {
					p[j+k] = byte(v >> (8 * k))
				}
			}
		}
		path := filepath.Join(dir, fmt.Sprintf("copy%02d.img", i))
		if err := os.WriteFile(path, c, 0o644); err != nil {
			return nil, 0, err
		}
		files = append(files, path)
	}
	return files, int64(len(base)) * int64(copies), nil
}

// diskUsage is the space a directory's files take on disk (allocated
// blocks, so preallocated and sparse files count as what they hold).
func diskUsage(dir string) (float64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		}
		return nil
	})
	return float64(total), err
}

// timed runs a command with env added and returns its wall time.
func timed(env []string, name string, args ...string) (float64, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%s %v: %v\n%s", name, args, err, out)
	}
	return time.Since(t0).Seconds(), nil
}

func viaRestic(work, repo, src string) (map[string]any, error) {
	env := []string{"RESTIC_PASSWORD=bench", "RESTIC_CACHE_DIR=" + filepath.Join(work, "restic-cache")}
	defer os.RemoveAll(filepath.Join(work, "restic-cache"))
	if _, err := timed(env, "restic", "init", "--repo", repo); err != nil {
		return nil, err
	}
	s, err := timed(env, "restic", "backup", "--repo", repo, "--quiet", src)
	if err != nil {
		return nil, err
	}
	return map[string]any{"seconds": s}, nil
}

func viaBorg(work, repo, src string) (map[string]any, error) {
	env := []string{"BORG_BASE_DIR=" + filepath.Join(work, "borg-base"), "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes"}
	defer os.RemoveAll(filepath.Join(work, "borg-base"))
	if _, err := timed(env, "borg", "init", "--encryption=none", repo); err != nil {
		return nil, err
	}
	s, err := timed(env, "borg", "create", "--compression", "lz4", repo+"::bench", src)
	if err != nil {
		return nil, err
	}
	return map[string]any{"seconds": s}, nil
}

// viaDstore starts dstore serve on a fresh datastore, writes the files over
// NFS, commits, stops the server (which destages everything to packs) and
// reads `dstore status --json`. The time runs from the first write to the
// server's exit.
func viaDstore(bin string, port int, data string, files []string) (map[string]any, error) {
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	srv := exec.Command(bin, "serve", "--data", data, "--nfs", addr)
	var serveLog bytes.Buffer
	srv.Stdout, srv.Stderr = &serveLog, &serveLog
	if err := srv.Start(); err != nil {
		return nil, err
	}
	stopped := false
	defer func() {
		if !stopped {
			srv.Process.Kill()
			srv.Wait()
		}
	}()
	ctx := context.Background()
	var rc *nfsfs.Client
	var err error
	for i := 0; i < 100; i++ {
		if rc, err = nfsfs.Dial(ctx, addr, nfsfs.ClientOptions{Cred: &nfsfs.AuthUnix{Machine: "ingest"}}); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("dstore serve did not come up on %s: %w", addr, err)
	}
	defer rc.Close()
	root, err := nfsfs.MountPath(ctx, rc, "/")
	if err != nil {
		return nil, err
	}
	c := nfsfs.NewNFS3Client(rc)
	t0 := time.Now()
	for _, f := range files {
		if err := upload(ctx, c, root, f); err != nil {
			return nil, err
		}
	}
	rc.Close()
	if err := srv.Process.Signal(syscall.SIGTERM); err != nil {
		return nil, err
	}
	err = srv.Wait()
	stopped = true
	if err != nil {
		return nil, fmt.Errorf("dstore serve: %w\n%s", err, serveLog.Bytes())
	}
	secs := time.Since(t0).Seconds()
	out, err := exec.Command(bin, "status", "--data", data, "--json").Output()
	if err != nil {
		return nil, fmt.Errorf("dstore status: %w", err)
	}
	var st struct {
		Physical int64 `json:"physical_bytes"`
		Unique   int64 `json:"unique_bytes"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, fmt.Errorf("dstore status: %w", err)
	}
	return map[string]any{"seconds": secs, "physical_bytes": float64(st.Physical), "unique_bytes": float64(st.Unique)}, nil
}

// upload writes one file over NFS: 1 MiB unstable writes, 16 outstanding,
// then COMMIT.
func upload(ctx context.Context, c *nfsfs.NFS3Client, root []byte, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	fh, err := c.Create(ctx, root, filepath.Base(path), 0o644, true)
	if err != nil {
		return err
	}
	const chunk = 1 << 20
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, 16)
	for i := range errs {
		wg.Go(func() {
			for {
				off := (next.Add(1) - 1) * chunk
				if off >= int64(len(data)) {
					return
				}
				p := data[off:min(off+chunk, int64(len(data)))]
				n, _, _, err := c.Write(ctx, fh, uint64(off), p, nfsfs.StableUnstable)
				if err == nil && int(n) != len(p) {
					err = fmt.Errorf("short WRITE: %d of %d bytes", n, len(p))
				}
				if err != nil {
					errs[i] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("writing %s: %w", filepath.Base(path), err)
	}
	_, err = c.Commit(ctx, fh, 0, 0)
	return err
}

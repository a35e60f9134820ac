// Command snapclone measures the latency of a snapshot and a clone, next to
// `qemu-img create -b`, for bench/run.sh, in process, at two levels:
//
//   - the block store primitives (servers "freeze" and "clone"): for each
//     size, a new datastore and a volume; each run overwrites the whole
//     volume with unique data and syncs it, then times Store.Freeze of the
//     volume and Store.Clone of the layer it froze;
//   - the user-visible operations (servers "snapstore-snapshot" and
//     "snapstore-clone"): a new datastore with a file in a protection
//     group; each run overwrites the whole file through the namespace and
//     commits it, then times Namespace.CreateSnapshot of the group (what
//     `dstore snapshot create` does) and Namespace.Clone of the member
//     into a new file (`dstore clone ID:PATH NEWPATH`). The previous run's
//     snapshot and clone are deleted and the store settled (merges and
//     destage done) before the next run writes, so the disk holds about
//     two copies of the data at most.
//
// qemu-img gets a raw image holding the same bytes and, each run,
// `qemu-img create -f qcow2 -b base.raw -F raw`, timed as a command.
//
// Output: one results.jsonl line per measurement (see bench/report).
//
//	snapclone -dir /scratch/snap -sizes 64M,1G,8G -runs 3
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/dstore/dstore/bench/nfsload"
	"github.com/dstore/dstore/blockstore"
	"github.com/dstore/dstore/snapstore"
)

func main() {
	dir := flag.String("dir", "", "scratch directory (made, then removed)")
	sizes := flag.String("sizes", "64M,1G", "comma-separated sizes to write (K, M, G: powers of 1024)")
	runs := flag.Int("runs", 3, "runs per size")
	flag.Parse()
	if err := run(*dir, *sizes, *runs, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "snapclone: %v\n", err)
		os.Exit(1)
	}
}

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
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("size %q: want a positive number with K, M or G", s)
	}
	return n * mult, nil
}

func label(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d B", n)
}

type line struct {
	Section string         `json:"section"`
	Server  string         `json:"server"`
	Case    string         `json:"case"`
	Run     int            `json:"run"`
	Result  map[string]any `json:"result"`
}

func emit(w io.Writer, server, cas string, run int, d time.Duration) error {
	b, err := json.Marshal(line{"snapshot", server, cas, run, map[string]any{"latency_us": float64(d) / 1e3}})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

func run(dir, sizes string, runs int, w io.Writer) error {
	if dir == "" || runs < 1 {
		return errors.New("want -dir and -runs >= 1")
	}
	if _, err := exec.LookPath("qemu-img"); err != nil {
		return fmt.Errorf("qemu-img: %w (apt-get install qemu-utils)", err)
	}
	for _, s := range strings.Split(sizes, ",") {
		size, err := parseSize(s)
		if err != nil {
			return err
		}
		if size%(1<<20) != 0 {
			return fmt.Errorf("size %s: want whole MiB", s)
		}
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := one(dir, size, runs, w); err != nil {
			return fmt.Errorf("%s: %w", label(size), err)
		}
	}
	return os.RemoveAll(dir)
}

// fill writes size bytes of generation gen of the load generator's pattern
// (unique, incompressible 4 KiB blocks) through write.
func fill(size int64, gen uint64, write func(p []byte, off int64) error) error {
	pat := nfsload.NewPattern(1)
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		pat.Fill(buf, uint64(off), gen)
		if err := write(buf, off); err != nil {
			return err
		}
	}
	return nil
}

func one(dir string, size int64, runs int, w io.Writer) error {
	if err := dstore(dir, size, runs, w); err != nil {
		return err
	}
	if err := os.RemoveAll(filepath.Join(dir, "dstore")); err != nil {
		return err
	}
	if err := snapshots(dir, size, runs, w); err != nil {
		return err
	}
	if err := os.RemoveAll(filepath.Join(dir, "snapstore")); err != nil {
		return err
	}
	return qemu(dir, size, runs, w)
}

// dstore measures Freeze and Clone in a new datastore under dir.
func dstore(dir string, size int64, runs int, w io.Writer) (err error) {
	cas := label(size)
	ddir := filepath.Join(dir, "dstore")
	if err := blockstore.Init(ddir, blockstore.InitOptions{}); err != nil {
		return err
	}
	s, err := blockstore.Open(ddir, blockstore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := s.Close(); err == nil {
			err = cerr
		}
	}()
	v, err := s.CreateVolume()
	if err != nil {
		return err
	}
	for r := 1; r <= runs; r++ {
		if err := fill(size, uint64(r), func(p []byte, off int64) error {
			_, err := v.WriteAt(p, off)
			return err
		}); err != nil {
			return err
		}
		if err := v.Sync(); err != nil {
			return err
		}
		t0 := time.Now()
		layers, err := s.Freeze(v.ID())
		d := time.Since(t0)
		if err != nil {
			return fmt.Errorf("Freeze: %w", err)
		}
		if err := emit(w, "freeze", cas, r, d); err != nil {
			return err
		}
		if len(layers) != 1 {
			return fmt.Errorf("Freeze of one volume returned %d layers", len(layers))
		}
		t0 = time.Now()
		c, err := s.Clone(layers[0])
		d = time.Since(t0)
		if err != nil {
			return fmt.Errorf("Clone: %w", err)
		}
		if err := emit(w, "clone", cas, r, d); err != nil {
			return err
		}
		// The clone reads what was frozen: check its last block.
		got := make([]byte, nfsload.Unit)
		if _, err := c.ReadAt(got, size-nfsload.Unit); err != nil {
			return fmt.Errorf("reading the clone: %w", err)
		}
		if err := nfsload.NewPattern(1).Check(got, uint64(size-nfsload.Unit)); err != nil {
			return fmt.Errorf("the clone: %w", err)
		}
		if err := s.DeleteVolume(c.ID()); err != nil {
			return err
		}
	}
	return nil
}

// snapshots measures snapstore's CreateSnapshot and Clone in a new
// datastore under dir.
func snapshots(dir string, size int64, runs int, w io.Writer) (err error) {
	cas := label(size)
	ddir := filepath.Join(dir, "snapstore")
	if err := blockstore.Init(ddir, blockstore.InitOptions{}); err != nil {
		return err
	}
	ds, err := snapstore.Open(ddir, blockstore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := ds.Close(); err == nil {
			err = cerr
		}
	}()
	ns := ds.NS
	a, _, err := ns.Create(snapstore.RootIno, "disk", snapstore.Unchecked, [8]byte{}, snapstore.NewAttr{Mode: 0o644})
	if err != nil {
		return err
	}
	if _, err := ns.CreateGroup("bench", snapstore.GroupSpec{Match: []string{"disk"}}); err != nil {
		return err
	}
	var prev *snapstore.Snapshot
	for r := 1; r <= runs; r++ {
		if prev != nil {
			if err := ns.Remove(snapstore.RootIno, fmt.Sprintf("clone%d", r-1)); err != nil {
				return err
			}
			if err := ns.DeleteSnapshot(prev.Seq); err != nil {
				return err
			}
		}
		if err := fill(size, uint64(r), func(p []byte, off int64) error {
			_, err := ns.Write(a.Ino, p, off, false)
			return err
		}); err != nil {
			return err
		}
		if err := ns.Commit(a.Ino); err != nil {
			return err
		}
		// Destage and merge now, so no background work from the previous
		// run overlaps the measurement.
		if err := ds.Blocks.Settle(); err != nil {
			return err
		}
		t0 := time.Now()
		snap, err := ns.CreateSnapshot("bench", fmt.Sprintf("run %d", r), false)
		d := time.Since(t0)
		if err != nil {
			return fmt.Errorf("CreateSnapshot: %w", err)
		}
		if err := emit(w, "snapstore-snapshot", cas, r, d); err != nil {
			return err
		}
		name := fmt.Sprintf("clone%d", r)
		t0 = time.Now()
		c, err := ns.Clone(snap.Seq, "disk", name)
		d = time.Since(t0)
		if err != nil {
			return fmt.Errorf("Clone: %w", err)
		}
		if err := emit(w, "snapstore-clone", cas, r, d); err != nil {
			return err
		}
		got := make([]byte, nfsload.Unit)
		if _, _, err := ns.Read(c.Ino, got, size-nfsload.Unit); err != nil {
			return fmt.Errorf("reading the clone: %w", err)
		}
		if err := nfsload.NewPattern(1).Check(got, uint64(size-nfsload.Unit)); err != nil {
			return fmt.Errorf("the clone: %w", err)
		}
		prev = snap
	}
	return nil
}

// qemu measures qemu-img create -b over a raw image of the same bytes.
func qemu(dir string, size int64, runs int, w io.Writer) error {
	cas := label(size)
	base := filepath.Join(dir, "base.raw")
	f, err := os.Create(base)
	if err != nil {
		return err
	}
	if err := fill(size, 1, func(p []byte, off int64) error {
		_, err := f.WriteAt(p, off)
		return err
	}); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	for r := 1; r <= runs; r++ {
		ov := filepath.Join(dir, fmt.Sprintf("overlay%d.qcow2", r))
		t0 := time.Now()
		out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", ov).CombinedOutput()
		d := time.Since(t0)
		if err != nil {
			return fmt.Errorf("qemu-img create: %v: %s", err, out)
		}
		if err := emit(w, "qemu-img", cas, r, d); err != nil {
			return err
		}
	}
	return nil
}

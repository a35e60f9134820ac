// Command report turns the results of bench/run.sh (results.jsonl, one
// measurement a line) into docs/BENCHMARKS.md and one SVG bar chart per
// section: medians of the runs, the ratios dstore/peer and the goals of
// issue 4 with how far off they are.
//
//	report -in results.jsonl -machine machine.json -md docs/BENCHMARKS.md -svg docs/benchmarks
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// record is one line of results.jsonl.
type record struct {
	Section string          `json:"section"`
	Server  string          `json:"server"`
	Case    string          `json:"case"`
	Run     int             `json:"run"`
	Result  json.RawMessage `json:"result"`
}

// machine is machine.json.
type machine struct {
	CPU       string `json:"cpu"`
	Cores     int    `json:"cores"`
	MemoryKiB int64  `json:"memory_kib"`
	Kernel    string `json:"kernel"`
	Disk      string `json:"disk"`
	Version   string `json:"version"`
	Date      string `json:"date"`
	Quick     bool   `json:"quick"`
	Runs      int    `json:"runs"`
	Duration  string `json:"duration"`
	Size      string `json:"size"`
	Ganesha   string `json:"ganesha"`
	Fio       string `json:"fio"`
	Restic    string `json:"restic"`
	Borg      string `json:"borg"`
	QemuImg   string `json:"qemu_img"`
	// The kernel section: the User-Mode Linux kernel of the guest, and the
	// nfs-kernel-server whose daemons ran knfsd there ("" when it did not).
	UML   string `json:"uml"`
	Knfsd string `json:"knfsd"`
	// The ox section: the versitygw that served as the S3 target.
	Versitygw string `json:"versitygw"`
}

// metrics are the figures of one measurement, by name; each tool's result
// is read into them.
type metrics map[string]float64

// nfsResult is the part of `dstore bench nfs --json` the report uses.
type nfsResult struct {
	MBPerS float64 `json:"mb_per_s"`
	IOPS   float64 `json:"iops"`
	P50Us  float64 `json:"p50_us"`
	P99Us  float64 `json:"p99_us"`
	P999Us float64 `json:"p999_us"`
	Errors int64   `json:"errors"`
}

// fioResult is the part of fio's JSON output the report uses.
type fioResult struct {
	Jobs []struct {
		Read  fioDir `json:"read"`
		Write fioDir `json:"write"`
	} `json:"jobs"`
}

type fioDir struct {
	IOPS    float64 `json:"iops"`
	BWBytes float64 `json:"bw_bytes"`
}

// isFio says whether a result is fio's JSON output.
func isFio(raw json.RawMessage) bool {
	var probe struct {
		Jobs json.RawMessage `json:"jobs"`
	}
	return json.Unmarshal(raw, &probe) == nil && probe.Jobs != nil
}

func parse(r record) (metrics, error) {
	switch {
	case r.Server == "fio":
		var f fioResult
		if err := json.Unmarshal(r.Result, &f); err != nil {
			return nil, err
		}
		if len(f.Jobs) == 0 {
			return nil, errors.New("fio result with no jobs")
		}
		w := f.Jobs[0].Write
		return metrics{"iops": w.IOPS, "mb_per_s": w.BWBytes / 1e6}, nil
	case r.Section == "kernel" && isFio(r.Result):
		// fio through the kernel client: one job, reading or writing.
		var f fioResult
		if err := json.Unmarshal(r.Result, &f); err != nil {
			return nil, err
		}
		if len(f.Jobs) == 0 {
			return nil, errors.New("fio result with no jobs")
		}
		j := f.Jobs[0]
		return metrics{"iops": j.Read.IOPS + j.Write.IOPS, "mb_per_s": (j.Read.BWBytes + j.Write.BWBytes) / 1e6}, nil
	case r.Section == "nfs" || r.Section == "durability":
		var n nfsResult
		if err := json.Unmarshal(r.Result, &n); err != nil {
			return nil, err
		}
		if n.Errors != 0 {
			return nil, fmt.Errorf("%d errors", n.Errors)
		}
		return metrics{"mb_per_s": n.MBPerS, "iops": n.IOPS, "p50_us": n.P50Us, "p99_us": n.P99Us, "p999_us": n.P999Us}, nil
	default: // snapshot, ingest, ox, kernel's dd: flat objects of numbers
		var m map[string]any
		if err := json.Unmarshal(r.Result, &m); err != nil {
			return nil, err
		}
		out := metrics{}
		for k, v := range m {
			if f, ok := v.(float64); ok {
				out[k] = f
			}
		}
		return out, nil
	}
}

// key names one case of one server.
type key struct{ section, server, cas string }

// table holds every run's metrics, and the order cases first appeared in.
type table struct {
	runs  map[key][]metrics
	cases map[string][]string // section: cases in order
}

// median returns the median of metric m over the runs of k, and how many
// runs had it.
func (t *table) median(k key, m string) (float64, int) {
	var vals []float64
	for _, r := range t.runs[k] {
		if v, ok := r[m]; ok {
			vals = append(vals, v)
		}
	}
	return median(vals), len(vals)
}

// median of vals: the middle value, or the mean of the two middle ones; NaN
// for none.
func median(vals []float64) float64 {
	if len(vals) == 0 {
		return math.NaN()
	}
	s := slices.Clone(vals)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func load(path string) (*table, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	t := &table{runs: map[key][]metrics{}, cases: map[string][]string{}}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for n := 1; sc.Scan(); n++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var r record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		m, err := parse(r)
		if err != nil {
			return nil, fmt.Errorf("%s:%d (%s %s %s): %w", path, n, r.Section, r.Server, r.Case, err)
		}
		k := key{r.Section, r.Server, r.Case}
		if !slices.Contains(t.cases[r.Section], r.Case) {
			t.cases[r.Section] = append(t.cases[r.Section], r.Case)
		}
		t.runs[k] = append(t.runs[k], m)
	}
	return t, sc.Err()
}

func main() {
	in := flag.String("in", "", "results.jsonl from bench/run.sh")
	mach := flag.String("machine", "", "machine.json from bench/run.sh")
	md := flag.String("md", "docs/BENCHMARKS.md", "the Markdown report to write")
	svg := flag.String("svg", "docs/benchmarks", "directory for the SVG charts")
	flag.Parse()
	if err := run(*in, *mach, *md, *svg); err != nil {
		fmt.Fprintf(os.Stderr, "report: %v\n", err)
		os.Exit(1)
	}
}

func run(in, mach, md, svgDir string) error {
	if in == "" || mach == "" {
		return errors.New("want -in and -machine")
	}
	t, err := load(in)
	if err != nil {
		return err
	}
	var m machine
	b, err := os.ReadFile(mach)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("%s: %w", mach, err)
	}
	if err := os.MkdirAll(svgDir, 0o755); err != nil {
		return err
	}
	rel, err := filepath.Rel(filepath.Dir(md), svgDir)
	if err != nil {
		rel = svgDir
	}
	r := &report{t: t, m: m, svgDir: svgDir, svgRel: filepath.ToSlash(rel)}
	text, err := r.write()
	if err != nil {
		return err
	}
	return os.WriteFile(md, []byte(text), 0o644)
}

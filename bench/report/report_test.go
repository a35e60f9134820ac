package main

import (
	"encoding/xml"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{10, 10, 1000}, 10}, // one outlier run does not move it
	} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median of nothing is not NaN")
	}
}

func TestGoals(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{goalAtLeast(1.5, 1.2), "met"},
		{goalAtLeast(0.6, 1.2), "not met, 2.0× short"},
		{goalAtLeast(math.NaN(), 1.2), "not measured"},
		{goalAtMost(0.5, 0.8), "met"},
		{goalAtMost(1.6, 0.8), "not met, 2.0× over"},
	} {
		if !strings.Contains(c.got, c.want) {
			t.Errorf("%q does not say %q", c.got, c.want)
		}
	}
}

// A results file in, Markdown with medians and ratios and well-formed SVG
// charts out.
func TestReport(t *testing.T) {
	dir := t.TempDir()
	results := strings.Join([]string{
		`{"section":"nfs","server":"dstore","case":"randread-4K-qd16","run":1,"result":{"iops":3000,"mb_per_s":12,"p50_us":100,"p99_us":200,"p999_us":300,"errors":0}}`,
		`{"section":"nfs","server":"dstore","case":"randread-4K-qd16","run":2,"result":{"iops":1000,"mb_per_s":4,"p50_us":100,"p99_us":200,"p999_us":300,"errors":0}}`,
		`{"section":"nfs","server":"dstore","case":"randread-4K-qd16","run":3,"result":{"iops":2000,"mb_per_s":8,"p50_us":100,"p99_us":200,"p999_us":300,"errors":0}}`,
		`{"section":"nfs","server":"ganesha","case":"randread-4K-qd16","run":1,"result":{"iops":1000,"mb_per_s":4,"p50_us":90,"p99_us":180,"p999_us":250,"errors":0}}`,
		`{"section":"durability","server":"fio","case":"qd1","run":1,"result":{"jobs":[{"write":{"iops":500,"bw_bytes":2048000}}]}}`,
		`{"section":"durability","server":"dstore","case":"qd1","run":1,"result":{"iops":250,"errors":0}}`,
		`{"section":"kernel","server":"dstore","case":"dd-write-512M","run":1,"result":{"bytes":536870912,"seconds":2,"mb_per_s":268.4}}`,
		`{"section":"kernel","server":"ganesha","case":"dd-write-512M","run":1,"result":{"bytes":536870912,"seconds":4,"mb_per_s":134.2}}`,
		`{"section":"kernel","server":"knfsd","case":"dd-write-512M","run":1,"result":{"bytes":536870912,"seconds":1,"mb_per_s":536.9}}`,
		`{"section":"kernel","server":"dstore","case":"fio-randread-4K-qd16","run":1,"result":{"fio version":"fio-3.33","jobs":[{"read":{"iops":900,"bw_bytes":3686400},"write":{"iops":0,"bw_bytes":0}}]}}`,
		`{"section":"kernel","server":"ganesha","case":"fio-randread-4K-qd16","run":1,"result":{"fio version":"fio-3.33","jobs":[{"read":{"iops":1000,"bw_bytes":4096000},"write":{"iops":0,"bw_bytes":0}}]}}`,
		`{"section":"kernel","server":"knfsd","case":"fio-randread-4K-qd16","run":1,"result":{"fio version":"fio-3.33","jobs":[{"read":{"iops":4500,"bw_bytes":18432000},"write":{"iops":0,"bw_bytes":0}}]}}`,
		`{"section":"snapshot","server":"freeze","case":"64 MiB","run":1,"result":{"latency_us":1500}}`,
		`{"section":"snapshot","server":"qemu-img","case":"64 MiB","run":1,"result":{"latency_us":15000}}`,
	}, "\n")
	in := filepath.Join(dir, "results.jsonl")
	mach := filepath.Join(dir, "machine.json")
	os.WriteFile(in, []byte(results), 0o644)
	os.WriteFile(mach, []byte(`{"cpu":"Test CPU","cores":2,"memory_kib":1048576,"kernel":"Linux 6","disk":"/dev/x","runs":3,"uml":"6.1um4","knfsd":"1:2.6.2"}`), 0o644)
	md := filepath.Join(dir, "docs", "BENCHMARKS.md")
	os.MkdirAll(filepath.Dir(md), 0o755)
	if err := run(in, mach, md, filepath.Join(dir, "docs", "benchmarks")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(md)
	text := string(b)
	for _, want := range []string{
		"| randread-4K-qd16 | 2000 IOPS | 1000 IOPS | 2.00× | ≥ 1.5×: **met** |", // median of 3000, 1000, 2000
		"| randread-4K-qd16 | 100 / 200 / 300 | 90.0 / 180 / 250 |",
		"| 1 | 250 | – | 500 | – | 0.50× | 1.00× |",
		"| 64 MiB | 1.50 ms | – ms | 15.0 ms | 0.10× | – |",
		"Test CPU", "1.00 GiB",
		"](benchmarks/nfs.svg)",
		"The ingest section: not part of this run.",
		"| dd-write-512M | 268 MB/s | 134 MB/s | 537 MB/s | 2.00× | ≥ 1.2×: **met** | 0.50× |",
		"| fio-randread-4K-qd16 | 900 IOPS | 1000 IOPS | 4500 IOPS | 0.90× | ≥ 1.5×: not met, 1.7× short | 0.20× |",
		"](benchmarks/kernel.svg)",
		"User-Mode Linux 6.1um4 (../shared/uml-nfs), knfsd: nfs-kernel-server 1:2.6.2",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the report lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "knfsd, the kernel's own NFS server, in the kernel section: not part") {
		t.Error("the report says knfsd was not run, though it was")
	}
	for _, name := range []string{"nfs", "kernel", "durability", "snapshot"} {
		svg, err := os.ReadFile(filepath.Join(dir, "docs", "benchmarks", name+".svg"))
		if err != nil {
			t.Fatal(err)
		}
		d := xml.NewDecoder(strings.NewReader(string(svg)))
		for {
			_, err := d.Token()
			if err != nil {
				if err.Error() != "EOF" {
					t.Errorf("%s.svg: %v", name, err)
				}
				break
			}
		}
	}

	// The ox section: times, bytes, ratios, the import's own time and what
	// the whole read fetched; a chart.
	os.WriteFile(in, []byte(strings.Join([]string{
		`{"section":"ox","server":"dstore","case":"export-full","run":1,"result":{"seconds":2,"image_bytes":268435456,"uploaded_bytes":104857000,"stored_bytes":104857600}}`,
		`{"section":"ox","server":"dstore","case":"export-full","run":2,"result":{"seconds":4,"image_bytes":268435456,"uploaded_bytes":104857000,"stored_bytes":104857600}}`,
		`{"section":"ox","server":"dstore","case":"export-full","run":3,"result":{"seconds":3,"image_bytes":268435456,"uploaded_bytes":104857000,"stored_bytes":104857600}}`,
		`{"section":"ox","server":"dstore","case":"export-incremental","run":1,"result":{"seconds":0.25,"image_bytes":268435456,"changed_bytes":2682880,"uploaded_bytes":4194304,"stored_bytes":4194304}}`,
		`{"section":"ox","server":"dstore","case":"first-read","run":1,"result":{"seconds":0.04,"import_seconds":0.02,"image_bytes":268435456,"fetched_bytes":5868}}`,
		`{"section":"ox","server":"dstore","case":"whole-read","run":1,"result":{"seconds":4.5,"image_bytes":268435456,"fetched_bytes":104857600}}`,
		`{"section":"ox","server":"restic","case":"export-full","run":1,"result":{"seconds":6,"image_bytes":268435456,"stored_bytes":52428800}}`,
		`{"section":"ox","server":"restic","case":"export-incremental","run":1,"result":{"seconds":5,"image_bytes":268435456,"changed_bytes":2682880,"stored_bytes":52428800}}`,
		`{"section":"ox","server":"restic","case":"first-read","run":1,"result":{"seconds":2.5,"restore_seconds":2.5,"image_bytes":268435456}}`,
		`{"section":"ox","server":"restic","case":"whole-read","run":1,"result":{"seconds":2.5,"restore_seconds":2.5,"image_bytes":268435456}}`,
	}, "\n")), 0o644)
	os.WriteFile(mach, []byte(`{"cpu":"Test CPU","cores":2,"memory_kib":1048576,"runs":3,"versitygw":"v1.8.0"}`), 0o644)
	if err := run(in, mach, md, filepath.Join(dir, "docs", "benchmarks")); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(md)
	for _, want := range []string{
		"## Object exchange (S3)",
		"(256.00 MiB of it)", "then 2.56 MiB (1% of its 4 KiB blocks",
		"| export, full: time | 3.00 s | 6.00 s | 0.50× |", // median of 2, 4, 3
		"| export, full: bytes stored | 100.00 MiB | 50.00 MiB | 2.00× |",
		"| export, 1% changed: time | 250 ms | 5.00 s | 0.05× |",
		"| export, 1% changed: bytes sent | 4.00 MiB | 50.00 MiB | 0.08× |",
		"| time to first read of an S3 clone (64 KiB) vs `restic restore` | 40.0 ms (`Import` 20.0 ms) | 2.50 s | 0.016× |",
		"| read the whole clone vs `restic restore` | 4.50 s (100.00 MiB fetched) | 2.50 s | 1.80× |",
		"restore must finish before the first read",
		"versitygw v1.8.0",
		"Medians of 1 to 3 runs.",
		"](benchmarks/ox.svg)",
		"The nfs section: not part of this run.",
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the report lacks %q:\n%s", want, b)
		}
	}
	if strings.Contains(string(b), "The ox section: not part") || strings.Contains(string(b), "With the OX issue") {
		t.Errorf("the report says the ox section was not run:\n%s", b)
	}
	svg, err := os.ReadFile(filepath.Join(dir, "docs", "benchmarks", "ox.svg"))
	if err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(svg, new(struct{})); err != nil {
		t.Errorf("ox.svg: %v", err)
	}
	os.WriteFile(mach, []byte(`{"cpu":"Test CPU","cores":2,"memory_kib":1048576,"kernel":"Linux 6","disk":"/dev/x","runs":3,"uml":"6.1um4","knfsd":"1:2.6.2"}`), 0o644)

	// A kernel section without knfsd: no knfsd column, and it says so.
	os.WriteFile(in, []byte(strings.Join([]string{
		`{"section":"kernel","server":"dstore","case":"dd-read-32M","run":1,"result":{"bytes":33554432,"seconds":0.5,"mb_per_s":67.1}}`,
		`{"section":"kernel","server":"ganesha","case":"dd-read-32M","run":1,"result":{"bytes":33554432,"seconds":0.25,"mb_per_s":134.2}}`,
	}, "\n")), 0o644)
	if err := run(in, mach, md, filepath.Join(dir, "docs", "benchmarks")); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(md)
	for _, want := range []string{
		"| dd-read-32M | 67.1 MB/s | 134 MB/s | 0.50× | ≥ 1.2×: not met, 2.4× short |",
		"knfsd, the kernel's own NFS server, in the kernel section: not part of this run.",
		"The nfs section: not part of this run.",
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the report lacks %q:\n%s", want, b)
		}
	}

	// A run with errors is refused, not averaged in.
	os.WriteFile(in, []byte(`{"section":"nfs","server":"dstore","case":"x","run":1,"result":{"iops":5,"errors":3}}`), 0o644)
	if err := run(in, mach, md, filepath.Join(dir, "docs", "benchmarks")); err == nil || !strings.Contains(err.Error(), "3 errors") {
		t.Errorf("a result with errors: %v", err)
	}
}

package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
)

type report struct {
	t      *table
	m      machine
	svgDir string
	svgRel string // svgDir relative to the Markdown file
	b      strings.Builder
}

func (r *report) p(format string, args ...any) { fmt.Fprintf(&r.b, format+"\n", args...) }

// runsOf says how many runs the medians of a section are taken over.
func (r *report) runsOf(section string) string {
	lo, hi := 0, 0
	for k, runs := range r.t.runs {
		if k.section != section {
			continue
		}
		if lo == 0 || len(runs) < lo {
			lo = len(runs)
		}
		hi = max(hi, len(runs))
	}
	switch {
	case hi == 1:
		return "One run each (no median): a quick run."
	case lo == hi:
		return fmt.Sprintf("Medians of %d runs.", lo)
	}
	return fmt.Sprintf("Medians of %d to %d runs.", lo, hi)
}

// num formats a figure with about three significant digits; NaN is "–".
func num(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func ratio(a, b float64) float64 {
	if b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return math.NaN()
	}
	return a / b
}

func ratioStr(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case v > 0 && v < 0.1:
		return fmt.Sprintf("%.2g×", v) // two significant digits, not 0.01×
	}
	return fmt.Sprintf("%.2f×", v)
}

// goalAtLeast says whether got meets a goal of at least want (both ratios).
func goalAtLeast(got, want float64) string {
	switch {
	case math.IsNaN(got):
		return fmt.Sprintf("≥ %.1f×: not measured", want)
	case got >= want:
		return fmt.Sprintf("≥ %.1f×: **met**", want)
	}
	return fmt.Sprintf("≥ %.1f×: not met, %.1f× short", want, want/got)
}

func goalAtMost(got, want float64) string {
	switch {
	case math.IsNaN(got):
		return fmt.Sprintf("≤ %.1f×: not measured", want)
	case got <= want:
		return fmt.Sprintf("≤ %.1f×: **met**", want)
	}
	return fmt.Sprintf("≤ %.1f×: not met, %.1f× over", want, got/want)
}

func iec(n float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f B", n)
	}
	return fmt.Sprintf("%.2f %s", n, units[i])
}

func (r *report) write() (string, error) {
	m := r.m
	r.p("# Benchmarks")
	r.p("")
	mode := "full run"
	if m.Quick {
		mode = "quick run (`QUICK=1`: short runs, small sizes; treat as a smoke test)"
	}
	r.p("Written by `make bench` (bench/run.sh, then bench/report) on %s from `%s`, a %s: every", m.Date, m.Version, mode)
	r.p("figure below comes from that one run on one machine, side by side with its peer. Do not edit by")
	times := fmt.Sprintf("%d times", m.Runs)
	if m.Runs == 1 {
		times = "once"
	}
	r.p("hand; run `make bench` again. Each case ran %s unless its section says otherwise (%s per", times, m.Duration)
	r.p("timed NFS run, %s test files); the tables give medians, and ratios are dstore over its peer, from", m.Size)
	r.p("medians of the same run.")
	r.p("The machine is shared and small, so absolute figures are noisy; ratios within one run are what to")
	r.p("compare. MB are 10^6 bytes. The raw results (every run) are in `bench/out/<time>/results.jsonl`.")
	r.p("")
	r.p("## Machine")
	r.p("")
	r.p("| | |")
	r.p("|---|---|")
	r.p("| CPU | %s |", m.CPU)
	r.p("| cores | %d |", m.Cores)
	r.p("| memory | %s |", iec(float64(m.MemoryKiB)*1024))
	r.p("| kernel | %s |", m.Kernel)
	r.p("| disk (dstore's data, Ganesha's export, fio's file, the repositories) | %s |", m.Disk)
	r.p("| peers | NFS-Ganesha %s (FSAL_VFS), fio %s, restic %s, borg %s, qemu-img %s |", m.Ganesha, m.Fio, m.Restic, m.Borg, m.QemuImg)
	if len(r.t.cases["kernel"]) > 0 {
		knfsd := "not run"
		if m.Knfsd != "" {
			knfsd = "nfs-kernel-server " + m.Knfsd
		}
		r.p("| kernel client guest | User-Mode Linux %s (../shared/uml-nfs), knfsd: %s |", m.UML, knfsd)
	}
	if len(r.t.cases["ox"]) > 0 {
		r.p("| S3 server (object exchange) | versitygw %s (posix backend, on loopback, on the same disk) |", m.Versitygw)
	}
	r.p("")
	for _, s := range []struct {
		name string
		fn   func() error
	}{{"nfs", r.nfs}, {"kernel", r.kernel}, {"durability", r.durability}, {"snapshot", r.snapshot}, {"ingest", r.ingest},
		{"ox", r.ox}} {
		if len(r.t.cases[s.name]) == 0 {
			continue
		}
		if err := s.fn(); err != nil {
			return "", err
		}
	}
	var missing []string
	for _, s := range []string{"nfs", "kernel", "durability", "snapshot", "ingest", "ox"} {
		if len(r.t.cases[s]) == 0 {
			missing = append(missing, fmt.Sprintf("- The %s section: not part of this run.", s))
		}
	}
	if len(r.t.cases["kernel"]) > 0 && !r.has("kernel", "knfsd") {
		missing = append(missing, "- knfsd, the kernel's own NFS server, in the kernel section: not part of this run.")
	}
	if len(missing) > 0 {
		r.p("## Not measured yet")
		r.p("")
		for _, l := range missing {
			r.p("%s", l)
		}
	}
	return r.b.String(), nil
}

// chart writes an SVG and links it.
func (r *report) chart(name, title string, groups []group) error {
	path := filepath.Join(r.svgDir, name+".svg")
	if err := os.WriteFile(path, []byte(barChart(title, groups)), 0o644); err != nil {
		return err
	}
	r.p("![%s](%s/%s.svg)", title, r.svgRel, name)
	r.p("")
	return nil
}

// primary is the figure that matters for a case: MB/s for sequential ones,
// operations per second for the rest.
func primary(cas string) (metric, unit string) {
	if strings.HasPrefix(cas, "seq") {
		return "mb_per_s", "MB/s"
	}
	return "iops", "IOPS"
}

func (r *report) nfs() error {
	t := r.t
	r.p("## NFS: dstore vs NFS-Ganesha")
	r.p("")
	r.p("`dstore bench nfs` against `dstore serve` and against NFS-Ganesha (bench/ganesha.conf), both on")
	r.p("loopback, each with a fresh data directory on the same disk. Cases: workload, I/O size and calls")
	r.p("outstanding (`qd64x4` is 16 on each of 4 connections). Writes are UNSTABLE and each run ends with a")
	r.p("COMMIT, counted in its time. Read and random cases use one file per server, filled once. `metadata`")
	r.p("creates files (writing 4 KiB to each), GETATTRs, LOOKUPs and removes them; every call counts.")
	r.p("%s", r.runsOf("nfs"))
	r.p("")
	r.p("| case | dstore | Ganesha | dstore/Ganesha | goal (issue 4) |")
	r.p("|---|---:|---:|---:|---|")
	var groups []group
	for _, c := range t.cases["nfs"] {
		metric, unit := primary(c)
		d, _ := t.median(key{"nfs", "dstore", c}, metric)
		g, _ := t.median(key{"nfs", "ganesha", c}, metric)
		rt := ratio(d, g)
		goal := "–"
		switch {
		case strings.HasPrefix(c, "seq"):
			goal = goalAtLeast(rt, 1.2)
		case strings.HasPrefix(c, "rand"):
			goal = goalAtLeast(rt, 1.5)
		}
		r.p("| %s | %s %s | %s %s | %s | %s |", c, num(d), unit, num(g), unit, ratioStr(rt), goal)
		groups = append(groups, group{label: c + " (" + unit + ")", bars: []bar{
			{series: "dstore", value: d, text: num(d)},
			{series: "Ganesha", value: g, text: num(g)},
		}})
	}
	r.p("")
	r.p("Latency of each call in microseconds (p50 / p99 / p99.9, medians of the runs):")
	r.p("")
	r.p("| case | dstore | Ganesha |")
	r.p("|---|---:|---:|")
	for _, c := range t.cases["nfs"] {
		lat := func(server string) string {
			var parts []string
			for _, m := range []string{"p50_us", "p99_us", "p999_us"} {
				v, _ := t.median(key{"nfs", server, c}, m)
				parts = append(parts, num(v))
			}
			return strings.Join(parts, " / ")
		}
		r.p("| %s | %s | %s |", c, lat("dstore"), lat("ganesha"))
	}
	r.p("")
	return r.chart("nfs", "NFS over loopback: dstore vs NFS-Ganesha (medians; longer is better)", groups)
}

// has says whether a server has any result in a section.
func (r *report) has(section, server string) bool {
	for k, runs := range r.t.runs {
		if k.section == section && k.server == server && len(runs) > 0 {
			return true
		}
	}
	return false
}

func (r *report) kernel() error {
	t := r.t
	knfsd := r.has("kernel", "knfsd")
	r.p("## NFS through the Linux kernel client")
	r.p("")
	r.p("The same servers through the real Linux NFSv3 client (`vers=3,tcp,nolock`, the default rsize and")
	r.p("wsize), in one User-Mode Linux guest (../shared/uml-nfs, one emulated CPU, bench/guest.sh): the")
	r.p("server runs in the guest on its loopback with its data on the guest's own ext4 disk, and one")
	r.p("server at a time is mounted and measured. `dd-write` is `dd bs=1M conv=fsync` of fresh random")
	r.p("data (the fsync counted in the time); `dd-read` reads that file back with `bs=1M` after")
	r.p("`drop_caches`; the fio cases are 4 KiB `randwrite` then `randread` on that file, libaio,")
	r.p("`--iodepth=16 --direct=1 --refill_buffers`, for a fixed time. Caches are dropped before each")
	r.p("case. Inside the guest every system call is emulated, so absolute figures are far below the")
	r.p("host's; compare the servers with each other.")
	if knfsd {
		r.p("knfsd is the kernel's own server (Debian's nfs-kernel-server daemons over the guest kernel's")
		r.p("nfsd module, exporting with `sync`), the limit to approach. It serves from inside the kernel")
		r.p("and makes no system calls, while in the guest every system call of a user-space server is")
		r.p("emulated and costly, so the gap to it is wider here than it would be on real hardware.")
	}
	r.p("%s", r.runsOf("kernel"))
	r.p("")
	if knfsd {
		r.p("| case | dstore | Ganesha | knfsd | dstore/Ganesha | goal (issue 4) | dstore/knfsd |")
		r.p("|---|---:|---:|---:|---:|---|---:|")
	} else {
		r.p("| case | dstore | Ganesha | dstore/Ganesha | goal (issue 4) |")
		r.p("|---|---:|---:|---:|---|")
	}
	var groups []group
	for _, c := range t.cases["kernel"] {
		metric, unit := "iops", "IOPS"
		goalRatio := 1.5
		if strings.HasPrefix(c, "dd-") {
			metric, unit, goalRatio = "mb_per_s", "MB/s", 1.2
		}
		d, _ := t.median(key{"kernel", "dstore", c}, metric)
		g, _ := t.median(key{"kernel", "ganesha", c}, metric)
		k, _ := t.median(key{"kernel", "knfsd", c}, metric)
		rg := ratio(d, g)
		bars := []bar{
			{series: "dstore", value: d, text: num(d)},
			{series: "Ganesha", value: g, text: num(g)},
		}
		if knfsd {
			r.p("| %s | %s %s | %s %s | %s %s | %s | %s | %s |", c, num(d), unit, num(g), unit, num(k), unit,
				ratioStr(rg), goalAtLeast(rg, goalRatio), ratioStr(ratio(d, k)))
			bars = append(bars, bar{series: "knfsd", value: k, text: num(k)})
		} else {
			r.p("| %s | %s %s | %s %s | %s | %s |", c, num(d), unit, num(g), unit, ratioStr(rg), goalAtLeast(rg, goalRatio))
		}
		groups = append(groups, group{label: c + " (" + unit + ")", bars: bars})
	}
	r.p("")
	return r.chart("kernel", "Through the Linux kernel NFS client, in a UML guest (medians; longer is better)", groups)
}

func (r *report) durability() error {
	t := r.t
	r.p("## Durability cost")
	r.p("")
	r.p("4 KiB random FILE_SYNC writes through `dstore bench nfs --stable filesync` at 1, 16 and 64 calls")
	r.p("outstanding on one connection, against both servers; next to them fio with `--fdatasync=1`")
	r.p("(psync, one job per outstanding write, all on one file) on the same disk: what the disk gives")
	r.p("when every write is made durable by itself. A server that groups the commits of concurrent")
	r.p("writes goes faster with more outstanding; fio's jobs each wait for their own fdatasync.")
	r.p("%s", r.runsOf("durability"))
	r.p("")
	r.p("| outstanding | dstore IOPS | Ganesha IOPS | fio fdatasync IOPS | dstore/Ganesha | dstore/fio | dstore vs its 1 outstanding |")
	r.p("|---|---:|---:|---:|---:|---:|---:|")
	d1, _ := t.median(key{"durability", "dstore", "qd1"}, "iops")
	var groups []group
	for _, c := range t.cases["durability"] {
		d, _ := t.median(key{"durability", "dstore", c}, "iops")
		g, _ := t.median(key{"durability", "ganesha", c}, "iops")
		f, _ := t.median(key{"durability", "fio", c}, "iops")
		r.p("| %s | %s | %s | %s | %s | %s | %s |", strings.TrimPrefix(c, "qd"), num(d), num(g), num(f),
			ratioStr(ratio(d, g)), ratioStr(ratio(d, f)), ratioStr(ratio(d, d1)))
		groups = append(groups, group{label: strings.TrimPrefix(c, "qd") + " outstanding (IOPS)", bars: []bar{
			{series: "dstore", value: d, text: num(d)},
			{series: "Ganesha", value: g, text: num(g)},
			{series: "fio fdatasync", value: f, text: num(f)},
		}})
	}
	d64, _ := t.median(key{"durability", "dstore", "qd64"}, "iops")
	r.p("")
	r.p("Goal: 64 outstanding stable writes at least 10× one: %s (%s).", goalAtLeast(ratio(d64, d1), 10), ratioStr(ratio(d64, d1)))
	r.p("")
	return r.chart("durability", "4 KiB durable writes (medians; longer is better)", groups)
}

func (r *report) snapshot() error {
	t := r.t
	r.p("## Snapshot and clone")
	r.p("")
	r.p("This measures the block store primitives under `dstore snapshot create` and `dstore clone`,")
	r.p("in process (bench/snapclone), without the CLI's process start: a volume with the given amount of unique data written and synced,")
	r.p("then `Store.Freeze` (the volume's layer becomes frozen, a new writable one on top; durable when it")
	r.p("returns) and `Store.Clone` of the frozen layer (a new volume over it). Next to them,")
	r.p("`qemu-img create -f qcow2 -b base.raw -F raw` over a raw image holding the same data, timed as a")
	r.p("command (process start included, which is most of it). Latency in milliseconds, medians.")
	r.p("%s", r.runsOf("snapshot"))
	r.p("")
	r.p("| written | dstore Freeze | dstore Clone | qemu-img create -b | Freeze/qemu-img | Clone/qemu-img |")
	r.p("|---|---:|---:|---:|---:|---:|")
	var groups []group
	for _, c := range t.cases["snapshot"] {
		fr, _ := t.median(key{"snapshot", "freeze", c}, "latency_us")
		cl, _ := t.median(key{"snapshot", "clone", c}, "latency_us")
		q, _ := t.median(key{"snapshot", "qemu-img", c}, "latency_us")
		fr, cl, q = fr/1000, cl/1000, q/1000
		r.p("| %s | %s ms | %s ms | %s ms | %s | %s |", c, num(fr), num(cl), num(q), ratioStr(ratio(fr, q)), ratioStr(ratio(cl, q)))
		groups = append(groups, group{label: c + " written (ms)", bars: []bar{
			{series: "dstore Freeze", value: fr, text: num(fr)},
			{series: "dstore Clone", value: cl, text: num(cl)},
			{series: "qemu-img create -b", value: q, text: num(q)},
		}})
	}
	r.p("")
	return r.chart("snapshot", "Snapshot and clone latency (medians; shorter is better)", groups)
}

func (r *report) ingest() error {
	t := r.t
	r.p("## Ingest and dedupe")
	r.p("")
	r.p("A Debian bookworm minbase image (bench/mkosimage.sh, ext4) and copies of it, each with 5%% of its")
	r.p("4 KiB blocks (chosen at random, a different set per copy) rewritten with random data")
	r.p("(bench/ingest). dstore: each copy written as a file over NFS (the client of `dstore bench nfs`, 1 MiB")
	r.p("UNSTABLE writes, 16 outstanding, then COMMIT) to a fresh `dstore serve`, which is then stopped")
	r.p("(the time includes the stop). restic: `restic backup` of the same files to a fresh local repository")
	r.p("(restic encrypts and, with its default repository version, compresses); borg: `borg create")
	r.p("--compression lz4` likewise, unencrypted. Stored is what the datastore or repository directory")
	r.p("takes on disk (allocated blocks), the same measure for all three; for dstore, packs is the")
	r.p("`physical_bytes` of `dstore status --json`, the pack files alone (the rest is its write-ahead")
	r.p("log and metadata).")
	r.p("%s", r.runsOf("ingest"))
	r.p("")
	r.p("| case | tool | logical | stored | stored/logical | time | dstore stored/tool's | goal (issue 4) | dstore packs/tool's stored |")
	r.p("|---|---|---:|---:|---:|---:|---:|---|---:|")
	var groups []group
	for _, c := range t.cases["ingest"] {
		ds, _ := t.median(key{"ingest", "dstore", c}, "stored_bytes")
		dp, _ := t.median(key{"ingest", "dstore", c}, "physical_bytes")
		var bars []bar
		for _, tool := range []string{"dstore", "restic", "borg"} {
			k := key{"ingest", tool, c}
			st, n := t.median(k, "stored_bytes")
			if n == 0 {
				continue
			}
			lg, _ := t.median(k, "logical_bytes")
			s, _ := t.median(k, "seconds")
			rel, goal, packs := "–", "–", "–"
			name := tool
			if tool == "dstore" {
				name = "dstore (packs " + iec(dp) + ")"
			} else {
				rel = ratioStr(ratio(ds, st))
				goal = goalAtMost(ratio(ds, st), 0.8)
				packs = ratioStr(ratio(dp, st))
			}
			r.p("| %s | %s | %s | %s | %s | %s s | %s | %s | %s |", c, name, iec(lg), iec(st), ratioStr(ratio(st, lg)), num(s), rel, goal, packs)
			bars = append(bars, bar{series: tool, value: st / (1 << 20), text: iec(st) + ", " + num(s) + " s"})
		}
		groups = append(groups, group{label: c + ": stored (MiB), time", bars: bars})
	}
	r.p("")
	return r.chart("ingest", "Ingest of OS image copies: bytes stored (medians; shorter is better)", groups)
}

// seconds formats a time: milliseconds below a second.
func seconds(v float64) string {
	if !math.IsNaN(v) && v < 1 {
		return num(v*1000) + " ms"
	}
	return num(v) + " s"
}

func (r *report) ox() error {
	t := r.t
	img, _ := t.median(key{"ox", "dstore", "export-full"}, "image_bytes")
	chg, _ := t.median(key{"ox", "dstore", "export-incremental"}, "changed_bytes")
	r.p("## Object exchange (S3)")
	r.p("")
	r.p("dstore's object exchange against restic, both to the same S3 server (versitygw, posix backend, on")
	r.p("loopback), each into buckets of its own (bench/ox). The data: the OS image of the ingest section")
	r.p("(%s of it), one file. dstore: a fresh datastore holds it, a snapshot of it is exported to an", iec(img))
	r.p("`s3://` target (`Export` until its job is done); then %s (1%% of its 4 KiB blocks, chosen at", iec(chg))
	r.p("random) are rewritten with random data, snapshotted and exported again (incremental: only what the")
	r.p("target lacks is sent). restic: `restic backup` of the same file to a fresh repository, then again")
	r.p("after the same blocks are rewritten in the file. Bytes are what the bucket grew by (the sizes of")
	r.p("its objects, listed over S3), the same measure for both (dstore's own upload counter,")
	r.p("`uploaded_bytes`, is in the raw results).")
	r.p("")
	r.p("Then the second snapshot is read back on \"another machine\". dstore: a second, fresh datastore")
	r.p("joins the target with the same key and imports the snapshot as a file (an instant clone whose blocks")
	r.p("are fetched on demand); time to first read runs from the start of `Import` to the end of the file's")
	r.p("first 64 KiB read, and the whole read to the end of reading all of it (1 MiB reads, 4 in flight),")
	r.p("with the background copy (thickener) held back, so every block comes from a demand fetch. restic")
	r.p("has no instant clone: its restore must finish before the first read, so both of its figures are")
	r.p("`restic restore latest` (with a fresh cache) until it returns, then the read of the restored file.")
	r.p("Every byte read back is checked against the image. Ratios are dstore over restic: below 1× dstore")
	r.p("takes less time or fewer bytes.")
	r.p("%s", r.runsOf("ox"))
	r.p("")
	r.p("| case | dstore | restic | dstore/restic |")
	r.p("|---|---:|---:|---:|")
	med := func(server, cas, m string) float64 {
		v, _ := t.median(key{"ox", server, cas}, m)
		return v
	}
	var groups []group
	row := func(label, cas, m string, format func(float64) string, dnote string, unit float64, chartLabel string) {
		d, rs := med("dstore", cas, m), med("restic", cas, m)
		r.p("| %s | %s%s | %s | %s |", label, format(d), dnote, format(rs), ratioStr(ratio(d, rs)))
		groups = append(groups, group{label: chartLabel, bars: []bar{
			{series: "dstore", value: d / unit, text: format(d)},
			{series: "restic", value: rs / unit, text: format(rs)},
		}})
	}
	bytesStr := func(v float64) string {
		if math.IsNaN(v) {
			return "–"
		}
		return iec(v)
	}
	row("export, full: time", "export-full", "seconds", seconds, "", 1, "export full (s)")
	row("export, full: bytes stored", "export-full", "stored_bytes", bytesStr, "", 1<<20, "stored, full (MiB)")
	row("export, 1% changed: time", "export-incremental", "seconds", seconds, "", 1, "export 1% changed (s)")
	row("export, 1% changed: bytes sent", "export-incremental", "stored_bytes", bytesStr, "", 1<<20, "sent, 1% changed (MiB)")
	imp := med("dstore", "first-read", "import_seconds")
	note := ""
	if !math.IsNaN(imp) {
		note = " (`Import` " + seconds(imp) + ")"
	}
	row("time to first read of an S3 clone (64 KiB) vs `restic restore`", "first-read", "seconds", seconds, note, 1, "first read of a clone (s)")
	fetched := med("dstore", "whole-read", "fetched_bytes")
	note = ""
	if !math.IsNaN(fetched) {
		note = " (" + iec(fetched) + " fetched)"
	}
	row("read the whole clone vs `restic restore`", "whole-read", "seconds", seconds, note, 1, "whole clone read (s)")
	r.p("")
	return r.chart("ox", "Object exchange to S3: dstore vs restic (medians; shorter is better)", groups)
}

// Package e2e tests dstore serve end to end under the real Linux NFSv3
// client. This machine's kernel has no NFS client, so every scenario boots a
// User-Mode Linux guest through ../shared/uml-nfs/run (see its README): the
// guest's root is this machine's /, and a scenario script from scripts/
// starts dstore inside the guest on 127.0.0.1, mounts it with the kernel's
// client and checks what it does.
//
// Two guests run at a time (DSTORE_E2E_PARALLEL changes that): each
// keeps its state in its own tmpfs and scratch disk, and a guest is mostly
// one busy host thread. Each scenario takes from a few seconds to a few
// minutes (bigdir up to 10 on a slow host); the whole suite needs 5 to 10
// minutes (set go test -timeout accordingly; the Makefile's `make e2e`
// does).
//
// Environment:
//
//	DSTORE_UMLNFS   the uml-nfs directory (default: <repo>/../shared/uml-nfs)
//	CI=true         a missing linux.uml, uml-nfs or fio is a failure, not a skip
//	DSTORE_E2E_RACE=1  build the server with -race
//	DSTORE_E2E_PARALLEL=N  guests at a time (default 2; 1 = one after another)
//
// A guest still running 25 s before its limit is diagnosed from the host
// (umldiag_test.go: its processes' CPU, its kernel's stack through gdb,
// memory and blocked tasks through UML's mconsole), and a guest kernel
// found spinning in its idle loop after losing its timer signal (a
// User-Mode Linux bug) gets the signal delivered (kickLostTimers).
//
// A scenario can also be run by hand from the repository root:
//
//	make build && ../shared/uml-nfs/run -d 1G e2e/scripts/ops.sh bin/dstore
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A scenario is one guest run of scripts/<script>.sh (default: its name).
type scenario struct {
	name    string
	script  string
	disk    string        // run -d: the guest's scratch disk, where the datastore lives
	mem     string        // run -m
	timeout time.Duration // run -t: the guest is stopped after this
	tools   []string      // host packages the script needs, installed with apt-get when missing
	s3      bool          // the script's third argument is the versitygw binary
}

var scenarios = []scenario{
	// First, as the longest: 20,000 CREATEs, then as many REMOVEs, each a
	// durable round trip: 2 to 10 minutes, depending on the host (every
	// guest system call is emulated).
	{name: "bigdir", disk: "1G", mem: "1G", timeout: 900 * time.Second},
	// A 2 GiB vDisk exported to versitygw and imported into a second,
	// fresh datastore: instant first read, what a 10 MiB read fetches,
	// SIGKILL mid-export and mid-thickening (3 to 6 minutes).
	{name: "ox", disk: "4G", mem: "1G", timeout: 600 * time.Second, s3: true},
	{name: "mount", disk: "1G", mem: "1G", timeout: 90 * time.Second},
	{name: "ops", disk: "1G", mem: "1G", timeout: 150 * time.Second},
	// 2 GiB: 256 MiB of source data sits in the guest's tmpfs.
	{name: "dd", disk: "2G", mem: "2G", timeout: 240 * time.Second},
	// The same with a 1 GiB guest, where the client's dirty NFS pages reach
	// the kernel's dirty limit: the loopback-NFS writeback deadlock, unless
	// the server's log and pack writers run as I/O flushers
	// (PR_SET_IO_FLUSHER; before they did, the server's NVLOG writes were
	// throttled in balance_dirty_pages and this run hung).
	{name: "dd-mem1G", script: "dd", disk: "2G", mem: "1G", timeout: 180 * time.Second},
	{name: "vdisk", disk: "2G", mem: "1G", timeout: 240 * time.Second},
	{name: "fio", disk: "2G", mem: "1G", timeout: 180 * time.Second, tools: []string{"fio"}},
	{name: "kill", disk: "2G", mem: "1G", timeout: 180 * time.Second},
	// Snapshots, clones and restores of an ext4 vDisk through the CLI and
	// the control socket, and /snapstore over NFS.
	{name: "snapshot", disk: "2G", mem: "1G", timeout: 360 * time.Second, tools: []string{"fio"}},
	// The scratch disk is the small file system: 600 MB less the
	// datastore's reserve (2*64 MiB + 32 MiB) and its NVLOG segments leaves
	// about 200 MiB to fill.
	{name: "enospc", disk: "600M", mem: "1G", timeout: 240 * time.Second},
}

// slack is what the guest's boot, apt-get and run's own kill delay may add
// to a scenario's timeout before the test gives up on the process.
const slack = 3 * time.Minute

func TestKernelClient(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the e2e scenarios boot User-Mode Linux guests")
	}
	h := setup(t)
	// gdb lets the host diagnose a frozen guest and heal a lost timer
	// signal (umldiag_test.go): installed when missing and possible.
	if _, err := exec.LookPath("gdb"); err != nil {
		if os.Geteuid() == 0 {
			h.ensureTool(t, "gdb")
		} else {
			t.Log("no gdb, and only root can apt-get install it: a guest kernel that loses its timer signal will not be helped")
		}
	}
	var (
		mu      sync.Mutex
		summary []string
	)
	par := 2
	if v := os.Getenv("DSTORE_E2E_PARALLEL"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("DSTORE_E2E_PARALLEL=%q: want a number >= 1", v)
		}
		par = n
	}
	slots := make(chan struct{}, par)
	t.Run("all", func(t *testing.T) {
		for _, sc := range scenarios {
			t.Run(sc.name, func(t *testing.T) {
				t.Parallel()
				slots <- struct{}{}
				defer func() { <-slots }()
				runScenario(t, h, sc, &mu, &summary)
			})
		}
	})
	t.Logf("scenarios:\n%s", strings.Join(summary, "\n"))
}

// runScenario runs one scenario and adds its line to the summary.
func runScenario(t *testing.T, h *harness, sc scenario, mu *sync.Mutex, summary *[]string) {
	start := time.Now()
	var why string
	defer func() {
		status := "passed"
		switch {
		case t.Skipped():
			status = "skipped"
		case t.Failed():
			status = "FAILED"
		}
		line := fmt.Sprintf("%-8s %-7s %6.1fs", sc.name, status, time.Since(start).Seconds())
		if t.Failed() && why != "" {
			// The summary is the tail of a long log, often all a CI
			// report keeps: say there why the scenario failed.
			line += "  " + why
		}
		mu.Lock()
		defer mu.Unlock()
		*summary = append(*summary, line)
	}()
	h.run(t, sc, &why)
}

// harness is what every scenario shares: where things are, and the server
// binary built for this run.
type harness struct {
	root   string // the repository
	umlnfs string // the uml-nfs directory
	dstore string // the server binary
	ci     bool
}

// setup finds uml-nfs and linux.uml (skipping, or failing under CI=true,
// when they are missing) and builds bin/e2e-*/dstore.
func setup(t *testing.T) *harness {
	t.Helper()
	h := &harness{ci: os.Getenv("CI") == "true"}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	h.root = filepath.Dir(wd) // go test runs in <repo>/e2e
	if _, err := os.Stat(filepath.Join(h.root, "go.mod")); err != nil {
		t.Fatalf("no go.mod above %s: %v", wd, err)
	}
	h.umlnfs = os.Getenv("DSTORE_UMLNFS")
	if h.umlnfs == "" {
		h.umlnfs = filepath.Join(h.root, "..", "shared", "uml-nfs")
	}
	if abs, err := filepath.Abs(h.umlnfs); err == nil {
		h.umlnfs = abs
	}
	if _, err := os.Stat(filepath.Join(h.umlnfs, "run")); err != nil {
		h.skipOrFail(t, "no uml-nfs at %s (set DSTORE_UMLNFS): %v", h.umlnfs, err)
	}
	if _, err := exec.LookPath("linux.uml"); err != nil {
		if !h.ci {
			t.Skip("linux.uml not installed: apt-get install user-mode-linux, or run with CI=true to let uml-nfs/run install it")
		}
		t.Log("linux.uml not installed: uml-nfs/run installs it (CI=true)")
	}

	bindir := filepath.Join(h.root, "bin")
	if err := os.MkdirAll(bindir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Under the work tree, not in $TMPDIR: the guest sees the host's files
	// through hostfs, except where it mounts its own tmpfs (/run, /dev/shm).
	dir, err := os.MkdirTemp(bindir, "e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	h.dstore = filepath.Join(dir, "dstore")
	args := []string{"build", "-o", h.dstore}
	if os.Getenv("DSTORE_E2E_RACE") == "1" {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/dstore")
	cmd := exec.Command(goTool(), args...)
	cmd.Dir = h.root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return h
}

func (h *harness) skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if h.ci {
		t.Fatalf("CI=true: "+format, args...)
	}
	t.Skipf(format, args...)
}

// goTool is the go command that runs this test, or the one on $PATH.
func goTool() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// run boots one guest for sc and fails t unless the script exits 0. It
// sets *why to the script's first FAIL line, if it printed one (t.Fatal
// unwinds the caller too, so not as a result).
func (h *harness) run(t *testing.T, sc scenario, why *string) {
	for _, tool := range sc.tools {
		h.ensureTool(t, tool)
	}
	limit := sc.timeout + slack
	if dl, ok := t.Deadline(); ok {
		if left := time.Until(dl) - 10*time.Second; left < limit {
			if left < sc.timeout {
				h.skipOrFail(t, "only %s left before go test's -timeout; %s needs up to %s (raise -timeout; `make e2e` does)",
					left.Round(time.Second), sc.name, sc.timeout)
			}
			limit = left
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()

	secs := strconv.Itoa(int(sc.timeout / time.Second))
	name := sc.script
	if name == "" {
		name = sc.name
	}
	script := filepath.Join("e2e", "scripts", name+".sh")
	args := []string{"-m", sc.mem, "-d", sc.disk, "-t", secs, script, h.dstore, secs}
	if sc.s3 {
		gw := h.versitygw(t)
		if gw == "" {
			return
		}
		args = append(args, gw)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(h.umlnfs, "run"), args...)
	cmd.Dir = h.root
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	// run starts linux.uml (and timeout, tail, sed) as its children: end
	// the whole process group if the test gives up on it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	out := newLineLogger(t)
	defer func() { *why = out.failure() }()
	cmd.Stdout = out
	cmd.Stderr = out
	t.Logf("%s -m %s -d %s -t %s %s", filepath.Join(h.umlnfs, "run"), sc.mem, sc.disk, secs, script)
	start := time.Now()
	err := cmd.Start()
	if err == nil {
		stop := h.hostWatchdog(sc, cmd.Process.Pid, out)
		stopKicks := h.kickLostTimers(sc, cmd.Process.Pid, out)
		err = cmd.Wait()
		if n := stopKicks(); n > 0 {
			t.Logf("%s: the host delivered %d timer signal(s) its guest kernel had lost (a User-Mode Linux bug, not the server's)", sc.name, n)
		}
		stop()
	}
	out.Flush()
	took := time.Since(start).Round(100 * time.Millisecond)
	var ee *exec.ExitError
	switch {
	case err == nil:
		t.Logf("%s passed in %s", sc.name, took)
	case ctx.Err() != nil:
		t.Fatalf("%s: the test stopped the guest after %s (limit %s): %v", sc.name, took, limit, err)
	case errors.As(err, &ee) && ee.ExitCode() == 124:
		t.Fatalf("%s: the guest ran past its %ss limit (a hang: see the WATCHDOG diagnostics above)", sc.name, secs)
	case errors.As(err, &ee) && ee.ExitCode() == 125:
		t.Fatalf("%s: the guest never started (boot log above)", sc.name)
	default:
		t.Fatalf("%s failed after %s: %v (see FAIL above)", sc.name, took, err)
	}
}

// hostWatchdog diagnoses the guest from the host (diagnoseGuest) if it
// still runs 25 s before its limit, before the guest's own watchdog
// (scripts/common.sh) stops the server: the guest's watchdog cannot print
// when the whole guest is frozen. The returned stop waits for a diagnosis
// under way, so that nothing is logged after the test ends.
func (h *harness) hostWatchdog(sc scenario, root int, out *lineLogger) (stop func()) {
	after := sc.timeout - 25*time.Second
	if after < 30*time.Second {
		return func() {}
	}
	done := make(chan struct{})
	timer := time.AfterFunc(after, func() {
		defer close(done)
		out.note(fmt.Sprintf("HOST WATCHDOG: %s still runs %s after it started; what the host sees of the guest:", sc.name, after))
		for _, l := range strings.Split(strings.TrimRight(h.diagnoseGuest(root), "\n"), "\n") {
			out.note("    " + l)
		}
	})
	return func() {
		if !timer.Stop() {
			<-done
		}
	}
}

// versitygw is the S3 server binary the OX scenario starts in its guest:
// $DSTORE_VERSITYGW, or .cache/bin/versitygw (make test builds it there).
// Without it the scenario skips, or fails under CI=true.
func (h *harness) versitygw(t *testing.T) string {
	p := os.Getenv("DSTORE_VERSITYGW")
	if p == "" {
		p = filepath.Join(h.root, ".cache", "bin", "versitygw")
	}
	if _, err := os.Stat(p); err != nil {
		h.skipOrFail(t, "no versitygw at %s (make versitygw builds it): %v", p, err)
		return ""
	}
	return p
}

// ensureTool installs the Debian package of the same name when the command
// is missing. The guest's / is this machine's, so the guest sees it too.
func (h *harness) ensureTool(t *testing.T, tool string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err == nil {
		return
	}
	if os.Geteuid() != 0 {
		h.skipOrFail(t, "%s is not installed and only root can apt-get install it", tool)
	}
	t.Logf("%s is not installed: apt-get install %s", tool, tool)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, args := range [][]string{{"update", "-qq"}, {"install", "-y", "-qq", tool}} {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			h.skipOrFail(t, "apt-get %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	if _, err := exec.LookPath(tool); err != nil {
		h.skipOrFail(t, "apt-get installed %s, yet it is not on $PATH", tool)
	}
}

// lineLogger streams what the guest prints into the test log, a line at a
// time, as it comes (with go test -v).
type lineLogger struct {
	t    *testing.T
	mu   sync.Mutex
	buf  []byte
	fail string    // the first line with "FAIL" or "WATCHDOG"
	last time.Time // when the guest last printed a line
}

// quiet is how long the guest has printed nothing.
func (l *lineLogger) quiet() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Since(l.last)
}

// failure is the first line that said why the scenario failed, if any.
func (l *lineLogger) failure() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fail
}

func (l *lineLogger) line(s string) {
	if l.fail == "" && (strings.Contains(s, "FAIL") || strings.Contains(s, "WATCHDOG")) {
		l.fail = strings.TrimSpace(s)
		if len(l.fail) > 400 {
			l.fail = l.fail[:400] + "..."
		}
	}
	l.t.Log(s)
}

// note logs one line of the test's own, between the guest's lines.
func (l *lineLogger) note(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.line(s)
}

func newLineLogger(t *testing.T) *lineLogger { return &lineLogger{t: t, last: time.Now()} }

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.line(strings.TrimRight(string(l.buf[:i]), "\r"))
		l.buf = l.buf[i+1:]
		l.last = time.Now()
	}
	return len(p), nil
}

// Flush logs a last line that had no newline.
func (l *lineLogger) Flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.line(string(l.buf))
		l.buf = nil
	}
}

// The scripts are POSIX sh: a syntax error should fail here, at once, not
// after a guest boots.
func TestScriptsParse(t *testing.T) {
	sh, err := exec.LookPath("dash")
	if err != nil {
		sh = "sh"
	}
	files, err := filepath.Glob(filepath.Join("scripts", "*.sh"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts/*.sh: %v", err)
	}
	names := map[string]bool{}
	for _, f := range files {
		names[strings.TrimSuffix(filepath.Base(f), ".sh")] = true
		if out, err := exec.Command(sh, "-n", f).CombinedOutput(); err != nil {
			t.Errorf("%s -n %s: %v\n%s", sh, f, err, out)
		}
	}
	for _, sc := range scenarios {
		name := sc.script
		if name == "" {
			name = sc.name
		}
		if !names[name] {
			t.Errorf("scenario %s has no scripts/%s.sh", sc.name, name)
		}
	}
}

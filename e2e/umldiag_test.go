package e2e

// Host-side diagnostics of a guest that stops answering. The scenario's own
// watchdog (scripts/common.sh) runs inside the guest, so when the whole
// guest freezes (its kernel lost its timer signal: kickLostTimers) it
// prints nothing.
// Seen from the host, a User-Mode Linux guest is a set of ordinary
// processes (its kernel, and one host process per guest address space),
// and its kernel answers on a management socket, the mconsole
// (~/.uml/UMID/mconsole), whose "sysrq" requests are served from the
// kernel's interrupt handler and whose reply carries what the request
// printed. That is enough to tell a guest that spins from one that waits,
// and on what.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// umlProc is one host process of a guest, from /proc/PID/stat.
type umlProc struct {
	pid   int
	state string
	ticks int64 // utime + stime, in clock ticks
	comm  string
}

// treeProcs lists the host processes descended from root, root included
// (not by process group: timeout(1), which run starts linux.uml under,
// makes a group of its own).
func treeProcs(root int) map[int]umlProc {
	ents, _ := os.ReadDir("/proc")
	all := make(map[int]umlProc)
	parent := make(map[int]int)
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ppid, ok := procStat(pid); ok {
			all[pid], parent[pid] = p, ppid
		}
	}
	procs := make(map[int]umlProc)
	for pid, p := range all {
		for q, hops := pid, 0; q > 1 && hops < 64; q, hops = parent[q], hops+1 {
			if q == root {
				procs[pid] = p
				break
			}
		}
	}
	return procs
}

// procStat reads one process's /proc/PID/stat: pid (comm) state ppid
// pgrp ... utime(14) stime(15).
func procStat(pid int) (p umlProc, ppid int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return p, 0, false
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return p, 0, false
	}
	f := strings.Fields(s[end+1:])
	if len(f) < 13 {
		return p, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return umlProc{pid: pid, state: f[0], ticks: ut + st, comm: s[open+1 : end]}, ppid, true
}

// diagnoseGuest reports, for the guest started by process root: which of
// its host processes used CPU over two seconds; where its kernel is, three
// times (kernelStacks); and what the kernel says to the mconsole requests
// "sysrq m" (memory) and "sysrq w" (blocked tasks, with their stacks).
func (h *harness) diagnoseGuest(root int) string {
	var b strings.Builder
	before := treeProcs(root)
	time.Sleep(2 * time.Second)
	after := treeProcs(root)
	pids := make([]int, 0, len(after))
	for pid := range after {
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	fmt.Fprintf(&b, "host processes of the guest (CPU ticks used over 2 s, host state, host wchan):\n")
	for _, pid := range pids {
		p := after[pid]
		wchan, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", pid))
		fmt.Fprintf(&b, "  %d %s state=%s ticks=%d wchan=%s\n", pid, p.comm, p.state, p.ticks-before[pid].ticks, wchan)
	}
	b.WriteString(hostMemory(after))
	sock, kernel := mconsoleSocket(after)
	if sock == "" {
		b.WriteString("no mconsole socket found under ~/.uml for these processes\n")
		return b.String()
	}
	b.WriteString(h.kernelStacks(kernel))
	// "sysrq 8" first: the dumps print at KERN_INFO, below the quiet
	// guest's console level, and a console (the mconsole's too) shows
	// only what is above its level. Not "sysrq t" (every task): this
	// kernel panics walking an idle kernel thread's stack; nor "sysrq p",
	// which in UML shows no stack.
	for _, req := range []string{"sysrq 8", "sysrq m", "sysrq w"} {
		out, err := mconsole(sock, req, 10*time.Second)
		fmt.Fprintf(&b, "mconsole %q:\n", req)
		if out != "" {
			if len(out) > 60000 {
				out = out[:60000] + "\n... (cut)"
			}
			b.WriteString(out)
			if !strings.HasSuffix(out, "\n") {
				b.WriteString("\n")
			}
		}
		if err != nil {
			fmt.Fprintf(&b, "  (no complete answer: %v)\n", err)
		}
	}
	return b.String()
}

// mconsoleSocket finds the mconsole of the guest whose kernel is one of
// procs, and the kernel's host pid, which UML writes to ~/.uml/UMID/pid.
func mconsoleSocket(procs map[int]umlProc) (sock string, kernel int) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", 0
	}
	dirs, _ := filepath.Glob(filepath.Join(home, ".uml", "*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "pid"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			continue
		}
		if _, ok := procs[pid]; ok {
			return filepath.Join(d, "mconsole"), pid
		}
	}
	return "", 0
}

// mconsole sends one request to a UML management console and returns the
// text of its reply, which may come in several datagrams. Request: u32
// magic 0xcafebabe, u32 version 2, u32 length, 512 bytes of text. Reply:
// u32 error, u32 more, u32 length, 512 bytes of text (host byte order).
func mconsole(sock, req string, timeout time.Duration) (string, error) {
	const maxData = 512
	dir, err := os.MkdirTemp("", "mconsole")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	local := &net.UnixAddr{Name: filepath.Join(dir, "c"), Net: "unixgram"}
	c, err := net.ListenUnixgram("unixgram", local)
	if err != nil {
		return "", err
	}
	defer c.Close()
	msg := make([]byte, 12+maxData)
	binary.NativeEndian.PutUint32(msg[0:], 0xcafebabe)
	binary.NativeEndian.PutUint32(msg[4:], 2)
	binary.NativeEndian.PutUint32(msg[8:], uint32(len(req)))
	copy(msg[12:], req)
	if _, err := c.WriteToUnix(msg, &net.UnixAddr{Name: sock, Net: "unixgram"}); err != nil {
		return "", err
	}
	var out bytes.Buffer
	buf := make([]byte, 12+maxData)
	deadline := time.Now().Add(timeout)
	for {
		// The kernel sends a long reply faster than it is read, and
		// drops what overflows the socket's queue (its last datagram,
		// more = 0, among them): stop waiting 2 s after the last one.
		// With the console level raised, the whole dump also reaches
		// the guest's console, which the test logs.
		wait := deadline
		if soon := time.Now().Add(2 * time.Second); out.Len() > 0 && soon.Before(deadline) {
			wait = soon
		}
		if err := c.SetReadDeadline(wait); err != nil {
			return out.String(), err
		}
		n, _, err := c.ReadFromUnix(buf)
		if ne, ok := err.(net.Error); ok && ne.Timeout() && out.Len() > 0 {
			return out.String(), errors.New("the rest of the reply was dropped, or is late")
		}
		if err != nil {
			return out.String(), err
		}
		if n < 12 {
			return out.String(), fmt.Errorf("a reply of %d bytes", n)
		}
		code := binary.NativeEndian.Uint32(buf[0:])
		more := binary.NativeEndian.Uint32(buf[4:])
		l := int(binary.NativeEndian.Uint32(buf[8:]))
		l = min(l, n-12)
		out.Write(bytes.TrimRight(buf[12:12+l], "\x00"))
		if code != 0 {
			return out.String(), fmt.Errorf("error %d", code)
		}
		if more == 0 {
			return out.String(), nil
		}
	}
}

// TestHostDiagnostics boots a guest that only sleeps and checks that the
// host-side diagnosis sees its processes and gets its kernel's memory
// report and list of blocked tasks through the mconsole.
func TestHostDiagnostics(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: boots a User-Mode Linux guest")
	}
	h := setup(t)
	h.ensureTool(t, "gdb")
	script := filepath.Join(filepath.Dir(h.dstore), "idle.sh")
	if err := os.WriteFile(script, []byte("echo idle-guest-ready\necho run prints a line once the next one comes\nexec sleep 120\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(h.umlnfs, "run"), "-m", "256M", "-t", "150", script)
	cmd.Dir = h.root
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	defer func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	}()
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "idle-guest-ready") {
				ready <- nil
				io.Copy(io.Discard, pr)
				return
			}
		}
		ready <- fmt.Errorf("the guest ended without saying it was ready (%v)", sc.Err())
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("the guest did not start within 3 minutes")
	}
	time.Sleep(time.Second) // let the script exec sleep
	got := h.diagnoseGuest(cmd.Process.Pid)
	t.Logf("diagnosis:\n%s", got)
	for _, want := range []string{
		"linux.uml state=",   // the host's view of the guest's processes
		"guest memory file",  // where UML keeps the guest's memory
		"Mem-Info",           // sysrq m through the mconsole
		"Show Blocked State", // sysrq w
		"cpu_startup_entry",  // the idle kernel's stack, from gdb, named from kallsyms
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the diagnosis lacks %q", want)
		}
	}
}

// hostMemory reports the host's available memory and where the guest's
// memory lives: UML maps it from a deleted temporary file ($TMPDIR,
// /dev/shm or /tmp), and a guest whose memory file sits on a disk, or on a
// nearly full tmpfs, behaves differently from one in RAM.
func hostMemory(procs map[int]umlProc) string {
	var b strings.Builder
	if mi, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(mi), "\n") {
			if strings.HasPrefix(l, "MemAvailable:") || strings.HasPrefix(l, "Dirty:") || strings.HasPrefix(l, "Shmem:") {
				fmt.Fprintf(&b, "host %s\n", strings.Join(strings.Fields(l), " "))
			}
		}
	}
	seen := map[string]bool{}
	for pid, p := range procs {
		if p.comm != "linux.uml" {
			continue
		}
		maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(maps), "\n") {
			if !strings.HasSuffix(l, "(deleted)") {
				continue
			}
			f := strings.Fields(l)
			if len(f) < 7 || seen[f[5]] {
				continue
			}
			seen[f[5]] = true
			dir := filepath.Dir(f[5])
			var st syscall.Statfs_t
			if err := syscall.Statfs(dir, &st); err == nil {
				fmt.Fprintf(&b, "guest memory file %s (%s: type %#x, %d MiB free of %d)\n", f[5], dir, st.Type,
					st.Bavail*uint64(st.Bsize)>>20, st.Blocks*uint64(st.Bsize)>>20)
			} else {
				fmt.Fprintf(&b, "guest memory file %s\n", f[5])
			}
		}
	}
	return b.String()
}

// kernelStacks samples, three times, where the guest's kernel is: a UML
// kernel is the host process pid, and its host stack is the stack of the
// guest's running kernel context, so gdb's backtrace of it, with the
// addresses named from the guest's /proc/kallsyms (umlKallsyms), is a
// guest kernel backtrace. A frozen guest has been seen with its kernel at
// 100% of a host CPU, every guest process stopped and none blocked: this
// says where it spins.
func (h *harness) kernelStacks(pid int) string {
	gdb, err := exec.LookPath("gdb")
	if err != nil {
		return "no gdb on this host: no kernel stacks (apt-get install gdb)\n"
	}
	var b strings.Builder
	syms, serr := h.umlKallsyms()
	if serr != nil {
		fmt.Fprintf(&b, "guest kernel symbols: %v\n", serr)
	}
	for i := range 3 {
		if i > 0 {
			time.Sleep(300 * time.Millisecond)
		}
		out, err := gdbBacktrace(gdb, pid, 40)
		fmt.Fprintf(&b, "guest kernel stack, sample %d (gdb on host pid %d):\n", i+1, pid)
		st := symbolize(string(out), syms)
		for _, l := range strings.Split(strings.TrimRight(st, "\n"), "\n") {
			if l != "" {
				b.WriteString("  " + l + "\n")
			}
		}
		if st == "" {
			fmt.Fprintf(&b, "  (no backtrace: %v)\n%s\n", err, out)
		}
	}
	return b.String()
}

// kallsyms is a guest kernel's text symbols, by address.
type kallsyms struct {
	addrs []uint64
	names []string
}

// name is "symbol+0xoffset" for a text address, or "".
func (k *kallsyms) name(a uint64) string {
	if k == nil || len(k.addrs) == 0 || a < k.addrs[0] {
		return ""
	}
	i := sort.Search(len(k.addrs), func(i int) bool { return k.addrs[i] > a }) - 1
	if i == len(k.addrs)-1 && a-k.addrs[i] > 1<<20 {
		return ""
	}
	return fmt.Sprintf("%s+%#x", k.names[i], a-k.addrs[i])
}

var (
	kallsymsOnce sync.Once
	kallsymsVal  *kallsyms
	kallsymsErr  error
)

// umlKallsyms reads /proc/kallsyms in a guest of its own (the UML kernel
// is not position independent, so every guest has the same addresses),
// once per test run.
func (h *harness) umlKallsyms() (*kallsyms, error) {
	kallsymsOnce.Do(func() {
		dir, err := os.MkdirTemp(filepath.Join(h.root, "bin"), "kallsyms-")
		if err != nil {
			kallsymsErr = err
			return
		}
		defer os.RemoveAll(dir)
		out := filepath.Join(dir, "kallsyms")
		script := filepath.Join(dir, "kallsyms.sh")
		if err := os.WriteFile(script, []byte("cat /proc/kallsyms >"+out+"\n"), 0o755); err != nil {
			kallsymsErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if msg, err := exec.CommandContext(ctx, filepath.Join(h.umlnfs, "run"), "-m", "128M", "-t", "60", script).CombinedOutput(); err != nil {
			kallsymsErr = fmt.Errorf("a guest to read /proc/kallsyms: %v: %s", err, msg)
			return
		}
		raw, err := os.ReadFile(out)
		if err != nil {
			kallsymsErr = err
			return
		}
		type sym struct {
			a    uint64
			name string
		}
		var all []sym
		for _, l := range strings.Split(string(raw), "\n") {
			f := strings.Fields(l)
			if len(f) < 3 || (f[1] != "t" && f[1] != "T") {
				continue
			}
			a, err := strconv.ParseUint(f[0], 16, 64)
			if err != nil || a == 0 {
				continue
			}
			all = append(all, sym{a, f[2]})
		}
		if len(all) == 0 {
			kallsymsErr = errors.New("the guest's /proc/kallsyms has no text symbols")
			return
		}
		sort.Slice(all, func(i, j int) bool { return all[i].a < all[j].a })
		k := &kallsyms{}
		for _, s := range all {
			k.addrs = append(k.addrs, s.a)
			k.names = append(k.names, s.name)
		}
		kallsymsVal = k
	})
	return kallsymsVal, kallsymsErr
}

// kickLostTimers works around a bug of the guest kernel (User-Mode Linux
// 6.1): now and then it loses its timer signal. Its clock event then
// stays programmed for a moment already past while the host timer is no
// longer armed, so its idle loop (os_idle_sleep), which only sleeps while
// the host timer is armed, spins at 100% of a host CPU, and no task that
// waits for time (sleep, a timeout, a retransmission) ever wakes again: the
// whole guest freezes, its own watchdog included. It was seen in the
// snapshot and dd-mem1G scenarios, about once in ten runs on a busy host,
// with every guest process stopped and none blocked (diagnoseGuest).
//
// While the guest has printed nothing for 20 s, this looks every few
// seconds at its kernel's host process; when it used the whole CPU for
// two seconds and gdb finds it in os_idle_sleep twice, it delivers the lost
// timer signal (SIGALRM, what the host timer would have sent), which makes
// the kernel run its expired timers and program the next. Each kick is
// logged. The returned stop ends the loop, waits for it and returns the
// kicks.
func (h *harness) kickLostTimers(sc scenario, root int, out *lineLogger) (stop func() int) {
	done := make(chan struct{})
	ended := make(chan struct{})
	kicks := 0
	go func() {
		defer close(ended)
		for {
			select {
			case <-done:
				return
			case <-time.After(3 * time.Second):
			}
			if out.quiet() < 20*time.Second {
				continue
			}
			_, kernel := mconsoleSocket(treeProcs(root))
			if kernel == 0 || !h.spinsIdle(kernel) {
				continue
			}
			if err := syscall.Kill(kernel, syscall.SIGALRM); err != nil {
				continue
			}
			kicks++
			out.note(fmt.Sprintf("HOST: %s's guest kernel (host pid %d) spun in its idle loop with no timer armed (a User-Mode Linux bug: a lost timer signal); sent it the SIGALRM it lost", sc.name, kernel))
		}
	}()
	return func() int {
		close(done)
		<-ended
		return kicks
	}
}

// spinsIdle reports whether the UML kernel with host pid pid used (nearly)
// all of a CPU for two seconds while gdb finds it, twice, in its idle
// loop's os_idle_sleep.
func (h *harness) spinsIdle(pid int) bool {
	ticks := func() int64 {
		p, _, ok := procStat(pid)
		if !ok {
			return -1
		}
		return p.ticks
	}
	t0 := ticks()
	time.Sleep(2 * time.Second)
	t1 := ticks()
	if t0 < 0 || t1 < 0 || t1-t0 < 180 { // clock ticks are 1/100 s
		return false
	}
	gdb, err := exec.LookPath("gdb")
	if err != nil {
		return false
	}
	syms, err := h.umlKallsyms()
	if err != nil {
		return false
	}
	for range 2 {
		bt, _ := gdbBacktrace(gdb, pid, 4)
		if !strings.Contains(symbolize(string(bt), syms), "os_idle_sleep+") {
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
	return true
}

// gdbBacktrace attaches gdb to the host process pid for its innermost
// frames: for a UML kernel, the guest kernel's running context.
func gdbBacktrace(gdb string, pid, frames int) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, gdb, "-nx", "-batch", "-p", strconv.Itoa(pid), "-ex", "bt "+strconv.Itoa(frames)).CombinedOutput()
}

// symbolize appends the guest kernel symbol to each gdb backtrace line
// whose address is one.
func symbolize(bt string, syms *kallsyms) string {
	var b strings.Builder
	for _, l := range strings.Split(bt, "\n") {
		if !strings.HasPrefix(l, "#") {
			continue
		}
		f := strings.Fields(l)
		if len(f) >= 2 && strings.HasPrefix(f[1], "0x") {
			if a, err := strconv.ParseUint(f[1][2:], 16, 64); err == nil {
				if name := syms.name(a); name != "" {
					l += "  " + name
				}
			}
		}
		b.WriteString(l + "\n")
	}
	return b.String()
}

package e2e

// Host-side diagnostics of a guest that stops answering. The scenario's own
// watchdog (scripts/common.sh) runs inside the guest, so when the whole
// guest freezes (every task waiting for memory, say) it prints nothing.
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
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ... utime(14) stime(15)
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		f := strings.Fields(s[end+1:])
		if len(f) < 13 {
			continue
		}
		parent[pid], _ = strconv.Atoi(f[1])
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		all[pid] = umlProc{pid: pid, state: f[0], ticks: ut + st, comm: s[open+1 : end]}
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

// diagnoseGuest reports, for the guest started by process root,
// which of its host processes used CPU over two seconds, and what its
// kernel says to the mconsole requests "sysrq m" (memory) and "sysrq w"
// (blocked tasks, with their kernel stacks).
func diagnoseGuest(root int) string {
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
	sock := mconsoleSocket(after)
	if sock == "" {
		b.WriteString("no mconsole socket found under ~/.uml for these processes\n")
		return b.String()
	}
	// "sysrq 8" first: the dumps print at KERN_INFO, below the quiet
	// guest's console level, and a console (the mconsole's too) shows
	// only what is above its level. Not "sysrq t" (every task): this
	// kernel panics walking an idle kernel thread's stack.
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
// procs: UML writes its host pid to ~/.uml/UMID/pid.
func mconsoleSocket(procs map[int]umlProc) string {
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
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
			return filepath.Join(d, "mconsole")
		}
	}
	return ""
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
	got := diagnoseGuest(cmd.Process.Pid)
	t.Logf("diagnosis:\n%s", got)
	for _, want := range []string{
		"linux.uml state=",   // the host's view of the guest's processes
		"guest memory file",  // where UML keeps the guest's memory
		"Mem-Info",           // sysrq m through the mconsole
		"Show Blocked State", // sysrq w
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

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/dstore/dstore/blockstore"
)

// runApp runs one command line through newApp, as main would, and returns
// the exit code and what went to stdout and stderr.
func runApp(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut syncBuffer
	code = run(context.Background(), append([]string{"dstore"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

// syncBuffer is a bytes.Buffer safe for concurrent writes: the block
// store's goroutines log to stderr while the command writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestVersion(t *testing.T) {
	app := newApp()
	var out bytes.Buffer
	app.Writer = &out
	if err := app.Run([]string{"dstore", "--version"}); err != nil {
		t.Fatalf("--version: %v", err)
	}
	if got, want := out.String(), "dstore "+version+"\n"; got != want {
		t.Errorf("--version printed %q, want %q", got, want)
	}
}

func TestExitCode(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, 0},
		{errors.New("disk on fire"), 1},
		{fmt.Errorf("read: %w", blockstore.ErrCorrupt), 1},
		{usagef("bad flag"), 2},
		{fmt.Errorf("wrapped: %w", usagef("bad flag")), 2},
		{cli.Exit("No help topic for 'nosuch'", 3), 2},
	}
	for _, tt := range tests {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("exitCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

// Every kind of bad command line must exit 2 and say why on stderr, before
// touching any datastore.
func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{},
		{"nosuch"},
		{"--bogus"},
		{"help", "nosuch"},
		{"--log-level", "loud", "status", "--data", dir},
		{"init", "--data", dir, "--block-size", "3X"},
		{"init", "--data", dir, "--block-size", "4KB"},
		{"init", "--data", dir, "--bogus"},
		{"status", "--data", dir, "extra"},
		{"status", "--data"},
		{"verify", "--data", dir, "--json=maybe"},
		{"gc", "--data", dir, "--threshold", "2"},
		{"gc", "--data", dir, "--threshold", "-0.1"},
		{"gc", "--data", dir, "--threshold", "half"},
	} {
		code, _, stderr := runApp(t, args...)
		if code != 2 {
			t.Errorf("dstore %s: exit %d, want 2 (stderr %q)", strings.Join(args, " "), code, stderr)
		}
		if !strings.HasPrefix(stderr, "dstore: ") {
			t.Errorf("dstore %s: stderr %q does not start with \"dstore: \"", strings.Join(args, " "), stderr)
		}
	}
	if blockstore.IsInitialized(dir) {
		t.Errorf("a usage error initialized %s", dir)
	}
}

func TestNotInitialized(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "empty")
	for _, cmd := range []string{"status", "verify", "gc"} {
		code, stdout, stderr := runApp(t, cmd, "--data", dir)
		if code != 1 {
			t.Errorf("%s on %s: exit %d, want 1", cmd, dir, code)
		}
		if stdout != "" {
			t.Errorf("%s on %s: printed %q on stdout", cmd, dir, stdout)
		}
		if !strings.Contains(stderr, "dstore: "+dir+" is not an initialized datastore") {
			t.Errorf("%s on %s: stderr %q does not say so", cmd, dir, stderr)
		}
	}
}

func TestDataDirFromEnv(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "fromenv")
	t.Setenv("DSTORE_DATA", dir)
	_, _, stderr := runApp(t, "status")
	if !strings.Contains(stderr, dir) {
		t.Errorf("status without --data ignored $DSTORE_DATA: stderr %q", stderr)
	}
}

// TestDataDirBeforeCommand: --data is also taken before the command
// (dstore --data DIR status), over $DSTORE_DATA; the command's own --data
// wins over both.
func TestDataDirBeforeCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ds")
	if code, _, stderr := runApp(t, "--data", dir, "init"); code != 0 {
		t.Fatalf("dstore --data DIR init: exit %d, %s", code, stderr)
	}
	t.Setenv("DSTORE_DATA", filepath.Join(t.TempDir(), "fromenv"))
	code, stdout, stderr := runApp(t, "--data", dir, "status", "--json")
	if code != 0 || !strings.Contains(stdout, "block_size") {
		t.Fatalf("dstore --data DIR status --json: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if code, _, stderr := runApp(t, "--data", dir, "group", "create", "only-here", "--match", "x"); code != 0 {
		t.Fatalf("dstore --data DIR group create: exit %d, stderr %q", code, stderr)
	}
	code, stdout, stderr = runApp(t, "group", "list", "--data", dir, "--json")
	if code != 0 || !strings.Contains(stdout, "only-here") {
		t.Fatalf("the group made with dstore --data DIR is not in DIR: exit %d, %q, %q", code, stdout, stderr)
	}
	other := filepath.Join(t.TempDir(), "other")
	_, _, stderr = runApp(t, "--data", dir, "status", "--data", other)
	if !strings.Contains(stderr, other) {
		t.Errorf("the command's own --data did not win: stderr %q", stderr)
	}
}

// TestInitStatus drives the real store: init with a block size, refuse a
// second init, then status in both forms.
func TestInitStatus(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ds")
	code, stdout, stderr := runApp(t, "init", "--data", dir, "--block-size", "8KiB")
	if code != 0 {
		t.Fatalf("init: exit %d, stderr %q", code, stderr)
	}
	if !strings.Contains(stdout, dir) {
		t.Errorf("init printed %q, want it to name %s", stdout, dir)
	}

	code, _, stderr = runApp(t, "init", "--data", dir)
	if code != 1 || !strings.Contains(stderr, "already") {
		t.Errorf("second init: exit %d, stderr %q; want exit 1 and a refusal", code, stderr)
	}
	code, _, stderr = runApp(t, "init", "--data", dir, "--exist-ok")
	if code != 0 {
		t.Errorf("init --exist-ok on a datastore: exit %d, stderr %q", code, stderr)
	}

	code, stdout, stderr = runApp(t, "status", "--data", dir, "--json")
	if code != 0 {
		t.Fatalf("status --json: exit %d, stderr %q", code, stderr)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("status --json printed %q: %v", stdout, err)
	}
	for _, f := range []string{
		"logical_bytes", "physical_bytes", "dedupe_ratio", "compression_ratio",
		"unique_bytes", "stored_bytes", "chunks", "volumes", "layers",
		"log_bytes", "block_size", "packs",
	} {
		if _, ok := got[f]; !ok {
			t.Errorf("status --json has no %q field: %s", f, stdout)
		}
	}
	if bs, _ := got["block_size"].(float64); bs != 8192 {
		t.Errorf("status --json: block_size = %v, want 8192", got["block_size"])
	}
	if _, ok := got["packs"].([]any); !ok {
		t.Errorf("status --json: packs = %v, want an array", got["packs"])
	}

	code, stdout, stderr = runApp(t, "status", "--data", dir)
	if code != 0 {
		t.Fatalf("status: exit %d, stderr %q", code, stderr)
	}
	if !strings.Contains(stdout, "block size") || !strings.Contains(stdout, "8 KiB") {
		t.Errorf("status printed %q, want the block size as 8 KiB", stdout)
	}
}

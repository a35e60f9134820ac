package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/dstore/dstore/blockstore"
	"github.com/dstore/dstore/nfsfs"
	"github.com/dstore/dstore/snapstore"
)

func TestBenchNFSUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"bench"},
		{"bench", "nosuch"},
		{"bench", "nfs", "--workload", "seqread"},
		{"bench", "nfs", "--server", "127.0.0.1:1"},
		{"bench", "nfs", "--server", "127.0.0.1:1", "--workload", "seqreed"},
		{"bench", "nfs", "--server", "127.0.0.1:1", "--workload", "seqread", "--bs", "3000"},
		{"bench", "nfs", "--server", "127.0.0.1:1", "--workload", "seqread", "--bs", "1MB"},
		{"bench", "nfs", "--server", "127.0.0.1:1", "--workload", "randread", "--size", "2K"},
		{"bench", "nfs", "--server", "127.0.0.1:1", "--workload", "randread", "--qd", "0"},
		{"bench", "nfs", "--server", "127.0.0.1:1", "--workload", "randread", "--conns", "0"},
		{"bench", "nfs", "--server", "127.0.0.1:1", "--workload", "randread", "--stable", "sync"},
		{"bench", "nfs", "--server", "127.0.0.1:1", "--workload", "randread", "--duration", "0s"},
		{"bench", "nfs", "--server", "localhost", "--workload", "randread"},
		{"bench", "nfs", "--server", "127.0.0.1:1", "--workload", "randread", "extra"},
	} {
		code, _, stderr := runApp(t, args...)
		if code != exitUsage || !strings.Contains(stderr, "dstore: ") {
			t.Errorf("%q: exit %d, stderr %q; want a usage error", args, code, stderr)
		}
	}
	// No server there: the run fails (1), it is no usage error.
	code, _, stderr := runApp(t, "bench", "nfs", "--server", "127.0.0.1:1", "--mount-port", "1", "--workload", "randread")
	if code != exitFailed || !strings.Contains(stderr, "MOUNT") {
		t.Errorf("no server: exit %d, stderr %q", code, stderr)
	}
}

func TestBenchNFSAgainstServe(t *testing.T) {
	dir := t.TempDir()
	if err := blockstore.Init(dir, blockstore.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	ds, err := snapstore.Open(dir, blockstore.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	n := nfsfs.NewNFS(ds, nfsfs.Options{Logger: log})
	srv := nfsfs.NewServer(nfsfs.ServerOptions{Logger: log})
	srv.Register(n.Program())
	srv.Register(nfsfs.NewMount(n, nfsfs.Access{}).Program())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		ds.Close()
	}()

	code, stdout, stderr := runApp(t, "bench", "nfs", "--server", l.Addr().String(), "--workload", "randwrite",
		"--bs", "4K", "--qd", "4", "--conns", "2", "--size", "1M", "--duration", "200ms", "--verify", "--json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var res map[string]any
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("--json printed %q: %v", stdout, err)
	}
	for _, k := range []string{"workload", "mb_per_s", "iops", "p50_us", "p99_us", "p999_us", "ops", "bytes", "errors"} {
		if _, ok := res[k]; !ok {
			t.Errorf("--json has no %q: %s", k, stdout)
		}
	}
	if res["workload"] != "randwrite" || res["errors"] != float64(0) || res["ops"].(float64) <= 0 || res["verified_bytes"].(float64) <= 0 {
		t.Errorf("unexpected report: %s", stdout)
	}

	code, stdout, stderr = runApp(t, "bench", "nfs", "--server", l.Addr().String(), "--workload", "metadata",
		"--qd", "2", "--duration", "200ms")
	if code != exitOK || !strings.Contains(stdout, "files created, stat'ed and removed") || !strings.Contains(stdout, "IOPS") {
		t.Errorf("metadata: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

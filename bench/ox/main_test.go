package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// The dstore half over a file:// target (no S3 server, no restic): every
// case is measured, and the import reads back the changed image.
func TestDstoreOverFileTarget(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "image")
	data := make([]byte, 3<<20+5000) // not whole 4 KiB blocks: the tail is cut
	rng := mrand.New(mrand.NewPCG(1, 2))
	for i := 0; i < len(data)/2; i++ { // half random, half zeros
		data[i] = byte(rng.Uint32())
	}
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	c := config{image: img, size: 2 << 20, work: filepath.Join(dir, "work"), runs: 2, change: 0.01,
		url: "file://" + filepath.Join(dir, "target")}
	if err := run(context.Background(), c, &out); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var l struct {
			Section, Server, Case string
			Run                   int
			Result                map[string]float64
		}
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("%s: %v", sc.Text(), err)
		}
		if l.Section != "ox" || l.Server != "dstore" || l.Run < 1 || l.Run > 2 {
			t.Errorf("line %s", sc.Text())
		}
		if l.Result["seconds"] <= 0 || l.Result["image_bytes"] != 2<<20 {
			t.Errorf("line %s", sc.Text())
		}
		switch l.Case {
		case "export-full":
			if l.Result["uploaded_bytes"] <= 0 {
				t.Errorf("nothing uploaded: %s", sc.Text())
			}
		case "export-incremental":
			// 1% of 512 blocks: 5 blocks of random data, and a new manifest.
			if l.Result["changed_bytes"] != 5*block || l.Result["uploaded_bytes"] < 5*block {
				t.Errorf("line %s", sc.Text())
			}
		case "whole-read":
			if l.Result["fetched_bytes"] <= 0 {
				t.Errorf("nothing fetched: %s", sc.Text())
			}
		}
		seen[l.Case]++
	}
	for _, cas := range []string{"export-full", "export-incremental", "first-read", "whole-read"} {
		if seen[cas] != 2 {
			t.Errorf("case %s: %d lines, want 2", cas, seen[cas])
		}
	}
	if _, err := os.Stat(c.work); !os.IsNotExist(err) {
		t.Errorf("the work directory is left: %v", err)
	}
}

func TestImages(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "image")
	if err := os.WriteFile(img, make([]byte, 1000*block), 0o644); err != nil {
		t.Fatal(err)
	}
	base, changed, blocks, err := images(img, 0, 0.01, 7)
	if err != nil {
		t.Fatal(err)
	}
	if len(base) != 1000*block || len(changed) != len(base) || len(blocks) != 10 {
		t.Fatalf("%d, %d bytes, %d blocks", len(base), len(changed), len(blocks))
	}
	diff := 0
	for b := range 1000 {
		if !bytes.Equal(base[b*block:(b+1)*block], changed[b*block:(b+1)*block]) {
			diff++
		}
	}
	if diff != 10 {
		t.Errorf("%d blocks differ, want 10", diff)
	}
	// The same seed, the same blocks (dstore and restic change the same).
	_, again, _, _ := images(img, 0, 0.01, 7)
	if !bytes.Equal(again, changed) {
		t.Error("another call with the same seed changed other bytes")
	}
	if p, _, _, _ := images(img, 10*block+100, 0.01, 7); len(p) != 10*block {
		t.Errorf("a prefix of %d bytes", len(p))
	}
}

package main

import (
	"math"
	"testing"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "0", want: 0},
		{in: "16384", want: 16384},
		{in: "4096B", want: 4096},
		{in: "4K", want: 4 << 10},
		{in: "32k", want: 32 << 10},
		{in: "8KiB", want: 8 << 10},
		{in: "64KiB", want: 64 << 10},
		{in: "64kib", want: 64 << 10},
		{in: "16Ki", want: 16 << 10},
		{in: "1 MiB", want: 1 << 20},
		{in: " 10M ", want: 10 << 20},
		{in: "3G", want: 3 << 30},
		{in: "2TiB", want: 2 << 40},
		{in: "7E", want: 7 << 60},
		{in: "9223372036854775807", want: math.MaxInt64},

		{in: "", wantErr: true},
		{in: "K", wantErr: true},
		{in: "-4K", wantErr: true},
		{in: "+4K", wantErr: true},
		{in: "1.5M", wantErr: true},
		{in: "4KB", wantErr: true}, // ambiguous: 1000 or 1024?
		{in: "4mb", wantErr: true},
		{in: "4X", wantErr: true},
		{in: "4 K B", wantErr: true},
		{in: "8E", wantErr: true}, // 2^63 overflows int64
		{in: "9223372036854775808", wantErr: true},
		{in: "99999999999999999999K", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("parseSize(%q) = %d, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestFormatIEC(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0 B"},
		{1023, "1023 B"},
		{1024, "1 KiB"},
		{1536, "1.50 KiB"},
		{16 << 10, "16 KiB"},
		{5<<30 + 512<<20, "5.50 GiB"},
		{64 << 40, "64 TiB"},
		{-2048, "-2 KiB"},
		{math.MaxInt64, "8.00 EiB"},
		{math.MinInt64, "-8 EiB"},
	}
	for _, tt := range tests {
		if got := formatIEC(tt.in); got != tt.want {
			t.Errorf("formatIEC(%d) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFormatRatio(t *testing.T) {
	for in, want := range map[float64]string{
		2.345:        "2.35",
		1:            "1.00",
		math.NaN():   "0.00",
		math.Inf(1):  "0.00",
		math.Inf(-1): "0.00",
	} {
		if got := formatRatio(in); got != want {
			t.Errorf("formatRatio(%v) = %q, want %q", in, got, want)
		}
	}
}

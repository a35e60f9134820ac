package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// sizeUnits maps a lower-cased unit suffix to its multiplier. Every unit is
// a power of 1024: "K", "Ki" and "KiB" all mean 1024 bytes.
var sizeUnits = func() map[string]int64 {
	m := map[string]int64{"": 1, "b": 1}
	for i, p := range "kmgtpe" {
		mult := int64(1) << (10 * (i + 1))
		m[string(p)] = mult
		m[string(p)+"i"] = mult
		m[string(p)+"ib"] = mult
	}
	return m
}()

// parseSize parses a byte count such as "16384", "4K", "32k", "8KiB" or
// "1 MiB". Units are binary. "KB", "MB" and so on are refused rather than
// guessed at, since some tools read them as powers of 1000.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("size %q: want a whole number of bytes, optionally with a unit (K, KiB, M, MiB, G, GiB, ...)", s)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	unit := strings.TrimSpace(t[i:])
	mult, ok := sizeUnits[strings.ToLower(unit)]
	if !ok {
		if len(unit) == 2 && strings.EqualFold(unit[1:], "b") && sizeUnits[strings.ToLower(unit[:1])] > 1 {
			p := strings.ToUpper(unit[:1])
			return 0, fmt.Errorf("size %q: ambiguous unit %q; write %s%s or %s%siB (units are powers of 1024)", s, unit, t[:i], p, t[:i], p)
		}
		return 0, fmt.Errorf("size %q: unknown unit %q (want K, KiB, M, MiB, G, GiB, T, TiB, ...)", s, unit)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return n * mult, nil
}

// formatIEC renders a byte count in IEC units: "512 B", "16 KiB",
// "1.50 GiB". Whole multiples drop the decimals.
func formatIEC(n int64) string {
	const units = "KMGTPE"
	sign, u := "", uint64(n)
	if n < 0 {
		sign, u = "-", uint64(-(n+1))+1
	}
	if u < 1024 {
		return fmt.Sprintf("%s%d B", sign, u)
	}
	i, div := 0, uint64(1024)
	for u/div >= 1024 && i < len(units)-1 {
		div *= 1024
		i++
	}
	if u%div == 0 {
		return fmt.Sprintf("%s%d %ciB", sign, u/div, units[i])
	}
	return fmt.Sprintf("%s%.2f %ciB", sign, float64(u)/float64(div), units[i])
}

// finite returns f, or 0 when f is NaN or infinite (a ratio over nothing),
// which JSON cannot represent.
func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}

func formatRatio(f float64) string { return fmt.Sprintf("%.2f", finite(f)) }

func formatPercent(part, whole int64) string {
	if whole <= 0 {
		return "0.00%"
	}
	return fmt.Sprintf("%.2f%%", 100*float64(part)/float64(whole))
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

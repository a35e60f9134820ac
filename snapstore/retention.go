package snapstore

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Retention is a protection group's policy: which of its snapshots to keep.
// A snapshot is kept if any rule keeps it; the zero value keeps everything.
// See Plan for the rules.
type Retention struct {
	KeepLast   int      `json:"keep_last,omitempty"`
	KeepWithin Duration `json:"keep_within,omitempty"`
	KeepHourly int      `json:"keep_hourly,omitempty"`
	KeepDaily  int      `json:"keep_daily,omitempty"`
	KeepWeekly int      `json:"keep_weekly,omitempty"`
}

// RetentionSnap is a snapshot as retention sees it.
type RetentionSnap struct {
	ID      string
	Created time.Time
}

// RetentionDecision is what Plan decided for one snapshot. Reasons names
// every rule that keeps it, for example "last 3", "within 7d",
// "hourly 2026-11-21 14h", "daily 2026-11-21" or "weekly 2026-W47"; it is
// empty when the snapshot is to be deleted.
type RetentionDecision struct {
	ID      string
	Created time.Time
	Keep    bool
	Reasons []string
}

// IsZero reports whether r has no rule, so that it keeps everything.
func (r Retention) IsZero() bool { return r == Retention{} }

// Validate reports a rule with a negative count or duration.
func (r Retention) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		n    int
	}{
		{"keep_last", r.KeepLast},
		{"keep_hourly", r.KeepHourly},
		{"keep_daily", r.KeepDaily},
		{"keep_weekly", r.KeepWeekly},
	} {
		if f.n < 0 {
			errs = append(errs, fmt.Errorf("retention: %s is %d; want 0 (no rule) or more", f.name, f.n))
		}
	}
	if r.KeepWithin < 0 {
		errs = append(errs, fmt.Errorf("retention: keep_within is negative (%s)", r.KeepWithin))
	}
	return errors.Join(errs...)
}

// String is a human summary such as "keep last 3, within 7d, 24 hourly,
// 7 daily, 4 weekly", or "keep everything" for the zero policy.
func (r Retention) String() string {
	var parts []string
	if r.KeepLast != 0 {
		parts = append(parts, fmt.Sprintf("last %d", r.KeepLast))
	}
	if r.KeepWithin != 0 {
		parts = append(parts, "within "+r.KeepWithin.String())
	}
	if r.KeepHourly != 0 {
		parts = append(parts, fmt.Sprintf("%d hourly", r.KeepHourly))
	}
	if r.KeepDaily != 0 {
		parts = append(parts, fmt.Sprintf("%d daily", r.KeepDaily))
	}
	if r.KeepWeekly != 0 {
		parts = append(parts, fmt.Sprintf("%d weekly", r.KeepWeekly))
	}
	if len(parts) == 0 {
		return "keep everything"
	}
	return "keep " + strings.Join(parts, ", ")
}

// Plan decides which of snaps r keeps, and returns one decision per
// snapshot, newest first. Snapshots with equal Created times are ordered by
// ID, the greater ID counting as the newer (snapshot IDs sort by creation).
//
// The rules, each keeping a snapshot on its own:
//
//   - KeepLast N keeps the N newest snapshots.
//   - KeepWithin D keeps the snapshots created at most D before the newest
//     snapshot (not before now, so a long outage never prunes everything).
//   - KeepHourly, KeepDaily and KeepWeekly N: walking from the newest,
//     each of the N most recent hours, days or ISO weeks (in loc) that
//     hold snapshots keeps its newest snapshot. Days and weeks are calendar
//     days and ISO weeks of the wall clock in loc. An hour is a wall-clock
//     hour of one UTC offset: the hour that repeats when daylight saving
//     time ends is two buckets, its reasons naming the zone ("hourly
//     2026-10-25 02h CEST" and "... 02h CET").
//
// With no rule, or an empty r, everything is kept (reason "no policy").
// Negative counts and durations count as 0; Validate reports them. A nil
// loc means time.Local.
func (r Retention) Plan(snaps []RetentionSnap, loc *time.Location) []RetentionDecision {
	if loc == nil {
		loc = time.Local
	}
	order := make([]int, len(snaps))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		sa, sb := snaps[order[a]], snaps[order[b]]
		if !sa.Created.Equal(sb.Created) {
			return sa.Created.After(sb.Created)
		}
		return sa.ID > sb.ID
	})
	out := make([]RetentionDecision, len(snaps))
	for i, j := range order {
		out[i] = RetentionDecision{ID: snaps[j].ID, Created: snaps[j].Created}
	}
	keep := func(i int, reason string) {
		out[i].Keep = true
		out[i].Reasons = append(out[i].Reasons, reason)
	}

	noRule := r.KeepLast <= 0 && r.KeepWithin <= 0 && r.KeepHourly <= 0 && r.KeepDaily <= 0 && r.KeepWeekly <= 0
	if noRule {
		for i := range out {
			keep(i, "no policy")
		}
		return out
	}
	if len(out) == 0 {
		return out
	}

	if r.KeepLast > 0 {
		reason := fmt.Sprintf("last %d", r.KeepLast)
		for i := 0; i < len(out) && i < r.KeepLast; i++ {
			keep(i, reason)
		}
	}
	if r.KeepWithin > 0 {
		reason := "within " + r.KeepWithin.String()
		newest := out[0].Created
		for i := range out {
			if newest.Sub(out[i].Created) <= time.Duration(r.KeepWithin) {
				keep(i, reason)
			}
		}
	}
	buckets := []struct {
		n      int
		bucket func(time.Time) (key, label string)
	}{
		{r.KeepHourly, hourBucket},
		{r.KeepDaily, dayBucket},
		{r.KeepWeekly, weekBucket},
	}
	for _, b := range buckets {
		left := b.n
		last := ""
		for i := range out {
			if left <= 0 {
				break
			}
			key, label := b.bucket(out[i].Created.In(loc))
			if i > 0 && key == last {
				continue
			}
			last = key
			keep(i, label)
			left--
		}
	}
	return out
}

// hourBucket is t's wall-clock hour together with its UTC offset, so that
// the hour repeated at the end of daylight saving time is two buckets.
func hourBucket(t time.Time) (key, label string) {
	name, off := t.Zone()
	key = fmt.Sprintf("%s %d", t.Format("2006-01-02 15"), off)
	label = "hourly " + t.Format("2006-01-02 15") + "h"
	if hourRepeats(t) {
		label += " " + name
	}
	return key, label
}

// hourRepeats reports whether t's wall-clock hour also occurs at another
// UTC offset near t (the hour that repeats when daylight saving ends).
func hourRepeats(t time.Time) bool {
	_, off := t.Zone()
	for _, d := range []time.Duration{-2 * time.Hour, -time.Hour, -30 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour} {
		u := t.Add(d)
		if _, uoff := u.Zone(); uoff != off && u.Format("2006-01-02 15") == t.Format("2006-01-02 15") {
			return true
		}
	}
	return false
}

func dayBucket(t time.Time) (key, label string) {
	key = t.Format("2006-01-02")
	return key, "daily " + key
}

func weekBucket(t time.Time) (key, label string) {
	y, w := t.ISOWeek()
	key = fmt.Sprintf("%04d-W%02d", y, w)
	return key, "weekly " + key
}

// Duration is a time.Duration that reads and writes as text such as "90m",
// "72h", "7d", "2w" or "1d12h" (in JSON, a string). A day is 24 hours and
// a week 7 days.
type Duration time.Duration

// ParseDuration parses a duration: a sequence of decimal numbers, each
// with a unit, such as "90m", "72h", "7d", "2w", "1d12h" or "1.5h". Units
// are ns, us (or µs), ms, s, m, h, d (24h) and w (7d). "0" is zero.
// Negative durations are rejected.
func ParseDuration(s string) (Duration, error) {
	orig := s
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("duration: empty; want a duration like \"72h\", \"7d\" or \"2w\"")
	}
	if s == "0" {
		return 0, nil
	}
	if s[0] == '-' || s[0] == '+' {
		return 0, fmt.Errorf("duration %q: a sign is not allowed; want a duration like \"72h\", \"7d\" or \"2w\"", orig)
	}
	var total uint64
	for s != "" {
		// The number: digits, optionally with a fraction.
		i := 0
		for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
			i++
		}
		num := s[:i]
		if num == "" || num == "." || strings.Count(num, ".") > 1 {
			return 0, fmt.Errorf("duration %q: want a number before each unit, like \"72h\", \"7d\" or \"1d12h\"", orig)
		}
		s = s[i:]
		j := 0
		for j < len(s) && !(s[j] >= '0' && s[j] <= '9' || s[j] == '.') {
			j++
		}
		unitName := s[:j]
		s = s[j:]
		unit, ok := durationUnits[unitName]
		if !ok {
			if unitName == "" {
				return 0, fmt.Errorf("duration %q: missing unit after %s; units are ns, us, ms, s, m, h, d, w", orig, num)
			}
			return 0, fmt.Errorf("duration %q: unknown unit %q; units are ns, us, ms, s, m, h, d, w", orig, unitName)
		}
		v, err := scaleDecimal(num, unit)
		if err != nil {
			return 0, fmt.Errorf("duration %q: %v", orig, err)
		}
		if v > math.MaxInt64-total {
			return 0, fmt.Errorf("duration %q: too long", orig)
		}
		total += v
	}
	return Duration(total), nil
}

var durationUnits = map[string]uint64{
	"ns": uint64(time.Nanosecond),
	"us": uint64(time.Microsecond),
	"µs": uint64(time.Microsecond),
	"μs": uint64(time.Microsecond),
	"ms": uint64(time.Millisecond),
	"s":  uint64(time.Second),
	"m":  uint64(time.Minute),
	"h":  uint64(time.Hour),
	"d":  uint64(24 * time.Hour),
	"w":  uint64(7 * 24 * time.Hour),
}

// scaleDecimal returns num*unit for a decimal num ("12", "1.5", ".5", "3."),
// truncating below a nanosecond, with overflow checks.
func scaleDecimal(num string, unit uint64) (uint64, error) {
	intPart, frac, _ := strings.Cut(num, ".")
	var v uint64
	if intPart != "" {
		n, err := strconv.ParseUint(intPart, 10, 63)
		if err != nil {
			return 0, errors.New("too long")
		}
		if n > math.MaxInt64/unit {
			return 0, errors.New("too long")
		}
		v = n * unit
	}
	// The fraction: digits beyond 18 are below a nanosecond of a week.
	if len(frac) > 18 {
		frac = frac[:18]
	}
	if frac != "" {
		f, err := strconv.ParseUint(frac, 10, 64)
		if err != nil {
			return 0, errors.New("bad fraction")
		}
		scale := uint64(1)
		for range len(frac) {
			scale *= 10
		}
		// f < scale, so f*unit/scale < unit fits in 64 bits.
		hi, lo := bits.Mul64(f, unit)
		add, _ := bits.Div64(hi, lo, scale)
		if add > math.MaxInt64-v {
			return 0, errors.New("too long")
		}
		v += add
	}
	return v, nil
}

// String formats d in days, hours, minutes and seconds, for example "7d",
// "14d", "1d12h", "1h30m" (weeks are read, never written); parts below a
// second are formatted as time.Duration does. Zero is "0s".
func (d Duration) String() string {
	if d == 0 {
		return "0s"
	}
	v := time.Duration(d)
	var b strings.Builder
	if v < 0 {
		b.WriteByte('-')
		if v == math.MinInt64 {
			return time.Duration(d).String()
		}
		v = -v
	}
	for _, u := range []struct {
		name string
		d    time.Duration
	}{
		{"d", 24 * time.Hour},
		{"h", time.Hour},
		{"m", time.Minute},
		{"s", time.Second},
	} {
		if v >= u.d {
			fmt.Fprintf(&b, "%d%s", v/u.d, u.name)
			v %= u.d
		}
	}
	if v > 0 {
		b.WriteString(v.String())
	}
	return b.String()
}

// MarshalText writes d as String does, so JSON has it as a string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses text with ParseDuration; empty text is zero.
func (d *Duration) UnmarshalText(text []byte) error {
	if len(text) == 0 {
		*d = 0
		return nil
	}
	v, err := ParseDuration(string(text))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

package snapstore

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// rsnaps builds snapshots from "ID@RFC3339" strings.
func rsnaps(t *testing.T, specs ...string) []RetentionSnap {
	t.Helper()
	var out []RetentionSnap
	for _, s := range specs {
		id, ts, ok := strings.Cut(s, "@")
		if !ok {
			t.Fatalf("bad spec %q", s)
		}
		tm, err := time.Parse(time.RFC3339, ts)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, RetentionSnap{ID: id, Created: tm})
	}
	return out
}

func mustLoc(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Skipf("time zone %s: %v", name, err)
	}
	return loc
}

func TestRetentionPlan(t *testing.T) {
	day := Duration(24 * time.Hour)
	tests := []struct {
		name   string
		r      Retention
		loc    string // "" is UTC
		snaps  []string
		order  []string            // IDs newest first; nil: don't check
		keep   map[string][]string // kept ID -> reasons; everything else dropped
		nosort bool
	}{
		{
			name:  "empty list",
			r:     Retention{KeepLast: 3, KeepDaily: 7},
			snaps: nil,
			keep:  map[string][]string{},
		},
		{
			name:  "zero policy keeps everything",
			r:     Retention{},
			snaps: []string{"a@2026-11-20T10:00:00Z", "b@2026-11-21T10:00:00Z"},
			order: []string{"b", "a"},
			keep:  map[string][]string{"a": {"no policy"}, "b": {"no policy"}},
		},
		{
			name:  "negative counts are no rule",
			r:     Retention{KeepLast: -1, KeepDaily: -5},
			snaps: []string{"a@2026-11-20T10:00:00Z", "b@2026-11-21T10:00:00Z"},
			keep:  map[string][]string{"a": {"no policy"}, "b": {"no policy"}},
		},
		{
			name: "keep last 3 of 5, input unsorted",
			r:    Retention{KeepLast: 3},
			snaps: []string{
				"c@2026-11-21T12:00:00Z", "a@2026-11-21T10:00:00Z", "e@2026-11-21T14:00:00Z",
				"b@2026-11-21T11:00:00Z", "d@2026-11-21T13:00:00Z",
			},
			order: []string{"e", "d", "c", "b", "a"},
			keep:  map[string][]string{"e": {"last 3"}, "d": {"last 3"}, "c": {"last 3"}},
		},
		{
			name:  "keep last more than there are",
			r:     Retention{KeepLast: 10},
			snaps: []string{"a@2026-11-21T10:00:00Z", "b@2026-11-21T11:00:00Z"},
			keep:  map[string][]string{"a": {"last 10"}, "b": {"last 10"}},
		},
		{
			name:  "equal timestamps order by ID, greater is newer",
			r:     Retention{KeepLast: 2},
			snaps: []string{"s2@2026-11-21T10:00:00Z", "s3@2026-11-21T10:00:00Z", "s1@2026-11-21T10:00:00Z"},
			order: []string{"s3", "s2", "s1"},
			keep:  map[string][]string{"s3": {"last 2"}, "s2": {"last 2"}},
		},
		{
			name:  "equal timestamps in one hour: the greatest ID is the hour's newest",
			r:     Retention{KeepHourly: 1},
			snaps: []string{"x1@2026-11-21T10:00:00Z", "x2@2026-11-21T10:00:00Z"},
			keep:  map[string][]string{"x2": {"hourly 2026-11-21 10h"}},
		},
		{
			name: "keep within is relative to the newest snapshot, boundary inclusive",
			r:    Retention{KeepWithin: 7 * day},
			snaps: []string{
				"old@2020-01-01T00:00:00Z",
				"edge-@2026-11-14T09:59:59Z", // 7d and 1s before the newest
				"edge@2026-11-14T10:00:00Z",  // exactly 7d before
				"mid@2026-11-18T00:00:00Z",
				"new@2026-11-21T10:00:00Z",
			},
			keep: map[string][]string{"edge": {"within 7d"}, "mid": {"within 7d"}, "new": {"within 7d"}},
		},
		{
			name: "hourly keeps the newest of the N most recent hours with snapshots",
			r:    Retention{KeepHourly: 2},
			snaps: []string{
				"a@2026-11-21T09:30:00Z", "b@2026-11-21T10:05:00Z", "c@2026-11-21T10:55:00Z",
				"d@2026-11-21T12:10:00Z", "e@2026-11-21T12:20:00Z",
			},
			keep: map[string][]string{"e": {"hourly 2026-11-21 12h"}, "c": {"hourly 2026-11-21 10h"}},
		},
		{
			name: "daily skips days without snapshots",
			r:    Retention{KeepDaily: 3},
			snaps: []string{
				"d1a@2026-11-01T08:00:00Z", "d1b@2026-11-01T20:00:00Z", "d3@2026-11-03T08:00:00Z",
				"d7@2026-11-07T23:59:59Z", "d8a@2026-11-08T00:00:00Z", "d8b@2026-11-08T06:00:00Z",
			},
			keep: map[string][]string{"d8b": {"daily 2026-11-08"}, "d7": {"daily 2026-11-07"}, "d3": {"daily 2026-11-03"}},
		},
		{
			name: "daily buckets are days in loc",
			r:    Retention{KeepDaily: 2},
			loc:  "America/New_York",
			snaps: []string{
				// 03:00Z on the 21st is 22:00 on the 20th in New York (EST).
				"a@2026-11-20T15:00:00Z", "b@2026-11-21T03:00:00Z", "c@2026-11-21T15:00:00Z",
			},
			keep: map[string][]string{"c": {"daily 2026-11-21"}, "b": {"daily 2026-11-20"}},
		},
		{
			name: "weekly across the 2026/2027 boundary (2026 has 53 ISO weeks)",
			r:    Retention{KeepWeekly: 2},
			snaps: []string{
				"dec28@2026-12-28T12:00:00Z", // Monday, 2026-W53
				"jan02@2027-01-02T12:00:00Z", // Saturday, still 2026-W53
				"jan04@2027-01-04T12:00:00Z", // Monday, 2027-W01
				"jan05@2027-01-05T12:00:00Z",
			},
			keep: map[string][]string{"jan05": {"weekly 2027-W01"}, "jan02": {"weekly 2026-W53"}},
		},
		{
			name: "weekly: the last days of December 2025 are 2026-W01",
			r:    Retention{KeepWeekly: 3},
			snaps: []string{
				"dec21@2025-12-21T12:00:00Z", // Sunday, 2025-W51
				"dec28@2025-12-28T12:00:00Z", // Sunday, 2025-W52
				"dec29@2025-12-29T12:00:00Z", // Monday, 2026-W01
				"jan01@2026-01-01T12:00:00Z", // 2026-W01
			},
			keep: map[string][]string{"jan01": {"weekly 2026-W01"}, "dec28": {"weekly 2025-W52"}, "dec21": {"weekly 2025-W51"}},
		},
		{
			name: "rules combine: kept if any rule keeps, with every reason",
			r:    Retention{KeepLast: 2, KeepWithin: Duration(3 * time.Hour), KeepHourly: 3, KeepDaily: 2, KeepWeekly: 2},
			snaps: []string{
				"w1@2026-11-09T12:00:00Z", // 2026-W46
				"w2@2026-11-12T12:00:00Z", // 2026-W46
				"d1@2026-11-20T12:00:00Z", // 2026-W47
				"h1@2026-11-21T09:15:00Z",
				"h2@2026-11-21T10:15:00Z",
				"h3@2026-11-21T10:45:00Z",
				"h4@2026-11-21T12:00:00Z",
			},
			order: []string{"h4", "h3", "h2", "h1", "d1", "w2", "w1"},
			keep: map[string][]string{
				"h4": {"last 2", "within 3h", "hourly 2026-11-21 12h", "daily 2026-11-21", "weekly 2026-W47"},
				"h3": {"last 2", "within 3h", "hourly 2026-11-21 10h"},
				"h2": {"within 3h"},
				"h1": {"within 3h", "hourly 2026-11-21 09h"},
				"d1": {"daily 2026-11-20"},
				"w2": {"weekly 2026-W46"},
			},
		},
		{
			name: "DST end in Berlin: the repeated 02h is two hours",
			r:    Retention{KeepHourly: 3, KeepDaily: 1},
			loc:  "Europe/Berlin",
			snaps: []string{
				"a@2026-10-24T23:30:00Z", // 01:30 CEST
				"b@2026-10-25T00:10:00Z", // 02:10 CEST
				"c@2026-10-25T00:40:00Z", // 02:40 CEST
				"d@2026-10-25T01:10:00Z", // 02:10 CET
				"e@2026-10-25T01:40:00Z", // 02:40 CET
			},
			keep: map[string][]string{
				"e": {"hourly 2026-10-25 02h CET", "daily 2026-10-25"},
				"c": {"hourly 2026-10-25 02h CEST"},
				"a": {"hourly 2026-10-25 01h"},
			},
		},
		{
			name: "DST start in Berlin: 02h does not exist, days are calendar days",
			r:    Retention{KeepHourly: 2, KeepDaily: 2},
			loc:  "Europe/Berlin",
			snaps: []string{
				"a@2026-03-28T22:30:00Z", // 23:30 CET on the 28th
				"b@2026-03-28T23:30:00Z", // 00:30 CET on the 29th
				"c@2026-03-29T00:30:00Z", // 01:30 CET
				"d@2026-03-29T01:30:00Z", // 03:30 CEST
			},
			keep: map[string][]string{
				"d": {"hourly 2026-03-29 03h", "daily 2026-03-29"},
				"c": {"hourly 2026-03-29 01h"},
				"a": {"daily 2026-03-28"},
			},
		},
		{
			name:  "a snapshot an hour after another, across the DST start, is in the next day in UTC but not in Berlin",
			r:     Retention{KeepDaily: 5},
			snaps: []string{"a@2026-03-28T23:30:00Z", "b@2026-03-29T00:30:00Z"},
			keep:  map[string][]string{"a": {"daily 2026-03-28"}, "b": {"daily 2026-03-29"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			loc := time.UTC
			if tc.loc != "" {
				loc = mustLoc(t, tc.loc)
			}
			snaps := rsnaps(t, tc.snaps...)
			got := tc.r.Plan(snaps, loc)
			if len(got) != len(snaps) {
				t.Fatalf("%d decisions for %d snapshots", len(got), len(snaps))
			}
			for i := 1; i < len(got); i++ {
				a, b := got[i-1], got[i]
				if a.Created.Before(b.Created) || a.Created.Equal(b.Created) && a.ID < b.ID {
					t.Errorf("decisions not newest first at %d: %s then %s", i, a.ID, b.ID)
				}
			}
			if tc.order != nil {
				var ids []string
				for _, d := range got {
					ids = append(ids, d.ID)
				}
				if !reflect.DeepEqual(ids, tc.order) {
					t.Errorf("order = %v, want %v", ids, tc.order)
				}
			}
			for _, d := range got {
				want, ok := tc.keep[d.ID]
				if d.Keep != ok {
					t.Errorf("%s: keep = %v, want %v (reasons %q)", d.ID, d.Keep, ok, d.Reasons)
					continue
				}
				if ok && !reflect.DeepEqual(d.Reasons, want) {
					t.Errorf("%s: reasons = %q, want %q", d.ID, d.Reasons, want)
				}
				if !ok && len(d.Reasons) != 0 {
					t.Errorf("%s: dropped with reasons %q", d.ID, d.Reasons)
				}
			}
		})
	}
}

func TestRetentionPlanDoesNotModifyInput(t *testing.T) {
	snaps := rsnaps(t, "b@2026-11-21T10:00:00Z", "a@2026-11-22T10:00:00Z")
	before := append([]RetentionSnap(nil), snaps...)
	Retention{KeepLast: 1}.Plan(snaps, nil)
	if !reflect.DeepEqual(snaps, before) {
		t.Fatalf("Plan changed its input: %v", snaps)
	}
}

func TestRetentionValidate(t *testing.T) {
	for _, tc := range []struct {
		r    Retention
		want string // "" is valid
	}{
		{Retention{}, ""},
		{Retention{KeepLast: 1, KeepWithin: Duration(time.Hour), KeepHourly: 1, KeepDaily: 1, KeepWeekly: 1}, ""},
		{Retention{KeepLast: -1}, "keep_last is -1"},
		{Retention{KeepHourly: -2}, "keep_hourly is -2"},
		{Retention{KeepDaily: -3}, "keep_daily is -3"},
		{Retention{KeepWeekly: -4}, "keep_weekly is -4"},
		{Retention{KeepWithin: Duration(-time.Hour)}, "keep_within is negative"},
	} {
		err := tc.r.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.r, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: error %v, want one containing %q", tc.r, err, tc.want)
		}
	}
}

func TestRetentionStringAndIsZero(t *testing.T) {
	if !(Retention{}).IsZero() || (Retention{KeepDaily: 1}).IsZero() {
		t.Error("IsZero wrong")
	}
	for _, tc := range []struct {
		r    Retention
		want string
	}{
		{Retention{}, "keep everything"},
		{Retention{KeepLast: 3, KeepWithin: Duration(7 * 24 * time.Hour), KeepHourly: 24, KeepDaily: 7, KeepWeekly: 4},
			"keep last 3, within 7d, 24 hourly, 7 daily, 4 weekly"},
		{Retention{KeepWithin: Duration(36 * time.Hour)}, "keep within 1d12h"},
		{Retention{KeepWeekly: 52}, "keep 52 weekly"},
	} {
		if got := tc.r.String(); got != tc.want {
			t.Errorf("%+v.String() = %q, want %q", tc.r, got, tc.want)
		}
	}
}

func TestRetentionJSON(t *testing.T) {
	for _, tc := range []struct {
		r    Retention
		json string
	}{
		{Retention{}, `{}`},
		{Retention{KeepLast: 3, KeepWithin: Duration(7 * 24 * time.Hour), KeepHourly: 24, KeepDaily: 7, KeepWeekly: 4},
			`{"keep_last":3,"keep_within":"7d","keep_hourly":24,"keep_daily":7,"keep_weekly":4}`},
		{Retention{KeepWithin: Duration(90 * time.Minute)}, `{"keep_within":"1h30m"}`},
		{Retention{KeepWithin: Duration(1500 * time.Millisecond)}, `{"keep_within":"1s500ms"}`},
	} {
		b, err := json.Marshal(tc.r)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tc.json {
			t.Errorf("marshal %+v = %s, want %s", tc.r, b, tc.json)
		}
		var back Retention
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("unmarshal %s: %v", b, err)
		}
		if back != tc.r {
			t.Errorf("round trip %+v -> %s -> %+v", tc.r, b, back)
		}
	}
	// Input written by people: other spellings of durations.
	for in, want := range map[string]Duration{
		`{"keep_within":"72h"}`:   Duration(72 * time.Hour),
		`{"keep_within":"2w"}`:    Duration(14 * 24 * time.Hour),
		`{"keep_within":"1d12h"}`: Duration(36 * time.Hour),
		`{"keep_within":""}`:      0,
		`{"keep_within":null}`:    0,
	} {
		var r Retention
		if err := json.Unmarshal([]byte(in), &r); err != nil {
			t.Errorf("unmarshal %s: %v", in, err)
		} else if r.KeepWithin != want {
			t.Errorf("unmarshal %s: keep_within = %v, want %v", in, r.KeepWithin, want)
		}
	}
	for _, in := range []string{`{"keep_within":"7"}`, `{"keep_within":"-1d"}`, `{"keep_within":86400}`, `{"keep_within":"7 days"}`} {
		var r Retention
		if err := json.Unmarshal([]byte(in), &r); err == nil {
			t.Errorf("unmarshal %s: no error", in)
		}
	}
}

func TestParseDuration(t *testing.T) {
	h := time.Hour
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"0", 0},
		{"0s", 0},
		{"90m", 90 * time.Minute},
		{"72h", 72 * h},
		{"7d", 7 * 24 * h},
		{"2w", 14 * 24 * h},
		{"1d12h", 36 * h},
		{"1w2d3h4m5s", (9*24+3)*h + 4*time.Minute + 5*time.Second},
		{"1.5h", 90 * time.Minute},
		{".5d", 12 * h},
		{"1.d", 24 * h},
		{"250ms", 250 * time.Millisecond},
		{"3us", 3 * time.Microsecond},
		{"3µs", 3 * time.Microsecond},
		{"7ns", 7},
		{" 7d ", 7 * 24 * h},
		{"0.000000000000000000001h", 0},
		{"15250w", 15250 * 7 * 24 * h},
	} {
		got, err := ParseDuration(tc.in)
		if err != nil {
			t.Errorf("ParseDuration(%q): %v", tc.in, err)
			continue
		}
		if time.Duration(got) != tc.want {
			t.Errorf("ParseDuration(%q) = %v, want %v", tc.in, time.Duration(got), tc.want)
		}
		// What String writes parses back to the same value.
		back, err := ParseDuration(got.String())
		if err != nil || back != got {
			t.Errorf("ParseDuration(%q.String() = %q) = %v, %v", tc.in, got.String(), back, err)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"", "empty"},
		{"   ", "empty"},
		{"7", "missing unit"},
		{"d", "want a number"},
		{"-1h", "sign"},
		{"+1h", "sign"},
		{"7x", `unknown unit "x"`},
		{"7 d", `unknown unit " d"`},
		{"1..5h", "want a number"},
		{".h", "want a number"},
		{"1h-5m", `unknown unit "h-"`},
		{"15251w", "too long"},
		{"99999999999999999999999d", "too long"},
		{"9223372036854775807ns1ns", "too long"},
	} {
		_, err := ParseDuration(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseDuration(%q): error %v, want one containing %q", tc.in, err, tc.want)
		}
	}
}

func TestDurationString(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{7 * 24 * time.Hour, "7d"},
		{14 * 24 * time.Hour, "14d"},
		{72 * time.Hour, "3d"},
		{36 * time.Hour, "1d12h"},
		{90 * time.Minute, "1h30m"},
		{time.Hour + time.Second, "1h1s"},
		{500 * time.Millisecond, "500ms"},
		{-time.Hour, "-1h"},
	} {
		if got := Duration(tc.d).String(); got != tc.want {
			t.Errorf("Duration(%v).String() = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"7d", "1d12h", "1.5h", "", "-1h", "9223372036854775807ns", ".5w"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err != nil {
			return
		}
		if d < 0 {
			t.Fatalf("ParseDuration(%q) = %d, negative", s, d)
		}
		back, err := ParseDuration(d.String())
		if err != nil || back != d {
			t.Fatalf("ParseDuration(%q) = %v; String %q parses to %v, %v", s, d, d.String(), back, err)
		}
	})
}

package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestReorderArgs(t *testing.T) {
	app := newApp()
	for _, c := range []struct{ in, want string }{
		{"dstore group create web --match a --keep-last 2", "dstore group create --match a --keep-last 2 -- web"},
		{"dstore --log-level warn group create web --match=a --json", "dstore --log-level warn group create --match=a --json -- web"},
		{"dstore group create --match a web", "dstore group create --match a -- web"},
		{"dstore clone --live a b --data d", "dstore clone --live --data d -- a b"},
		{"dstore restore ID -- -odd --data", "dstore restore -- ID -odd --data"},
		{"dstore group edit web --keep-last -1", "dstore group edit --keep-last -1 -- web"},
		{"dstore status --json", "dstore status --json"},
		{"dstore nosuch --x y", "dstore nosuch --x y"},
		{"dstore group nosuch --x", "dstore group nosuch --x"},
		{"dstore help group", "dstore help group"},
		{"dstore", "dstore"},
	} {
		got := reorderArgs(app, strings.Fields(c.in))
		if want := strings.Fields(c.want); !reflect.DeepEqual(got, want) {
			t.Errorf("reorderArgs(%q) = %q, want %q", c.in, got, want)
		}
	}
}

package scanner

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseReply: any reply gives either an error or a Verdict, never both,
// never a panic; only "stream: OK" (with its terminators) is clean; a finding
// is quarantined with a printable reason.
func FuzzParseReply(f *testing.F) {
	for _, tc := range parseReplyCases {
		f.Add(tc.reply)
	}
	f.Fuzz(func(t *testing.T, reply string) {
		v, err := parseReply(reply)
		if err != nil {
			if v != (Verdict{}) {
				t.Fatalf("parseReply(%q) = %+v with error %v", reply, v, err)
			}
			if len(err.Error()) > 1200 {
				t.Fatalf("parseReply(%q): error of %d bytes", reply, len(err.Error()))
			}
			if errors.Is(err, ErrUnavailable) && strings.TrimRight(reply, "\x00\n") != "COMMAND READ TIMED OUT" {
				t.Fatalf("parseReply(%q): %v; only a clamd read timeout is ErrUnavailable", reply, err)
			}
			return
		}
		isOK := strings.TrimRight(reply, "\x00\n") == "stream: OK"
		if v.Clean != isOK {
			t.Fatalf("parseReply(%q) = %+v: clean %v", reply, v, v.Clean)
		}
		if v.Engine != "clamd" || v.SHA256 != "" {
			t.Fatalf("parseReply(%q) = %+v", reply, v)
		}
		if v.Clean {
			if v.Reason != "" {
				t.Fatalf("parseReply(%q) = %+v: clean with a reason", reply, v)
			}
			return
		}
		if v.Action != Quarantine || v.Reason == "" || !validSignatureName(v.Reason) || !strings.Contains(reply, v.Reason) && v.Reason != clamdTooLargeReason {
			t.Fatalf("parseReply(%q) = %+v", reply, v)
		}
	})
}

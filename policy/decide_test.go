package policy

import (
	"errors"
	"testing"
)

func TestDecide(t *testing.T) {
	const maxSize = 1 << 30
	lim := Limits{MaxFileSize: maxSize}
	tests := []struct {
		name string
		lim  Limits
		req  Request
		want error // nil means allowed
	}{
		{"create, declared size", lim, Request{Actor: "alice", Action: ActionUploadCreate, Size: 10}, nil},
		{"create, owner is actor", lim, Request{Actor: "alice", Action: ActionUploadCreate, Owner: "alice", Size: 10}, nil},
		{"create, empty file", lim, Request{Actor: "alice", Action: ActionUploadCreate, Size: 0}, nil},
		{"create, exactly the limit", lim, Request{Actor: "alice", Action: ActionUploadCreate, Size: maxSize}, nil},
		{"create, unknown length", lim, Request{Actor: "alice", Action: ActionUploadCreate, Size: -1}, nil},
		{"create, one byte over", lim, Request{Actor: "alice", Action: ActionUploadCreate, Size: maxSize + 1}, ErrTooLarge},
		{"create, zero limit", Limits{}, Request{Actor: "alice", Action: ActionUploadCreate, Size: 1}, ErrTooLarge},
		{"create, negative size", lim, Request{Actor: "alice", Action: ActionUploadCreate, Size: -2}, ErrDenied},
		{"create for another user", lim, Request{Actor: "alice", Action: ActionUploadCreate, Owner: "bob", Size: 10}, ErrDenied},
		{"create, no actor", lim, Request{Action: ActionUploadCreate, Size: 10}, ErrDenied},

		{"write own", lim, Request{Actor: "alice", Action: ActionUploadWrite, Owner: "alice"}, nil},
		{"write other's", lim, Request{Actor: "alice", Action: ActionUploadWrite, Owner: "bob"}, ErrDenied},
		{"write, no owner", lim, Request{Actor: "alice", Action: ActionUploadWrite}, ErrDenied},
		{"write, no actor or owner", lim, Request{Action: ActionUploadWrite}, ErrDenied},
		{"read own", lim, Request{Actor: "alice", Action: ActionUploadRead, Owner: "alice"}, nil},
		{"read other's", lim, Request{Actor: "alice", Action: ActionUploadRead, Owner: "bob"}, ErrDenied},
		{"read, owner differs in case", lim, Request{Actor: "alice", Action: ActionUploadRead, Owner: "Alice"}, ErrDenied},
		{"delete own", lim, Request{Actor: "alice", Action: ActionUploadDelete, Owner: "alice"}, nil},
		{"delete other's", lim, Request{Actor: "alice", Action: ActionUploadDelete, Owner: "bob"}, ErrDenied},
		{"write ignores size", lim, Request{Actor: "alice", Action: ActionUploadWrite, Owner: "alice", Size: maxSize + 1}, nil},

		{"list own arrivals", lim, Request{Actor: "alice", Action: ActionArrivalsList, Owner: "alice"}, nil},
		{"list other's arrivals", lim, Request{Actor: "alice", Action: ActionArrivalsList, Owner: "bob"}, ErrDenied},
		{"list arrivals, no owner", lim, Request{Actor: "alice", Action: ActionArrivalsList}, ErrDenied},
		{"list arrivals, no actor", lim, Request{Action: ActionArrivalsList, Owner: "alice"}, ErrDenied},

		{"unknown action", lim, Request{Actor: "alice", Action: "upload.admin", Owner: "alice"}, ErrDenied},
		{"empty action", lim, Request{Actor: "alice", Owner: "alice"}, ErrDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(tt.lim, tt.req)
			if d.Reason == "" {
				t.Error("decision has no reason")
			}
			if tt.want == nil {
				if !d.Allow || d.Err != nil {
					t.Fatalf("Decide = %+v, want allowed", d)
				}
				return
			}
			if d.Allow {
				t.Fatalf("Decide = %+v, want denied with %v", d, tt.want)
			}
			if !errors.Is(d.Err, tt.want) {
				t.Fatalf("Decide error = %v, want %v", d.Err, tt.want)
			}
		})
	}
}

func TestDecideEmergencySession(t *testing.T) {
	l := Limits{MaxFileSize: 100}
	for _, tt := range []struct {
		action Action
		allow  bool
	}{
		{ActionUploadCreate, true},
		{ActionUploadWrite, true},
		{ActionUploadRead, true},
		{ActionUploadDelete, true},
		{ActionArrivalsList, true},
		{Action("egress.push"), false},
		{Action("share.member.add"), false},
	} {
		d := Decide(l, Request{Actor: "alice", Owner: "alice", Action: tt.action, Size: 1, Emergency: true})
		if d.Allow != tt.allow {
			t.Errorf("emergency %s: allow = %v, want %v (%s)", tt.action, d.Allow, tt.allow, d.Reason)
		}
		if !tt.allow && !errors.Is(d.Err, ErrDenied) {
			t.Errorf("emergency %s: err = %v, want ErrDenied", tt.action, d.Err)
		}
	}
}

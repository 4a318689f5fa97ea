package sinktest

import (
	"testing"
	"time"

	"github.com/eventsync/eventsync/fakeapi"
)

// FakeAPIFaults is the Faults of an HTTP sink tested against the fake API
// (package fakeapi): FailNext fails the next /v1 request, whatever op it is
// for (an HTTP sink sends one request per call, a listing's first page
// first), and Stall holds requests through a latency of an hour.
func FakeAPIFaults(t testing.TB, api *fakeapi.Server) Faults {
	return fakeAPIFaults{t: t, api: api}
}

type fakeAPIFaults struct {
	t   testing.TB
	api *fakeapi.Server
}

func (f fakeAPIFaults) FailNext(_ string, status int, retryAfter time.Duration) {
	if err := f.api.FailNext(1, status, retryAfter); err != nil {
		f.t.Fatal(err)
	}
}

func (f fakeAPIFaults) Stall() (release func()) {
	was := f.api.Faults()
	was.OutageFor = nil // leave any outage alone
	stalled := was
	stalled.Latency = fakeapi.Duration(time.Hour)
	if err := f.api.SetFaults(stalled); err != nil {
		f.t.Fatal(err)
	}
	return func() {
		if err := f.api.SetFaults(was); err != nil {
			f.t.Error(err)
		}
	}
}

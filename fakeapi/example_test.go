package fakeapi_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/eventsync/eventsync/fakeapi"
)

// A test starts the fake on a free port, points its client at URL, and
// checks the detectors afterwards.
func ExampleStart() {
	srv, err := fakeapi.Start(context.Background(), fakeapi.Config{Logger: discardLogger()})
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()

	// Creates are not idempotent: the same external_id twice makes two records.
	for range 2 {
		res, err := client.Post(srv.URL+"/v1/listing", "application/json", strings.NewReader(`{"external_id":"L-1","version":1}`))
		if err != nil {
			panic(err)
		}
		res.Body.Close()
		fmt.Println(res.StatusCode)
	}
	st := srv.Stats()
	fmt.Println("records:", st.Records["listing"], "duplicates:", st.DuplicateRecords)
	// Output:
	// 201
	// 201
	// records: 2 duplicates: 1
}

// Faults can change while a test runs, e.g. to start an outage.
func ExampleServer_SetFaults() {
	srv, err := fakeapi.New(fakeapi.Config{Logger: discardLogger()})
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	outage := fakeapi.Duration(30e9)
	err = srv.SetFaults(fakeapi.Faults{ErrorRate: 0.05, RateLimit: 100, OutageFor: &outage})
	fmt.Println(err, srv.Faults().Burst, srv.Faults().OutageFor != nil)
	// Output: <nil> 100 true
}

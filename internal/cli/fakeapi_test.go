package cli

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestFakeAPICommandServesAndStops runs the real subcommand: it prints its
// URL on stdout, serves requests with the faults from its flags, and exits 0
// when its context is cancelled (as on SIGINT).
func TestFakeAPICommandServesAndStops(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	outR, outW := io.Pipe()
	var stderr bytes.Buffer
	exit := make(chan int, 1)
	go func() {
		exit <- Run(ctx, []string{"fakeapi", "--listen", "127.0.0.1:0", "--rate-limit", "1", "--burst", "1", "--seed", "7"}, strings.NewReader(""), outW, &stderr)
		_ = outW.Close()
	}()
	line, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the URL from stdout: %v", err)
	}
	url := strings.TrimSpace(line)
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("stdout line %q is not the listen URL", line)
	}
	go func() { _, _ = io.Copy(io.Discard, outR) }()

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	statuses := make([]int, 0, 2)
	for range 2 {
		res, err := client.Post(url+"/v1/listing", "application/json", strings.NewReader(`{"external_id":"k"}`))
		if err != nil {
			t.Fatal(err)
		}
		_ = res.Body.Close()
		statuses = append(statuses, res.StatusCode)
	}
	if statuses[0] != http.StatusCreated || statuses[1] != http.StatusTooManyRequests {
		t.Fatalf("statuses %v, want [201 429] under --rate-limit 1 --burst 1", statuses)
	}
	cancel()
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("exit code %d, stderr:\n%s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("fakeapi did not stop within 10 s of cancellation")
	}
	if !strings.Contains(stderr.String(), "fakeapi: listening") {
		t.Fatalf("stderr lacks the start log:\n%s", stderr.String())
	}
}

func TestFakeAPICommandRejectsBadFlags(t *testing.T) {
	t.Parallel()
	cases := map[string][]string{
		"invalid --error-rate: must be a fraction between 0 and 1": {"--error-rate", "1.5"},
		"invalid --timeout-rate":                                   {"--timeout-rate", "-1"},
		"invalid --max-concurrency":                                {"--max-concurrency", "-2"},
		"invalid argument \"soon\" for \"--latency\" flag":         {"--latency", "soon"},
		"--version-field must not be empty":                        {"--version-field", " "},
		"--max-batch must be at least 1, got 0":                    {"--max-batch", "0"},
		"unexpected argument":                                      {"extra"},
	}
	for want, args := range cases {
		var stdout, stderr bytes.Buffer
		code := Run(context.Background(), append([]string{"fakeapi"}, args...), strings.NewReader(""), &stdout, &stderr)
		if code == 0 || !strings.Contains(stderr.String(), want) {
			t.Errorf("fakeapi %v: exit %d, stderr %q; want failure mentioning %q", args, code, stderr.String(), want)
		}
	}
}

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

	"golang.org/x/oauth2/clientcredentials"

	"github.com/eventsync/eventsync/fakeapi"
)

// TestFakeAPICommandRequiresOAuth2 runs "eventsync fakeapi --oauth2-*": /v1
// refuses a request without a token and serves one with a token from its
// own token endpoint.
func TestFakeAPICommandRequiresOAuth2(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	outR, outW := io.Pipe()
	var stderr bytes.Buffer
	exit := make(chan int, 1)
	go func() {
		exit <- Run(ctx, []string{"fakeapi", "--listen", "127.0.0.1:0", "--oauth2-client-id", "eventsync", "--oauth2-client-secret", "s3cret", "--oauth2-token-lifetime", "1m"}, strings.NewReader(""), outW, &stderr)
		_ = outW.Close()
	}()
	line, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the URL from stdout: %v (stderr %s)", err, stderr.String())
	}
	url := strings.TrimSpace(line)
	go func() { _, _ = io.Copy(io.Discard, outR) }()

	res, err := http.Get(url + "/v1/listings")
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without a token: %d, want 401", res.StatusCode)
	}
	cc := clientcredentials.Config{ClientID: "eventsync", ClientSecret: "s3cret", TokenURL: url + fakeapi.TokenPath}
	res, err = cc.Client(ctx).Get(url + "/v1/listings")
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("with a token: %d, want 200", res.StatusCode)
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
}

func TestFakeAPICommandRejectsBadAuthFlags(t *testing.T) {
	t.Parallel()
	for want, args := range map[string][]string{
		"--oauth2-client-id and --oauth2-client-secret": {"--oauth2-client-id", "x"},
		"--oauth2-token-lifetime must be positive":      {"--oauth2-client-id", "x", "--oauth2-client-secret", "y", "--oauth2-token-lifetime", "0s"},
		"--hmac-header and --hmac-timestamp-header":     {"--hmac-secret", "k", "--hmac-header", ""},
	} {
		var stdout, stderr bytes.Buffer
		code := Run(context.Background(), append([]string{"fakeapi", "--listen", "127.0.0.1:0"}, args...), strings.NewReader(""), &stdout, &stderr)
		if code != 2 || !strings.Contains(stderr.String(), want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", args, code, stderr.String(), want)
		}
	}
}

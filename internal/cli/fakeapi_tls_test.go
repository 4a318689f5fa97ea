package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/eventsync/eventsync/internal/testenv"
)

// eventsync fakeapi --tls-cert/--tls-key/--tls-client-ca serves HTTPS that
// requires a client certificate signed by the given authority.
func TestFakeAPICommandServesMutualTLS(t *testing.T) {
	t.Parallel()
	certs := testenv.NewCerts(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	outR, outW := io.Pipe()
	var stderr bytes.Buffer
	exit := make(chan int, 1)
	go func() {
		exit <- Run(ctx, []string{"fakeapi", "--listen", "127.0.0.1:0",
			"--tls-cert", certs.ServerCert, "--tls-key", certs.ServerKey, "--tls-client-ca", certs.CAFile}, strings.NewReader(""), outW, &stderr)
		_ = outW.Close()
	}()
	line, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the URL from stdout: %v (stderr: %s)", err, stderr.String())
	}
	url := strings.TrimSpace(line)
	if !strings.HasPrefix(url, "https://127.0.0.1:") {
		t.Fatalf("stdout line %q is not an https URL", line)
	}
	go func() { _, _ = io.Copy(io.Discard, outR) }()

	pem, err := os.ReadFile(certs.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	client := func(withCert bool) *http.Client {
		cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		if withCert {
			cert, err := tls.LoadX509KeyPair(certs.ClientCert, certs.ClientKey)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		tr := &http.Transport{TLSClientConfig: cfg}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	res, err := client(true).Post(url+"/v1/listing", "application/json", strings.NewReader(`{"external_id":"k"}`))
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("status %d with a client certificate, want 201", res.StatusCode)
	}
	if res, err := client(false).Get(url + "/v1/listing"); err == nil {
		_ = res.Body.Close()
		t.Fatalf("served %d without a client certificate", res.StatusCode)
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

func TestFakeAPICommandRejectsBadTLSFlags(t *testing.T) {
	t.Parallel()
	certs := testenv.NewCerts(t)
	for want, args := range map[string][]string{
		"--tls-cert and --tls-key go together": {"--tls-cert", certs.ServerCert},
		"--tls-cert/--tls-key":                 {"--tls-cert", certs.ServerCert, "--tls-key", certs.OtherClientKey},
		"--tls-client-ca":                      {"--tls-cert", certs.ServerCert, "--tls-key", certs.ServerKey, "--tls-client-ca", certs.ServerKey},
	} {
		var stdout, stderr bytes.Buffer
		code := Run(context.Background(), append([]string{"fakeapi", "--listen", "127.0.0.1:0"}, args...), strings.NewReader(""), &stdout, &stderr)
		if code != 2 || !strings.Contains(stderr.String(), want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", args, code, stderr.String(), want)
		}
	}
}

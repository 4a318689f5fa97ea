package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/internal/envfile"
	"github.com/eventsync/eventsync/internal/hmacsig"
)

// fakeAPIFlags are the flags of "eventsync fakeapi".
type fakeAPIFlags struct {
	cfg                   fakeapi.Config
	faults                fakeapi.Faults
	latency, jitter, hold time.Duration
	seed                  uint64
	tlsCert, tlsKey       string
	tlsClientCA           string
	oauth2                fakeapi.OAuth2Auth
	hmac                  fakeapi.HMACAuth
}

func newFakeAPICmd(env Env) *cobra.Command {
	fl := &fakeAPIFlags{}
	cmd := &cobra.Command{
		Use:   "fakeapi",
		Short: "run the third-party API simulator (faults, detectors)",
		Long: `Serve an unfriendly third-party API: latency, errors, timeouts that still
write, rate limits and a concurrency ceiling, with detectors for overlapping,
duplicate and stale writes. Prints its URL on stdout; stops on SIGINT or
SIGTERM.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runFakeAPI(cmd.Context(), env, fl) },
	}
	fs := cmd.Flags()
	cfg, f := &fl.cfg, &fl.faults
	fs.DurationVar(&fl.latency, "latency", 0, "base latency added to every /v1 request, e.g. 20ms")
	fs.DurationVar(&fl.jitter, "jitter", 0, "extra random latency in [0, jitter)")
	fs.DurationVar(&fl.hold, "timeout-hold", fakeapi.DefaultTimeoutHold, "how long a timed-out write's response is held (make it exceed client deadlines)")
	fs.Uint64Var(&fl.seed, "seed", 0, "seed for the fault dice; 0 picks a random one")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:8081", "address to listen on; 127.0.0.1:0 picks a free port (the URL is printed on stdout)")
	fs.Float64Var(&f.ErrorRate, "error-rate", 0, "fraction (0..1) of /v1 requests answered with a random 500/502/503")
	fs.Float64Var(&f.TimeoutRate, "timeout-rate", 0, "fraction (0..1) of writes that happen but whose response is held for --timeout-hold")
	fs.Float64Var(&f.RateLimit, "rate-limit", 0, "requests per second allowed (token bucket), excess gets 429 + Retry-After; 0 disables")
	fs.IntVar(&f.Burst, "burst", 0, "token bucket size for --rate-limit; 0 means one second's worth")
	fs.IntVar(&f.MaxConcurrency, "max-concurrency", 0, "requests in flight above which /v1 answers 503 at once; 0 means unlimited")
	fs.IntVar(&cfg.MaxBatch, "max-batch", fakeapi.DefaultMaxBatch, "most items one POST /v1/{collection}/batch/{create,update,delete} may carry; larger batches get 413")
	fs.StringVar(&cfg.VersionField, "version-field", fakeapi.DefaultVersionField, "numeric record field the stale-write detector compares")
	fs.StringVar(&fl.tlsCert, "tls-cert", "", "serve HTTPS with this PEM certificate (needs --tls-key)")
	fs.StringVar(&fl.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&fl.tlsClientCA, "tls-client-ca", "", "require client certificates signed by the authorities in this PEM file (mutual TLS; needs --tls-cert)")
	fs.StringVar(&fl.oauth2.ClientID, "oauth2-client-id", "", "require a bearer token from POST /oauth/token (client credentials grant) for this client id (needs --oauth2-client-secret)")
	fs.StringVar(&fl.oauth2.ClientSecret, "oauth2-client-secret", "", "the client secret --oauth2-client-id must present; also read from EVENTSYNC_FAKEAPI_OAUTH2_CLIENT_SECRET or the file named by EVENTSYNC_FAKEAPI_OAUTH2_CLIENT_SECRET_FILE")
	fs.DurationVar(&fl.oauth2.TokenLifetime, "oauth2-token-lifetime", fakeapi.DefaultTokenLifetime, "how long an issued token is accepted; a short one (1s) expires tokens mid-run")
	fs.StringVar(&fl.hmac.Secret, "hmac-secret", "", "require an HMAC-SHA256 request signature with this shared secret (docs/security.md); also read from EVENTSYNC_FAKEAPI_HMAC_SECRET or the file named by EVENTSYNC_FAKEAPI_HMAC_SECRET_FILE")
	fs.StringVar(&fl.hmac.Header, "hmac-header", hmacsig.DefaultHeader, "header carrying the HMAC signature")
	fs.StringVar(&fl.hmac.TimestampHeader, "hmac-timestamp-header", hmacsig.DefaultTimestampHeader, "header carrying the signed Unix time")
	fs.StringVar(&cfg.StateFile, "state-file", "", "load records from this file at start if it exists, save them atomically on shutdown and POST /_admin/save")
	return cmd
}

// runFakeAPI serves the third-party API simulator until ctx is cancelled.
func runFakeAPI(ctx context.Context, env Env, fl *fakeAPIFlags) error {
	cfg, f := fl.cfg, fl.faults
	f.Latency, f.Jitter, f.TimeoutHold = fakeapi.Duration(fl.latency), fakeapi.Duration(fl.jitter), fakeapi.Duration(fl.hold)
	cfg.Faults, cfg.Seed = f, fl.seed
	cfg.Logger = slog.New(slog.NewTextHandler(env.Stderr, nil))
	if err := f.Validate(); err != nil {
		return usage(faultFlagError(err))
	}
	if cfg.MaxBatch < 1 {
		return usage(fmt.Errorf("--max-batch must be at least 1, got %d; the default is %d", cfg.MaxBatch, fakeapi.DefaultMaxBatch))
	}
	if strings.TrimSpace(cfg.VersionField) == "" {
		return usage(errors.New("--version-field must not be empty; the default is \"version\""))
	}

	auth, err := fakeAPIAuth(fl)
	if err != nil {
		return err
	}
	cfg.Auth = auth
	tlsCfg, err := fakeAPITLS(fl)
	if err != nil {
		return err
	}
	cfg.TLS = tlsCfg
	srv, err := fakeapi.Start(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, srv.URL)
	<-srv.Done()
	return srv.Err()
}

// faultFlagError rewrites fault validation errors to name the flag
// (error_rate → --error-rate) the user actually typed.
func faultFlagError(err error) error {
	var msgs []string
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, inner := range j.Unwrap() {
				walk(inner)
			}
			return
		}
		var fe *fakeapi.FieldError
		if errors.As(e, &fe) {
			msgs = append(msgs, fmt.Sprintf("invalid --%s: %s", strings.ReplaceAll(fe.Field, "_", "-"), fe.Problem))
			return
		}
		msgs = append(msgs, e.Error())
	}
	walk(err)
	return errors.New(strings.Join(msgs, "; "))
}

// fakeAPIAuth is the authentication the --oauth2-* and --hmac-* flags
// require; secrets may come from the environment instead of the command
// line (where ps would show them).
func fakeAPIAuth(fl *fakeAPIFlags) (fakeapi.Auth, error) {
	var a fakeapi.Auth
	o, h := fl.oauth2, fl.hmac
	for _, v := range []struct {
		dst  *string
		name string
	}{{&o.ClientSecret, "EVENTSYNC_FAKEAPI_OAUTH2_CLIENT_SECRET"}, {&h.Secret, "EVENTSYNC_FAKEAPI_HMAC_SECRET"}} {
		if *v.dst != "" {
			continue
		}
		val, _, err := envfile.Lookup(v.name, os.LookupEnv, os.ReadFile)
		if err != nil {
			return a, usage(err)
		}
		*v.dst = val
	}
	switch {
	case o.ClientID != "" && o.ClientSecret != "":
		if o.TokenLifetime <= 0 {
			return a, usage(errors.New("--oauth2-token-lifetime must be positive, e.g. 1h or 2s"))
		}
		a.OAuth2 = &o
	case fl.oauth2.ClientID != "" || fl.oauth2.ClientSecret != "":
		return a, usage(errors.New("--oauth2-client-id and --oauth2-client-secret (or EVENTSYNC_FAKEAPI_OAUTH2_CLIENT_SECRET) go together"))
	}
	if h.Secret != "" {
		if h.Header == "" || h.TimestampHeader == "" {
			return a, usage(errors.New("--hmac-header and --hmac-timestamp-header must not be empty"))
		}
		a.HMAC = &h
	}
	return a, nil
}

// fakeAPITLS is the server TLS configuration of --tls-cert, --tls-key and
// --tls-client-ca; nil without --tls-cert.
func fakeAPITLS(fl *fakeAPIFlags) (*tls.Config, error) {
	if fl.tlsCert == "" && fl.tlsKey == "" && fl.tlsClientCA == "" {
		return nil, nil
	}
	if fl.tlsCert == "" || fl.tlsKey == "" {
		return nil, usage(errors.New("--tls-cert and --tls-key go together (and --tls-client-ca needs them)"))
	}
	cert, err := tls.LoadX509KeyPair(fl.tlsCert, fl.tlsKey)
	if err != nil {
		return nil, usage(fmt.Errorf("--tls-cert/--tls-key: %w", err))
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if fl.tlsClientCA != "" {
		pem, err := os.ReadFile(fl.tlsClientCA)
		if err != nil {
			return nil, usage(fmt.Errorf("--tls-client-ca: %w", err))
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, usage(fmt.Errorf("--tls-client-ca %s: no PEM certificate in it", fl.tlsClientCA))
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

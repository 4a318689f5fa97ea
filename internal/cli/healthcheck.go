package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// defaultHealthcheckURL is a worker's readiness endpoint on its default
// admin port.
const defaultHealthcheckURL = "http://127.0.0.1:9090/readyz"

func newHealthcheckCmd(env Env) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "healthcheck [URL]",
		Short: "probe an admin endpoint: exit 0 on a 2xx answer (for container health checks)",
		Long: `GET the URL (default ` + defaultHealthcheckURL + `, a worker's readiness on
its default admin address; the relay's is :9091) and exit 0 when it answers
2xx, 1 otherwise, printing the answer. The image has no shell and no curl:
a compose healthcheck runs ["CMD", "eventsync", "healthcheck"].`,
		Args: maxArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			url := defaultHealthcheckURL
			if len(args) == 1 {
				url = args[0]
			}
			return runHealthcheck(cmd.Context(), env, url, timeout)
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "how long to wait for the answer")
	return cmd
}

func runHealthcheck(ctx context.Context, env Env, url string, timeout time.Duration) error {
	if !strings.HasPrefix(url, "http://") && !strings.HasPrefix(url, "https://") {
		return usagef("healthcheck: %q is not an http:// or https:// URL", url)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return usagef("healthcheck: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return &ExitError{Code: exitFailure, Err: fmt.Errorf("healthcheck %s: %w", url, err)}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return &ExitError{Code: exitFailure, Err: fmt.Errorf("healthcheck %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))}
	}
	fmt.Fprintf(env.Stdout, "%s: %s", url, body)
	return nil
}

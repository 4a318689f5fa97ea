package cli

import (
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	composecli "github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/eventsync/eventsync/internal/config"
)

// TestComposeFile loads compose.yaml with the Compose specification's own
// loader (what docker compose runs) and checks it against the code: every
// service has an image or a build, eventsync services run real
// subcommands with real flags and read only documented variables, secrets
// are mounted where the _FILE variables look, health checks probe paths
// the admin server or the fake API serve on the port they listen on, and
// the worker can be scaled.
func TestComposeFile(t *testing.T) {
	t.Parallel()
	opts, err := composecli.NewProjectOptions([]string{repoFile("compose.yaml")},
		composecli.WithWorkingDirectory(repoFile(".")),
		composecli.WithEnv([]string{}), // the file's defaults, not this machine's
		composecli.WithProfiles([]string{"*"}),
	)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(t.Context())
	if err != nil {
		t.Fatalf("compose.yaml does not load: %v", err)
	}
	for _, want := range []string{"rabbitmq", "postgres", "fakeapi", "relay", "worker", "resync", "outbox-install", "outbox-trigger"} {
		if _, ok := p.Services[want]; !ok {
			t.Errorf("compose.yaml has no service %q", want)
		}
	}
	if s, ok := p.Services["resync"]; ok && len(s.Profiles) == 0 {
		t.Error("the resync service runs on every 'up': put it in a profile")
	}
	if s, ok := p.Services["rabbitmq"]; ok && !strings.Contains(s.Image, "management") {
		t.Errorf("rabbitmq image %q has no management UI", s.Image)
	}

	admin, api := serveAdmin(t), serveFakeAPI(t)
	cfgPath := ""
	for name, s := range p.Services {
		if s.Image == "" && s.Build == nil {
			t.Errorf("service %s: neither image nor build", name)
		}
		if !isEventsync(s) {
			if long(s) && s.HealthCheck == nil {
				t.Errorf("service %s: no healthcheck", name)
			}
			continue
		}
		if s.Build == nil {
			t.Errorf("service %s: no build: 'docker compose build' cannot make the image", name)
		}
		args := append(slices.Clone([]string(s.Entrypoint)), s.Command...)
		if len(args) > 0 && args[0] == "eventsync" {
			args = args[1:]
		}
		if err := checkCommandLine(args); err != nil {
			t.Errorf("service %s runs \"eventsync %s\": %v", name, strings.Join(args, " "), err)
		}
		mounted := map[string]bool{}
		for _, sec := range s.Secrets {
			target := sec.Target
			if !strings.HasPrefix(target, "/") {
				target = "/run/secrets/" + cmp(target, sec.Source)
			}
			mounted[target] = true
			if def, ok := p.Secrets[sec.Source]; !ok || def.File == "" {
				t.Errorf("service %s: secret %s is not defined from a file", name, sec.Source)
			} else if _, err := os.Stat(def.File); err != nil {
				t.Errorf("service %s: secret %s: %v", name, sec.Source, err)
			}
		}
		for key, val := range s.Environment {
			v := ""
			if val != nil {
				v = *val
			}
			switch {
			case strings.HasPrefix(key, "EVENTSYNC_"):
				if !knownEnv(t, key) {
					t.Errorf("service %s: %s is not a variable eventsync reads (docs/configuration.md)", name, key)
				}
			case strings.HasSuffix(key, "_FILE"): // a sink header's ${NAME}, checked below
			default:
				t.Errorf("service %s: %s is not an eventsync variable", name, key)
			}
			if strings.HasSuffix(key, "_FILE") && !mounted[v] {
				t.Errorf("service %s: %s=%s but no secret is mounted there", name, key, v)
			}
			if key == "EVENTSYNC_CONFIG" {
				cfgPath = v
			}
		}
		if s.HealthCheck != nil {
			checkComposeHealth(t, name, s, admin, api)
		} else if long(s) {
			t.Errorf("service %s: no healthcheck", name)
		}
	}

	// The mounted config file loads, and a worker gets every variable its
	// sink headers reference.
	var cfgFile string
	w := p.Services["worker"]
	for _, v := range w.Volumes {
		if v.Target == cfgPath {
			cfgFile = v.Source
		}
	}
	if cfgFile == "" {
		t.Fatalf("worker: EVENTSYNC_CONFIG=%s is not a mounted file", cfgPath)
	}
	cfg, err := config.Load(cfgFile)
	if err != nil {
		t.Fatalf("%s: %v", cfgFile, err)
	}
	for ref := range sinkEnvRefs(t, cfgFile) {
		if _, ok := w.Environment[ref+"_FILE"]; !ok {
			if _, ok := w.Environment[ref]; !ok {
				t.Errorf("worker: the config references ${%s} but neither %s nor %s_FILE is set", ref, ref, ref)
			}
		}
	}

	// Scalable: no fixed name, no published port; stops after its grace.
	if w.ContainerName != "" || w.Hostname != "" || len(w.Ports) > 0 {
		t.Errorf("worker cannot be scaled: container_name %q, hostname %q, ports %v", w.ContainerName, w.Hostname, w.Ports)
	}
	if w.Deploy == nil || w.Deploy.Replicas == nil {
		t.Error("worker: no deploy.replicas")
	}
	grace := cfg.Worker.ShutdownGrace
	if grace == 0 {
		grace = 30 * time.Second
	}
	if w.StopGracePeriod == nil || time.Duration(*w.StopGracePeriod) <= grace {
		t.Errorf("worker: stop_grace_period %v must exceed worker.shutdown_grace %v, or in-flight calls are killed", w.StopGracePeriod, grace)
	}
}

func isEventsync(s types.ServiceConfig) bool {
	return s.Build != nil && s.Build.Dockerfile == "Dockerfile" || strings.Contains(s.Image, "eventsync")
}

// long reports whether a service keeps running (not a one-off).
func long(s types.ServiceConfig) bool { return s.Restart != "no" && len(s.Profiles) == 0 }

func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// checkComposeHealth checks an eventsync service's healthcheck: it runs
// "eventsync healthcheck URL" against the port the service listens on and
// a path that answers 200 there.
func checkComposeHealth(t *testing.T, name string, s types.ServiceConfig, admin, api string) {
	t.Helper()
	test := []string(s.HealthCheck.Test)
	if len(test) < 3 || test[0] != "CMD" || test[1] != "eventsync" {
		t.Errorf("service %s: healthcheck %q: the image has no shell; use [CMD, eventsync, healthcheck, URL]", name, test)
		return
	}
	if err := checkCommandLine(test[2:]); err != nil || test[2] != "healthcheck" || len(test) != 4 {
		t.Errorf("service %s: healthcheck %q is not \"eventsync healthcheck URL\" (%v)", name, test, err)
		return
	}
	u, err := url.Parse(test[3])
	if err != nil {
		t.Errorf("service %s: healthcheck URL: %v", name, err)
		return
	}
	listen := ""
	if v := s.Environment["EVENTSYNC_ADMIN_LISTEN"]; v != nil {
		listen = *v
	}
	args := []string(s.Command)
	base := admin
	for i, a := range args {
		if (a == "--admin" || a == "--listen") && i+1 < len(args) {
			listen = args[i+1]
		}
	}
	if len(args) > 0 && args[0] == "fakeapi" {
		base = api
	}
	if _, port, _ := strings.Cut(listen, ":"); port == "" || port != u.Port() {
		t.Errorf("service %s: healthcheck probes port %q but the service listens on %q", name, u.Port(), listen)
	}
	if !answersOK(t, base, u.Path) {
		t.Errorf("service %s: healthcheck path %s is not served", name, u.Path)
	}
}

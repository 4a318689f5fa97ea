package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binary finds a server program in PATH or in dirs (globs allowed, as
// "/usr/lib/postgresql/*/bin"). When it is missing the test is skipped
// with a hint, or fails under EVENTSYNC_REQUIRE_SERVICES=1.
func Binary(t testing.TB, name string, dirs ...string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range dirs {
		matches, _ := filepath.Glob(filepath.Join(d, name))
		for i := len(matches) - 1; i >= 0; i-- { // the newest version sorts last
			if st, err := os.Stat(matches[i]); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
				return matches[i]
			}
		}
	}
	msg := fmt.Sprintf("%s is not installed (not in PATH nor in %v); install it to run this test", name, dirs)
	if Required() {
		t.Fatalf("%s, and %s=1 requires it", msg, RequireEnv)
	}
	t.Skip(msg)
	return ""
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Process is a server the test spawned; it is killed when the test ends.
type Process struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

// Output is what the process printed so far (stdout and stderr).
func (p *Process) Output() string { return p.out.String() }

// Spawn starts cmd, kills it when the test ends, and waits until it
// accepts TCP connections on addr (bounded by a minute on a busy
// machine); a process that exits first fails the test with its output.
func Spawn(t testing.TB, cmd *exec.Cmd, addr string) *Process {
	t.Helper()
	p := &Process{cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	// Its own process group, so the cleanup also ends what a wrapper
	// script (runuser, rabbitmq-server's shell) started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
		if err == nil {
			_ = c.Close()
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited before listening on %s:\n%s", cmd.Path, addr, p.Output())
		case <-ctx.Done():
			t.Fatalf("%s not listening on %s after a minute:\n%s", cmd.Path, addr, p.Output())
		case <-tick.C:
		}
	}
}

// RedisTLS spawns redis-server with only a TLS port, serving the
// certificates' server certificate; requireClient makes it demand a
// client certificate signed by the authority (tls-auth-clients yes). It
// returns the rediss:// URL (127.0.0.1).
func RedisTLS(t testing.TB, certs *Certs, requireClient bool) string {
	t.Helper()
	bin := Binary(t, "redis-server")
	port := FreePort(t)
	auth := "no"
	if requireClient {
		auth = "yes"
	}
	cmd := exec.Command(bin,
		"--port", "0", "--tls-port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--tls-cert-file", certs.ServerCert, "--tls-key-file", certs.ServerKey,
		"--tls-ca-cert-file", certs.CAFile, "--tls-auth-clients", auth,
		"--save", "", "--appendonly", "no", "--dir", t.TempDir())
	Spawn(t, cmd, "127.0.0.1:"+strconv.Itoa(port))
	return "rediss://127.0.0.1:" + strconv.Itoa(port) + "/0"
}

// PostgresTLS starts a throwaway PostgreSQL cluster (initdb + pg_ctl, as
// the postgres user when the test runs as root) with ssl=on serving the
// certificates' server certificate, and accepting only TLS connections
// from 127.0.0.1 (hostssl, trust); requireClient demands a client
// certificate signed by the authority (clientcert=verify-ca). It returns
// postgres://postgres@127.0.0.1:PORT/postgres without TLS parameters; the
// cluster is stopped and removed when the test ends.
func PostgresTLS(t testing.TB, certs *Certs, requireClient bool) string {
	t.Helper()
	const bins = "/usr/lib/postgresql/*/bin"
	initdb := Binary(t, "initdb", bins)
	pgctl := filepath.Join(filepath.Dir(initdb), "pg_ctl")
	var asUser []string
	if os.Geteuid() == 0 { // initdb refuses to run as root
		if _, err := user.Lookup("postgres"); err != nil {
			msg := "running as root without a postgres user to own a throwaway PostgreSQL cluster"
			if Required() {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
		asUser = []string{"runuser", "-u", "postgres", "--"}
	}
	dir, err := os.MkdirTemp("", "eventsync-pgtls-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	run := func(args ...string) {
		t.Helper()
		argv := append(slices.Clone(asUser), args...)
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	// The server reads its key only when the postgres user owns it, 0600.
	for _, f := range [][2]string{{certs.ServerCert, "server.pem"}, {certs.ServerKey, "server-key.pem"}, {certs.CAFile, "ca.pem"}} {
		b, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f[1]), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if len(asUser) > 0 {
		if out, err := exec.Command("chown", "-R", "postgres:", dir).CombinedOutput(); err != nil {
			t.Fatalf("chown: %v: %s", err, out)
		}
	}
	data := filepath.Join(dir, "data")
	run(initdb, "-D", data, "-U", "postgres", "--auth=trust", "--no-sync")
	hba := "hostssl all all 127.0.0.1/32 trust\n"
	if requireClient {
		hba = "hostssl all all 127.0.0.1/32 trust clientcert=verify-ca\n"
	}
	if err := os.WriteFile(filepath.Join(data, "pg_hba.conf"), []byte("local all all trust\n"+hba), 0o644); err != nil {
		t.Fatal(err)
	}
	port := FreePort(t)
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c max_connections=20 -c fsync=off -c shared_buffers=16MB"+
		" -c ssl=on -c ssl_cert_file=%s -c ssl_key_file=%s -c ssl_ca_file=%s",
		port, dir, filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"), filepath.Join(dir, "ca.pem"))
	run(pgctl, "-D", data, "-l", filepath.Join(dir, "server.log"), "-w", "-t", "60", "start", "-o", opts)
	t.Cleanup(func() { run(pgctl, "-D", data, "-m", "immediate", "-w", "stop") })
	return "postgres://postgres@127.0.0.1:" + strconv.Itoa(port) + "/postgres"
}

// RabbitMQTLS starts a second RabbitMQ node of its own (a throwaway node
// name, ports and data directory, as the rabbitmq user when the test runs
// as root) whose only listener is TLS, requiring a client certificate
// signed by the certificates' authority (verify_peer,
// fail_if_no_peer_cert). It returns the amqps://guest:guest@127.0.0.1:PORT/
// URL; the node is killed and removed when the test ends.
func RabbitMQTLS(t testing.TB, certs *Certs) string {
	t.Helper()
	server := Binary(t, "rabbitmq-server", "/usr/lib/rabbitmq/bin")
	if filepath.Dir(server) != "/usr/lib/rabbitmq/bin" {
		// Debian's /usr/sbin wrapper drops the environment; run the real one.
		if _, err := os.Stat("/usr/lib/rabbitmq/bin/rabbitmq-server"); err == nil {
			server = "/usr/lib/rabbitmq/bin/rabbitmq-server"
		}
	}
	dir, err := os.MkdirTemp("", "eventsync-rmqtls-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	for _, f := range [][2]string{{certs.ServerCert, "server.pem"}, {certs.ServerKey, "server-key.pem"}, {certs.CAFile, "ca.pem"}} {
		b, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f[1]), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	port, dist := FreePort(t), FreePort(t)
	conf := fmt.Sprintf(`listeners.tcp = none
listeners.ssl.default = %d
ssl_options.cacertfile = %s
ssl_options.certfile = %s
ssl_options.keyfile = %s
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = true
`, port, filepath.Join(dir, "ca.pem"), filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"))
	if err := os.WriteFile(filepath.Join(dir, "rabbitmq.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "enabled_plugins"), []byte("[].\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	host, _, _ = strings.Cut(host, ".")
	env := []string{
		"RABBITMQ_NODENAME=eventsync-tls-" + strconv.Itoa(port) + "@" + host,
		"RABBITMQ_DIST_PORT=" + strconv.Itoa(dist),
		"RABBITMQ_CONFIG_FILE=" + filepath.Join(dir, "rabbitmq.conf"),
		"RABBITMQ_ADVANCED_CONFIG_FILE=" + filepath.Join(dir, "advanced.config"),
		"RABBITMQ_ENABLED_PLUGINS_FILE=" + filepath.Join(dir, "enabled_plugins"),
		"RABBITMQ_MNESIA_BASE=" + filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE=" + filepath.Join(dir, "log"),
		"RABBITMQ_PID_FILE=" + filepath.Join(dir, "pid"),
		"RABBITMQ_LOGS=-", // the log on stdout, kept for a failure message
	}
	var argv []string
	if os.Geteuid() == 0 {
		if _, err := user.Lookup("rabbitmq"); err != nil {
			msg := "running as root without a rabbitmq user to own a throwaway RabbitMQ node"
			if Required() {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("chown", "-R", "rabbitmq:", dir).CombinedOutput(); err != nil {
			t.Fatalf("chown: %v: %s", err, out)
		}
		// HOME holds the Erlang cookie the node's tools share.
		argv = append([]string{"runuser", "-u", "rabbitmq", "--", "env", "HOME=/var/lib/rabbitmq"}, env...)
	} else {
		argv = append([]string{"env"}, env...)
	}
	argv = append(argv, server)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	Spawn(t, cmd, "127.0.0.1:"+strconv.Itoa(port))
	return "amqps://guest:guest@127.0.0.1:" + strconv.Itoa(port) + "/"
}

// syncBuffer is a bytes.Buffer safe for a process's two output streams.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Package image builds the eventsync OCI image from a fresh clone of this
// repository with scripts/image.sh (Dockerfile.prebuilt: no base image is
// pulled), saves it, and checks what it holds: the image config (non-root
// user, entrypoint, OCI labels), the files (static binary, CA bundle, no
// shell), and the binary itself, extracted from the saved layers, running
// "eventsync version" and a short "eventsync demo". Containers are not run:
// the binary runs on the host.
//
// Opt-in, since it needs podman or a docker engine and takes a minute:
//
//	EVENTSYNC_IMAGE_TEST=1 go test -count=1 -v ./test/image
//
// .ci/run runs it when podman or a docker engine is present.
package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// EnvVar turns the test on.
const EnvVar = "EVENTSYNC_IMAGE_TEST"

func TestImage(t *testing.T) {
	if os.Getenv(EnvVar) != "1" {
		t.Skipf("set %s=1 to build and check the image (needs podman, or docker with a running engine)", EnvVar)
	}
	engine := findEngine(t)
	root := strings.TrimSpace(run(t, "", "git", "rev-parse", "--show-toplevel"))
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	run(t, "", "git", "clone", "--quiet", "--no-hardlinks", root, src)
	head := strings.TrimSpace(run(t, src, "git", "rev-parse", "HEAD"))

	tag := fmt.Sprintf("localhost/eventsync-imagetest:%08x", rand.Uint32())
	archive := filepath.Join(dir, "image.tar")
	out := run(t, src, "scripts/image.sh", "--engine", engine, "--tag", tag, "--save", archive)
	t.Cleanup(func() { _ = exec.Command(engine, "rmi", "--force", tag).Run() })
	if lines := strings.Split(strings.TrimSpace(out), "\n"); lines[len(lines)-1] != tag {
		t.Errorf("image.sh's last line is %q, want the reference %q", lines[len(lines)-1], tag)
	}

	img := readArchive(t, archive)
	cfg := img.config.Config
	t.Logf("image config: user %q, entrypoint %q, cmd %q, env %q, labels %v", cfg.User, cfg.Entrypoint, cfg.Cmd, cfg.Env, cfg.Labels)
	if user, _, _ := strings.Cut(cfg.User, ":"); user == "" || user == "0" || user == "root" {
		t.Errorf("image runs as user %q, want a non-root user", cfg.User)
	}
	if !slices.Equal(cfg.Entrypoint, []string{"eventsync"}) {
		t.Errorf("entrypoint %q, want [eventsync]", cfg.Entrypoint)
	}
	if !slices.Contains(cfg.Env, "PATH=/usr/local/bin") {
		t.Errorf("env %q lacks PATH=/usr/local/bin, where the entrypoint is", cfg.Env)
	}
	if got := cfg.Labels["org.opencontainers.image.revision"]; got != head {
		t.Errorf("label org.opencontainers.image.revision = %q, want the clone's HEAD %s", got, head)
	}
	version := cfg.Labels["org.opencontainers.image.version"]
	if version == "" || strings.HasSuffix(version, "-dirty") {
		t.Errorf("label org.opencontainers.image.version = %q, want the clean clone's version", version)
	}
	if cfg.Labels["org.opencontainers.image.created"] == "" {
		t.Error("label org.opencontainers.image.created is empty")
	}

	// Files: the binary owned by root, CA bundle, the user's passwd entry,
	// writable /tmp and /data, and no shell anywhere.
	bin := img.file(t, "usr/local/bin/eventsync")
	if bin.hdr.Uid != 0 || bin.hdr.Mode&0o111 == 0 || bin.hdr.Mode&0o022 != 0 {
		t.Errorf("/usr/local/bin/eventsync: uid %d mode %o, want root-owned, executable, not writable by others", bin.hdr.Uid, bin.hdr.Mode)
	}
	if ca := img.file(t, "etc/ssl/certs/ca-certificates.crt"); !bytes.Contains(ca.data, []byte("BEGIN CERTIFICATE")) {
		t.Error("/etc/ssl/certs/ca-certificates.crt holds no certificate")
	}
	if pw := img.file(t, "etc/passwd"); !bytes.Contains(pw.data, []byte(":65532:65532:")) {
		t.Errorf("/etc/passwd has no entry for 65532:\n%s", pw.data)
	}
	if tmp := img.file(t, "tmp"); tmp.hdr.Mode&0o1777 != 0o1777 {
		t.Errorf("/tmp mode %o, want 1777", tmp.hdr.Mode)
	}
	if data := img.file(t, "data"); data.hdr.Uid != 65532 {
		t.Errorf("/data owned by uid %d, want 65532 (the image's user)", data.hdr.Uid)
	}
	for name := range img.files {
		if base := filepath.Base(name); base == "sh" || base == "bash" || base == "busybox" {
			t.Errorf("image holds a shell: /%s", name)
		}
	}

	// The binary: static, stamped, and working.
	exe := filepath.Join(dir, "eventsync")
	if err := os.WriteFile(exe, bin.data, 0o755); err != nil {
		t.Fatal(err)
	}
	assertStatic(t, exe)
	got := strings.TrimSpace(run(t, dir, exe, "version"))
	t.Logf("eventsync version: %s", got)
	if want := "eventsync " + version + " (commit " + head + ", built "; !strings.HasPrefix(got, want) {
		t.Errorf("eventsync version printed %q, want it to start with %q", got, want)
	}
	demo := run(t, dir, exe, "demo", "--entities", "200", "--duration", "3s", "--data-dir", filepath.Join(dir, "demo"))
	if !strings.Contains(demo, "CONVERGED") {
		t.Errorf("eventsync demo did not converge:\n%s", demo)
	}
}

// assertStatic fails unless the ELF file at path asks for no dynamic
// loader (CGO_ENABLED=0: it runs in an image without libc).
func assertStatic(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s asks for a dynamic loader: not a static binary", path)
		}
	}
}

// findEngine returns podman if installed, else docker if its engine
// answers; the test fails (it was asked for) when neither does.
func findEngine(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("podman"); err == nil {
		return "podman"
	}
	if err := exec.Command("docker", "info").Run(); err == nil {
		return "docker"
	}
	t.Fatalf("%s=1 but neither podman nor a running docker engine is available (apt-get install podman)", EnvVar)
	return ""
}

// run runs a command in dir and returns its stdout; it fails the test
// with the output when the command fails.
func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// image is a saved image: its config and its files, layers applied in
// order (whiteouts are not needed: the image adds files only).
type image struct {
	config struct {
		Config struct {
			User       string
			Entrypoint []string
			Cmd        []string
			Env        []string
			Labels     map[string]string
		} `json:"config"`
	}
	files map[string]entry
}

type entry struct {
	hdr  *tar.Header
	data []byte
}

func (img *image) file(t *testing.T, name string) entry {
	t.Helper()
	e, ok := img.files[name]
	if !ok {
		t.Fatalf("the image has no /%s", name)
	}
	return e
}

type descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
}

// readArchive reads an OCI archive (podman save --format oci-archive, or
// docker save, which writes an OCI layout too since Docker 25).
func readArchive(t *testing.T, path string) *image {
	t.Helper()
	blobs := map[string][]byte{}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		blobs[strings.TrimPrefix(h.Name, "./")] = b
	}
	blob := func(d descriptor) []byte {
		b, ok := blobs["blobs/"+strings.Replace(d.Digest, ":", "/", 1)]
		if !ok {
			t.Fatalf("%s: no blob %s", path, d.Digest)
		}
		return b
	}
	var index struct{ Manifests []descriptor }
	if err := json.Unmarshal(blobs["index.json"], &index); err != nil || len(index.Manifests) == 0 {
		t.Fatalf("%s: no OCI index.json (%v)", path, err)
	}
	d := index.Manifests[0]
	if strings.HasSuffix(d.MediaType, "index.v1+json") { // docker: index → index → manifest
		if err := json.Unmarshal(blob(d), &index); err != nil || len(index.Manifests) == 0 {
			t.Fatalf("%s: nested index: %v", path, err)
		}
		d = index.Manifests[0]
	}
	var manifest struct {
		Config descriptor
		Layers []descriptor
	}
	if err := json.Unmarshal(blob(d), &manifest); err != nil {
		t.Fatalf("%s: manifest: %v", path, err)
	}
	img := &image{files: map[string]entry{}}
	if err := json.Unmarshal(blob(manifest.Config), &img.config); err != nil {
		t.Fatalf("%s: config: %v", path, err)
	}
	for _, l := range manifest.Layers {
		var r io.Reader = bytes.NewReader(blob(l))
		if strings.Contains(l.MediaType, "gzip") {
			zr, err := gzip.NewReader(r)
			if err != nil {
				t.Fatalf("layer %s: %v", l.Digest, err)
			}
			r = zr
		}
		lr := tar.NewReader(r)
		for {
			h, err := lr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("layer %s: %v", l.Digest, err)
			}
			data, err := io.ReadAll(lr)
			if err != nil {
				t.Fatal(err)
			}
			img.files[strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(h.Name, "./"), "/"), "/")] = entry{hdr: h, data: data}
		}
	}
	return img
}

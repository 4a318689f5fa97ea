package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.yaml.in/yaml/v3"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/bus/rabbitmq/rabbitmqtest"
	"github.com/eventsync/eventsync/internal/config"
	"github.com/eventsync/eventsync/internal/testenv"
)

// k8sObject is the part of a Kubernetes object the manifest test reads.
type k8sObject struct {
	file       string
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name         string            `yaml:"name"`
		GenerateName string            `yaml:"generateName"`
		Labels       map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Resources  []string          `yaml:"resources"` // a Kustomization's
	Spec       struct {
		Replicas *int `yaml:"replicas"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec k8sPodSpec `yaml:"spec"`
		} `yaml:"template"`
		// ScaledObject, HorizontalPodAutoscaler
		ScaleTargetRef struct {
			Kind string `yaml:"kind"`
			Name string `yaml:"name"`
		} `yaml:"scaleTargetRef"`
		MinReplicaCount *int `yaml:"minReplicaCount"`
		MaxReplicaCount *int `yaml:"maxReplicaCount"`
		MinReplicas     *int `yaml:"minReplicas"`
		MaxReplicas     *int `yaml:"maxReplicas"`
		Triggers        []struct {
			Type              string            `yaml:"type"`
			Metadata          map[string]string `yaml:"metadata"`
			AuthenticationRef struct {
				Name string `yaml:"name"`
			} `yaml:"authenticationRef"`
		} `yaml:"triggers"`
		Metrics []struct {
			Type     string `yaml:"type"`
			External struct {
				Metric struct {
					Name     string `yaml:"name"`
					Selector struct {
						MatchLabels map[string]string `yaml:"matchLabels"`
					} `yaml:"selector"`
				} `yaml:"metric"`
			} `yaml:"external"`
		} `yaml:"metrics"`
		// TriggerAuthentication
		SecretTargetRef []struct {
			Parameter string `yaml:"parameter"`
			Name      string `yaml:"name"`
			Key       string `yaml:"key"`
		} `yaml:"secretTargetRef"`
	} `yaml:"spec"`
}

type k8sPodSpec struct {
	TerminationGracePeriodSeconds *int `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               struct {
		RunAsNonRoot *bool `yaml:"runAsNonRoot"`
		RunAsUser    *int  `yaml:"runAsUser"`
	} `yaml:"securityContext"`
	Containers []k8sContainer `yaml:"containers"`
	Volumes    []struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
		Secret *struct {
			SecretName string `yaml:"secretName"`
			Items      []struct {
				Key  string `yaml:"key"`
				Path string `yaml:"path"`
			} `yaml:"items"`
		} `yaml:"secret"`
	} `yaml:"volumes"`
}

type k8sContainer struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Ports   []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env []struct {
		Name      string    `yaml:"name"`
		Value     string    `yaml:"value"`
		ValueFrom yaml.Node `yaml:"valueFrom"`
	} `yaml:"env"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

type k8sProbe struct {
	HTTPGet *struct {
		Path string    `yaml:"path"`
		Port yaml.Node `yaml:"port"`
	} `yaml:"httpGet"`
}

// loadManifests parses every YAML document under deploy/kubernetes.
func loadManifests(t *testing.T) []*k8sObject {
	t.Helper()
	root := repoFile("deploy/kubernetes")
	var objs []*k8sObject
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".yaml") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(false)
		for {
			o := &k8sObject{file: filepath.ToSlash(strings.TrimPrefix(p, root+string(filepath.Separator)))}
			if err := dec.Decode(o); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Errorf("%s: %v", p, err)
				break
			}
			if o.Kind == "" || o.APIVersion == "" {
				t.Errorf("%s: a document without apiVersion and kind", o.file)
				continue
			}
			objs = append(objs, o)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// TestKubernetesManifests parses every manifest under deploy/kubernetes and
// checks what they say against the code: containers run real subcommands
// with real flags, read only documented variables, find their secrets
// where the _FILE variables look, probe paths the admin server serves on
// the port it listens on, stop within their grace; the autoscalers target
// the worker and count the queues eventsync declares for the configured
// namespace, or the metric a worker exports.
func TestKubernetesManifests(t *testing.T) {
	t.Parallel()
	objs := loadManifests(t)
	byKind := map[string][]*k8sObject{}
	for _, o := range objs {
		byKind[o.Kind] = append(byKind[o.Kind], o)
	}
	one := func(kind, name string) *k8sObject {
		t.Helper()
		for _, o := range byKind[kind] {
			if o.Metadata.Name == name || o.Metadata.GenerateName == name {
				return o
			}
		}
		t.Fatalf("no %s %s under deploy/kubernetes", kind, name)
		return nil
	}

	// Kustomizations list files that exist, and the base lists every
	// manifest beside it.
	for _, k := range byKind["Kustomization"] {
		dir := path.Dir(k.file)
		for _, r := range k.Resources {
			if _, err := os.Stat(repoFile("deploy/kubernetes/" + path.Join(dir, r))); err != nil {
				t.Errorf("%s: resource %s: %v", k.file, r, err)
			}
		}
		if dir == "base" {
			for _, o := range objs {
				if path.Dir(o.file) == "base" && o.Kind != "Kustomization" && !slices.Contains(k.Resources, path.Base(o.file)) {
					t.Errorf("base/kustomization.yaml does not list %s", o.file)
				}
			}
		}
	}

	// The config file in the ConfigMap loads.
	cm := one("ConfigMap", "eventsync-config")
	cfgFile := filepath.Join(t.TempDir(), "eventsync.yaml")
	if err := os.WriteFile(cfgFile, []byte(cm.Data["eventsync.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgFile)
	if err != nil {
		t.Fatalf("ConfigMap eventsync-config, eventsync.yaml: %v", err)
	}
	secret := one("Secret", "eventsync")

	admin := serveAdmin(t)
	worker := one("Deployment", "eventsync-worker")
	for _, o := range append(slices.Clone(byKind["Deployment"]), byKind["Job"]...) {
		spec := o.Spec.Template.Spec
		if !mapsContain(o.Spec.Template.Metadata.Labels, o.Spec.Selector.MatchLabels) && o.Kind == "Deployment" {
			t.Errorf("%s: the selector %v does not select the pod labels %v", o.file, o.Spec.Selector.MatchLabels, o.Spec.Template.Metadata.Labels)
		}
		if sc := spec.SecurityContext; sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
			t.Errorf("%s: pods must run as non-root (runAsNonRoot, runAsUser 65532)", o.file)
		}
		for _, c := range spec.Containers {
			checkK8sContainer(t, o, spec, c, cfg, cm, secret, admin)
		}
	}

	// The worker stops within its grace period.
	grace := cfg.Worker.ShutdownGrace
	if grace == 0 {
		grace = 30 * time.Second
	}
	if tg := worker.Spec.Template.Spec.TerminationGracePeriodSeconds; tg == nil || time.Duration(*tg)*time.Second <= grace+5*time.Second {
		t.Errorf("worker: terminationGracePeriodSeconds must exceed worker.shutdown_grace (%v) by at least 5s, for the release of cancelled events", grace)
	}
	pdb := one("PodDisruptionBudget", "eventsync-worker")
	if !mapsContain(worker.Spec.Template.Metadata.Labels, pdb.Spec.Selector.MatchLabels) || len(pdb.Spec.Selector.MatchLabels) == 0 {
		t.Errorf("PodDisruptionBudget selector %v does not select the workers", pdb.Spec.Selector.MatchLabels)
	}

	// KEDA: scale the worker on the depth of each stream's queue in the
	// configured namespace, 6 to 150, authenticated from the Secret.
	so := one("ScaledObject", "eventsync-worker")
	if so.Spec.ScaleTargetRef.Name != worker.Metadata.Name {
		t.Errorf("ScaledObject targets %q, want %s", so.Spec.ScaleTargetRef.Name, worker.Metadata.Name)
	}
	if p := so.Spec.MinReplicaCount; p == nil || *p != 6 {
		t.Errorf("ScaledObject minReplicaCount %v, want 6", p)
	}
	if p := so.Spec.MaxReplicaCount; p == nil || *p != 150 {
		t.Errorf("ScaledObject maxReplicaCount %v, want 150", p)
	}
	var queues []string
	for _, tr := range so.Spec.Triggers {
		if tr.Type != "rabbitmq" || tr.Metadata["mode"] != "QueueLength" {
			t.Errorf("ScaledObject trigger %s/%s, want rabbitmq QueueLength", tr.Type, tr.Metadata["mode"])
		}
		if n, err := strconv.Atoi(tr.Metadata["value"]); err != nil || n <= 0 {
			t.Errorf("ScaledObject trigger %s: value %q is not a positive backlog per replica", tr.Metadata["queueName"], tr.Metadata["value"])
		}
		queues = append(queues, tr.Metadata["queueName"])
		auth := one("TriggerAuthentication", tr.AuthenticationRef.Name)
		for _, ref := range auth.Spec.SecretTargetRef {
			if _, ok := secret.StringData[ref.Key]; ref.Name != secret.Metadata.Name || !ok {
				t.Errorf("TriggerAuthentication %s: secret %s key %s is not the Secret's", auth.Metadata.Name, ref.Name, ref.Key)
			}
		}
	}
	var want []string
	for _, s := range bus.Streams {
		want = append(want, streamQueue(cfg.Namespace, s))
	}
	if slices.Sort(queues); !slices.Equal(queues, want) {
		t.Errorf("ScaledObject counts the queues %q, want those of namespace %q: %q", queues, cfg.Namespace, want)
	}

	// HPA: the same on the queue depth a worker exports.
	hpa := one("HorizontalPodAutoscaler", "eventsync-worker")
	if hpa.Spec.ScaleTargetRef.Name != worker.Metadata.Name || hpa.Spec.ScaleTargetRef.Kind != "Deployment" {
		t.Errorf("HPA targets %s %s, want Deployment %s", hpa.Spec.ScaleTargetRef.Kind, hpa.Spec.ScaleTargetRef.Name, worker.Metadata.Name)
	}
	if p, q := hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas; p == nil || q == nil || *p != 6 || *q != 150 {
		t.Errorf("HPA replicas %v to %v, want 6 to 150", p, q)
	}
	names := registeredMetricNames(t)
	var streams []string
	for _, m := range hpa.Spec.Metrics {
		if !names[m.External.Metric.Name] {
			t.Errorf("HPA scales on %q, which no eventsync process registers", m.External.Metric.Name)
		}
		streams = append(streams, m.External.Metric.Selector.MatchLabels["stream"])
	}
	slices.Sort(streams)
	if !slices.Equal(streams, []string{string(bus.Live), string(bus.Resync)}) {
		t.Errorf("HPA metrics select the streams %q, want live and resync", streams)
	}
}

// streamQueue is the RabbitMQ queue a stream's ready messages wait in
// (bus/rabbitmq's topology; TestKEDAQueueNames checks it on a broker).
func streamQueue(namespace string, s bus.Stream) string { return namespace + "." + string(s) }

// TestKEDAQueueNames publishes to each stream of a fresh namespace and
// reads the queue streamQueue names the way KEDA's rabbitmq scaler does
// over AMQP (a passive declare): the backlog must be there.
func TestKEDAQueueNames(t *testing.T) {
	t.Parallel()
	b := rabbitmqtest.Open(t, rabbitmq.Config{})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn, err := amqp.Dial(testenv.RabbitMQ(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for i, s := range bus.Streams {
		msgs := make([]bus.Message, i+2)
		for j := range msgs {
			msgs[j] = bus.Message{Body: []byte(`{}`)}
		}
		if err := b.Publish(ctx, s, msgs...); err != nil {
			t.Fatal(err)
		}
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		q, err := ch.QueueDeclarePassive(streamQueue(b.Namespace(), s), true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
		if err != nil {
			t.Fatalf("stream %s: queue %s: %v", s, streamQueue(b.Namespace(), s), err)
		}
		_ = ch.Close()
		if q.Messages != len(msgs) {
			t.Errorf("stream %s: queue %s holds %d ready messages, want the %d published", s, q.Name, q.Messages, len(msgs))
		}
	}
}

func mapsContain(m, sub map[string]string) bool {
	for k, v := range sub {
		if m[k] != v {
			return false
		}
	}
	return true
}

// checkK8sContainer checks one eventsync container of a Deployment or Job.
func checkK8sContainer(t *testing.T, o *k8sObject, spec k8sPodSpec, c k8sContainer, cfg *config.Config, cm, secret *k8sObject, admin string) {
	t.Helper()
	where := o.file + " container " + c.Name
	if len(c.Command) > 0 {
		t.Errorf("%s: sets command %q; the image's entrypoint is eventsync, give args", where, c.Command)
	}
	if err := checkCommandLine(c.Args); err != nil {
		t.Errorf("%s runs \"eventsync %s\": %v", where, strings.Join(c.Args, " "), err)
	}
	if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
		t.Errorf("%s: want cpu and memory requests and a memory limit, got %+v", where, c.Resources)
	}

	// Volumes: the config from the ConfigMap, secrets from the Secret.
	mounts := map[string]string{} // mount path → volume name
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m.Name
	}
	secretFiles := map[string]bool{}
	for _, v := range spec.Volumes {
		mp := ""
		for p, n := range mounts {
			if n == v.Name {
				mp = p
			}
		}
		switch {
		case v.ConfigMap != nil && v.ConfigMap.Name != cm.Metadata.Name:
			t.Errorf("%s: volume %s mounts ConfigMap %s, want %s", where, v.Name, v.ConfigMap.Name, cm.Metadata.Name)
		case v.ConfigMap != nil && mp != "":
			secretFiles[mp+"/eventsync.yaml"] = true // config file, same check
		case v.Secret != nil:
			if v.Secret.SecretName != secret.Metadata.Name {
				t.Errorf("%s: volume %s mounts Secret %s, want %s", where, v.Name, v.Secret.SecretName, secret.Metadata.Name)
			}
			for _, it := range v.Secret.Items {
				if _, ok := secret.StringData[it.Key]; !ok {
					t.Errorf("%s: volume %s: the Secret has no key %s", where, v.Name, it.Key)
				}
				if mp != "" {
					secretFiles[mp+"/"+it.Path] = true
				}
			}
		}
	}

	listen := cfg.Admin.Listen
	refs := sinkEnvRefs(t, repoFile("deploy/kubernetes/base/configmap.yaml"))
	for _, e := range c.Env {
		switch {
		case strings.HasPrefix(e.Name, "EVENTSYNC_"):
			if !knownEnv(t, e.Name) {
				t.Errorf("%s: %s is not a variable eventsync reads (docs/configuration.md)", where, e.Name)
			}
		case strings.HasSuffix(e.Name, "_FILE") && refs[strings.TrimSuffix(e.Name, "_FILE")]:
		case e.ValueFrom.Kind != 0 && slices.ContainsFunc(c.Args, func(a string) bool { return strings.Contains(a, "$("+e.Name+")") }):
		default:
			t.Errorf("%s: %s is neither an eventsync variable nor used by the args", where, e.Name)
		}
		if (strings.HasSuffix(e.Name, "_FILE") || e.Name == "EVENTSYNC_CONFIG") && !secretFiles[e.Value] {
			t.Errorf("%s: %s=%s, but no mounted volume has that file", where, e.Name, e.Value)
		}
		if e.Name == "EVENTSYNC_ADMIN_LISTEN" {
			listen = e.Value
		}
	}
	for i, a := range c.Args {
		if a == "--admin" && i+1 < len(c.Args) {
			listen = c.Args[i+1]
		}
	}

	if o.Kind != "Deployment" {
		return
	}
	if c.LivenessProbe == nil || c.ReadinessProbe == nil {
		t.Errorf("%s: needs a liveness and a readiness probe", where)
		return
	}
	for _, p := range []struct {
		name, want string
		probe      *k8sProbe
	}{{"liveness", "/livez", c.LivenessProbe}, {"readiness", "/readyz", c.ReadinessProbe}} {
		if p.probe.HTTPGet == nil {
			t.Errorf("%s: %s probe is not an httpGet", where, p.name)
			continue
		}
		if got := p.probe.HTTPGet.Path; got != p.want || !answersOK(t, admin, got) {
			t.Errorf("%s: %s probe on %s, want %s (served by the admin server)", where, p.name, got, p.want)
		}
		port := p.probe.HTTPGet.Port.Value
		for _, cp := range c.Ports {
			if cp.Name == port {
				port = strconv.Itoa(cp.ContainerPort)
			}
		}
		if _, lp, _ := strings.Cut(listen, ":"); lp != port {
			t.Errorf("%s: %s probe on port %s, but the admin server listens on %q", where, p.name, port, listen)
		}
	}
}

package cli_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/eventlog/eventlog/internal/httpapi"
	"github.com/eventlog/eventlog/pkg/cli"
)

// envNames returns the EVENTLOG_* variables a command accepts, from its -h.
func envNames(t *testing.T, command string) map[string]bool {
	t.Helper()
	var out bytes.Buffer
	err := cli.Main(context.Background(), []string{command, "-h"}, cli.Env{Getenv: noEnv, Stdout: &out, Stderr: &out})
	if cli.ExitCode(err) != 0 {
		t.Fatalf("%s -h: %v", command, err)
	}
	names := map[string]bool{}
	for _, m := range regexp.MustCompile(`\((EVENTLOG_[A-Z0-9_]+),`).FindAllStringSubmatch(out.String(), -1) {
		names[m[1]] = true
	}
	if len(names) < 5 {
		t.Fatalf("%s -h lists only %v", command, names)
	}
	return names
}

func repoFile(t *testing.T, parts ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(append([]string{"..", ".."}, parts...)...))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// binaryOf maps an entrypoint or command to the eventlog command it runs.
func binaryOf(t *testing.T, argv []string) string {
	t.Helper()
	if len(argv) == 0 {
		t.Fatal("no entrypoint")
	}
	switch filepath.Base(argv[0]) {
	case "writer":
		return "writer"
	case "projector":
		return "projector"
	}
	t.Fatalf("unknown binary %q", argv[0])
	return ""
}

// The Dockerfile builds the binaries the compose file and the manifests run.
func TestDockerfileBuildsTheBinaries(t *testing.T) {
	df := string(repoFile(t, "deploy", "Dockerfile"))
	for _, want := range []string{"./cmd/eventlog", "./cmd/writer", "./cmd/projector", "USER nonroot", "CGO_ENABLED=0", "distroless/static", "/usr/local/bin/"} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	for _, cmd := range []string{"eventlog", "writer", "projector"} {
		if _, err := os.Stat(filepath.Join("..", "..", "cmd", cmd, "main.go")); err != nil {
			t.Errorf("cmd/%s: %v", cmd, err)
		}
	}
}

type composeFile struct {
	Services map[string]struct {
		Image       string                       `yaml:"image"`
		Build       *struct{ Dockerfile string } `yaml:"build"`
		Entrypoint  []string                     `yaml:"entrypoint"`
		Environment map[string]string            `yaml:"environment"`
		Ports       []string                     `yaml:"ports"`
		Healthcheck struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
	} `yaml:"services"`
}

func TestComposeAgreesWithTheBinaries(t *testing.T) {
	var c composeFile
	if err := yaml.Unmarshal(repoFile(t, "docker-compose.yml"), &c); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"writer", "projector"} {
		s, ok := c.Services[name]
		if !ok {
			t.Fatalf("no %s service", name)
		}
		bin := binaryOf(t, s.Entrypoint)
		accepted := envNames(t, bin)
		for k := range s.Environment {
			if strings.HasPrefix(k, "EVENTLOG_") && !accepted[k] {
				t.Errorf("%s sets %s, which %s does not accept", name, k, bin)
			}
		}
		port := portOf(t, s.Environment["EVENTLOG_HTTP_ADDR"])
		if !slicesContainsPrefix(s.Ports, port+":") && !slicesContainsSuffix(s.Ports, ":"+port) {
			t.Errorf("%s listens on %s but publishes %v", name, port, s.Ports)
		}
		hc := strings.Join(s.Healthcheck.Test, " ")
		if !strings.Contains(hc, "eventlog health") || !strings.Contains(hc, ":"+port) {
			t.Errorf("%s health check %q does not ask eventlog health on port %s", name, hc, port)
		}
		if s.Image != "eventlog:latest" {
			t.Errorf("%s runs image %q, not the one built from deploy/Dockerfile", name, s.Image)
		}
	}
	if b := c.Services["writer"].Build; b == nil || b.Dockerfile != "deploy/Dockerfile" {
		t.Errorf("the writer service does not build deploy/Dockerfile")
	}
	for _, dep := range []string{"kafka", "postgres"} {
		if _, ok := c.Services[dep]; !ok {
			t.Errorf("no %s service", dep)
		}
	}
}

type manifest struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		Template struct {
			Spec struct {
				Containers []struct {
					Command []string `yaml:"command"`
					Env     []struct {
						Name  string `yaml:"name"`
						Value string `yaml:"value"`
					} `yaml:"env"`
					EnvFrom []struct {
						ConfigMapRef struct{ Name string } `yaml:"configMapRef"`
					} `yaml:"envFrom"`
					Ports []struct {
						Name          string `yaml:"name"`
						ContainerPort int    `yaml:"containerPort"`
					} `yaml:"ports"`
					ReadinessProbe probe `yaml:"readinessProbe"`
					LivenessProbe  probe `yaml:"livenessProbe"`
					Resources      struct {
						Requests map[string]string `yaml:"requests"`
					} `yaml:"resources"`
				} `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type probe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
}

func TestKubernetesManifestsAgreeWithTheBinaries(t *testing.T) {
	base := filepath.Join("deploy", "k8s", "base")
	var kust struct{ Resources []string }
	if err := yaml.Unmarshal(repoFile(t, base, "kustomization.yaml"), &kust); err != nil {
		t.Fatal(err)
	}
	var docs []manifest
	for _, r := range kust.Resources {
		dec := yaml.NewDecoder(bytes.NewReader(repoFile(t, base, r)))
		for {
			var m manifest
			if err := dec.Decode(&m); err != nil {
				break
			}
			docs = append(docs, m)
		}
	}
	config := map[string]string{}
	kinds := map[string]int{}
	for _, m := range docs {
		kinds[m.Kind]++
		if m.Kind == "ConfigMap" {
			config = m.Data
		}
	}
	if kinds["Deployment"] != 2 || kinds["PodDisruptionBudget"] != 2 || kinds["Service"] != 2 {
		t.Fatalf("want 2 Deployments, Services and PodDisruptionBudgets, got %v", kinds)
	}
	handler := (&httpapi.Server{}).Handler()
	for _, m := range docs {
		if m.Kind != "Deployment" {
			continue
		}
		ctr := m.Spec.Template.Spec.Containers[0]
		bin := binaryOf(t, ctr.Command)
		accepted := envNames(t, bin)
		env := map[string]string{}
		for k, v := range config {
			env[k] = v
		}
		for _, e := range ctr.Env {
			env[e.Name] = e.Value
		}
		for k := range env {
			if !accepted[k] {
				t.Errorf("%s sets %s, which %s does not accept", m.Metadata.Name, k, bin)
			}
		}
		port := portOf(t, env["EVENTLOG_HTTP_ADDR"])
		if len(ctr.Ports) == 0 || strconv.Itoa(ctr.Ports[0].ContainerPort) != port {
			t.Errorf("%s: container port %v, service listens on %s", m.Metadata.Name, ctr.Ports, port)
		}
		for _, p := range []probe{ctr.ReadinessProbe, ctr.LivenessProbe} {
			path := p.HTTPGet.Path
			if !strings.HasPrefix(path, "/") {
				t.Errorf("%s has a probe without an HTTP path", m.Metadata.Name)
				continue
			}
			rec := httptest.NewRecorder()
			handler.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
			if rec.Code == http.StatusNotFound {
				t.Errorf("%s probes %q, which the service does not serve", m.Metadata.Name, path)
			}
			if p.HTTPGet.Port != ctr.Ports[0].Name && p.HTTPGet.Port != port {
				t.Errorf("%s probes port %q, not the service's", m.Metadata.Name, p.HTTPGet.Port)
			}
		}
		if ctr.Resources.Requests["cpu"] == "" || ctr.Resources.Requests["memory"] == "" {
			t.Errorf("%s has no resource requests", m.Metadata.Name)
		}
	}
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		t.Fatalf("EVENTLOG_HTTP_ADDR %q has no port", addr)
	}
	return addr[i+1:]
}

func slicesContainsPrefix(s []string, p string) bool {
	for _, x := range s {
		if strings.HasPrefix(strings.Trim(x, `"`), p) {
			return true
		}
	}
	return false
}

func slicesContainsSuffix(s []string, p string) bool {
	for _, x := range s {
		if strings.HasSuffix(strings.Trim(x, `"`), p) {
			return true
		}
	}
	return false
}

// The README's configuration table lists exactly the flags of writer, projector
// and dev, each under the right programs.
func TestREADMEConfigTable(t *testing.T) {
	readme := string(repoFile(t, "README.md"))
	start := strings.Index(readme, "## Configuration")
	end := strings.Index(readme[start:], "\n## ")
	section := readme[start : start+end]
	programs := []string{"writer", "projector", "dev"}
	accepted := map[string]map[string]bool{}
	for _, p := range programs {
		accepted[p] = envNames(t, p)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(section, "\n") {
		m := regexp.MustCompile("^\\| `(EVENTLOG_[A-Z0-9_]+)` \\|([^|]*)\\|([^|]*)\\|([^|]*)\\|").FindStringSubmatch(line)
		if m == nil {
			continue
		}
		name := m[1]
		seen[name] = true
		for i, p := range programs {
			if listed := strings.Contains(m[2+i], "✓"); listed != accepted[p][name] {
				t.Errorf("README says %s is %v for %s; the flags say %v", name, listed, p, accepted[p][name])
			}
		}
	}
	for _, p := range programs {
		for name := range accepted[p] {
			if !seen[name] {
				t.Errorf("README's configuration table lacks %s (a flag of %s)", name, p)
			}
		}
	}
}

package pgreadmodel_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The read model reaches the runner's transaction through a small interface
// of its own: it imports pgx, not a store backend, nor a Kafka client.
func TestDependencies(t *testing.T) {
	const pkg = "github.com/eventlog/eventlog/pkg/projection/pgreadmodel"
	out, err := exec.Command("go", "list", "-deps", pkg).Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/eventlog/eventlog/pkg/store/", "github.com/twmb/franz-go", "modernc.org/sqlite", "github.com/eventlog/eventlog/pkg/kafka"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("%s depends on %s", pkg, dep)
			}
		}
	}
}

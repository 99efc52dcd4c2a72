package kafka

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
)

// refused says what to set for each way a broker refuses transactions, and
// leaves other errors alone.
func TestRefusedSaysWhatToSet(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string // "" for not a refusal
	}{
		{kerr.TransactionalIDAuthorizationFailed, "--transactional-id eventlog.relay.x"},
		{kerr.ClusterAuthorizationFailed, "IDEMPOTENT_WRITE"},
		{kerr.InvalidTransactionTimeout, "transaction.max.timeout.ms"},
		{kerr.CoordinatorNotAvailable, "transaction.state.log.replication.factor"},
		{fmt.Errorf("init: %w", context.DeadlineExceeded), "transaction.state.log.min.isr"},
		{kerr.UnsupportedVersion, "0.11"},
		{kerr.NotEnoughReplicas, ""},
	} {
		err := refused("eventlog.relay.x", 10*time.Second, c.err)
		switch {
		case c.want == "" && errors.Is(err, ErrTransactionsRefused):
			t.Errorf("%v: %v, want no ErrTransactionsRefused", c.err, err)
		case c.want != "" && (!errors.Is(err, ErrTransactionsRefused) || !strings.Contains(err.Error(), c.want) || !errors.Is(err, c.err)):
			t.Errorf("%v: %v, want ErrTransactionsRefused saying %q", c.err, err, c.want)
		case c.want != "" && !strings.Contains(err.Error(), "at-least-once"):
			t.Errorf("%v: %v does not name the at-least-once mode", c.err, err)
		}
	}
	if err := checkpointTopicHint("cp", fmt.Errorf("fetch: %w", kerr.TopicAuthorizationFailed)); !errors.Is(err, ErrTransactionsRefused) || !strings.Contains(err.Error(), "topic cp") {
		t.Errorf("checkpoint topic authorization: %v", err)
	}
}

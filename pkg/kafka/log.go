package kafka

import (
	"log/slog"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kslog"
)

// Log keys of this package.
const (
	logKeyRelay      = "relay"
	logKeyConsumer   = "consumer"
	logKeyGroup      = "group"
	logKeyErr        = "err"
	logKeyID         = "notification_id"
	logKeyTopic      = "topic"
	logKeyPartition  = "partition"
	logKeyCheckpoint = "checkpoint"
	logKeyBackoff    = "backoff"
	logKeyRecords    = "records"
	logKeyAttempt    = "attempt"
	logKeyOffset     = "offset"
	logKeyPages      = "pages"
	logKeyTxnID      = "transactional_id"
)

// NewLogger returns a kgo.Logger that writes franz-go's logs to l (through
// franz-go's slog plug-in). Pass it to kgo.WithLogger. The client logs at the
// most verbose level l has enabled. A nil l logs nothing.
func NewLogger(l *slog.Logger) kgo.Logger {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return kslog.New(l)
}

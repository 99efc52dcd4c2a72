package kafka

import (
	"context"
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

// NewLogger returns a kgo.Logger that writes franz-go's logs to l. Pass it
// to kgo.WithLogger. franz-go's info lines (a consumer group's lifecycle:
// joining, syncing, assignments, heartbeats; metadata updates; producer
// ids) are logged at debug, so that at info a service shows only its own
// lines; franz-go's warnings and errors keep their level. The client logs
// at the most verbose level l has enabled. A nil l logs nothing.
func NewLogger(l *slog.Logger) kgo.Logger {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return kgoLogger{l: l, k: kslog.New(l)}
}

// kgoLogger is franz-go's slog plug-in (kslog), with info demoted to debug.
type kgoLogger struct {
	l *slog.Logger
	k *kslog.Logger
}

// Level is the most verbose level of franz-go's that l keeps: an info level
// keeps none of franz-go's info lines, which are debug here.
func (k kgoLogger) Level() kgo.LogLevel {
	ctx := context.Background()
	switch {
	case k.l.Enabled(ctx, slog.LevelDebug):
		return kgo.LogLevelDebug
	case k.l.Enabled(ctx, slog.LevelWarn):
		return kgo.LogLevelWarn
	case k.l.Enabled(ctx, slog.LevelError):
		return kgo.LogLevelError
	}
	return kgo.LogLevelNone
}

func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	if level == kgo.LogLevelInfo {
		level = kgo.LogLevelDebug
	}
	k.k.Log(level, msg, keyvals...)
}

package kafka_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/internal/testutil"
	"github.com/eventlog/eventlog/pkg/kafka"
)

// At info a service shows only its own lines: a consumer group's lifecycle,
// which franz-go logs at info, is debug. At debug it is all there.
func TestLoggerGroupLifecycleIsDebug(t *testing.T) {
	c := newCluster(t, 2, "example")
	for _, lv := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		var out testutil.Buffer
		log := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: lv}))
		cl := newClient(t, c, kgo.WithLogger(kafka.NewLogger(log)), kgo.ConsumerGroup("g-"+lv.String()),
			kgo.ConsumeTopics(topics.Events("example")), kgo.FetchMaxWait(50*time.Millisecond))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for !joined(cl) && ctx.Err() == nil {
			pctx, pcancel := context.WithTimeout(ctx, 100*time.Millisecond)
			cl.PollFetches(pctx)
			pcancel()
		}
		if !joined(cl) {
			t.Fatalf("at %v: the client did not join its group", lv)
		}
		cancel()
		cl.Close()
		got := out.String()
		switch lv {
		case slog.LevelInfo:
			if got != "" {
				t.Errorf("at info, franz-go logged:\n%s", got)
			}
		case slog.LevelDebug:
			if !strings.Contains(got, "level=DEBUG") || !strings.Contains(got, "joining group") {
				t.Errorf("at debug, no group lifecycle in:\n%s", got)
			}
		}
	}
}

// joined reports whether the client is a member of its group.
func joined(cl *kgo.Client) bool {
	id, _ := cl.GroupMetadata()
	return id != ""
}

// franz-go's warnings and errors keep their level.
func TestLoggerKeepsWarnings(t *testing.T) {
	var out bytes.Buffer
	l := kafka.NewLogger(slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if l.Level() != kgo.LogLevelWarn {
		t.Fatalf("at info the client logs at %v, want warn (its info lines are debug here)", l.Level())
	}
	l.Log(kgo.LogLevelInfo, "joining group")
	l.Log(kgo.LogLevelWarn, "unable to open connection")
	l.Log(kgo.LogLevelError, "fatal")
	got := out.String()
	if strings.Contains(got, "joining") || !strings.Contains(got, `level=WARN msg="unable to open connection"`) || !strings.Contains(got, "level=ERROR msg=fatal") {
		t.Fatalf("logged:\n%s", got)
	}
	if kafka.NewLogger(nil).Level() != kgo.LogLevelNone {
		t.Fatal("a nil logger logs")
	}
}

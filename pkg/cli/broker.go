package cli

import (
	"context"
	"fmt"

	"github.com/eventlog/eventlog/internal/broker"
	"github.com/eventlog/eventlog/internal/config"
)

// Broker runs the embedded Kafka-protocol broker alone, so that separate writer
// and projector processes can run against it on a machine with no Kafka.
func (p Program) Broker(ctx context.Context, args []string, env Env) error {
	fs := config.New(p.name("broker"), "Run the embedded Kafka-protocol broker (franz-go's kfake) persisted to a data directory.", env.Stderr)
	var (
		addr, dataDir string
		partitions    int
		l             logFlags
	)
	fs.StringVar(&addr, "addr", "127.0.0.1:9092", "listen address (host:port)")
	fs.StringVar(&dataDir, "data-dir", ".eventlog", "directory of the broker's log")
	fs.IntVar(&partitions, "partitions", 4, "partitions of topics created on first use")
	l.register(fs)
	if err := parse(fs, args, env); err != nil {
		return err
	}
	log, err := l.logger(env.Stderr)
	if err != nil {
		return UsageError{err}
	}
	c, err := broker.Start(broker.Config{Addr: addr, DataDir: dataDir, Partitions: partitions, Log: log})
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintf(env.Stdout, "%s broker listening on %s (data in %s)\n", p.Name, c.ListenAddrs()[0], dataDir)
	<-ctx.Done()
	log.Info("broker stopping")
	return nil
}

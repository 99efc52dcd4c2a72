// Package broker runs the embedded Kafka-protocol broker: franz-go's kfake,
// persisted to a data directory, so that eventlog runs on a machine with no Kafka.
// Any Kafka client (franz-go, librdkafka's kcat, kafkajs, ...) can connect to it.
//
// It is one in-process broker with no replication: a convenience for development
// and single-machine use, not a substitute for a Kafka cluster. With SyncWrites
// (the default here) every produce is fsynced before it is acknowledged. Its
// consumer groups are watched (Groups) so that a member that dies or stops
// at the wrong moment does not leave them hung, as it can in plain kfake, and
// a fenced transactional producer's produce is refused before kfake lets it
// disturb the producer that fenced it (FenceStaleProduces).
package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Config configures the broker.
type Config struct {
	// Addr is the host:port to listen on (default 127.0.0.1:9092; port 0 picks one).
	Addr string
	// DataDir keeps the broker's log; empty keeps it in memory only.
	DataDir string
	// Partitions is the partition count of topics created on first use (default 4).
	Partitions int
	// NoSync turns off the fsync of every produce.
	NoSync bool
	Log    *slog.Logger
}

// A Broker is a running embedded broker: the kfake cluster, and the watch on
// its consumer groups that makes them behave as Kafka's do (see WatchGroups).
type Broker struct {
	*kfake.Cluster
	groups *Groups
}

// Close stops the broker.
func (b *Broker) Close() {
	b.groups.Close()
	b.Cluster.Close()
}

// Start starts the broker. Close it to stop it.
func Start(cfg Config) (*Broker, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:9092"
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = 4
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("broker address %q must be host:port: %v", cfg.Addr, err)
	}
	// Listen first, so that a port in use fails with a clear message.
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("broker address %s is in use: stop what listens there or choose another with --broker-addr", cfg.Addr)
		}
		return nil, fmt.Errorf("broker cannot listen on %s: %v", cfg.Addr, err)
	}
	used := false
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(ln.Addr().(*net.TCPAddr).Port),
		kfake.ListenFn(func(network, address string) (net.Listener, error) {
			if used {
				return nil, fmt.Errorf("embedded broker: one listener only")
			}
			used = true
			return ln, nil
		}),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(cfg.Partitions),
		kfake.ClusterID("eventlog-embedded"),
	}
	if cfg.DataDir != "" {
		dir := filepath.Join(cfg.DataDir, "broker")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			ln.Close()
			return nil, fmt.Errorf("broker data directory: %v", err)
		}
		opts = append(opts, kfake.DataDir(dir))
		if !cfg.NoSync {
			opts = append(opts, kfake.SyncWrites())
		}
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("embedded broker: %v", err)
	}
	groups, err := WatchGroups(c, 0, cfg.Log)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("embedded broker: %v", err)
	}
	FenceStaleProduces(c)
	if cfg.Log != nil {
		cfg.Log.Info("embedded broker listening", "addr", c.ListenAddrs()[0], "data_dir", cfg.DataDir)
	}
	return &Broker{Cluster: c, groups: groups}, nil
}

package local

import (
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Broker is an in-process Kafka-protocol broker (franz-go's kfake) keeping
// its log under a directory, so records survive a restart of gantry dev.
type Broker struct {
	c *kfake.Cluster
}

// StartBroker starts a one-node broker on addr's port on loopback (0 picks
// a free one) with its data under dir.
func StartBroker(dir string, port int) (*Broker, error) {
	c, err := kfake.NewCluster(
		kfake.Ports(port),
		kfake.DataDir(dir),
		kfake.AllowAutoTopicCreation(),
		// Loggers in tests and on laptops come and go; the default 6 s
		// floor would make every restart wait that long to rebalance.
		kfake.GroupMinSessionTimeout(time.Second),
	)
	if err != nil {
		return nil, fmt.Errorf("start the embedded Kafka broker: %w", err)
	}
	return &Broker{c: c}, nil
}

// Addr is the broker's host:port.
func (b *Broker) Addr() string { return b.c.ListenAddrs()[0] }

// Close stops the broker, flushing its data to disk.
func (b *Broker) Close() { b.c.Close() }

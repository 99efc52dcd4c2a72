package broker

import (
	"encoding/binary"
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// FenceStaleProduces mends a way in which kfake's transactions differ from
// Kafka's, which makes a fenced producer (a zombie) fence the producer that
// fenced it:
//
//   - kfake adds a partition to a transaction implicitly when a
//     transactional produce request reaches it (KIP-890: Produce v12+)
//     before it checks the batch's producer epoch. A produce of a fenced
//     producer, at an epoch older than the transactional id's, is refused
//     with INVALID_PRODUCER_EPOCH, but its partition is added to the current
//     producer's transaction, which starts it. If the current producer is
//     idle (between transactions), that phantom transaction times out: kfake
//     aborts it and bumps the epoch, and the current producer's next
//     transaction fails (INVALID_PRODUCER_EPOCH, then PRODUCER_FENCED),
//     although it did nothing wrong. Kafka refuses the stale produce and adds
//     nothing.
//
// FenceStaleProduces answers INVALID_PRODUCER_EPOCH itself, before kfake sees
// the request, to a transactional produce request whose batches carry an
// epoch older than the greatest it has seen for their producer id in a
// transactional produce, EndTxn or AddPartitionsToTxn request. A producer's
// epoch only grows, so a live producer is never refused. It does not catch a
// zombie's produce that comes after the fence (the new producer's
// InitProducerID, whose answer it does not see) and before the new producer's
// first request: kfake's behavior remains in that window.
func FenceStaleProduces(c *kfake.Cluster) {
	f := &staleFence{epochs: make(map[int64]int16)}
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		return f.produce(req.(*kmsg.ProduceRequest))
	})
	c.ControlKey(int16(kmsg.EndTxn), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		r := req.(*kmsg.EndTxnRequest)
		f.seen(r.ProducerID, r.ProducerEpoch)
		return nil, nil, false
	})
	c.ControlKey(int16(kmsg.AddPartitionsToTxn), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		r := req.(*kmsg.AddPartitionsToTxnRequest)
		f.seen(r.ProducerID, r.ProducerEpoch)
		for _, t := range r.Transactions {
			f.seen(t.ProducerID, t.ProducerEpoch)
		}
		return nil, nil, false
	})
}

type staleFence struct {
	mu     sync.Mutex
	epochs map[int64]int16 // greatest epoch seen per producer id
}

// seen notes epoch for id and reports whether it is older than one seen.
func (f *staleFence) seen(id int64, epoch int16) (stale bool) {
	if id < 0 || epoch < 0 {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, ok := f.epochs[id]
	if ok && epoch < cur {
		return true
	}
	f.epochs[id] = epoch
	return false
}

// Offsets in a record batch (magic 2) of its attributes, producer id and
// producer epoch.
const (
	batchAttributes    = 21
	batchProducerID    = 43
	batchProducerEpoch = 51
	batchHeaderMin     = 61
	attrTransactional  = 0x10
)

func (f *staleFence) produce(req *kmsg.ProduceRequest) (kmsg.Response, error, bool) {
	if req.TransactionID == nil || req.Acks == 0 {
		return nil, nil, false
	}
	stale := false
	for _, t := range req.Topics {
		for _, p := range t.Partitions {
			b := p.Records
			if len(b) < batchHeaderMin || b[16] != 2 || binary.BigEndian.Uint16(b[batchAttributes:])&attrTransactional == 0 {
				continue
			}
			id := int64(binary.BigEndian.Uint64(b[batchProducerID:]))
			epoch := int16(binary.BigEndian.Uint16(b[batchProducerEpoch:]))
			if f.seen(id, epoch) {
				stale = true
			}
		}
	}
	if !stale {
		return nil, nil, false
	}
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	for _, t := range req.Topics {
		rt := kmsg.NewProduceResponseTopic()
		rt.Topic, rt.TopicID = t.Topic, t.TopicID
		for _, p := range t.Partitions {
			rp := kmsg.NewProduceResponseTopicPartition()
			rp.Partition = p.Partition
			rp.ErrorCode = kerr.InvalidProducerEpoch.Code
			rp.BaseOffset = -1
			rp.LogAppendTime = -1
			rp.LogStartOffset = -1
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp, nil, true
}

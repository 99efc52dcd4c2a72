package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/tracing"
)

// ErrTransactionsRefused reports that the broker refuses the relay's
// transactions: the relay's principal lacks an ACL, the brokers cannot host
// their transaction state, or the relay asks for more than the broker allows.
// The error says what to set. A relay that gets it logs it and tries again
// with back-off; the at-least-once mode (RelayConfig.Transactional false)
// needs no transactions.
var ErrTransactionsRefused = errors.New("kafka: relay: the broker refuses transactions")

// ErrFenced reports that the broker fenced the relay's producer: another
// producer started with its transactional id (another relay of the store), or
// the broker aborted the relay's transaction after its timeout. The relay
// stops publishing, gives up its lock and tries it again.
var ErrFenced = errors.New("kafka: relay: the broker fenced the relay's producer")

// StoreIDTrackingTopic is the topic of the tracking record (named
// RelayConfig.Name, partition 0) in which a transactional relay keeps the
// store's id, a random positive number, from which its default transactional
// id is made.
const StoreIDTrackingTopic = "kafka.transactional-id"

// txCheckpointTrackingTopic is the topic of the tracking record (named
// RelayConfig.Name, partition 0) in which a transactional relay copies its
// checkpoint, beside the plain one: a plain checkpoint beyond it was moved by
// the at-least-once mode since.
const txCheckpointTrackingTopic = "kafka.transactional-checkpoint"

// initTimeout bounds the first InitProducerID of a producer: brokers that
// cannot host the transaction state answer COORDINATOR_NOT_AVAILABLE, which
// the client retries.
const initTimeout = 30 * time.Second

// txLeader is the state of one term as the active relay, in transactional
// mode.
type txLeader struct {
	r    *Relay
	log  *slog.Logger
	held context.Context
	// produceCtx outlives held: the transaction in progress when held ends
	// is finished, not cut short.
	produceCtx context.Context
	id         string      // transactional id
	prod       *kgo.Client // the transactional producer; nil until made
	// stale is set until the producer is initialized (which fences the
	// producers of the id before it and aborts their transactions) and the
	// checkpoint read from Kafka since the last failure.
	stale      bool
	topicReady bool            // the checkpoint topic was ensured
	known      map[string]bool // topics ensured with Admin
	failed     atomic.Bool     // a record of the transaction in progress failed
	// term's acked is the checkpoint committed in Kafka, saved the store's
	// copy.
	term
}

// leadTx publishes in transactions while held lasts. It returns nil when held
// ends, or ErrFenced.
func (r *Relay) leadTx(held context.Context) error {
	id, err := r.transactionalID(held)
	if err != nil {
		if held.Err() != nil {
			return nil
		}
		return fmt.Errorf("transactional id: %w", err)
	}
	produceCtx, stopProducing := context.WithCancel(context.WithoutCancel(held))
	defer stopProducing()
	l := &txLeader{r: r, log: r.log.With(logKeyTxnID, id), held: held, produceCtx: produceCtx, id: id,
		stale: true, known: make(map[string]bool), term: term{cfg: &r.cfg, saved: -1, savedAt: time.Now()}}
	defer l.stop()

	pc := r.newPacer(held)
	defer pc.stop()
	var statsAt time.Time
	idle := false
	for held.Err() == nil {
		if l.stale {
			if err := l.prepare(); err != nil {
				if held.Err() != nil {
					break
				}
				r.update(func(s *RelayStats) { s.Failures++ })
				l.log.Error("relay cannot start publishing", logKeyErr, err, logKeyBackoff, l.nextBackoff())
				sleep(held, l.backoff)
				continue
			}
			idle = false
		}
		if time.Since(statsAt) >= r.cfg.StatsInterval {
			statsAt = time.Now()
			if m, err := r.src.MaxNotificationID(held); err == nil {
				r.update(func(s *RelayStats) { s.MaxID = max(s.MaxID, m) })
			}
		}
		if !idle {
			caughtUp, err := l.transaction()
			if err != nil {
				if errors.Is(err, ErrFenced) {
					r.update(func(s *RelayStats) { s.Fenced++; s.Failures++ })
					return err
				}
				if held.Err() != nil {
					break
				}
				r.update(func(s *RelayStats) { s.Failures++ })
				l.log.Error("relay transaction failed; resuming from the checkpoint committed in Kafka",
					logKeyErr, err, logKeyCheckpoint, l.acked, logKeyBackoff, l.nextBackoff())
				sleep(held, l.backoff)
				continue
			}
			l.checkpoint(false)
			idle = caughtUp
			continue
		}
		pc.arm()
		switch pc.wait(held, nil, l.acked > l.saved, l.savedAt) {
		case pollAgain:
			idle = false
		case checkpointIsDue:
			l.checkpoint(false)
		}
	}
	return nil
}

// transactionalID returns RelayConfig.TransactionalID, or the default made
// from the store's id, which it creates the first time. It runs under the
// relay's lock, so that one relay creates it.
func (r *Relay) transactionalID(ctx context.Context) (string, error) {
	if r.cfg.TransactionalID != "" {
		return r.cfg.TransactionalID, nil
	}
	n, err := r.src.Tracking(ctx, r.cfg.Name, StoreIDTrackingTopic, 0)
	if err != nil {
		return "", fmt.Errorf("read the store id: %w", err)
	}
	if n <= 0 {
		n = 1 + rand.Int64N(math.MaxInt64-1)
		err = r.src.InTx(ctx, func(tx store.Tx) error {
			return tx.SetTracking(ctx, store.Tracking{Name: r.cfg.Name, Topic: StoreIDTrackingTopic, Position: n})
		})
		if errors.Is(err, store.ErrTrackingConflict) {
			n, err = r.src.Tracking(ctx, r.cfg.Name, StoreIDTrackingTopic, 0)
		}
		if err != nil {
			return "", fmt.Errorf("store the store id: %w", err)
		}
	}
	return fmt.Sprintf("%s.relay.%s.%016x", r.cfg.Topics.Prefix, r.cfg.Name, n), nil
}

// prepare makes the producer if there is none, initializes it (which fences
// every producer of the transactional id before it and aborts their open
// transactions) and reads the checkpoint committed in Kafka.
func (l *txLeader) prepare() error {
	r := l.r
	if !l.topicReady {
		if err := r.ensureCheckpointTopic(l.held); err != nil {
			return checkpointTopicHint(r.cfg.CheckpointTopic, err)
		}
		l.topicReady = true
	}
	if l.prod == nil {
		opts := append(slices.Clone(r.client.Opts()), kgo.TransactionalID(l.id), kgo.TransactionTimeout(r.cfg.TransactionTimeout))
		p, err := newClientShared(opts...)
		if err != nil {
			return fmt.Errorf("transactional producer: %w", err)
		}
		l.prod = p
	}
	ictx, cancel := context.WithTimeout(l.held, initTimeout)
	_, _, err := l.prod.ProducerID(ictx)
	cancel()
	if err != nil {
		l.dropProducer()
		if l.held.Err() != nil {
			return l.held.Err()
		}
		return refused(l.id, r.cfg.TransactionTimeout, err)
	}
	reader := &checkpointReader{cl: r.client, topic: r.cfg.CheckpointTopic, key: l.id,
		settle: 2*r.cfg.TransactionTimeout + 10*time.Second, warn: 5 * time.Second,
		logWait: func(p int32, lso, hwm int64, waited time.Duration) {
			l.log.Warn("relay waits for a transaction open on its checkpoint topic to end", logKeyTopic, r.cfg.CheckpointTopic,
				logKeyPartition, p, "last_stable_offset", lso, "high_watermark", hwm, "waited", waited.Round(time.Second))
		}}
	cp, found, err := reader.read(l.held)
	if err != nil {
		return checkpointTopicHint(r.cfg.CheckpointTopic, fmt.Errorf("read the checkpoint: %w", err))
	}
	storeCP, err := r.src.Tracking(l.held, r.cfg.Name, "", 0)
	if err != nil {
		return fmt.Errorf("read the store's checkpoint: %w", err)
	}
	storeTx, err := r.src.Tracking(l.held, r.cfg.Name, txCheckpointTrackingTopic, 0)
	if err != nil {
		return fmt.Errorf("read the store's checkpoint: %w", err)
	}
	start, from := max(storeCP, 0), "store"
	switch {
	case !found:
		// The first transactional start: go on from the at-least-once
		// mode's checkpoint.
	case storeCP > storeTx && storeCP > cp:
		// The at-least-once mode ran since the last transactional one and
		// published beyond.
		from = "store (at-least-once mode ran since)"
	default:
		if storeCP > cp {
			l.log.Warn("relay's checkpoint in the store is ahead of the one committed in Kafka; resuming from Kafka's",
				"store_checkpoint", storeCP, logKeyCheckpoint, cp)
		}
		start, from = cp, "kafka"
	}
	l.acked, l.saved, l.stale = start, storeCP, false
	r.update(func(s *RelayStats) {
		s.Active, s.Checkpoint, s.LastPublishedID = true, start, start
		s.MaxID = max(s.MaxID, start)
	})
	l.log.Info("relay publishes in transactions", logKeyCheckpoint, start, "checkpoint_from", from)
	return nil
}

// pageRead is a page of the notification log read ahead.
type pageRead struct {
	ns  []store.Notification
	err error
}

// readAhead reads the page after the notification id after on a goroutine
// of its own, and sends it on the channel it returns.
func (r *Relay) readAhead(ctx context.Context, after int64) chan pageRead {
	c := make(chan pageRead, 1)
	go func() {
		ns, err := r.src.SelectNotifications(ctx, after, r.cfg.PageSize)
		c <- pageRead{ns, err}
	}()
	return c
}

// transaction publishes, in one transaction, the pages of the log after the
// checkpoint (MaxInFlightPages at most) and the checkpoint record, and
// commits. It reports whether the last page read was short (the relay is
// caught up). Any failure aborts the transaction and sets l.stale.
func (l *txLeader) transaction() (caughtUp bool, err error) {
	r, p := l.r, l.prod
	var (
		span  trace.Span
		links tracing.Links
		first int64
	)
	// With tracing, the span starts with the first page read: an empty
	// transaction (a poll that finds nothing) has none.
	defer func() {
		if span != nil {
			links.AddTo(span)
			tracing.Fail(span, err)
			span.End()
		}
	}()
	if err := p.BeginTransaction(); err != nil {
		l.dropProducer()
		l.stale = true
		return false, classify(fmt.Errorf("begin a transaction: %w", err))
	}
	l.failed.Store(false)
	var (
		pages         []*page
		last          = l.acked
		read, records int
		skipped, bad  int64
	)
	// While a full page is routed and produced, the next one is read (one
	// read ahead, on a goroutine that ends before transaction returns): a
	// store on a server works while the relay does.
	var ahead chan pageRead
	defer func() {
		if ahead != nil {
			<-ahead
		}
	}()
	for len(pages) < r.cfg.MaxInFlightPages && l.held.Err() == nil && !l.failed.Load() {
		var ns []store.Notification
		var err error
		if ahead != nil {
			got := <-ahead
			ahead, ns, err = nil, got.ns, got.err
		} else {
			ns, err = r.src.SelectNotifications(l.held, last, r.cfg.PageSize)
		}
		if err == nil && len(ns) == r.cfg.PageSize && len(pages)+1 < r.cfg.MaxInFlightPages {
			ahead = r.readAhead(l.held, ns[len(ns)-1].ID)
		}
		if err == nil && len(ns) > 0 {
			var recs []*kgo.Record
			var sk, bd int64
			recs, sk, bd, err = r.records(l.held, l.known, ns)
			if err == nil && r.tracer != nil {
				if span == nil {
					span = r.startSpan(l.held, tracing.SpanRelayTransaction, nil, l.id)
					first = ns[0].ID
				}
				linkItems(&links, ns)
			}
			if err == nil {
				pg := newPage(ns[len(ns)-1].ID, len(recs), &l.failed)
				l.produce(pg, recs)
				pages = append(pages, pg)
				last = pg.last
				read += len(ns)
				records += len(recs)
				skipped += sk
				bad += bd
			}
		} else if err != nil {
			err = fmt.Errorf("read the notification log: %w", err)
		}
		if err != nil {
			if l.held.Err() != nil && read > 0 {
				break // commit what is produced
			}
			return false, l.abort(err)
		}
		if len(ns) < r.cfg.PageSize {
			caughtUp = true
			break
		}
	}
	if read == 0 {
		// Nothing was produced: there is no transaction to end on the
		// broker, and EndTransaction sends nothing.
		ctx, cancel := l.endCtx()
		defer cancel()
		if err := p.EndTransaction(ctx, kgo.TryAbort); err != nil {
			return false, l.abort(fmt.Errorf("end an empty transaction: %w", err))
		}
		return caughtUp, nil
	}
	r.update(func(s *RelayStats) { s.MaxID = max(s.MaxID, last) })
	cpPage := newPage(last, 1, &l.failed)
	l.produce(cpPage, []*kgo.Record{checkpointRecord(r.cfg.CheckpointTopic, l.id, last)})
	pages = append(pages, cpPage)

	// Every record must be acknowledged before the commit: franz-go commits
	// whatever succeeded.
	deadline := time.NewTimer(r.cfg.TransactionTimeout)
	defer deadline.Stop()
	for _, pg := range pages {
		select {
		case <-pg.done:
		case <-deadline.C:
			return false, l.abort(fmt.Errorf("records not acknowledged within the transaction timeout %s", r.cfg.TransactionTimeout))
		}
		if err := pg.failure(); err != nil {
			return false, l.abort(fmt.Errorf("publish: %w", err))
		}
	}
	ctx, cancel := l.endCtx()
	defer cancel()
	if err := p.Flush(ctx); err != nil {
		return false, l.abort(fmt.Errorf("flush: %w", err))
	}
	if err := p.EndTransaction(ctx, kgo.TryCommit); err != nil {
		return false, l.abort(fmt.Errorf("commit: %w", err))
	}
	l.acked = last
	l.backoff = 0
	if span != nil {
		span.SetAttributes(tracing.KeyFirstID.Int64(first), tracing.KeyLastID.Int64(last),
			tracing.KeyItems.Int(read), tracing.KeyRecords.Int(records))
	}
	r.update(func(s *RelayStats) {
		s.Published += int64(records)
		s.Transactions++
		s.Skipped += skipped
		s.DeadLettered += bad
		s.LastPublishedID, s.Checkpoint = last, last
	})
	return caughtUp, nil
}

// produce produces recs for pg, in order; once a record of the transaction
// has failed it produces no more (the transaction aborts).
func (l *txLeader) produce(pg *page, recs []*kgo.Record) {
	for i, rec := range recs {
		if l.failed.Load() {
			for range recs[i:] {
				pg.finish(errStopped)
			}
			break
		}
		l.prod.Produce(l.produceCtx, rec, pg.promise)
	}
	pg.release() // the +1
}

// endCtx bounds the end of a transaction. It is not cancelled with held:
// cancelling EndTransaction midway leaves its outcome unknown.
func (l *txLeader) endCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(l.held), l.r.cfg.TransactionTimeout)
}

// abort aborts the transaction in progress after cause, and returns cause
// (wrapped with ErrFenced if the broker fenced the producer). If the abort
// fails the producer is dropped: the next one's initialization aborts what
// this one left open. The next transaction starts from the checkpoint read
// back from Kafka: a commit whose answer was lost may have committed.
func (l *txLeader) abort(cause error) error {
	l.r.update(func(s *RelayStats) { s.Aborted++ })
	l.stale = true
	ctx, cancel := l.endCtx()
	defer cancel()
	err := l.prod.AbortBufferedRecords(ctx)
	if err == nil {
		err = l.prod.EndTransaction(ctx, kgo.TryAbort)
	}
	if err != nil {
		if !isFenced(err) {
			l.log.Warn("relay could not abort its transaction; a new producer will", logKeyErr, err)
		}
		l.dropProducer()
		if isFenced(err) && !isFenced(cause) {
			cause = fmt.Errorf("%w (abort: %w)", cause, err)
		}
	}
	return classify(cause)
}

// classify wraps err with ErrFenced if the broker fenced the producer.
func classify(err error) error {
	if isFenced(err) && !errors.Is(err, ErrFenced) {
		return fmt.Errorf("%w: %w", ErrFenced, err)
	}
	return err
}

func isFenced(err error) bool {
	return errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch)
}

// dropProducer closes the producer; prepare makes a new one.
func (l *txLeader) dropProducer() {
	if l.prod != nil {
		l.prod.Close()
		l.prod = nil
	}
	l.stale = true
}

// stop closes the producer (no transaction is open: transaction ends each
// one it begins) and stores the checkpoint's copy in the store.
func (l *txLeader) stop() {
	l.dropProducer()
	if l.acked > l.saved {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(l.held), 5*time.Second)
		defer cancel()
		l.save(ctx)
	}
}

// checkpoint stores the copy of the committed checkpoint in the store if it
// moved and force is set or CheckpointInterval has passed.
func (l *txLeader) checkpoint(force bool) {
	if !l.checkpointDue(force) {
		return
	}
	l.save(l.held)
}

// save stores l.acked in the store: the plain checkpoint, a hint and what
// operators and the at-least-once mode see, and the copy that says the
// transactional mode wrote it.
func (l *txLeader) save(ctx context.Context) {
	r, pos := l.r, l.acked
	err := r.src.InTx(ctx, func(tx store.Tx) error {
		if err := tx.SetTracking(ctx, store.Tracking{Name: r.cfg.Name, Position: pos}); err != nil {
			return err
		}
		return tx.SetTracking(ctx, store.Tracking{Name: r.cfg.Name, Topic: txCheckpointTrackingTopic, Position: pos})
	})
	l.savedAt = time.Now()
	switch {
	case err == nil:
		l.saved = pos
	case errors.Is(err, store.ErrTrackingConflict):
		// Another relay stored this position or a later one. The copy is
		// only a hint: adopt it.
		stored, rerr := r.src.Tracking(ctx, r.cfg.Name, "", 0)
		if rerr != nil {
			r.log.Warn("relay could not read its checkpoint in the store", logKeyErr, rerr)
			return
		}
		l.saved = max(l.saved, stored)
	default:
		if ctx.Err() == nil {
			r.log.Warn("relay could not copy its checkpoint to the store", logKeyErr, err, logKeyCheckpoint, pos)
		}
	}
}

// refused returns err, from the initialization of the producer of id, with
// what to set when it says the broker refuses transactions.
func refused(id string, timeout time.Duration, err error) error {
	var hint string
	switch {
	case errors.Is(err, kerr.TransactionalIDAuthorizationFailed):
		hint = fmt.Sprintf("grant the relay's principal WRITE and DESCRIBE on the transactional id (kafka-acls.sh --add --allow-principal User:<relay> --operation Write --operation Describe --transactional-id %s)", id)
	case errors.Is(err, kerr.ClusterAuthorizationFailed):
		hint = "grant the relay's principal IDEMPOTENT_WRITE on the cluster (brokers before Kafka 3.0 require it)"
	case errors.Is(err, kerr.InvalidTransactionTimeout):
		hint = fmt.Sprintf("the relay's transaction timeout %s is more than the broker's transaction.max.timeout.ms: raise that, or lower the relay's", timeout)
	case errors.Is(err, kerr.CoordinatorNotAvailable), errors.Is(err, kerr.NotCoordinator),
		errors.Is(err, kerr.CoordinatorLoadInProgress), errors.Is(err, context.DeadlineExceeded):
		hint = "no transaction coordinator answered: the brokers must be able to create __transaction_state, so set transaction.state.log.replication.factor (default 3) to at most the number of brokers and transaction.state.log.min.isr (default 2) to at most that"
	case errors.Is(err, kerr.UnsupportedVersion):
		hint = "the broker does not support transactions (Kafka 0.11 or later does)"
	default:
		return fmt.Errorf("initialize the transactional producer %s: %w", id, err)
	}
	return fmt.Errorf("%w: transactional id %s: %w; %s; or run the relay in its at-least-once mode (no transactions)", ErrTransactionsRefused, id, err, hint)
}

// checkpointTopicHint adds what to set to err if it says the relay may not
// use the checkpoint topic.
func checkpointTopicHint(topic string, err error) error {
	if errors.Is(err, kerr.TopicAuthorizationFailed) {
		return fmt.Errorf("%w: %w; grant the relay's principal READ, WRITE and DESCRIBE on topic %s (and CREATE, for the relay to create it)", ErrTransactionsRefused, err, topic)
	}
	return err
}

// sharedOptsMu serialises newClientShared.
var sharedOptsMu sync.Mutex

// newClientShared is kgo.NewClient for options shared with other clients
// built at the same time (the relays of a sharded store, each cloning the
// options of one client): kgo.NewClient writes into the codec slice of a
// kgo.ProducerBatchCompression option while it validates it, so that two
// clients built at once from the same option race.
func newClientShared(opts ...kgo.Opt) (*kgo.Client, error) {
	sharedOptsMu.Lock()
	defer sharedOptsMu.Unlock()
	return kgo.NewClient(opts...)
}

package broker

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Groups watches the classic consumer groups of a kfake cluster and mends two
// ways in which kfake's group coordinator differs from Kafka's, both of which
// stop a group from consuming a partition when a member dies at the wrong
// moment:
//
//   - Kafka keeps a member alive while it waits in JoinGroup; kfake expires it
//     once its session timeout has passed since its last heartbeat and never
//     answers its JoinGroup. The join phase lasts until every member has
//     rejoined or the rebalance timeout has passed (and kfake restarts that
//     timer whenever a member joins or leaves), so with franz-go's defaults
//     (45s session, 60s rebalance) a rebalance that waits for a member that
//     will not rejoin, a killed or stopped one, expires every live member
//     waiting with it. Each of those hangs in JoinGroup until its request
//     times out (its rebalance timeout plus 10s: 70s by default), and no one
//     consumes meanwhile. Groups rewrites every JoinGroup to a rebalance
//     timeout of at most half the session timeout, so that the join phase
//     ends before the waiting members' sessions do.
//   - Kafka starts a member's session timer when the join phase ends; kfake
//     starts it only if the JoinGroup answer reached the member. A member
//     whose process died while it waited in JoinGroup is then kept forever,
//     with the partitions the group leader gives it: they are consumed by no
//     one. Groups notes when it last heard from each member (JoinGroup,
//     SyncGroup, Heartbeat, OffsetCommit) and removes, with a LeaveGroup
//     naming it, a member silent for twice its session timeout plus its
//     rebalance timeout: longer than kfake keeps any member it has a timer
//     for.
//
// With session > 0, Groups also rewrites every JoinGroup to that session
// timeout, so that tests can shorten it with the programs unchanged.
type Groups struct {
	session time.Duration
	log     *slog.Logger

	cl *kgo.Client

	mu   sync.Mutex
	seen map[memberKey]*memberSeen
	// allowSilence, if set, replaces every member's silentFor (tests).
	allowSilence time.Duration

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

type memberKey struct{ group, member string }

type memberSeen struct {
	last               time.Time
	session, rebalance time.Duration
}

// silentFor is how long a member may go unheard before Groups removes it.
func (m *memberSeen) silentFor() time.Duration { return 2*m.session + m.rebalance }

// WatchGroups starts watching c's groups. Close stops it (before c is
// closed). log may be nil.
func WatchGroups(c *kfake.Cluster, session time.Duration, log *slog.Logger) (*Groups, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		return nil, fmt.Errorf("group watch client: %w", err)
	}
	g := &Groups{session: session, log: log, cl: cl, seen: make(map[memberKey]*memberSeen),
		stop: make(chan struct{}), done: make(chan struct{})}
	// Control functions observe, rewrite and return "not handled": the
	// cluster then handles the request as usual. They run one at a time on
	// the cluster's loop.
	c.ControlKey(int16(kmsg.JoinGroup), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		j := req.(*kmsg.JoinGroupRequest)
		if session > 0 {
			j.SessionTimeoutMillis = int32(session.Milliseconds())
		}
		if j.RebalanceTimeoutMillis > j.SessionTimeoutMillis/2 {
			j.RebalanceTimeoutMillis = max(j.SessionTimeoutMillis/2, 1)
		}
		if j.MemberID != "" {
			g.heard(j.Group, j.MemberID, &memberSeen{
				session:   time.Duration(j.SessionTimeoutMillis) * time.Millisecond,
				rebalance: time.Duration(j.RebalanceTimeoutMillis) * time.Millisecond,
			})
		}
		return nil, nil, false
	})
	// Any request of a member's is a sign of life.
	heardFrom := func(key kmsg.Key, who func(kmsg.Request) (group, member string)) {
		c.ControlKey(int16(key), func(req kmsg.Request) (kmsg.Response, error, bool) {
			c.KeepControl()
			group, member := who(req)
			g.heard(group, member, nil)
			return nil, nil, false
		})
	}
	heardFrom(kmsg.SyncGroup, func(r kmsg.Request) (string, string) {
		s := r.(*kmsg.SyncGroupRequest)
		return s.Group, s.MemberID
	})
	heardFrom(kmsg.Heartbeat, func(r kmsg.Request) (string, string) {
		h := r.(*kmsg.HeartbeatRequest)
		return h.Group, h.MemberID
	})
	heardFrom(kmsg.OffsetCommit, func(r kmsg.Request) (string, string) {
		o := r.(*kmsg.OffsetCommitRequest)
		return o.Group, o.MemberID
	})
	c.ControlKey(int16(kmsg.LeaveGroup), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		r := req.(*kmsg.LeaveGroupRequest)
		g.mu.Lock()
		delete(g.seen, memberKey{r.Group, r.MemberID})
		for _, m := range r.Members {
			delete(g.seen, memberKey{r.Group, m.MemberID})
		}
		g.mu.Unlock()
		return nil, nil, false
	})
	go g.run()
	return g, nil
}

// heard notes a request from a member; with m, its timeouts too.
func (g *Groups) heard(group, member string, m *memberSeen) {
	if member == "" {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	k := memberKey{group, member}
	cur := g.seen[k]
	switch {
	case m != nil:
		cur = m
		g.seen[k] = m
	case cur == nil:
		return // not joined through this watch (or removed since): nothing to go by
	}
	cur.last = time.Now()
}

// Close stops the watch and waits for it.
func (g *Groups) Close() {
	g.once.Do(func() {
		close(g.stop)
		<-g.done
		g.cl.Close()
	})
}

func (g *Groups) run() {
	defer close(g.done)
	every := time.Second
	if g.session > 0 {
		every = min(every, max(g.session/4, 100*time.Millisecond))
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
		}
		for _, k := range g.silent() {
			g.remove(k)
		}
	}
}

// silent returns the members unheard for longer than they may be.
func (g *Groups) silent() []memberKey {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []memberKey
	now := time.Now()
	for k, m := range g.seen {
		limit := m.silentFor()
		if g.allowSilence > 0 {
			limit = g.allowSilence
		}
		if now.Sub(m.last) > limit {
			out = append(out, k)
		}
	}
	return out
}

// remove sends a LeaveGroup for the member. A member the group no longer has
// (kfake expired it itself) is only forgotten.
func (g *Groups) remove(k memberKey) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() {
		select {
		case <-g.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group = k.group
	m := kmsg.NewLeaveGroupRequestMember()
	m.MemberID = k.member
	reason := "silent past its session: removed by the embedded broker's group watch"
	m.Reason = &reason
	req.Members = append(req.Members, m)
	resp, err := req.RequestWith(ctx, g.cl)
	if err != nil {
		return // tried again on the next tick
	}
	err = kerr.ErrorForCode(resp.ErrorCode)
	for _, rm := range resp.Members {
		if err == nil {
			err = kerr.ErrorForCode(rm.ErrorCode)
		}
	}
	switch {
	case err == nil:
		g.log.Warn("removed a consumer-group member that went silent without leaving", "group", k.group, "member_id", k.member)
	case err == kerr.UnknownMemberID:
	default:
		return // tried again on the next tick
	}
	g.mu.Lock()
	delete(g.seen, k)
	g.mu.Unlock()
}

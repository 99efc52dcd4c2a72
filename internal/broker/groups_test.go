package broker_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eventlog/eventlog/internal/broker"
)

// TestGroupsRemoveSilentMember joins a member that takes a partition and then
// says nothing more. The watch, told to allow a silence of one second, must
// remove it (kfake itself keeps it for its 60s session) and the live member
// must get every partition back; without the watch, the silent member keeps
// its partition.
//
// What the watch is for, a member that died while it waited in JoinGroup and
// that kfake keeps without a session timer, is timing-dependent to make; the
// churn test of internal/e2e/procs met it about once in ten runs before the
// watch (a partition no one consumed for minutes).
func TestGroupsRemoveSilentMember(t *testing.T) {
	for _, watch := range []bool{false, true} {
		t.Run(fmt.Sprintf("watch=%v", watch), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(2), kfake.SeedTopics(2, "t"),
				kfake.GroupMinSessionTimeout(100*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Close)
			if watch {
				g, err := broker.WatchGroups(c, 0, nil)
				if err != nil {
					t.Fatal(err)
				}
				broker.AllowSilence(g, time.Second)
				t.Cleanup(g.Close)
			}
			addr := c.ListenAddrs()[0]

			// The live member.
			live, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumerGroup("g"), kgo.ConsumeTopics("t"),
				kgo.SessionTimeout(2*time.Second), kgo.RebalanceTimeout(time.Second), kgo.HeartbeatInterval(200*time.Millisecond),
				kgo.Balancers(kgo.RangeBalancer())) // eager: the silent member need not rejoin to get a partition
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(live.Close)
			go func() {
				for ctx.Err() == nil {
					live.PollFetches(ctx)
				}
			}()
			adm := kadm.NewClient(newClient(t, addr))
			waitGroup(ctx, t, adm, "the live member alone with both partitions", func(ms []member) bool {
				return len(ms) == 1 && len(ms[0].partitions) == 2
			})

			// The silent member: it joins and syncs, and that is all.
			silent := newClient(t, addr)
			first, err := joinRequest("").RequestWith(ctx, silent)
			if err != nil || first.ErrorCode != kerr.MemberIDRequired.Code {
				t.Fatalf("first join: %v, code %d", err, first.ErrorCode)
			}
			id := first.MemberID
			joined, err := joinRequest(id).RequestWith(ctx, silent)
			if err != nil || joined.ErrorCode != 0 {
				t.Fatalf("join: %v, code %d", err, joined.ErrorCode)
			}
			sync := kmsg.NewPtrSyncGroupRequest()
			sync.Group, sync.MemberID, sync.Generation = "g", id, joined.Generation
			sync.ProtocolType, sync.Protocol = kmsg.StringPtr("consumer"), joined.Protocol
			if resp, err := sync.RequestWith(ctx, silent); err != nil || resp.ErrorCode != 0 {
				t.Fatalf("sync: %v, %v", err, resp)
			}
			waitGroup(ctx, t, adm, "the silent member with a partition", func(ms []member) bool {
				return slices.ContainsFunc(ms, func(m member) bool { return m.id == id && len(m.partitions) > 0 })
			})
			if !watch {
				time.Sleep(3 * time.Second)
				if ms := describe(ctx, t, adm); !slices.ContainsFunc(ms, func(m member) bool { return m.id == id && len(m.partitions) > 0 }) {
					t.Fatalf("the silent member lost its partition without the watch: members %v", ms)
				}
				return
			}
			waitGroup(ctx, t, adm, "the live member alone with both partitions again", func(ms []member) bool {
				return len(ms) == 1 && ms[0].id != id && len(ms[0].partitions) == 2
			})
		})
	}
}

func newClient(t *testing.T, addr string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// joinRequest is a JoinGroup of a consumer subscribed to topic t.
func joinRequest(memberID string) *kmsg.JoinGroupRequest {
	meta := kmsg.NewConsumerMemberMetadata()
	meta.Version = 1
	meta.Topics = []string{"t"}
	req := kmsg.NewPtrJoinGroupRequest()
	req.Group = "g"
	req.MemberID = memberID
	req.SessionTimeoutMillis = 60_000
	req.RebalanceTimeoutMillis = 1000
	req.ProtocolType = "consumer"
	p := kmsg.NewJoinGroupRequestProtocol()
	p.Name = "range"
	p.Metadata = meta.AppendTo(nil)
	req.Protocols = append(req.Protocols, p)
	return req
}

type member struct {
	id         string
	partitions []int32
}

func describe(ctx context.Context, t *testing.T, adm *kadm.Client) []member {
	t.Helper()
	gs, err := adm.DescribeGroups(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	var out []member
	for _, m := range gs["g"].Members {
		var ps []int32
		if a, ok := m.Assigned.AsConsumer(); ok {
			for _, tp := range a.Topics {
				ps = append(ps, tp.Partitions...)
			}
		}
		out = append(out, member{m.MemberID, ps})
	}
	return out
}

func waitGroup(ctx context.Context, t *testing.T, adm *kadm.Client, what string, ok func([]member) bool) {
	t.Helper()
	var last []member
	for ctx.Err() == nil {
		if last = describe(ctx, t, adm); ok(last) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("waiting for %s: members %v", what, last)
}

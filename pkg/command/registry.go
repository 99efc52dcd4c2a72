package command

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/wire"
)

// Errors a handler returns to choose the status of a command's result. A handler
// error that wraps ErrInvalid makes the result invalid; any other handler error
// rejects the command.
var (
	// ErrInvalid reports a command the writer cannot interpret: an unknown entity
	// or command type, data of the wrong shape, input the entity finds
	// malformed or over a limit. Its result is invalid. It is
	// events.ErrInvalid (and entity.ErrInvalid), so domain code that imports
	// only package events can return it.
	ErrInvalid = events.ErrInvalid
	// ErrUnknownEntity reports a command for an entity type nobody registered.
	ErrUnknownEntity = fmt.Errorf("%w: unknown entity type", ErrInvalid)
	// ErrUnknownCommand reports a command type the entity type does not handle.
	ErrUnknownCommand = fmt.Errorf("%w: unknown command type", ErrInvalid)
	// ErrExists rejects a creating command for an entity that exists.
	ErrExists = errors.New("command: entity already exists")
	// ErrNotExist rejects a command that needs an entity that does not exist.
	ErrNotExist = errors.New("command: entity does not exist")
)

// A Handler carries out one command type on an aggregate. It validates first,
// then triggers the command's events with events.Trigger, and returns an error to
// refuse the command (wrap ErrInvalid for malformed data; anything else rejects).
//
// agg is the entity's current state, including the effects of earlier commands of
// the same batch. A creating command gets a zero aggregate (version 0) and must
// give its first event the originator id cmd.EntityID; agg.Base().Version() tells
// whether the entity exists. The writer refuses commands for discarded aggregates
// and commands whose expected_version does not match before it calls a handler.
//
// A handler must change agg only by triggering events, and must not do I/O: the
// writer may run it again on a retry and expects the same outcome. If it returns
// an error after triggering events, the events are dropped and agg is rebuilt.
type Handler[T events.Root] func(ctx context.Context, agg T, cmd wire.Command) error

// handler is a Handler with its aggregate type erased.
type handler func(ctx context.Context, agg events.Root, cmd wire.Command) error

// repo is a store.Repository of one entity type, its aggregate type erased.
type repo struct {
	// get loads the current state of an aggregate (store.Repository.Get).
	get func(ctx context.Context, id uuid.UUID) (events.Root, error)
	// replay rebuilds an aggregate from its history (store.Repository.Replay).
	replay func(id uuid.UUID, items []store.SequencedItem) (events.Root, error)
}

// kind is one registered entity type.
type kind struct {
	name          string
	snapshotTopic string
	newAgg        func() events.Root
	newRepo       func(s *store.EventStore, cfg store.RepositoryConfig) (repo, error)
	commands      map[string]handler
}

// A RegisterOption configures an entity type in Register.
type RegisterOption func(*kind) error

// WithSnapshotTopic names the entity type's snapshot items (when the writer
// keeps snapshots), overriding the default "<entityType>.Snapshot"
// (events.SnapshotTopic). Snapshots of other topics are not used: give the
// type a new snapshot topic when its JSON encoding changes, and the old
// snapshots are ignored.
func WithSnapshotTopic(topic string) RegisterOption {
	return func(k *kind) error {
		if !events.ValidTopic(topic) {
			return fmt.Errorf("command: entity type %q: invalid snapshot topic %q", k.name, topic)
		}
		k.snapshotTopic = topic
		return nil
	}
}

// SnapshotTopic returns the snapshot topic of entityType ("" if it is not
// registered).
func (r *Registry) SnapshotTopic(entityType string) string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if k, ok := r.kinds[entityType]; ok {
		return k.snapshotTopic
	}
	return ""
}

// A Registry maps (entity type, command type) to handlers. Build one in main,
// register every entity type before passing it to NewWriter, and share it: after
// registration it is safe for concurrent use.
type Registry struct {
	events *events.Registry

	mu    sync.RWMutex
	kinds map[string]*kind
}

// NewRegistry returns an empty registry whose entity types keep their event
// topics in ev. The writer's mapper must use ev too.
func NewRegistry(ev *events.Registry) *Registry {
	return &Registry{events: ev, kinds: make(map[string]*kind)}
}

// Events returns the registry of event topics.
func (r *Registry) Events() *events.Registry { return r.events }

// EntityTypes returns the registered entity types, sorted.
func (r *Registry) EntityTypes() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Sorted(maps.Keys(r.kinds))
}

// Commands returns the command types of entityType, sorted (nil if the type is
// not registered).
func (r *Registry) Commands(entityType string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	k, ok := r.kinds[entityType]
	if !ok {
		return nil
	}
	return slices.Sorted(maps.Keys(k.commands))
}

// snapshot returns the registered kinds.
func (r *Registry) snapshot() map[string]*kind {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return maps.Clone(r.kinds)
}

func (r *Registry) add(k *kind) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.kinds[k.name]; dup {
		return fmt.Errorf("command: entity type %q registered twice", k.name)
	}
	r.kinds[k.name] = k
	return nil
}

func (r *Registry) has(entityType string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, ok := r.kinds[entityType]
	return ok
}

// Register adds a custom aggregate type as entityType with its command handlers.
// newAggregate returns a new zero aggregate each call. The aggregate's event types
// must be registered in r.Events() under topics "<entityType>.<Name>": the writer
// refuses events of other topics, and treats a stored sequence whose topics
// belong to another entity type as taken. If the writer keeps snapshots, the
// aggregate must encode to JSON and back (exported fields); its snapshots
// have the topic "<entityType>.Snapshot" unless WithSnapshotTopic says
// otherwise.
func Register[T events.Root](r *Registry, entityType string, newAggregate func() T, commands map[string]Handler[T], opts ...RegisterOption) error {
	if !entity.ValidType(entityType) {
		return fmt.Errorf("command: entity type %q must be 1 to 63 of a-z, 0-9, '_', '-', starting with a letter", entityType)
	}
	if newAggregate == nil {
		return fmt.Errorf("command: entity type %q: newAggregate is nil", entityType)
	}
	if len(commands) == 0 {
		return fmt.Errorf("command: entity type %q has no commands", entityType)
	}
	k := &kind{
		name:          entityType,
		snapshotTopic: events.SnapshotTopic(entityType),
		newAgg:        func() events.Root { return newAggregate() },
		newRepo: func(s *store.EventStore, cfg store.RepositoryConfig) (repo, error) {
			r, err := store.NewRepository(s, newAggregate, cfg)
			if err != nil {
				return repo{}, err
			}
			return repo{
				get: func(ctx context.Context, id uuid.UUID) (events.Root, error) {
					agg, err := r.Get(ctx, id)
					if err != nil {
						return nil, err
					}
					return agg, nil
				},
				replay: func(id uuid.UUID, items []store.SequencedItem) (events.Root, error) {
					agg, err := r.Replay(id, items)
					if err != nil {
						return nil, err
					}
					return agg, nil
				},
			}, nil
		},
		commands: make(map[string]handler, len(commands)),
	}
	for name, h := range commands {
		if name == "" || h == nil {
			return fmt.Errorf("command: entity type %q: empty command type or nil handler", entityType)
		}
		k.commands[name] = func(ctx context.Context, agg events.Root, cmd wire.Command) error {
			return h(ctx, agg.(T), cmd)
		}
	}
	for _, o := range opts {
		if err := o(k); err != nil {
			return err
		}
	}
	return r.add(k)
}

// RegisterEntity registers the generic entity (package entity) as entityType: its
// event topics in r.Events(), and the commands create (data: the initial
// attributes, an object), update (data: the attributes to set, one
// AttributeChanged event each, in name order) and discard (no data).
func RegisterEntity(r *Registry, entityType string) error {
	return RegisterEntityLimits(r, entityType, entity.DefaultLimits)
}

// RegisterEntityLimits is RegisterEntity with the input limits of create and
// update: a command over one is invalid, its error naming the limit
// (*entity.LimitError).
func RegisterEntityLimits(r *Registry, entityType string, limits entity.Limits) error {
	if err := limits.Validate(); err != nil {
		return fmt.Errorf("command: %w", err)
	}
	if r.has(entityType) {
		return fmt.Errorf("command: entity type %q registered twice", entityType)
	}
	if err := entity.Register(r.events, entityType); err != nil {
		return fmt.Errorf("command: %w", err)
	}
	return Register(r, entityType, func() *entity.Entity { return entity.New(entityType) }, map[string]Handler[*entity.Entity]{
		wire.TypeCreate: func(ctx context.Context, e *entity.Entity, cmd wire.Command) error {
			return createEntity(ctx, e, cmd, limits)
		},
		wire.TypeUpdate: func(ctx context.Context, e *entity.Entity, cmd wire.Command) error {
			return updateEntity(ctx, e, cmd, limits)
		},
		wire.TypeDiscard: discardEntity,
	}, WithSnapshotTopic(entityType+"."+entity.SnapshotName)) // what stored snapshots of the entity carry
}

func createEntity(_ context.Context, e *entity.Entity, cmd wire.Command, limits entity.Limits) error {
	if e.Version() > 0 {
		return fmt.Errorf("%w: %s %s", ErrExists, cmd.Entity, cmd.EntityID)
	}
	var attrs map[string]json.RawMessage
	if hasData(cmd) {
		if err := DecodeData(cmd, &attrs); err != nil {
			return err
		}
	}
	created, err := limits.Create(cmd.Entity, cmd.EntityID, attrs)
	if err != nil {
		return err
	}
	*e = *created
	return nil
}

func updateEntity(_ context.Context, e *entity.Entity, cmd wire.Command, limits entity.Limits) error {
	if e.Version() == 0 {
		return fmt.Errorf("%w: %s %s", ErrNotExist, cmd.Entity, cmd.EntityID)
	}
	var attrs map[string]json.RawMessage
	if err := DecodeData(cmd, &attrs); err != nil {
		return err
	}
	return limits.Update(e, attrs)
}

func discardEntity(_ context.Context, e *entity.Entity, cmd wire.Command) error {
	if e.Version() == 0 {
		return fmt.Errorf("%w: %s %s", ErrNotExist, cmd.Entity, cmd.EntityID)
	}
	return e.Discard()
}

func hasData(cmd wire.Command) bool {
	d := bytes.TrimSpace(cmd.Data)
	return len(d) > 0 && !bytes.Equal(d, []byte("null"))
}

// DecodeData decodes the command's data into v. Missing data, and data that does
// not decode into v, fail with an error wrapping ErrInvalid (the result is then
// invalid). Unknown fields are ignored, so producers can add some.
func DecodeData(cmd wire.Command, v any) error {
	if !hasData(cmd) {
		return fmt.Errorf("%w: %s %s needs data", ErrInvalid, cmd.Entity, cmd.Type)
	}
	if err := json.Unmarshal(cmd.Data, v); err != nil {
		return fmt.Errorf("%w: %s %s data: %v", ErrInvalid, cmd.Entity, cmd.Type, err)
	}
	return nil
}

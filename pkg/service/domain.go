package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/internal/httpapi"
	"github.com/eventlog/eventlog/pkg/command"
	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/projection"
	"github.com/eventlog/eventlog/pkg/projection/sqlmodel"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/wire"
)

// A Domain is what eventlog's services run: the entity types (aggregates
// with their events, command handlers and upcasters, and types of the generic
// attribute entity), and the read models, process applications and policies
// that react to their events. Build one in main, register everything, and
// hand it to the programs of package cli, or to NewWriter and NewProjector.
//
// A registration that is wrong (a type or topic registered twice, a command
// without a handler, a read model of an entity type nobody registered, two
// read models claiming one table) is kept and reported by Validate, which
// every service calls at start: the program stops there with one line
// naming the mistake. Register methods return the same error, for callers
// that check at once.
//
// A Domain is safe for concurrent use; register everything before the
// services start.
type Domain struct {
	mu       sync.Mutex
	kinds    []*kind
	models   []*model
	policies []Policy
	workload Workload
	err      error
}

// kind is one registered entity type.
type kind struct {
	typ     string
	generic bool
	// register adds the type's events and commands to reg.
	register func(reg *command.Registry, limits entity.Limits) error
	// loader returns what shows one entity of the type over HTTP.
	loader func(es *store.EventStore, cfg store.RepositoryConfig) (EntityLoader, error)
}

// An EntityLoader returns one entity as the HTTP API shows it: at version
// (the number of its events applied), or its current state if version is 0.
// It fails with an error wrapping store.ErrNotFound for an entity that does
// not exist (or is discarded, or of another type), with an
// *events.ForgottenError for a forgotten one, and with a *VersionError for a
// version the entity has not reached.
type EntityLoader func(ctx context.Context, id uuid.UUID, version int64) (EntityView, error)

// An EntityView is an entity as the HTTP API shows it. The generic entity
// has Attributes; an aggregate has State, its JSON encoding.
type EntityView struct {
	Entity     string                     `json:"entity"`
	ID         uuid.UUID                  `json:"id"`
	Version    int64                      `json:"version"`
	Attributes map[string]json.RawMessage `json:"attributes,omitzero"`
	State      json.RawMessage            `json:"state,omitzero"`
}

// A VersionError reports a version asked for that the entity has not
// reached.
type VersionError struct {
	Entity  string
	ID      uuid.UUID
	Version int64 // the entity's version
	Asked   int64
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("%s %s is at version %d, not %d", e.Entity, e.ID, e.Version, e.Asked)
}

// A ReadModel keeps state in tables of its own (see package sqlmodel), on
// the projector's store, with exactly-once effect; a process application is
// one whose Apply emits commands (sqlmodel.Tx.Emit). The projector runs each
// as a projection of its own (its own consumer group and tracking, named
// after the model), and `rebuild` rebuilds it.
type ReadModel struct {
	sqlmodel.Model
	// Routes, if set, adds the model's query handlers to the projector's
	// HTTP server; q reads the live tables. Patterns are those of
	// http.ServeMux, for example "GET /v1/balances/{id}".
	Routes func(mux *http.ServeMux, q *sqlmodel.Reader)
}

type model struct {
	ReadModel
	process bool
}

// A Policy is any projection.Policy run by the projector on its store, as a
// projection of its own.
type Policy struct {
	// Name names the projection (tracking, consumer group).
	Name string
	// Entities are the entity types whose events it receives.
	Entities []string
	Policy   projection.Policy
	// Unguarded runs a policy that does not implement projection.Positions
	// (see projection.Config.Unguarded).
	Unguarded bool
}

// Built-in projection names, which a domain's read models cannot take.
const (
	ProjectionReadModel   = "readmodel"
	ProjectionPersistence = "persistence"
)

// NewDomain returns an empty domain.
func NewDomain() *Domain { return &Domain{} }

// GenericDomain returns a domain of the generic attribute entity, one type
// for each of types: what eventlog's own programs run.
func GenericDomain(types ...string) *Domain {
	d := NewDomain()
	_ = d.AddEntity(types...)
	return d
}

// domainOf returns d, or without one the generic entity of types, validated:
// what a service config's Domain and Entities say.
func domainOf(d *Domain, types []string) (*Domain, error) {
	if d == nil {
		if len(types) == 0 {
			return nil, errors.New("no entity types: name at least one (--entities example)")
		}
		d = GenericDomain(types...)
	}
	return d, d.Validate()
}

// fail keeps the first registration error.
func (d *Domain) fail(err error) error {
	if d.err == nil {
		d.err = err
	}
	return err
}

func (d *Domain) has(typ string) bool {
	return slices.ContainsFunc(d.kinds, func(k *kind) bool { return k.typ == typ })
}

// AddEntity registers types of the generic attribute entity (package
// entity): commands create, update and discard, events <type>.Created,
// <type>.AttributeChanged and <type>.Discarded.
func (d *Domain) AddEntity(types ...string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, typ := range types {
		if err := d.addKind(&kind{typ: typ, generic: true,
			register: func(reg *command.Registry, limits entity.Limits) error {
				return command.RegisterEntityLimits(reg, typ, limits)
			},
			loader: func(es *store.EventStore, cfg store.RepositoryConfig) (EntityLoader, error) {
				repo, err := store.NewRepository(es, func() *entity.Entity { return entity.New(typ) }, cfg)
				if err != nil {
					return nil, err
				}
				return loaderOf(typ, es, repo, cfg.CacheSize, func(e *entity.Entity) (EntityView, bool) {
					return EntityView{Attributes: e.Attributes}, e.Type == typ
				}), nil
			},
		}); err != nil {
			return err
		}
	}
	return nil
}

func (d *Domain) addKind(k *kind) error {
	switch {
	case !entity.ValidType(k.typ):
		return d.fail(fmt.Errorf("entity type %q: want 1 to 63 of a-z, 0-9, '_', '-', starting with a letter", k.typ))
	case d.has(k.typ):
		return d.fail(fmt.Errorf("entity type %q registered twice", k.typ))
	}
	d.kinds = append(d.kinds, k)
	return nil
}

// An Aggregate registers an aggregate type T: its events, its command
// handlers and the upcasters of its stored events.
type Aggregate[T events.Root] struct {
	// Type is the entity type: the "entity" of its commands, the start of its
	// event topics ("<Type>.<event name>") and the end of its Kafka events
	// topic ("eventlog.events.<Type>").
	Type string
	// New returns a new zero aggregate each call.
	New func() T
	// Events maps each event name to a function returning a new zero event
	// (a pointer to a struct that embeds events.Meta). Its topic is
	// "<Type>.<name>", stored for ever: rename the Go type freely, never the
	// name.
	Events map[string]func() events.Event
	// Commands maps each command type to its handler (see command.Handler).
	Commands map[string]command.Handler[T]
	// Upcasters lift stored states of an event name from one schema version
	// to the next, in order (see events.Registry.AddUpcaster).
	Upcasters map[string][]events.Upcaster
}

// AddAggregate registers an aggregate type in d.
func AddAggregate[T events.Root](d *Domain, a Aggregate[T]) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case a.New == nil:
		return d.fail(fmt.Errorf("aggregate %q: New is nil", a.Type))
	case len(a.Events) == 0:
		return d.fail(fmt.Errorf("aggregate %q registers no events", a.Type))
	case len(a.Commands) == 0:
		return d.fail(fmt.Errorf("aggregate %q registers no commands", a.Type))
	}
	for name, h := range a.Commands {
		if h == nil {
			return d.fail(fmt.Errorf("aggregate %q: command %q has no handler", a.Type, name))
		}
	}
	for name, f := range a.Events {
		if f == nil {
			return d.fail(fmt.Errorf("aggregate %q: event %q has no constructor", a.Type, name))
		}
	}
	for name := range a.Upcasters {
		if _, ok := a.Events[name]; !ok {
			return d.fail(fmt.Errorf("aggregate %q: upcasters of event %q, which it does not register", a.Type, name))
		}
	}
	// Register once into a scratch registry, to report a mistake now.
	if err := registerAggregate(command.NewRegistry(events.NewRegistry()), a); err != nil {
		return d.fail(err)
	}
	typ := a.Type
	return d.addKind(&kind{typ: typ,
		register: func(reg *command.Registry, _ entity.Limits) error { return registerAggregate(reg, a) },
		loader: func(es *store.EventStore, cfg store.RepositoryConfig) (EntityLoader, error) {
			repo, err := store.NewRepository(es, a.New, cfg)
			if err != nil {
				return nil, err
			}
			return loaderOf(typ, es, repo, cfg.CacheSize, func(agg T) (EntityView, bool) {
				b, err := json.Marshal(agg)
				if err != nil {
					b, _ = json.Marshal(map[string]string{"error": "the aggregate does not encode to JSON: " + err.Error()})
				}
				return EntityView{State: b}, true
			}), nil
		},
	})
}

func registerAggregate[T events.Root](reg *command.Registry, a Aggregate[T]) error {
	for _, name := range sortedKeys(a.Events) {
		topic := a.Type + "." + name
		if err := reg.Events().Register(topic, a.Events[name]); err != nil {
			return fmt.Errorf("aggregate %q: %w", a.Type, err)
		}
		for _, up := range a.Upcasters[name] {
			reg.Events().AddUpcaster(topic, up)
		}
	}
	if err := command.Register(reg, a.Type, a.New, a.Commands); err != nil {
		return fmt.Errorf("aggregate %q: %w", a.Type, err)
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// loaderOf returns the loader of an entity type over a repository of T. It
// checks that the entity's first event is of the type; with a cache, it
// remembers the ids that passed (a stored event never changes), so that
// reading a known entity costs one query, not two.
func loaderOf[T events.Root](typ string, es *store.EventStore, repo *store.Repository[T], cacheSize int, view func(T) (EntityView, bool)) EntityLoader {
	known := newIDSet(cacheSize)
	return func(ctx context.Context, id uuid.UUID, version int64) (EntityView, error) {
		if !known.has(id) {
			first, err := es.Recorder.SelectEvents(ctx, id, store.Query{Limit: 1})
			if err != nil {
				return EntityView{}, err
			}
			if len(first) == 0 || events.EntityOf(first[0].Topic) != typ {
				return EntityView{}, fmt.Errorf("%w: %s %s", store.ErrNotFound, typ, id)
			}
			known.add(id)
		}
		agg, err := repo.Get(ctx, id)
		if err != nil {
			return EntityView{}, err
		}
		if version > 0 && version != agg.Base().Version() {
			if version > agg.Base().Version() {
				return EntityView{}, &VersionError{Entity: typ, ID: id, Version: agg.Base().Version(), Asked: version}
			}
			if agg, err = repo.GetAt(ctx, id, version); err != nil {
				return EntityView{}, err
			}
		}
		v, ok := view(agg)
		if !ok {
			return EntityView{}, fmt.Errorf("%w: %s %s", store.ErrNotFound, typ, id)
		}
		v.Entity, v.ID, v.Version = typ, id, agg.Base().Version()
		return v, nil
	}
}

// AddReadModel registers a read model in tables of its own.
func (d *Domain) AddReadModel(m ReadModel) error { return d.addModel(m, false) }

// AddProcess registers a process application: a read model (with tables
// for its state, or none) whose Apply emits commands in reaction to events
// (sqlmodel.Tx.Emit). Each command is stored in the outbox with the
// projection's tracking and produced once to the commands topic, with an id
// derived from the event that caused it.
func (d *Domain) AddProcess(p ReadModel) error { return d.addModel(p, true) }

func (d *Domain) addModel(m ReadModel, process bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := m.Validate(); err != nil {
		return d.fail(err)
	}
	if m.Name == ProjectionReadModel || m.Name == ProjectionPersistence || d.projectionNamed(m.Name) {
		return d.fail(fmt.Errorf("projection name %q is taken: choose another name for the read model", m.Name))
	}
	own := m.OwnTables()
	for _, o := range d.models {
		for _, t := range o.OwnTables() {
			if slices.Contains(own, t) {
				return d.fail(fmt.Errorf("read models %q and %q both claim the table %q", o.Name, m.Name, t))
			}
		}
	}
	d.models = append(d.models, &model{ReadModel: m, process: process})
	return nil
}

func (d *Domain) projectionNamed(name string) bool {
	return slices.ContainsFunc(d.models, func(m *model) bool { return m.Name == name }) ||
		slices.ContainsFunc(d.policies, func(p Policy) bool { return p.Name == name })
}

// AddPolicy registers a policy the projector runs on its store.
func (d *Domain) AddPolicy(p Policy) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case !sqlmodel.ValidName(p.Name):
		return d.fail(fmt.Errorf("policy name %q: want 1 to 40 of a-z, 0-9 and '_', starting with a letter", p.Name))
	case p.Name == ProjectionReadModel || p.Name == ProjectionPersistence || d.projectionNamed(p.Name):
		return d.fail(fmt.Errorf("projection name %q is taken: choose another name for the policy", p.Name))
	case p.Policy == nil:
		return d.fail(fmt.Errorf("policy %q is nil", p.Name))
	case len(p.Entities) == 0:
		return d.fail(fmt.Errorf("policy %q reads no entity type", p.Name))
	}
	d.policies = append(d.policies, p)
	return nil
}

// Validate reports the first mistake made registering the domain, and what
// only the whole domain shows: a read model or policy of an entity type no
// one registered.
func (d *Domain) Validate() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil {
		return d.err
	}
	if len(d.kinds) == 0 {
		return errors.New("the domain has no entity type: register an aggregate or a generic entity type")
	}
	for _, m := range d.models {
		for _, e := range m.Entities {
			if !d.has(e) {
				return fmt.Errorf("read model %q reads entity type %q, which nobody registered", m.Name, e)
			}
		}
	}
	for _, p := range d.policies {
		for _, e := range p.Entities {
			if !d.has(e) {
				return fmt.Errorf("policy %q reads entity type %q, which nobody registered", p.Name, e)
			}
		}
	}
	// Every kind registers into one registry (topics must not collide).
	_, err := d.commands(entity.DefaultLimits)
	return err
}

// EntityTypes returns the registered entity types, in registration order.
func (d *Domain) EntityTypes() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]string, len(d.kinds))
	for i, k := range d.kinds {
		out[i] = k.typ
	}
	return out
}

// GenericTypes returns the types of the generic entity, which the built-in
// read model keeps.
func (d *Domain) GenericTypes() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, k := range d.kinds {
		if k.generic {
			out = append(out, k.typ)
		}
	}
	return out
}

// commands returns a command registry of every entity type, with limits for
// the generic entity's.
func (d *Domain) commands(limits entity.Limits) (*command.Registry, error) {
	reg := command.NewRegistry(events.NewRegistry())
	for _, k := range d.kinds {
		if err := k.register(reg, limits); err != nil {
			return nil, fmt.Errorf("entity type %q: %w", k.typ, err)
		}
	}
	return reg, nil
}

// Registry returns a command registry of every entity type of the domain,
// with limits for the generic entity's (zero fields: entity.DefaultLimits):
// what the writer runs. With command.NewWriter on a memory store it runs the
// domain's command handlers in a unit test, with no Kafka.
func (d *Domain) Registry(limits entity.Limits) (*command.Registry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.commands(limits)
}

// Events returns a registry of every event topic of the domain.
func (d *Domain) Events() (*events.Registry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	reg, err := d.commands(entity.DefaultLimits)
	if err != nil {
		return nil, err
	}
	return reg.Events(), nil
}

// loaders returns the entity loaders of every type.
func (d *Domain) loaders(es *store.EventStore, cfg store.RepositoryConfig) (map[string]EntityLoader, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]EntityLoader, len(d.kinds))
	for _, k := range d.kinds {
		c := cfg
		if c.SnapshotEvery > 0 {
			c.SnapshotTopic = events.SnapshotTopic(k.typ)
		}
		l, err := k.loader(es, c)
		if err != nil {
			return nil, fmt.Errorf("entity type %q: %w", k.typ, err)
		}
		out[k.typ] = l
	}
	return out, nil
}

// EntitiesAPI returns the entity routes' view of the domain: every entity
// type rebuilt from es.
func (d *Domain) EntitiesAPI(es *store.EventStore, rec store.ApplicationRecorder, cfg store.RepositoryConfig) (*httpapi.Entities, error) {
	loaders, err := d.loaders(es, cfg)
	if err != nil {
		return nil, err
	}
	api := &httpapi.Entities{Store: es, Recorder: rec, Loaders: map[string]httpapi.EntityLoader{}}
	for typ, l := range loaders {
		api.Loaders[typ] = func(ctx context.Context, id uuid.UUID, version int64) (any, error) {
			v, err := l(ctx, id, version)
			var ve *VersionError
			if errors.As(err, &ve) {
				return nil, &httpapi.VersionError{Err: ve}
			}
			return v, err
		}
	}
	return api, nil
}

// ReadModels returns the domain's read models and process applications.
func (d *Domain) ReadModels() []ReadModel {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]ReadModel, len(d.models))
	for i, m := range d.models {
		out[i] = m.ReadModel
	}
	return out
}

// IsProcess reports whether the read model called name is a process
// application.
func (d *Domain) IsProcess(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.ContainsFunc(d.models, func(m *model) bool { return m.Name == name && m.process })
}

// Policies returns the domain's policies.
func (d *Domain) Policies() []Policy {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.policies)
}

// hasModels reports whether the domain has read models, process
// applications or policies.
func (d *Domain) hasModels() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.models)+len(d.policies) > 0
}

// withoutModels returns a copy of d with its entity types only.
func (d *Domain) withoutModels() *Domain {
	d.mu.Lock()
	defer d.mu.Unlock()
	return &Domain{kinds: slices.Clone(d.kinds), workload: d.workload, err: d.err}
}

// A Workload makes the commands `bench` sends: the n-th command (from 0)
// to the entity id, whose first command (first set) must create it. The
// command id is set by the caller.
type Workload func(id uuid.UUID, first bool, n int) wire.Command

// SetWorkload sets the workload of `bench` for the domain.
func (d *Domain) SetWorkload(w Workload) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.workload = w
}

// Workload returns the domain's workload: the one set, or, for a domain with
// a generic entity type, creates and updates of the first one. Nil if none.
func (d *Domain) Workload() Workload {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.workload != nil {
		return d.workload
	}
	for _, k := range d.kinds {
		if !k.generic {
			continue
		}
		typ := k.typ
		return func(id uuid.UUID, first bool, n int) wire.Command {
			c := wire.Command{Type: wire.TypeUpdate, Entity: typ, EntityID: id, Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))}
			if first {
				c.Type, c.Data = wire.TypeCreate, json.RawMessage(`{"foo":"bar"}`)
			}
			return c
		}
	}
	return nil
}

// idSet is a set of at most size ids, safe for concurrent use; past size, an
// id added pushes out an arbitrary one. With size 0 it holds nothing.
type idSet struct {
	mu   sync.Mutex
	size int
	ids  map[uuid.UUID]struct{}
}

func newIDSet(size int) *idSet {
	return &idSet{size: size, ids: make(map[uuid.UUID]struct{}, min(size, 1024))}
}

func (s *idSet) has(id uuid.UUID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.ids[id]
	return ok
}

func (s *idSet) add(id uuid.UUID) {
	if s.size <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ids) >= s.size {
		for old := range s.ids {
			delete(s.ids, old)
			break
		}
	}
	s.ids[id] = struct{}{}
}

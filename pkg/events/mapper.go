package events

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/klauspost/compress/zstd"
)

// Codec components. An item's Codec lists the steps that produced its state, in
// order, joined by "+": "json", then "zstd" if compressed, then the cipher's
// component if encrypted. An empty Codec means "json".
const (
	CodecJSON = "json"
	CodecZstd = "zstd"
)

// maxDecodedState bounds what decompression may produce, so a hostile item cannot
// exhaust memory.
const maxDecodedState = 64 << 20

// schemaKey holds the schema version in stored JSON state of topics that have
// upcasters. State without it is at version 1.
const schemaKey = "_schema"

// A Mapper maps events to sequenced items and back. The zero value is not usable;
// call NewMapper. A Mapper is safe for concurrent use.
type Mapper struct {
	reg         *Registry
	compressMin int // compress state of at least this many bytes; 0: never
	cipher      Cipher
	enc         *zstd.Encoder
	dec         *zstd.Decoder
}

// A MapperOption configures a Mapper.
type MapperOption func(*Mapper)

// WithCompression compresses with zstd the state of events whose JSON is at least
// minSize bytes (small states grow when compressed). It overrides the default of
// no compression. Items stored without it stay readable.
func WithCompression(minSize int) MapperOption {
	return func(m *Mapper) { m.compressMin = max(minSize, 1) }
}

// WithCipher encrypts all state written from now on with c, and lets the mapper
// read items c encrypted. It overrides the default of no encryption; plain items
// stay readable.
func WithCipher(c Cipher) MapperOption {
	return func(m *Mapper) { m.cipher = c }
}

// NewMapper returns a mapper for the topics of reg.
func NewMapper(reg *Registry, opts ...MapperOption) *Mapper {
	m := &Mapper{reg: reg}
	for _, o := range opts {
		o(m)
	}
	// Neither constructor fails with these options.
	m.enc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	m.dec, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(maxDecodedState))
	return m
}

// Registry returns the mapper's registry.
func (m *Mapper) Registry() *Registry { return m.reg }

// A KeyPreparer is a Cipher whose keys depend on the sequence and must be
// made ready before it encrypts or decrypts a sequence's state: EntityCipher.
type KeyPreparer interface {
	PrepareKeys(ctx context.Context, seqs []uuid.UUID, create bool) (release func(), err error)
}

// PrepareKeys makes ready, under ctx, the keys the mapper's cipher needs for
// the state of sequences seqs, creating those that have none with create
// (before encoding new events of seqs), and holds them until release is
// called. This is where a per-entity cipher's key store does its I/O (see
// DataKeyPreparer), so that ToItem, FromItem, SnapshotItem and
// RestoreSnapshot for those sequences do none. With no cipher, or one that
// needs no preparation, it does nothing. release must be called once, also
// after an error.
func (m *Mapper) PrepareKeys(ctx context.Context, seqs []uuid.UUID, create bool) (release func(), err error) {
	if p, ok := m.cipher.(KeyPreparer); ok && len(seqs) > 0 {
		return p.PrepareKeys(ctx, seqs, create)
	}
	return noRelease, nil
}

// ToItem encodes e. The item's sequence id and position are e's originator id and
// version. It does no I/O: with a per-entity cipher, prepare the sequence's
// key first (PrepareKeys).
func (m *Mapper) ToItem(e Event) (SequencedItem, error) {
	topic, err := m.reg.Topic(e)
	if err != nil {
		return SequencedItem{}, err
	}
	meta := e.EventMeta()
	state, err := json.Marshal(e)
	if err != nil {
		return SequencedItem{}, fmt.Errorf("events: encode %s: %w", topic, err)
	}
	if v := m.reg.SchemaVersion(topic); v > 1 {
		state = withSchema(state, v)
	}
	it := SequencedItem{SequenceID: meta.OriginatorID, Position: meta.OriginatorVersion, Topic: topic}
	if err := m.EncodeState(&it, state); err != nil {
		return SequencedItem{}, err
	}
	return it, nil
}

// withSchema adds the schema version to a JSON object.
func withSchema(state []byte, v int) []byte {
	var b bytes.Buffer
	b.Grow(len(state) + 16)
	b.WriteString(`{"` + schemaKey + `":`)
	b.WriteString(strconv.Itoa(v))
	if !bytes.Equal(state, []byte("{}")) {
		b.WriteByte(',')
	}
	b.Write(state[1:])
	return b.Bytes()
}

// EncodeState sets it.State and it.Codec from plain JSON state, compressing and
// encrypting as configured. it's sequence id, position and topic must be set: they
// are bound to the ciphertext.
func (m *Mapper) EncodeState(it *SequencedItem, state []byte) error {
	codec := CodecJSON
	if m.compressMin > 0 && len(state) >= m.compressMin {
		state = m.enc.EncodeAll(state, make([]byte, 0, len(state)/2))
		codec += "+" + CodecZstd
	}
	if m.cipher != nil {
		var (
			c   string
			out []byte
			err error
		)
		if sc, ok := m.cipher.(SequenceCipher); ok {
			c, out, err = sc.EncryptSequence(it.SequenceID, state, additionalData(it))
		} else {
			c, out, err = m.cipher.Encrypt(state, additionalData(it))
		}
		if err != nil {
			return err
		}
		state = out
		codec += "+" + c
	}
	it.State, it.Codec = state, codec
	return nil
}

// DecodeState returns it's plain JSON state, undoing what its codec lists.
func (m *Mapper) DecodeState(it SequencedItem) ([]byte, error) {
	codec := it.Codec
	if codec == "" || codec == CodecJSON {
		return it.State, nil // the common case, without allocating
	}
	steps := strings.Split(codec, "+")
	if steps[0] != CodecJSON {
		return nil, fmt.Errorf("%w: %s at position %d of %s: unknown codec %q", ErrDecode, it.Topic, it.Position, it.SequenceID, codec)
	}
	state := it.State
	for i := len(steps) - 1; i > 0; i-- {
		var err error
		switch step := steps[i]; {
		case step == CodecZstd:
			state, err = m.dec.DecodeAll(state, nil)
			if err != nil {
				err = fmt.Errorf("%w: zstd: %v", ErrDecode, err)
			}
		case m.cipher == nil && step == EntityCodec:
			err = fmt.Errorf("%w: state is encrypted with the entity's own data key (%s) but per-entity keys are not configured", ErrDecode, step)
		case m.cipher == nil:
			err = fmt.Errorf("%w: state is encrypted (%s) but no cipher key is configured", ErrDecode, step)
		default:
			if sc, ok := m.cipher.(SequenceCipher); ok {
				state, err = sc.DecryptSequence(it.SequenceID, step, state, additionalData(&it))
				break
			}
			state, err = m.cipher.Decrypt(step, state, additionalData(&it))
		}
		if err != nil {
			return nil, fmt.Errorf("%s at position %d of %s: %w", it.Topic, it.Position, it.SequenceID, err)
		}
	}
	return state, nil
}

// FromItem decodes it into a new event of its topic, lifting old schema versions
// through the topic's upcasters.
func (m *Mapper) FromItem(it SequencedItem) (Event, error) {
	newEvent, ups, ok := m.reg.lookup(it.Topic)
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownTopic, it.Topic)
	}
	e := newEvent()
	state, err := m.DecodeState(it)
	if err != nil {
		return nil, err
	}
	if len(ups) > 0 {
		if state, err = upcast(state, ups); err != nil {
			return nil, fmt.Errorf("%w: %s at position %d of %s: %v", ErrDecode, it.Topic, it.Position, it.SequenceID, err)
		}
	}
	if err := json.Unmarshal(state, e); err != nil {
		return nil, fmt.Errorf("%w: %s at position %d of %s: %v", ErrDecode, it.Topic, it.Position, it.SequenceID, err)
	}
	meta := e.EventMeta()
	meta.OriginatorID, meta.OriginatorVersion = it.SequenceID, it.Position
	return e, nil
}

func upcast(state []byte, ups []Upcaster) ([]byte, error) {
	var obj map[string]any
	d := json.NewDecoder(bytes.NewReader(state))
	d.UseNumber()
	if err := d.Decode(&obj); err != nil {
		return nil, err
	}
	v := 1
	if raw, ok := obj[schemaKey]; ok {
		n, ok := raw.(json.Number)
		i, err := n.Int64()
		if !ok || err != nil || i < 1 || i > int64(len(ups)+1) {
			return nil, fmt.Errorf("bad schema version %v (known: 1 to %d)", raw, len(ups)+1)
		}
		v = int(i)
		delete(obj, schemaKey)
	}
	if v == len(ups)+1 {
		return state, nil
	}
	for _, up := range ups[v-1:] {
		if err := up(obj); err != nil {
			return nil, fmt.Errorf("upcast from schema version %d: %w", v, err)
		}
		v++
	}
	return json.Marshal(obj)
}

// additionalData binds encrypted state to its item.
func additionalData(it *SequencedItem) []byte {
	ad := make([]byte, 0, 16+8+len(it.Topic))
	ad = append(ad, it.SequenceID[:]...)
	ad = binary.BigEndian.AppendUint64(ad, uint64(it.Position))
	return append(ad, it.Topic...)
}

// SnapshotName is the event name of snapshot items, by default: an entity
// type's snapshots have the topic "<type>.Snapshot" (SnapshotTopic).
const SnapshotName = "Snapshot"

// SnapshotTopic returns the default snapshot topic of an entity type:
// "<entityType>.Snapshot".
func SnapshotTopic(entityType string) string { return entityType + "." + SnapshotName }

// SnapshotItem encodes r's state (its JSON encoding) as a snapshot item under
// topic, at the position of the last event r applied.
func (m *Mapper) SnapshotItem(r Root, topic string) (SequencedItem, error) {
	a := r.Base()
	if a.Version() == 0 {
		return SequencedItem{}, fmt.Errorf("events: cannot snapshot an aggregate with no events")
	}
	state, err := json.Marshal(r)
	if err != nil {
		return SequencedItem{}, fmt.Errorf("events: snapshot %s: %w", topic, err)
	}
	it := SequencedItem{SequenceID: a.ID(), Position: a.Version() - 1, Topic: topic}
	if err := m.EncodeState(&it, state); err != nil {
		return SequencedItem{}, err
	}
	return it, nil
}

// RestoreSnapshot sets r from a snapshot item made by SnapshotItem. r should be a
// new, zero aggregate.
func (m *Mapper) RestoreSnapshot(it SequencedItem, r Root) error {
	state, err := m.DecodeState(it)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(state, r); err != nil {
		return fmt.Errorf("%w: snapshot %s at position %d of %s: %v", ErrDecode, it.Topic, it.Position, it.SequenceID, err)
	}
	r.Base().Restore(it.SequenceID, it.Position+1)
	return nil
}

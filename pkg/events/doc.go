// Package events is eventlog's domain vocabulary: event metadata, the aggregate
// base, mutator dispatch, the topic registry, and the mapper between events and
// sequenced items (JSON transcoding, optional zstd compression, optional
// AES-256-GCM encryption, upcasting of old stored versions, snapshots).
//
// It does no I/O: it imports no database driver, no Kafka client and no net/http,
// so domain code can depend on it alone.
//
// Guarantees:
//   - An aggregate applies an event only if the event's originator version equals
//     the aggregate's version and the aggregate is not discarded; the version then
//     grows by one. Replaying a sequence therefore either rebuilds the exact state
//     or fails with an error naming the first event that did not fit.
//   - Topics are explicit wire names kept in a Registry instance; renaming a Go
//     type never changes what is stored.
//   - Every item records the codec that produced its state, and FromItem decodes by
//     that codec, not by the mapper's current settings, so history written with
//     other settings stays readable. Corrupt or tampered state, a wrong key or a
//     missing key is an error, never a panic.
//
// Key rotation: a Keyring holds several AES-256-GCM keys by id and records the
// id of the key that encrypted each item in its codec ("json+aes256gcm:k2"), so
// that old keys keep reading old items and retiring a key makes exactly its items
// unreadable (a *MissingKeyError, an ErrDecode, naming the key id).
//
// Crypto-shredding: an EntityCipher encrypts each sequence's state with a data
// key of its own (codec component "aes256gcm-entity"), got from a DataKeys
// (store.DataKeys keeps them in the store, wrapped by a master Keyring's
// active key with the sequence id bound in; WrapDataKey, UnwrapDataKey). The
// mapper hands it the sequence id (SequenceCipher); the additional data still
// binds state to its sequence, position and topic. The key store's I/O is
// explicit: Mapper.PrepareKeys fetches (or creates) the keys of sequences
// under the caller's context (DataKeyPreparer), and encoding and decoding
// their items afterwards does none. Deleting a sequence's data
// key ("forgetting" it) makes exactly its items and snapshots unreadable,
// wherever they were copied: decoding one is a *ForgottenError (ErrForgotten,
// also an ErrDecode, and distinct from a retired master key's
// *MissingKeyError). A forgotten sequence ends with a plain tombstone item,
// "<type>.Forgotten" (ForgottenItem), which every Registry decodes as a
// *Forgotten without registration, and which Apply refuses with a
// *ForgottenError: no aggregate is rebuilt past it. Why a key per sequence
// and not per field: the sequence is the unit the log, Kafka (the record
// key), read models and copies all share, so one key deletion reaches every
// copy without rewriting any.
//
// Registry, Mapper and Cipher values are safe for concurrent use once configured.
// Aggregates are not: one goroutine owns an aggregate at a time.
package events

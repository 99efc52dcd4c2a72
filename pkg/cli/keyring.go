package cli

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/eventlog/eventlog/internal/config"
	"github.com/eventlog/eventlog/pkg/events"
)

// keyringFlags give the cipher several keys by id, so that keys rotate without
// rewriting history: each item records the id of the key that encrypted it.
//
// The keys file (or the secret -cipher-keys value, for an environment variable)
// holds one id=key pair a line (or comma-separated), the key as 64 hex digits;
// blank lines and lines starting with '#' are ignored. The pair marked with a
// leading '*' is active: it encrypts new events. Without a mark, the first is.
// The others only decrypt; deleting one retires it, and the items it encrypted
// become unreadable. A single -cipher-key or -cipher-key-file given as well is
// the legacy key: it reads what was encrypted before there were key ids.
//
// With -cipher-per-entity the keys are master keys: each entity's events are
// encrypted with a data key of its own, stored in the store wrapped by the
// active master key, and `eventlog forget` deletes it (crypto-shredding).
type keyringFlags struct {
	file      string
	inline    string
	perEntity bool

	keys *lateDataKeys   // set by keyring with perEntity; bound by bindStore
	ring *events.Keyring // the master keyring of the per-entity cipher
}

// legacyKeyID names the single -cipher-key inside a keyring when the keys file
// does not hold the same key under an id of its own.
const legacyKeyID = "legacy"

func (k *keyringFlags) register(fs *config.FlagSet) {
	fs.StringVar(&k.file, "cipher-keys-file", "", "file of AES-256 keys by id for rotation: one id=<64 hex digits> a line, '*' before the id that encrypts (default: the first)")
	fs.StringVar(&k.inline, "cipher-keys", "", "the keys by id, comma-separated id=<64 hex digits> (prefer -cipher-keys-file)")
	fs.Secret("cipher-keys")
	fs.BoolVar(&k.perEntity, "cipher-per-entity", false, "encrypt each entity's events with a data key of its own, kept in the store wrapped by the cipher key (the active one of -cipher-keys-file); 'eventlog forget' deletes it")
}

func (k *keyringFlags) set() bool { return k.file != "" || k.inline != "" || k.perEntity }

// keyring builds the cipher: the keyring or, with -cipher-per-entity, the
// per-entity cipher over it (the keyring then wraps the data keys and reads
// what was encrypted before); legacyHex is the single -cipher-key, if any.
// Errors name flags, lines and ids, never key material.
func (k *keyringFlags) keyring(legacyHex string) (events.Cipher, error) {
	ring, err := k.masterKeyring(legacyHex)
	if err != nil || !k.perEntity {
		return ring, err
	}
	k.keys, k.ring = &lateDataKeys{}, ring
	return events.NewEntityCipher(k.keys, ring), nil
}

func (k *keyringFlags) masterKeyring(legacyHex string) (*events.Keyring, error) {
	if k.perEntity && k.file == "" && k.inline == "" {
		if legacyHex == "" {
			return nil, errors.New("-cipher-per-entity needs the master key: -cipher-keys-file (or -cipher-key-file)")
		}
		raw, err := hex.DecodeString(legacyHex)
		if err != nil || len(raw) != 32 {
			return nil, errors.New("the cipher key must be 64 hex digits (32 bytes); make one with: openssl rand -hex 32")
		}
		return events.NewKeyring(map[string][]byte{legacyKeyID: raw}, legacyKeyID, legacyKeyID)
	}
	if k.file != "" && k.inline != "" {
		return nil, errors.New("give -cipher-keys-file or -cipher-keys, not both")
	}
	what, text := "-cipher-keys", strings.ReplaceAll(k.inline, ",", "\n")
	if k.file != "" {
		b, err := os.ReadFile(k.file)
		if err != nil {
			return nil, fmt.Errorf("-cipher-keys-file: %w", err)
		}
		what, text = "-cipher-keys-file "+k.file, string(b)
	}
	keys, active, err := parseKeys(text)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	legacy := ""
	if legacyHex != "" {
		raw, err := hex.DecodeString(legacyHex)
		if err != nil || len(raw) != 32 {
			return nil, errors.New("the cipher key must be 64 hex digits (32 bytes); make one with: openssl rand -hex 32")
		}
		for id, key := range keys {
			if bytes.Equal(key, raw) {
				legacy = id
			}
		}
		if legacy == "" {
			if _, taken := keys[legacyKeyID]; taken {
				return nil, fmt.Errorf("%s: the id %q is taken by another key than -cipher-key's; rename it", what, legacyKeyID)
			}
			keys[legacyKeyID], legacy = raw, legacyKeyID
		}
	}
	ring, err := events.NewKeyring(keys, active, legacy)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return ring, nil
}

func parseKeys(text string) (keys map[string][]byte, active string, err error) {
	keys = make(map[string][]byte)
	first, marked := "", ""
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id, key, ok := strings.Cut(line, "=")
		if !ok {
			return nil, "", fmt.Errorf("line %d: want id=<64 hex digits>", n+1)
		}
		id, key = strings.TrimSpace(id), strings.TrimSpace(key)
		if rest, ok := strings.CutPrefix(id, "*"); ok {
			if marked != "" {
				return nil, "", fmt.Errorf("line %d: two keys marked active (%s and %s)", n+1, marked, rest)
			}
			id, marked = strings.TrimSpace(rest), strings.TrimSpace(rest)
		}
		raw, err := hex.DecodeString(key)
		if err != nil || len(raw) != 32 {
			return nil, "", fmt.Errorf("line %d: the key of %q must be 64 hex digits (32 bytes); make one with: openssl rand -hex 32", n+1, id)
		}
		if _, dup := keys[id]; dup {
			return nil, "", fmt.Errorf("line %d: key id %q appears twice", n+1, id)
		}
		keys[id] = raw
		if first == "" {
			first = id
		}
	}
	if len(keys) == 0 {
		return nil, "", errors.New("no keys")
	}
	if marked != "" {
		return keys, marked, nil
	}
	return keys, first, nil
}

package events

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
)

// A Cipher encrypts item state. Encrypt returns the codec component that names how
// it encrypted (a reader passes it back to Decrypt), so that a cipher holding
// several keys can record which one it used.
type Cipher interface {
	Encrypt(plaintext, additionalData []byte) (codec string, ciphertext []byte, err error)
	Decrypt(codec string, ciphertext, additionalData []byte) ([]byte, error)
}

// AESCodec is the codec component of AESCipher.
const AESCodec = "aes256gcm"

// AESCipher is AES-256 in GCM mode with a random 96-bit nonce stored before the
// ciphertext. The mapper passes the item's sequence id, position and topic as
// additional data, so state moved to another item fails to decrypt.
type AESCipher struct {
	aead cipher.AEAD
}

// NewAESCipher returns a cipher for a 32-byte key.
func NewAESCipher(key []byte) (*AESCipher, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("events: AES-256 key must be 32 bytes, got %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	return &AESCipher{aead: aead}, nil
}

// Encrypt implements Cipher.
func (c *AESCipher) Encrypt(plaintext, ad []byte) (string, []byte, error) {
	ns := c.aead.NonceSize()
	out := make([]byte, ns, ns+len(plaintext)+c.aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		return "", nil, fmt.Errorf("events: nonce: %w", err)
	}
	return AESCodec, c.aead.Seal(out, out, plaintext, ad), nil
}

var errAuth = errors.New("wrong key, or the state was corrupted or moved from another item")

// Decrypt implements Cipher.
func (c *AESCipher) Decrypt(codec string, ciphertext, ad []byte) ([]byte, error) {
	if codec != AESCodec {
		if id, ok := KeyID(codec); ok {
			// Written by a Keyring: this single key has no id.
			return nil, &MissingKeyError{KeyID: id}
		}
		return nil, fmt.Errorf("%w: cipher %q is not %q", ErrDecode, codec, AESCodec)
	}
	ns := c.aead.NonceSize()
	if len(ciphertext) < ns+c.aead.Overhead() {
		return nil, fmt.Errorf("%w: encrypted state is %d bytes, too short", ErrDecode, len(ciphertext))
	}
	out, err := c.aead.Open(nil, ciphertext[:ns], ciphertext[ns:], ad)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecode, errAuth)
	}
	return out, nil
}

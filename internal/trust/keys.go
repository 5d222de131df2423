// Package trust is drover's use of The Update Framework (TUF, through the
// go-tuf v2 library): the keys of the roles root, targets, snapshot and
// timestamp, the offline verbs that make and rotate them (Init, Rotate),
// the publisher's signing of builds into hashed-bin targets metadata
// (SignBuilds), and the agent's verification of a build before anything
// of it is downloaded (Verifier).
//
// A build is a target: its path is TargetPath (the coordinate and the
// build's tags), its length and SHA-256 are the manifest's. Targets live
// in 256 hashed bins (succinct hash delegations, TAP 15) signed by the
// targets key, so no one metadata file grows with the repository.
package trust

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Key is one private signing key with its TUF public form.
type Key struct {
	ID     string
	Public *metadata.Key
	signer signature.Signer
}

// NewKey makes a fresh ed25519 key.
func NewKey() (*Key, []byte, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, fmt.Errorf("encode key: %w", err)
	}
	k, err := keyOf(priv)
	if err != nil {
		return nil, nil, err
	}
	return k, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func keyOf(priv crypto.Signer) (*Key, error) {
	ed, ok := priv.(ed25519.PrivateKey)
	if !ok {
		return nil, errors.New("not an ed25519 key")
	}
	s, err := signature.LoadED25519Signer(ed)
	if err != nil {
		return nil, err
	}
	pub, err := metadata.KeyFromPublicKey(ed.Public())
	if err != nil {
		return nil, err
	}
	id, err := pub.ID()
	if err != nil {
		return nil, err
	}
	return &Key{ID: id, Public: pub, signer: s}, nil
}

// ParseKey reads a key in the PEM form NewKey writes.
func ParseKey(data []byte) (*Key, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "PRIVATE KEY" {
		return nil, errors.New("not a PEM private key")
	}
	priv, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse key: %w", err)
	}
	s, ok := priv.(crypto.Signer)
	if !ok {
		return nil, errors.New("not a signing key")
	}
	return keyOf(s)
}

// LoadKey reads a key file. A key readable by others than its owner is
// refused: it would no longer be a secret.
func LoadKey(path string) (*Key, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("key %s: mode %v lets others read it; chmod 600 it", path, st.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	k, err := ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	return k, nil
}

// Sign adds the signatures of keys to md.
func Sign[T metadata.Roles](md *metadata.Metadata[T], keys ...*Key) error {
	for _, k := range keys {
		if _, err := md.Sign(k.signer); err != nil {
			return fmt.Errorf("sign: %w", err)
		}
	}
	return nil
}

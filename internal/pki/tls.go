package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
)

// LoadCertPool returns a pool holding every certificate of the PEM file
// caFile.
func LoadCertPool(caFile string) (*x509.CertPool, error) {
	certs, err := readCerts("CA certificate", caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// ServerTLSConfig returns the configuration of the drover server: its own
// certificate, and a client certificate, when one is presented, must be
// signed by the CA in caFile (the server's API refuses every request
// without one; only the fleet page admits a browser). TLS 1.2 is the least version; TLS 1.3 is chosen whenever
// the client has it.
func ServerTLSConfig(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := loadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	pool, err := LoadCertPool(caFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		// A client certificate is verified whenever one is given, and a
		// wrong one fails the handshake. A browser has none: it may
		// connect for the fleet page, and the server refuses every API
		// call that lacks a verified certificate.
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  pool,
		MinVersion: tls.VersionTLS12,
	}, nil
}

// ClientTLSConfig returns the configuration of an agent or an operator
// verb: its client certificate, and the server must present a certificate
// signed by the CA in caFile. The caller (net/http) sets ServerName from
// the address it dials.
func ClientTLSConfig(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := loadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	pool, err := LoadCertPool(caFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// loadKeyPair is tls.LoadX509KeyPair with errors that name the file at
// fault.
func loadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := readFile("certificate", certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	if _, err := parseCerts(certPEM); err != nil {
		return tls.Certificate{}, fmt.Errorf("parse certificate %s: %w", certFile, err)
	}
	keyPEM, err := readFile("key", keyFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	// Any key type Go's TLS takes is fine here: the server's certificate
	// may come from another PKI than ours.
	if !hasKeyBlock(keyPEM) {
		return tls.Certificate{}, fmt.Errorf("parse key %s: no PEM private key block", keyFile)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("key %s with certificate %s: %w", keyFile, certFile, err)
	}
	return cert, nil
}

// hasKeyBlock reports whether PEM data holds a private key block of any
// kind ("PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY").
func hasKeyBlock(data []byte) bool {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return false
		}
		if strings.HasSuffix(block.Type, "PRIVATE KEY") {
			return true
		}
	}
}

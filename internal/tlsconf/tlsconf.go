// Package tlsconf builds TLS configurations from the PEM files an operator
// names in flags, for the MQTT links: the cloud's embedded broker (Server),
// and the clients of a broker, the edge's uplink and the cloud's ingest on
// an external broker (Client). Its errors name the file and what is wrong
// with it; callers add the flag names.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// Server is a TLS server configuration serving certFile and keyFile. When
// clientCAFile is not empty, every client must present a certificate
// signed by one of its CAs (refused in the handshake otherwise).
func Server(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("a TLS listener needs both a certificate and its key")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load the TLS certificate %s and key %s: %w", certFile, keyFile, err)
	}
	conf := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCAFile != "" {
		if conf.ClientCAs, err = pool(clientCAFile); err != nil {
			return nil, err
		}
		conf.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return conf, nil
}

// Client adds to base (nil: a new configuration) the CAs of caFile as the
// roots to verify the server with (empty: the system's roots), and the
// client certificate of certFile and keyFile (both or neither). With no
// file it returns base unchanged.
func Client(base *tls.Config, caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" && certFile == "" && keyFile == "" {
		return base, nil
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if base != nil {
		conf = base.Clone()
	}
	if caFile != "" {
		p, err := pool(caFile)
		if err != nil {
			return nil, err
		}
		conf.RootCAs = p
	}
	if certFile != "" || keyFile != "" {
		if certFile == "" || keyFile == "" {
			return nil, errors.New("a client certificate needs both the certificate and the key file")
		}
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("load the client certificate %s and key %s: %w", certFile, keyFile, err)
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return conf, nil
}

func pool(caFile string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read the CA file: %w", err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s: no PEM certificate in it", caFile)
	}
	return p, nil
}

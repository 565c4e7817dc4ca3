package main

import (
	"flag"
	"log/slog"
	"path/filepath"

	"github.com/outpost-edge/outpost/edge/uplink"
	uplinkmqtt "github.com/outpost-edge/outpost/edge/uplink/mqtt"
	uplinknats "github.com/outpost-edge/outpost/edge/uplink/nats"
	"github.com/outpost-edge/outpost/protocol"
)

// natsConfig is the uplink over NATS JetStream.
type natsConfig struct {
	Transport string
	URL       string

	User, Password, Token, NKey, Creds string
	CA, Cert, Key                      string
}

func natsFlags(fs *flag.FlagSet, c *natsConfig) {
	fs.StringVar(&c.Transport, "transport", "", "uplink transport, mqtt or nats (default: the one whose --cloud-mqtt or --cloud-nats is given)")
	fs.StringVar(&c.URL, "cloud-nats", "", "the cloud's NATS server(s) with JetStream, such as nats://cloud.example:14222 or tls://n1:4222,tls://n2:4222")
	fs.StringVar(&c.User, "nats-user", "", "NATS user name (default: the edge id, with a fresh broker token as password, as the cloud's embedded server expects)")
	fs.StringVar(&c.Password, "nats-password", "", "static NATS password instead of a broker token")
	fs.StringVar(&c.Token, "nats-token", "", "NATS token")
	fs.StringVar(&c.NKey, "nats-nkey", "", "file holding this edge's NATS nkey seed")
	fs.StringVar(&c.Creds, "nats-creds", "", ".creds file (JWT and nkey seed) of this edge's NATS user")
	fs.StringVar(&c.CA, "nats-ca", "", "PEM file of the CAs that sign the NATS servers' certificates")
	fs.StringVar(&c.Cert, "nats-cert", "", "client certificate (PEM) for NATS servers that require one")
	fs.StringVar(&c.Key, "nats-key", "", "key of --nats-cert")
}

// uplinkTransport picks the uplink's transport from the flags. It returns
// nil when no cloud is configured (the edge runs offline). onCommand, when
// set, is given the messages on the edge's cmd topic or subject.
func uplinkTransport(c *Config, edgeID string, signer *protocol.Signer, cloudKeyHex string, onCommand func([]byte), log *slog.Logger) (uplink.Transport, string, error) {
	tr := c.NATS.Transport
	if tr == "" {
		switch {
		case c.CloudMQTT != "" && c.NATS.URL != "":
			return nil, "", usagef("both --cloud-mqtt and --cloud-nats are given: choose one with --transport mqtt|nats")
		case c.NATS.URL != "":
			tr = "nats"
		case c.CloudMQTT != "":
			tr = "mqtt"
		default:
			return nil, "", nil
		}
	}
	// Broker tokens carry the pinned cloud key's id in their audience, and
	// a counter kept in the data dir (docs/PROTOCOL.md, "Broker tokens").
	var cluster string
	if pub, err := parseKeyHex("--cloud-key", cloudKeyHex); err == nil {
		cluster = string(protocol.KeyIDOf(pub))
	}
	tokens, err := uplink.OpenTokens(uplink.TokenOptions{Signer: signer, Edge: edgeID, Cluster: cluster, Path: brokerCounterPath(c.DataDir)})
	if err != nil {
		return nil, "", err
	}
	switch tr {
	case "mqtt":
		if c.CloudMQTT == "" {
			return nil, "", usagef("--transport mqtt needs --cloud-mqtt")
		}
		t, err := uplinkmqtt.New(uplinkmqtt.Options{Broker: c.CloudMQTT, Edge: edgeID, Tokens: tokens, Password: c.CloudPassword,
			CAFile: c.CloudMQTTCA, CertFile: c.CloudMQTTCert, KeyFile: c.CloudMQTTKey, OnCommand: onCommand, Logger: log})
		if err != nil && (c.CloudMQTTCA != "" || c.CloudMQTTCert != "" || c.CloudMQTTKey != "") {
			return nil, "", usagef("%v (check --cloud-mqtt-ca, --cloud-mqtt-cert and --cloud-mqtt-key)", err)
		} else if err != nil {
			return nil, "", err
		}
		return t, c.CloudMQTT, nil
	case "nats":
		if c.NATS.URL == "" {
			return nil, "", usagef("--transport nats needs --cloud-nats")
		}
		n := c.NATS
		t, err := uplinknats.New(uplinknats.Options{URL: n.URL, Edge: edgeID, Tokens: tokens,
			User: n.User, Password: n.Password, Token: n.Token, NKeySeedFile: n.NKey, CredsFile: n.Creds,
			CAFile: n.CA, CertFile: n.Cert, KeyFile: n.Key, OnCommand: onCommand, Logger: log})
		if err != nil {
			return nil, "", usagef("%v", err)
		}
		return t, n.URL, nil
	}
	return nil, "", usagef("--transport %q: want mqtt or nats", tr)
}

// brokerCounterPath is the file of the last broker login counter used.
func brokerCounterPath(dataDir string) string { return filepath.Join(dataDir, "broker-counter") }

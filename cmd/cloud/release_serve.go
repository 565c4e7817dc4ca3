package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/release"
	"github.com/outpost-edge/outpost/internal/flagenv"
	"github.com/outpost-edge/outpost/protocol"
)

// releaseConfig is what cloud serve needs to serve the release repository.
type releaseConfig struct {
	Dir        string
	OnlineKeys string
	WarnBefore time.Duration
}

func releaseFlags(fs *flag.FlagSet, c *releaseConfig) {
	fs.StringVar(&c.Dir, "release-dir", "", "serve this OTA release repository (filled by cloud release publish) at /v1/ota/repo/ to enrolled edges; empty: none")
	fs.StringVar(&c.OnlineKeys, "release-online-keys", "release-online-keys", "with --release-dir: the snapshot and timestamp keys the cloud re-signs with")
	flagenv.DurationVar(fs, &c.WarnBefore, "release-warn-before", release.DefaultWarnBefore, flagenv.Durations(time.Hour, 0, ""), "with --release-dir: log a warning this long before any role's metadata expires")
}

// ledgerKeys adapts the ledger's edge keys to release.KeyStore.
type ledgerKeys struct{ l *ledger.Ledger }

func (k ledgerKeys) EdgeKeys(ctx context.Context, edge string) (protocol.Keys, error) {
	ks, err := k.l.EdgeKeys(ctx, edge)
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		return nil, fmt.Errorf("edge %s: %w", edge, release.ErrUnknownEdge)
	case err != nil:
		return nil, err
	case ks.Revoked():
		return nil, fmt.Errorf("edge %s: %w", edge, release.ErrRevokedEdge)
	}
	return ks, nil
}

// openRelease opens the repository, re-signs what is due at once (so a
// cloud started after a long stop serves fresh metadata; a failure is
// logged, not fatal), and registers
// outpost_release_metadata_expiry_seconds{role}: seconds until each role's
// published metadata expires (negative once it has), for alerts.
func openRelease(c releaseConfig, led *ledger.Ledger, cluster string, reg *prometheus.Registry, log *slog.Logger) (*release.Repo, http.Handler, error) {
	if c.Dir == "" {
		return nil, nil, nil
	}
	repo := &release.Repo{Dir: c.Dir, Online: c.OnlineKeys, WarnBefore: c.WarnBefore, Logger: log.With("component", "release")}
	if err := repo.Open(); err != nil {
		return nil, nil, fmt.Errorf("--release-dir: %w", err)
	}
	// A repository that cannot be signed must not stop ingest: say so
	// (log and metric) and keep serving what is there; Run retries.
	if err := repo.Resign(context.Background()); err != nil {
		log.Error("release repository: re-sign failed; edges see the metadata as it is until it expires", "dir", c.Dir, "err", err)
	}
	for _, role := range []string{metadata.ROOT, metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP} {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "outpost_release_metadata_expiry_seconds",
			Help:        "Seconds until the published release metadata of the role expires (negative: expired; NaN: none published). Alert when root or targets is below 14 days.",
			ConstLabels: prometheus.Labels{"role": role},
		}, func() float64 {
			e, ok := repo.Expiries()[role]
			if !ok {
				return math.NaN()
			}
			return time.Until(e).Seconds()
		}))
	}
	srv := &release.Server{Repo: repo, Keys: ledgerKeys{led}, Cluster: cluster, Prefix: "/v1/ota/repo/", Logger: log.With("component", "release")}
	return repo, srv, nil
}

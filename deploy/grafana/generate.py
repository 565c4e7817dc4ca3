# Writes deploy/grafana/*.json (run from the repository root: python3 deploy/grafana/generate.py).
# The JSON files are what Grafana imports; edit the panels here and regenerate.
# Every expression is checked against running programs by internal/e2e
# TestMetricsMatchRulesAndDashboards.
import json
def dash(uid, title, desc, panels):
    out=[]
    for i,(t,unit,exprs) in enumerate(panels):
        out.append({
          "id": i+1, "type": "timeseries", "title": t,
          "datasource": {"type": "prometheus", "uid": "${datasource}"},
          "gridPos": {"h": 8, "w": 12, "x": (i%2)*12, "y": (i//2)*8},
          "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
          "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
          "targets": [{"refId": chr(65+j), "expr": e, "legendFormat": l,
                       "datasource": {"type": "prometheus", "uid": "${datasource}"}} for j,(e,l) in enumerate(exprs)],
        })
    return {
      "uid": uid, "title": title, "description": desc, "tags": ["outpost"],
      "schemaVersion": 39, "version": 1, "editable": True, "refresh": "30s",
      "time": {"from": "now-6h", "to": "now"},
      "templating": {"list": [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
      ]},
      "panels": out,
    }
edge = dash("outpost-edge-fleet", "Outpost edge fleet",
  "Edges' outboxes, intake and uplinks (scraped on --status-listen). Metric names are checked by internal/e2e TestMetricsMatchRulesAndDashboards.",
  [
   ("Intake: events stored per second", "ops", [("sum by (instance) (rate(outpost_edge_intake_events_total[5m]))", "{{instance}}")]),
   ("Intake: refused per second, by reason", "ops", [("sum by (reason) (rate(outpost_edge_intake_refused_total[5m]))", "{{reason}}")]),
   ("Backlog (records not acknowledged by the cloud)", "short", [("outpost_edge_outbox_backlog_records", "{{instance}}")]),
   ("Oldest unsent record", "s", [("outpost_edge_outbox_oldest_unsent_seconds", "{{instance}}")]),
   ("Ledger quota used", "percentunit", [("outpost_edge_outbox_ledger_bytes / outpost_edge_outbox_ledger_quota_bytes", "{{instance}}")]),
   ("Telemetry quota used, and shed", "percentunit", [("outpost_edge_outbox_telemetry_bytes / outpost_edge_outbox_telemetry_quota_bytes", "{{instance}} used"),
                                                       ("rate(outpost_edge_outbox_shed_total[5m])", "{{instance}} shed/s")]),
   ("Uplink connected", "short", [("outpost_edge_uplink_connected", "{{instance}}")]),
   ("Uplink: segments and bytes sent per second", "Bps", [("rate(outpost_edge_uplink_bytes_sent_total[5m])", "{{instance}} bytes"),
                                                          ("rate(outpost_edge_uplink_segments_sent_total[5m])", "{{instance}} segments")]),
   ("Uplink: nacks, forged and ignored replies", "short", [("increase(outpost_edge_uplink_nacks_total[15m])", "{{instance}} nacks"),
                                                           ("increase(outpost_edge_uplink_forged_replies_total[15m])", "{{instance}} forged"),
                                                           ("increase(outpost_edge_uplink_ignored_nacks_total[15m])", "{{instance}} ignored nacks")]),
   ("Drain-only, stuck outbox files, cloud behind", "short", [("outpost_edge_outbox_drain_only", "{{instance}} drain-only"),
                                                   ("outpost_edge_outbox_stuck_files", "{{instance}} stuck files"),
                                                   ("increase(outpost_edge_uplink_cloud_behind_total[1h])", "{{instance}} cloud behind")]),
   ("Group commits per second", "ops", [("rate(outpost_edge_outbox_commits_total[5m])", "{{instance}}")]),
   ("Certificates: days to expiry", "d", [("(outpost_edge_tls_cert_expiry_timestamp_seconds - time()) / 86400", "{{instance}} --{{flag}}")]),
  ])
cloud = dash("outpost-cloud", "Outpost cloud",
  "Cloud ingest, commits, streams, quarantine and audit (scraped on --http). Metric names are checked by internal/e2e TestMetricsMatchRulesAndDashboards.",
  [
   ("Ingest: records committed per second", "ops", [("sum(rate(outpost_cloud_records_committed_total[5m]))", "records"),
                                                    ("sum(rate(outpost_cloud_segments_received_total[5m]))", "segments received")]),
   ("Commit latency", "s", [("histogram_quantile(0.5, sum by (le) (rate(outpost_cloud_commit_duration_seconds_bucket[5m])))", "p50"),
                            ("histogram_quantile(0.99, sum by (le) (rate(outpost_cloud_commit_duration_seconds_bucket[5m])))", "p99")]),
   ("Lag per stream (records reported, not committed)", "short", [("topk(20, max by (edge) (outpost_cloud_stream_lag_records))", "{{edge}}")]),
   ("Edges silent longest", "s", [("topk(20, time() - max by (edge) (outpost_cloud_stream_last_seen_timestamp_seconds))", "{{edge}}")]),
   ("Quarantine", "short", [("sum(increase(outpost_cloud_segments_quarantined_total[15m]))", "quarantined"),
                            ("sum(increase(outpost_cloud_quarantine_dropped_total[15m]))", "dropped (over cap)"),
                            ("sum(increase(outpost_cloud_quarantine_truncated_total[15m]))", "truncated (over cap)")]),
   ("Commit errors, refusals, gaps", "short", [("sum(increase(outpost_cloud_commit_errors_total[5m]))", "commit errors"),
                                               ("sum(increase(outpost_cloud_segments_refused_total[5m]))", "refused"),
                                               ("sum(increase(outpost_cloud_gap_nacks_total[5m]))", "gap nacks"),
                                               ("sum(increase(outpost_cloud_segments_duplicate_total[5m]))", "duplicates")]),
   ("Streams and total lag", "short", [("max(outpost_cloud_streams)", "streams"), ("sum(max by (edge) (outpost_cloud_stream_lag_records))", "total lag")]),
   ("Ledger audit", "short", [("max(outpost_cloud_audit_faults)", "streams with a fault"),
                              ("(time() - max(outpost_cloud_audit_last_success_timestamp_seconds)) / 3600", "hours since last complete audit")]),
   ("Broker logins", "ops", [("sum(rate(outpost_cloud_broker_logins_accepted_total[5m]))", "accepted"),
                             ("sum(rate(outpost_cloud_broker_logins_refused_total[5m]))", "refused")]),
   ("Hellos per second", "ops", [("sum(rate(outpost_cloud_hellos_total[5m]))", "hellos")]),
   ("Certificates: days to expiry", "d", [("(outpost_cloud_tls_cert_expiry_timestamp_seconds - time()) / 86400", "{{instance}} --{{flag}}")]),
  ])
for name,d in (("deploy/grafana/outpost-edge-fleet.json",edge),("deploy/grafana/outpost-cloud.json",cloud)):
    open(name,"w").write(json.dumps(d, indent=2)+"\n")
